# -*- test-case-name: tests.test_resources -*-
"""The JSON schemas of the declarative resources (admin/resources.py): the
served OpenAPI document (openapi.py) and the resource checks both read them
from here, so neither imports the other."""

from ..auth.acls import SUPPORTED_OPERATIONS, SUPPORTED_TYPES
from ..state.limits import Limits

KINDS = ("VirtualCluster", "ServiceAccount", "TopicMapping", "AclSet", "Limits")
CHILD_KINDS = KINDS[1:]
NAMED = ("VirtualCluster", "ServiceAccount", "TopicMapping")
"""Kinds whose documents carry a ``name`` (AclSet and Limits are one per
virtual cluster)."""

USERNAME = {"type": "string", "pattern": r"^(?!\*$)[^/]{1,255}$"}
TOPIC = {"type": "string", "pattern": r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$"}
VCLUSTER = {"type": "string", "pattern": "^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$"}
PREFIX = {"type": "string",
          "pattern": r"^(?!\.{1,2}$)[a-zA-Z0-9.-][a-zA-Z0-9._-]{0,63}$"}

ACL_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["resourceType", "name", "principal", "operation", "permission"],
    "description": "A Kafka ACL under logical names (the CLUSTER resource is "
                   "named kafka-cluster; a PREFIXED name is never '*')",
    "properties": {
        "resourceType": {"type": "string", "enum": list(SUPPORTED_TYPES)},
        "patternType": {"type": "string", "enum": ["LITERAL", "PREFIXED"],
                        "description": "default LITERAL"},
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "principal": {"type": "string", "pattern": r"^User:(\*|[^/]{1,255})$"},
        "host": {"type": "string", "minLength": 1, "maxLength": 255,
                 "description": "'*' (default) or an address"},
        "operation": {"type": "string", "enum": list(SUPPORTED_OPERATIONS)},
        "permission": {"type": "string", "enum": ["ALLOW", "DENY"]}}}
ACL_LIST = {"type": "array", "maxItems": 10000, "items": ACL_SCHEMA}
ACL_SET_SCHEMA = {"type": "object", "additionalProperties": False,
                  "required": ["acls"], "properties": {"acls": ACL_LIST}}
RIGHTS_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["acls"],
    "properties": {
        "acls": {"type": "boolean", "description": "Enforce the virtual "
                 "cluster's ACLs (false: every account may do everything)"},
        "superUsers": {"type": "array", "maxItems": 1000, "items": USERNAME,
                       "description": "Service accounts that bypass the ACLs"}}}
VCLUSTER_SPEC = {
    "type": "object", "additionalProperties": False,
    "properties": {"prefix": {**PREFIX, "description": "Default: the name; "
                              "cannot change once created"},
                   "acls": RIGHTS_SCHEMA["properties"]["acls"],
                   "superUsers": RIGHTS_SCHEMA["properties"]["superUsers"]}}
ACCOUNT_SPEC = {"type": "object", "additionalProperties": False, "properties": {}}
MAPPING_SPEC = {
    "type": "object", "additionalProperties": False,
    "required": ["physicalTopicName"],
    "properties": {
        "physicalTopicName": TOPIC,
        "readOnly": {"type": "boolean"},
        "concentrated": {"type": "boolean"},
        "partitions": {"type": "integer", "minimum": 1, "maximum": 1000000,
                       "description": "Concentrated mappings only"},
        "create": {"type": "object", "additionalProperties": False,
                   "description": "Create the physical topic if it does not "
                                  "exist (not compared: used when the mapping "
                                  "is written)",
                   "properties": {
                       "partitions": {"type": "integer", "minimum": 1,
                                      "maximum": 100000},
                       "replicationFactor": {"type": "integer", "minimum": 1,
                                             "maximum": 32},
                       "configs": {"type": "object", "additionalProperties": {
                           "type": "string"}}}}}}
SPECS = {"VirtualCluster": VCLUSTER_SPEC, "ServiceAccount": ACCOUNT_SPEC,
         "TopicMapping": MAPPING_SPEC, "AclSet": ACL_SET_SCHEMA,
         "Limits": Limits.json_schema()}
RESOURCE_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["kind"],
    "description": "kind, name (VirtualCluster, ServiceAccount, TopicMapping), "
                   "vcluster (every kind but VirtualCluster), spec",
    "properties": {"kind": {"type": "string", "enum": list(KINDS)},
                   "name": {"type": "string", "minLength": 1, "maxLength": 255},
                   "vcluster": VCLUSTER,
                   "spec": {"type": "object"}}}
APPLY_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["resources"],
    "properties": {
        "resources": {"type": "array", "maxItems": 100000, "items": RESOURCE_SCHEMA},
        "prune": {"type": "boolean", "description": "Remove what the managed "
                  "virtual clusters hold and the resources do not name "
                  "(default true)"},
        "dryRun": {"type": "boolean", "description": "Only say what would "
                   "change (default false)"}}}
CHANGE_SCHEMA = {
    "type": "object", "required": ["action", "kind", "summary"],
    "properties": {"action": {"type": "string", "enum": ["create", "change", "delete"]},
                   "summary": {"type": "string", "description": "The resource, "
                               "and what changes: the fields, or ACLs added and "
                               "removed"},
                   "kind": {"type": "string"}, "vcluster": {"type": "string"},
                   "name": {"type": "string"}, "before": {"type": "object"},
                   "after": {"type": "object"}}}
