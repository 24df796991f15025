"""The admin API's OpenAPI 3 document, served at ``/admin/openapi.json``, and
the request checks made from it (``Contract``).

The document is the one statement of what the API accepts: ``Contract``
validates each request's path parameters and JSON body against the
document's own schemas with ``jsonschema``, so there is no second, hand-written
validator to keep in step.  Tests check it against the Klein routes and
exercise every documented response.
"""

import functools
import json
import re
from urllib.parse import quote

from jsonschema import Draft4Validator, ValidationError, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from ..auth.tokens import MAX_LIFETIME
from ..state.limits import Limits
from . import schemas as _res

V1 = "/admin/vclusters/v1"
RESOURCES = "/admin/resources/v1"

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok, *errors):
    out = {}
    for status, text, schema in ok:
        entry = {"description": text}
        if schema is not None:
            entry["content"] = {"application/json": {"schema": schema}}
        out[str(status)] = entry
    descriptions = {400: "Bad input", 401: "Missing or wrong credentials",
                    403: "Read-only user", 404: "Unknown virtual cluster, account, mapping or "
                    "physical topic",
                    409: "Conflict (a prefix overlapping another virtual cluster's, "
                         "a topic in a virtual cluster's namespace, a name in use); "
                         "`vcluster` names the other virtual cluster", 429: "Too many failed logins from this address: "
                    "retry after Retry-After seconds",
                    503: "The state store cannot take writes"}
    for status in (401, 429) + errors:  # 401 is twisted.web.guard's own page
        out[str(status)] = {"description": descriptions[status], "content": {
            "application/json" if status != 401 else "text/html":
                {"schema": _ERROR if status != 401 else {"type": "string"}}}}
    out["429"]["headers"] = {"Retry-After": {
        "description": "Seconds to wait before the next login is checked",
        "schema": {"type": "integer", "minimum": 1}}}
    return out


# What the code accepts (vkafka.tenancy.naming, vkafka.state.model): a name
# outside these is refused with 400, or is 404 where it names something.
_TOPIC = {"type": "string", "pattern": r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$"}
_NAMES = {
    "vcluster": {"type": "string", "pattern": "^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$"},
    "username": {"type": "string", "pattern": r"^(?!\*$)[^/]{1,255}$"},
    "topic": _TOPIC,
    "rule": _TOPIC,
}


def _params(*names):
    return [{"name": n, "in": "path", "required": True, "schema": _NAMES[n]}
            for n in names]


_HOUR = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
         r"(T[0-9]{2}(:00(:00)?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"}
_PERIOD = [
    {"name": "from", "in": "query", "required": False, "schema": _HOUR,
     "description": "First hour of the period, ISO 8601 on a whole hour (no "
                    "zone: UTC; a date: its midnight); default: the start of "
                    "the current UTC month; at most 35 days back"},
    {"name": "to", "in": "query", "required": False, "schema": _HOUR,
     "description": "End of the period (excluded), after `from`; default: the "
                    "end of the current hour"}]
_COUNTS = {name: {"type": "integer", "minimum": 0} for name in (
    "bytesIn", "bytesOut", "recordsIn", "recordsOut", "requests")}


def document():
    doc = _document()
    schemas = doc["components"]["schemas"]
    acl, resource = ({"$ref": f"#/components/schemas/{name}"}
                     for name in ("Acl", "Resource"))
    extra = {**_rights_paths(acl, {"$ref": "#/components/schemas/AclList"},
                             {"$ref": "#/components/schemas/Rights"}),
             **_resource_paths(resource, {"$ref": "#/components/schemas/PutResult"})}
    paths = doc["paths"]
    for path, item in extra.items():  # beside a v1 path's own methods
        paths[path] = {**paths.get(path, {}), **item}
    assert all(name in schemas for name in ("Acl", "AclList", "Rights", "PutResult"))
    return doc


def _document():
    vc = {"$ref": "#/components/schemas/VirtualCluster"}
    mapping = {"$ref": "#/components/schemas/TopicMapping"}
    limits = {"$ref": "#/components/schemas/Limits"}
    traffic = {"$ref": "#/components/schemas/UsagePeriod"}
    acl = {"$ref": "#/components/schemas/Acl"}
    resource = {"$ref": "#/components/schemas/Resource"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "vkafka admin API", "version": "1"},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"],
                          "properties": {"error": {"type": "string"},
                                         "message": {"type": "string"},
                                         "field": {
                                             "type": "string", "description":
                                             "400: the body field (dotted when "
                                             "nested) or path parameter at "
                                             "fault"},
                                         "vcluster": {
                                             "type": "string", "description":
                                             "409: the virtual cluster the "
                                             "request conflicts with"}}},
                "VirtualCluster": {"type": "object", "properties": {
                    "name": {"type": "string"}, "prefix": {"type": "string"},
                    "createdAt": {"type": "number"},
                    "serviceAccounts": {"type": "array", "items": {"type": "string"}},
                    "topicMappings": {"type": "array", "items": mapping},
                    "limits": limits}},
                "Limits": Limits.json_schema(),
                "Acl": _res.ACL_SCHEMA,
                "Rights": {"type": "object", "required": ["acls", "superUsers"],
                           "properties": {"acls": {"type": "boolean"},
                                          "superUsers": {"type": "array", "items": {
                                              "type": "string"}}}},
                "AclList": {"type": "object", "required": ["acls"], "properties": {
                    "acls": {"type": "array", "items": acl}}},
                "Resource": {"type": "object", "required": ["kind"],
                             "description": _res.RESOURCE_SCHEMA["description"],
                             "properties": {
                                 "kind": {"type": "string", "enum": list(_res.KINDS)},
                                 "name": {"type": "string"},
                                 "vcluster": {"type": "string"},
                                 "spec": {"type": "object"}}},
                "PutResult": {"type": "object", "required": ["resource", "result"],
                              "properties": {
                                  "resource": resource,
                                  "result": {"type": "string", "enum": [
                                      "created", "changed", "deleted",
                                      "unchanged"]}}},
                "AuditEvent": {"type": "object",
                               "required": ["id", "at", "type", "gateway"],
                               "properties": {
                                   "id": {"type": "string"}, "at": {"type": "string"},
                                   "time": {"type": "number"},
                                   "gateway": {"type": "string"},
                                   "type": {"type": "string",
                                            "enum": ["admin", "refused"]},
                                   "vcluster": {"type": "string", "nullable": True},
                                   "user": {"type": "string"},
                                   "method": {"type": "string"},
                                   "path": {"type": "string"},
                                   "status": {"type": "integer"},
                                   "details": {},
                                   "principal": {"type": "string"},
                                   "operation": {"type": "string"},
                                   "resourceType": {"type": "string"},
                                   "name": {"type": "string"},
                                   "api": {"type": "string"},
                                   "host": {"type": "string"},
                                   "suppressed": {"type": "integer"}}},
                "UsagePeriod": {
                    "type": "object", "required": ["from", "to", *_COUNTS],
                    "description": "Traffic over whole UTC hours [from, to), "
                                   "summed over every gateway",
                    "properties": {"from": {"type": "string"},
                                   "to": {"type": "string"}, **_COUNTS}},
                "Usage": {"type": "object", "required": ["vcluster", "now", "period"],
                          "properties": {
                    "vcluster": {"type": "string"},
                    "now": {"type": "object", "description": "What the cluster holds "
                            "for the virtual cluster (an inventory at most a few "
                            "seconds old, or the last one if the cluster cannot "
                            "be asked) and its open connections over every gateway",
                            "required": ["at", "topics", "partitions",
                                         "consumerGroups", "transactionalIds",
                                         "storageBytes", "storageBytesOnce",
                                         "connections"],
                            "properties": {
                                "at": {"type": "string"},
                                **{name: {"type": "integer", "minimum": 0} for name in (
                                    "topics", "partitions", "consumerGroups",
                                    "transactionalIds", "storageBytes", "storageBytesOnce",
                                    "connections")}}},
                    "period": traffic}},
                "UsageExport": {"type": "object",
                                "required": ["from", "to", "vclusters"], "properties": {
                    "from": {"type": "string"}, "to": {"type": "string"},
                    "vclusters": {"type": "array", "items": {
                        "type": "object", "required": ["vcluster", *_COUNTS],
                        "properties": {"vcluster": {"type": "string"},
                                       **_COUNTS}}}}},
                "TopicMapping": {"type": "object", "properties": {
                    "logicalTopicName": {"type": "string"},
                    "physicalTopicName": {"type": "string"},
                    "readOnly": {"type": "boolean"},
                    "concentrated": {"type": "boolean"},
                    "partitions": {"type": "integer", "description":
                                   "Concentrated mappings: the logical topic's "
                                   "partitions (at most the physical topic's)"}}},
                "Traffic": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "connections": {"type": "integer"},
                    "bytesInPerSecond": {"type": "number"},
                    "bytesOutPerSecond": {"type": "number"},
                    "requestsPerSecond": {"type": "number"},
                    "requestsPerSecondByApi": {"type": "object",
                                               "additionalProperties": {
                                                   "type": "number"}}}},
                "DashboardSnapshot": {"type": "object", "properties": {
                    "time": {"type": "number"},
                    "rateSeconds": {"type": "number", "nullable": True,
                                    "description": "Seconds the rates average "
                                                   "over (null until two samples)"},
                    "historySeconds": {"type": "number"},
                    "totals": {"type": "object"},
                    "vclusters": {"type": "array", "items": {"allOf": [
                        {"$ref": "#/components/schemas/Traffic"},
                        {"type": "object", "properties": {
                            "prefix": {"type": "string"},
                            "topicCount": {"type": "integer", "nullable": True},
                            "partitionCount": {"type": "integer", "nullable": True},
                            "storageBytes": {"type": "integer", "nullable": True},
                            "consumerGroups": {"type": "integer", "nullable": True},
                            "throttleSecondsPerSecond": {"type": "number"},
                            "limits": {"type": "object", "description":
                                       "capacity and rate limits, flat"}}}]}},
                    "vcluster": {"type": "object", "description":
                                 "with ?vc=: that virtual cluster's figures, "
                                 "service accounts, topics, mappings, requests by "
                                 "API and rate shares"},
                    "history": {"type": "object", "description":
                                "with ?vc=: its figures over the last hour "
                                "(parallel arrays, one point every `every` s)"},
                    "other": {"type": "array", "items": {
                        "$ref": "#/components/schemas/Traffic"}}}},
            },
        },
        "security": [{"basic": []}],
        "paths": {
            "/health": {"get": {
                "summary": "Readiness of this gateway (no credentials needed)",
                "security": [],
                "responses": {"200": {"description": "Ready"},
                              "503": {"description": "Not ready, with the reason"}}}},
            "/admin/openapi.json": {"get": {
                "summary": "This document",
                "responses": _responses([(200, "The OpenAPI document",
                                          {"type": "object"})])}},
            "/admin/dashboard": {"get": {
                "summary": "The operator dashboard: an HTML page that polls "
                           "/admin/dashboard.json every 2 s",
                "responses": {"200": {"description": "The page", "content": {
                                  "text/html": {"schema": {"type": "string"}}}},
                              **_responses([])}}},
            "/admin/dashboard.json": {"get": {
                "summary": "Virtual clusters with their usage against their "
                           "limits (rates over the last few seconds); with ?vc= "
                           "one virtual cluster's detail and its last hour",
                "parameters": [{
                    "name": "vc", "in": "query", "required": False,
                    "schema": {"type": "string", "maxLength": 64},
                    "description": "a virtual cluster: its detail and history"}],
                "responses": _responses([(200, "The snapshot", {
                    "$ref": "#/components/schemas/DashboardSnapshot"})], 404)}},
            "/admin/workers": {"get": {
                "summary": "With --workers: each worker's state, restarts and "
                           "connections per virtual cluster (/health gives the "
                           "same without the virtual clusters' names)",
                "responses": _responses([(200, "The workers", {
                    "type": "object", "properties": {"workers": {
                        "type": "array", "items": {"type": "object"}}}})], 404)}},
            V1: {"get": {
                "summary": "List virtual clusters",
                "responses": _responses([(200, "Virtual clusters", {
                    "type": "object", "properties": {
                        "vclusters": {"type": "array", "items": vc}}})])}},
            f"{V1}/vcluster/{{vcluster}}": {
                "parameters": _params("vcluster"),
                "get": {"summary": "Show a virtual cluster",
                        "responses": _responses([(200, "The virtual cluster", vc)],
                                                404)},
                "post": {"summary": "Create a virtual cluster, optionally with a "
                                    "prefix other than its name",
                         "requestBody": {"content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "properties": {"prefix": {
                                 "type": "string",
                                 "pattern": r"^(?!\.{1,2}$)[a-zA-Z0-9.-]"
                                            r"[a-zA-Z0-9._-]{0,63}$"}}}}}},
                         "responses": _responses([(200, "The virtual cluster", vc)],
                                                 400, 403, 409, 503)},
                "delete": {"summary": "Delete a virtual cluster (revokes its tokens, "
                                      "removes accounts and mappings; topics stay)",
                           "responses": _responses([(204, "Deleted", None)],
                                                   403, 404, 503)}},
            f"{V1}/vcluster/{{vcluster}}/username": {
                "parameters": _params("vcluster"),
                "get": {"summary": "List service accounts",
                        "responses": _responses([(200, "Service accounts",
                                                  {"type": "object"})], 404)}},
            f"{V1}/vcluster/{{vcluster}}/username/{{username}}": {
                "parameters": _params("vcluster", "username"),
                "post": {"summary": "Create the virtual cluster if needed and the "
                                    "service account; issue a token",
                         "requestBody": {"content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "properties": {"lifeTimeSeconds": {
                                 "type": "integer", "minimum": 1,
                                 "maximum": MAX_LIFETIME}}}}}},
                         "responses": _responses([(200, "A token", {
                             "type": "object", "properties": {
                                 "token": {"type": "string"}}})],
                             400, 403, 409, 503)}},
            f"{V1}/vcluster/{{vcluster}}/username/{{username}}/revoke": {
                "parameters": _params("vcluster", "username"),
                "post": {"summary": "Revoke every token issued so far to the account "
                                    "(open connections are closed)",
                         "requestBody": {"description": "None, or an empty object",
                                         "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "properties": {}}}}},
                         "responses": _responses([(200, "Revoked", {"type": "object"})],
                                                 400, 403, 404, 503)}},
            f"{V1}/vcluster/{{vcluster}}/topics": {
                "parameters": _params("vcluster"),
                "get": {"summary": "List topic mappings",
                        "responses": _responses([(200, "Mappings", {"type": "object"})],
                                                404)}},
            f"{V1}/vcluster/{{vcluster}}/topics/{{topic}}": {
                "parameters": _params("vcluster", "topic"),
                "post": {"summary": "Map a logical topic onto a physical topic",
                         "requestBody": {"required": True,
                                         "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "required": ["physicalTopicName"],
                             "properties": {
                                 "physicalTopicName": _TOPIC,
                                 "readOnly": {"type": "boolean"},
                                 "concentrated": {"type": "boolean", "description":
                                                  "Share the physical topic with "
                                                  "other logical topics (see "
                                                  "docs/concentration.md)"},
                                 "create": {
                                     "type": "object", "additionalProperties": False,
                                     "description": "Create the physical topic if "
                                     "it does not exist",
                                     "properties": {
                                         "partitions": {"type": "integer",
                                                        "minimum": 1,
                                                        "maximum": 100000},
                                         "replicationFactor": {"type": "integer",
                                                               "minimum": 1,
                                                               "maximum": 32},
                                         "configs": {"type": "object",
                                                     "additionalProperties": {
                                                         "type": "string"}}}},
                                 "partitions": {"type": "integer", "minimum": 1,
                                                "description": "Concentrated "
                                                "mappings only (ignored otherwise): "
                                                "the logical topic's partitions, at "
                                                "most the physical topic's",
                                                "maximum": 1000000}}}}}},
                         "responses": _responses([(200, "The mapping", mapping)],
                                                 400, 403, 404, 409, 503)},
                "delete": {"summary": "Remove a mapping (the physical topic stays)",
                           "responses": _responses([(204, "Removed", None)],
                                                   403, 404, 503)}},
            f"{V1}/vcluster/{{vcluster}}/concentration-rules": {
                "parameters": _params("vcluster"),
                "get": {"summary": "List concentration rules",
                        "responses": _responses([(200, "Rules", {"type": "object"})],
                                                404)}},
            f"{V1}/vcluster/{{vcluster}}/concentration-rules/{{rule}}": {
                "parameters": _params("vcluster", "rule"),
                "post": {"summary": "A concentration rule: CreateTopics of a logical "
                                    "name matching the pattern makes a concentrated "
                                    "topic in the physical topic of its cleanup "
                                    "policy",
                         "requestBody": {"required": True,
                                         "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "required": ["pattern", "physicalTopicName"],
                             "properties": {
                                 "pattern": {"type": "string", "format": "regex",
                                             "minLength": 1,
                                             "maxLength": 1000},
                                 "physicalTopicName": _TOPIC,
                                 "physicalTopicNameCompacted": _TOPIC,
                                 "physicalTopicNameCompactedDeleted": _TOPIC}}}}},
                         "responses": _responses([(200, "The rule", {"type": "object"})],
                                                 400, 403, 404, 409, 503)},
                "delete": {"summary": "Remove a concentration rule (topics made by it "
                                      "stay)",
                           "responses": _responses([(204, "Removed", None)],
                                                   403, 404, 503)}},
            f"{V1}/vcluster/{{vcluster}}/limits": {
                "parameters": _params("vcluster"),
                "get": {"summary": "The virtual cluster's limits (`{}`: none; see "
                                   "docs/governance.md)",
                        "responses": _responses([(200, "The limits", limits)], 404)},
                "post": {"summary": "Replace every limit of the virtual cluster by "
                                    "the body's (an absent field is no limit; `{}` "
                                    "removes them all); in force on every gateway "
                                    "as it reads the state",
                         "requestBody": {"required": True, "content": {
                             "application/json": {"schema": Limits.json_schema()}}},
                         "responses": _responses([(200, "The limits now", limits)],
                                                 400, 403, 404, 503)},
                "delete": {"summary": "Remove every limit of the virtual cluster",
                           "responses": _responses([(204, "Removed", None)],
                                                   403, 404, 503)}},
            f"{V1}/vcluster/{{vcluster}}/usage": {
                "parameters": _params("vcluster"),
                "get": {"summary": "The virtual cluster's usage: what it holds now "
                                   "and its traffic over a period (see "
                                   "docs/governance.md, Usage)",
                        "parameters": _PERIOD,
                        "responses": _measured(_responses([(200, "The usage", {
                            "$ref": "#/components/schemas/Usage"})], 400, 404, 503))}},
            f"{V1}/usage": {
                "get": {"summary": "Every virtual cluster's traffic over a period: "
                                   "the chargeback export, JSON or CSV (a header "
                                   "row, then one row per virtual cluster)",
                        "parameters": [*_PERIOD, {
                            "name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["json", "csv"]},
                            "description": "json (default) or csv"}],
                        "responses": _measured(_responses([(200, "The export", {
                            "$ref": "#/components/schemas/UsageExport"})], 400),
                            csv=True)}},
        },
    }


def _body(schema, required=True):
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _rights_paths(acl, acls, rights):
    """Rights inside a virtual cluster: its ACL mode, super users and ACLs;
    deleting a service account; the audit log."""
    acl_list = {"type": "object", "additionalProperties": False,
                "required": ["acls"], "properties": {"acls": _res.ACL_LIST}}
    filters = [{"name": "resourceType", "in": "query", "required": False,
                "schema": {"type": "string", "enum": list(_res.SUPPORTED_TYPES)}},
               {"name": "name", "in": "query", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
               {"name": "patternType", "in": "query", "required": False,
                "schema": {"type": "string", "enum": ["LITERAL", "PREFIXED", "MATCH"]},
                "description": "MATCH: every ACL that applies to `name`"},
               {"name": "principal", "in": "query", "required": False,
                "schema": {"type": "string", "pattern": r"^User:(\*|[^/]{1,255})$"}},
               {"name": "host", "in": "query", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
               {"name": "operation", "in": "query", "required": False,
                "schema": {"type": "string",
                           "enum": list(_res.SUPPORTED_OPERATIONS)}},
               {"name": "permission", "in": "query", "required": False,
                "schema": {"type": "string", "enum": ["ALLOW", "DENY"]}}]
    time = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
            r"(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
            r"(Z|[+-][0-9]{2}:[0-9]{2})?)?$"}
    return {
        f"{V1}/vcluster/{{vcluster}}/username/{{username}}": {
            "delete": {"summary": "Delete a service account: its tokens are revoked "
                                  "(open connections closed) and it is forgotten; "
                                  "other accounts keep working; its ACLs stay",
                       "responses": _responses([(204, "Deleted", None)],
                                               403, 404, 503)}},
        f"{V1}/vcluster/{{vcluster}}/rights": {
            "parameters": _params("vcluster"),
            "get": {"summary": "Whether the virtual cluster's ACLs are enforced, "
                               "and its super users",
                    "responses": _responses([(200, "The rights", rights)], 404)},
            "put": {"summary": "Turn the virtual cluster's ACLs on or off and name "
                               "its super users (replaces both; idempotent)",
                    "requestBody": _body(_res.RIGHTS_SCHEMA),
                    "responses": _responses([(200, "The rights now", rights)],
                                            400, 403, 404, 503)}},
        f"{V1}/vcluster/{{vcluster}}/acls": {
            "parameters": _params("vcluster"),
            "get": {"summary": "The virtual cluster's ACLs (logical names)",
                    "responses": _responses([(200, "The ACLs", acls)], 404)},
            "put": {"summary": "Replace every ACL of the virtual cluster by the "
                               "body's (idempotent: nothing is written if they "
                               "are those held)",
                    "requestBody": _body(acl_list),
                    "responses": _responses([(200, "The ACLs now", acls)],
                                            400, 403, 404, 503)},
            "post": {"summary": "Add ACLs (those held already stay one)",
                     "requestBody": _body(acl_list),
                     "responses": _responses([(200, "The ACLs now", acls)],
                                             400, 403, 404, 503)},
            "delete": {"summary": "Remove the ACLs the query selects, as Kafka's "
                                  "DeleteAcls filter (an absent parameter matches "
                                  "any value: no parameter removes every ACL)",
                       "parameters": filters,
                       "responses": _responses([(200, "The ACLs removed", {
                           "type": "object", "required": ["deleted"],
                           "properties": {"deleted": {"type": "array",
                                                      "items": acl}}})],
                           400, 403, 404, 503)}},
        f"{V1}/audit": {
            "get": {"summary": "Recent audit events of every gateway (admin writes "
                               "with their result; sampled refused "
                               "authorizations), oldest first",
                    "parameters": [
                        {"name": "from", "in": "query", "required": False,
                         "schema": time, "description": "ISO 8601 (no zone: UTC)"},
                        {"name": "to", "in": "query", "required": False,
                         "schema": time, "description": "excluded"},
                        {"name": "vcluster", "in": "query", "required": False,
                         "schema": _NAMES["vcluster"]},
                        {"name": "type", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": ["admin", "refused"]}},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "string",
                                    "pattern": "^([1-9][0-9]{0,2}|1000)$"},
                         "description": "the last N events (default 100, at most "
                                        "1000)"}],
                    "responses": _responses([(200, "The events", {
                        "type": "object", "required": ["events"], "properties": {
                            "events": {"type": "array", "items": {
                                "$ref": "#/components/schemas/AuditEvent"}}}})],
                        400)}},
    }


def _resource_paths(resource, put_result):
    """Declarative admin: whole resources, PUT idempotent (admin/resources.py)."""
    kinds = {  # path tail: kind, what it is, its spec, path parameters
        "": ("VirtualCluster", "its prefix, ACL mode and super users",
             _res.VCLUSTER_SPEC, ("vcluster",)),
        "/serviceaccounts/{username}": (
            "ServiceAccount", "a service account, without a token (issue one with "
            f"POST {V1}/vcluster/{{vcluster}}/username/{{username}})",
            _res.ACCOUNT_SPEC, ("vcluster", "username")),
        "/topicmappings/{topic}": ("TopicMapping", "a logical topic mapped onto a "
                                   "physical one", _res.MAPPING_SPEC,
                                   ("vcluster", "topic")),
        "/aclset": ("AclSet", "every ACL of the virtual cluster",
                    _res.ACL_SET_SCHEMA, ("vcluster",)),
        "/limits": ("Limits", "the virtual cluster's limits (docs/governance.md)",
                    Limits.json_schema(), ("vcluster",)),
    }
    paths = {
        RESOURCES: {"get": {
            "summary": "Every resource (of one virtual cluster with ?vcluster=), "
                       "as `vkafka get` prints them",
            "parameters": [{"name": "vcluster", "in": "query", "required": False,
                            "schema": _NAMES["vcluster"]}],
            "responses": _responses([(200, "The resources", {
                "type": "object", "required": ["resources"], "properties": {
                    "resources": {"type": "array", "items": resource}}})],
                400, 404)}},
        f"{RESOURCES}/apply": {"post": {
            "summary": "Make the state hold these resources (`vkafka apply`): the "
                       "virtual clusters named are managed, and with prune (the "
                       "default) what they hold that is not named is removed; "
                       "nothing is written for what is already so; a read-only "
                       "user may ask for a dry run only",
            "requestBody": _body(_res.APPLY_SCHEMA),
            "responses": _responses([(200, "The changes (made, or to make with "
                                      "dryRun)", {
                "type": "object", "required": ["dryRun", "changes", "unchanged"],
                "properties": {"dryRun": {"type": "boolean"},
                               "unchanged": {"type": "integer"},
                               "changes": {"type": "array",
                                           "items": _res.CHANGE_SCHEMA}}})],
                400, 403, 404, 409, 503)}},
    }
    refusals = {"VirtualCluster": (400, 403, 409, 503),
                "TopicMapping": (400, 403, 404, 409, 503)}
    for tail, (kind, what, spec, params) in kinds.items():
        creates_vc = kind == "VirtualCluster"
        paths[f"{RESOURCES}/vclusters/{{vcluster}}{tail}"] = {
            "parameters": _params(*params),
            "get": {"summary": f"The {kind} resource: {what}",
                    "responses": _responses([(200, f"The {kind}", resource)], 404)},
            "put": {"summary": f"Create or change the {kind} to this spec "
                               "(idempotent: nothing is written if it is so "
                               "already)",
                    "requestBody": _body(spec),
                    "responses": _responses([(200, "The resource now and what "
                                              "changed", put_result)],
                                            *refusals.get(kind, (400, 403, 404, 503)))},
            "delete": {"summary": f"Remove the {kind} (204 also if there is none)"
                                  + (": every token revoked, accounts, mappings, "
                                     "ACLs and limits removed; topics stay"
                                     if creates_vc else
                                     ": its tokens revoked" if kind == "ServiceAccount"
                                     else ""),
                       "responses": _responses([(204, "Removed, or absent", None)],
                                               400, 403, 503)}}
    return paths


def _measured(responses, csv=False):
    """The responses of a usage operation: 503 is the cluster that cannot be
    asked; with *csv*, 200 may also be CSV (``format=csv``)."""
    if "503" in responses:
        responses["503"]["description"] = ("Usage cannot be measured now (the "
                                           "cluster cannot be asked what it holds)")
    if csv:
        responses["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    return responses


DOCUMENT_URI = "urn:vkafka:admin:openapi"


class InvalidRequest(ValueError):
    """Input the document refuses: a 400 whose body names the field and why."""

    def __init__(self, error, message, field=None):
        super().__init__(message)
        self.error, self.message, self.field = error, message, field

    def body(self):
        return {"error": self.error, "message": self.message,
                **({} if self.field is None else {"field": self.field})}


@functools.lru_cache(maxsize=None)
def python_regex(pattern):
    """*pattern*, an ECMA-262 regex as OpenAPI's ``pattern`` is, for Python's re.

    Python's ``$`` also matches before a final newline, so ``"topic\\n"``
    would pass ``^[a-z]+$``; ECMA-262's (no multiline flag) matches at the end
    of the text only, which is Python's ``\\Z``.  ``\\d`` and ``\\w`` are ASCII
    there, hence ``re.ASCII``.
    """
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "$":
            c = r"\Z"
        out.append(c)
        i += 1
    return re.compile("".join(out), re.ASCII)


def _pattern(validator, pattern, instance, schema):
    """JSON Schema's ``pattern`` keyword, with ECMA-262's ``$`` (python_regex)."""
    if validator.is_type(instance, "string") and \
            not python_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# OpenAPI 3.0's Schema Object is a JSON Schema draft 4 dialect (an integer is
# never 1.0, exclusiveMinimum is a boolean).  Its own keywords (nullable,
# discriminator, ...) would be ignored: a test keeps them out of request schemas.
SchemaValidator = validators.extend(Draft4Validator, {"pattern": _pattern})

# The error code of a refusal, by the JSON Schema keyword that failed (every
# pattern in the document is a name's); anything else is "bad_field".
ERRORS = {"additionalProperties": "unknown_field", "required": "missing_field",
          "pattern": "invalid_name"}
# When a body breaks several rules, the one reported: the shallowest, then
# unknown fields, missing fields, wrong types, the rest (as the API always did).
_RANK = {"additionalProperties": 0, "required": 1, "type": 2}


def _fragment(*parts):
    """A JSON pointer (RFC 6901) to *parts* of the document, as a URI fragment."""
    return "#" + quote("".join(
        "/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts), safe="/~")


def _dotted(parts):
    return ".".join(str(p) for p in parts)


def _first(errors):
    return min(errors, default=None, key=lambda e: (
        len(e.absolute_path), _RANK.get(e.validator, 3),
        [str(p) for p in e.absolute_path], e.validator))


def _refusal(e):
    """The InvalidRequest for a body's jsonschema error *e*: which field, why."""
    at = list(e.absolute_path)
    where = f" in {_dotted(at)!r}" if at else ""
    if e.validator == "additionalProperties":
        schema = e.schema
        unknown = sorted(name for name in e.instance
                         if name not in schema.get("properties", {}) and not any(
                             python_regex(p).search(name)
                             for p in schema.get("patternProperties", {})))
        return InvalidRequest(ERRORS[e.validator], f"unknown field(s){where}: "
                              f"{', '.join(unknown)}", _dotted(at + unknown[:1]))
    if e.validator == "required":
        missing = [name for name in e.validator_value if name not in e.instance]
        field = _dotted(at + missing[:1])
        return InvalidRequest(ERRORS[e.validator], f"missing field {field!r}", field)
    if not at:
        return InvalidRequest("bad_json", f"the body must be a JSON {e.validator_value}"
                              if e.validator == "type" else f"the body: {e.message}")
    field = _dotted(at)
    return InvalidRequest(ERRORS.get(e.validator, "bad_field"), f"{field!r}: {e.message}",
                          field)


class Operation:
    """One operation's checks: its JSON body and its path parameters, each
    against its schema in the document (a ``$ref`` into the document, so that
    references to ``components`` resolve)."""

    def __init__(self, body, params, required=False, query=None):
        self.body, self.params, self.required = body, params, required
        self.query = query or {}

    def check(self, params, raw):
        """The JSON body (None if the operation takes none), or InvalidRequest.

        No body is an empty object, as it always was, unless the document
        says the body is required; the body is checked before the path."""
        body = None
        if self.body is not None:
            if self.required and not raw.strip():
                raise InvalidRequest("bad_json", "a JSON body is required")
            try:
                body = json.loads(raw) if raw.strip() else {}
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise InvalidRequest("bad_json", "the body is not valid JSON")
            e = _first(self.body.iter_errors(body))
            if e is not None:
                raise _refusal(e)
        for name, validator in self.params.items():
            e = _first(validator.iter_errors(params[name]))
            if e is not None:
                raise InvalidRequest("invalid_name", f"invalid {name}: {e.message}",
                                     name)
        return body


    def check_query(self, args):
        """The documented query parameters given (Twisted's ``request.args``),
        each checked by its schema: name -> text; InvalidRequest otherwise (an
        undocumented parameter too, as an unknown body field)."""
        unknown = sorted(k.decode(errors="replace") for k in args
                         if k.decode(errors="replace") not in self.query)
        if unknown:
            raise InvalidRequest("unknown_field", f"unknown query parameter(s): "
                                 f"{', '.join(unknown)}", unknown[0])
        given = {}
        for name, validator in self.query.items():
            values = args.get(name.encode(), [])
            if len(values) > 1:
                raise InvalidRequest("bad_field", f"{name} given more than once", name)
            if not values:
                continue
            try:
                given[name] = values[0].decode()
            except UnicodeDecodeError:
                raise InvalidRequest("bad_field", f"{name} is not UTF-8", name)
            e = _first(validator.iter_errors(given[name]))
            if e is not None:
                raise InvalidRequest("bad_field", f"invalid {name}: {e.message}", name)
        return given


class Contract:
    """What the document accepts, by operation (path, method): the one request
    validator, made from the document alone.

    A documented JSON request body is validated against its schema.  Path
    parameters are validated where the operation documents 400 (bad input):
    the writes that name what they create; a read or delete of a name that
    cannot exist answers 404 from the state.
    """

    def __init__(self, doc):
        self.document = doc
        registry = Registry().with_resource(DOCUMENT_URI, Resource.from_contents(
            doc, default_specification=DRAFT4))

        def validator(*parts):
            return SchemaValidator({"$ref": DOCUMENT_URI + _fragment(*parts)},
                                   registry=registry)
        self.operations = {}
        for path, item in doc["paths"].items():
            for method, op in item.items():
                if method == "parameters":
                    continue
                body = None
                if "application/json" in op.get("requestBody", {}).get("content", {}):
                    body = validator("paths", path, method, "requestBody", "content",
                                     "application/json", "schema")
                params, query = {}, {}
                if "400" in op["responses"]:
                    for where in (("parameters",), (method, "parameters")):
                        listed = item if len(where) == 1 else op
                        for i, param in enumerate(listed.get("parameters", ())):
                            checks = {"path": params, "query": query}.get(param["in"])
                            if checks is not None and "schema" in param:
                                checks[param["name"]] = validator(
                                    "paths", path, *where, i, "schema")
                self.operations[(path, method)] = Operation(
                    body, params, op.get("requestBody", {}).get("required", False),
                    query)

    def operation(self, path, method):
        """The checks of the document's *path* (a template) for an HTTP *method*."""
        method = method.decode() if isinstance(method, bytes) else method
        method = "get" if method.upper() == "HEAD" else method.lower()
        return self.operations[(path, method)]


def _rules(schema):
    """What a schema accepts, in a few words, for the reference: the rules
    ``Contract`` enforces, read from the same place."""
    words = [schema.get("type", "any")]
    if "minimum" in schema or "maximum" in schema:
        words.append(f"{schema.get('minimum', '')}..{schema.get('maximum', '')}")
    if "minLength" in schema or "maxLength" in schema:
        words.append(f"{schema.get('minLength', 0)}..{schema.get('maxLength', '')} "
                     "characters")
    if "pattern" in schema:
        words.append(f"`{schema['pattern']}`")
    if "format" in schema:
        words.append(schema["format"])
    if "enum" in schema:
        words.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if isinstance(schema.get("additionalProperties"), dict):
        words.append(f"of {_rules(schema['additionalProperties'])}")
    if schema.get("properties"):
        words.append("{" + _fields(schema) + "}")
    return ", ".join(words)


def _fields(schema):
    required = schema.get("required", ())
    return "; ".join(f"`{name}`{' (required)' if name in required else ''}: "
                     f"{_rules(spec)}" for name, spec in schema["properties"].items())


def markdown_reference():
    """docs/admin-api-reference.md, generated from the document (no drift)."""
    doc = document()
    contract = Contract(doc)
    lines = ["# Admin API reference", "",
             "Generated by `python -m vkafka.admin.openapi` from the OpenAPI document "
             "served at `/admin/openapi.json`; a test fails if they disagree. "
             "Request bodies and the path parameters listed are validated against "
             "that document: a 400 names the `field` and why.", ""]
    for path, item in doc["paths"].items():
        params = {p["name"]: p for p in item.get("parameters", ())}
        for method, op in item.items():
            if method == "parameters":
                continue
            lines.append(f"## {method.upper()} `{path}`")
            lines.append("")
            lines.append(op["summary"])
            lines.append("")
            checked = contract.operation(path, method).params
            if checked:
                lines.append("Path: " + "; ".join(
                    f"`{name}`: {_rules(params[name]['schema'])}" for name in checked))
                lines.append("")
            query = [p for p in op.get("parameters", ()) if p["in"] == "query"]
            if query:
                lines.append("Query: " + "; ".join(
                    f"`{p['name']}`: {_rules(p['schema'])}"
                    + (f" ({p['description']})" if "description" in p else "")
                    for p in query))
                lines.append("")
            body = op.get("requestBody", {}).get("content", {}).get(
                "application/json", {}).get("schema", {})
            if body.get("properties"):
                lines.append(f"Body: {_fields(body)}")
                lines.append("")
            lines.append("| status | meaning |")
            lines.append("|---|---|")
            for status, response in op["responses"].items():
                lines.append(f"| {status} | {response['description']} |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_reference(), end="")
