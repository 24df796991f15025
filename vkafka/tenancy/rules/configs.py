# -*- test-case-name: tests.test_rules -*-
"""Rules for DescribeConfigs, AlterConfigs and IncrementalAlterConfigs:
topic and group resources renamed, brokers read-only and cut to an
allow-list, every other resource type refused."""

from dataclasses import replace

from kio.schema.errors import ErrorCode
from twisted.internet import defer


from ..context import Refusal
from ..naming import GROUP, TOPIC, InvalidName
from ...state.policy import CAPPED_CONFIGS, POLICY_VIOLATION, configs_allowed
from .common import RECONFIGURED_WORK, broker_work, limits_for


# Config resources: topics and groups are renamed; brokers are read-only;
# anything else is refused.
RESOURCE_TOPIC, RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_GROUP = 2, 4, 8, 32
_RESOURCE_KINDS = {RESOURCE_TOPIC: TOPIC, RESOURCE_GROUP: GROUP}


TENANT_BROKER_CONFIGS = frozenset((
    "auto.create.topics.enable", "compression.type", "default.replication.factor",
    "delete.topic.enable", "group.consumer.heartbeat.interval.ms",
    "group.consumer.session.timeout.ms", "group.max.session.timeout.ms",
    "group.min.session.timeout.ms", "log.cleanup.policy", "log.message.timestamp.type",
    "log.retention.bytes", "log.retention.hours", "log.retention.minutes",
    "log.retention.ms", "log.segment.bytes", "message.max.bytes",
    "min.insync.replicas", "num.partitions", "offsets.retention.minutes",
    "transaction.max.timeout.ms", "unclean.leader.election.enable",
))
"""The broker configs a tenant may read (DescribeConfigs on a BROKER resource):
the defaults its topics and clients inherit.  Never listeners, addresses,
paths, quorum voters, security settings or secrets: every other key (and
synonym) is dropped from the answer."""

_NOT_AVAILABLE = (ErrorCode.cluster_authorization_failed,
                  "this resource type is not available in a virtual cluster")
_TWICE = (ErrorCode.invalid_request, "the resource is named twice in this request")
"""A resource named again in one request: a DescribeConfigs naming one topic
thousands of times with its documentation asked the broker to build an answer
of 130 MB (Kafka's own clients name each resource once)."""


def _resource_key(resource):
    """What a broker describes for *resource*: a broker's name is read as a
    number, so "1", "01" and "+1" are one broker (each spelling cost it ~95 KB
    of configs with their documentation: attack 89 again, by spelling)."""
    name = resource.resource_name
    if resource.resource_type in (RESOURCE_BROKER, RESOURCE_BROKER_LOGGER):
        try:
            name = int(name)
        except (TypeError, ValueError):
            pass
    return resource.resource_type, name


def configs_request(read_only, replaces_all=False):
    """Describe (*read_only*) or alter configs; AlterConfigs *replaces_all* of
    a resource's configs, IncrementalAlterConfigs changes some."""
    def rewrite(services, rctx, request):
        seen = services.group_ids
        if read_only or seen is None or seen.exists is None:
            return rewritten(services, rctx, request, ())
        unknown = []  # groups configured that the last inventory did not list
        for r in request.resources:
            if r.resource_type != RESOURCE_GROUP or all(
                    v is None for v in _changes(r.configs, replaces_all).values()):
                continue
            try:
                physical = rctx.namespace.physical(GROUP, r.resource_name)
            except InvalidName:  # refused below
                continue
            if not seen.listed(physical) and physical not in unknown:  # or no inventory
                unknown.append(physical)
        if not unknown:
            return rewritten(services, rctx, request, ())
        asked = unknown[:GROUPS_ASKED]  # made a moment ago? asked of the coordinator
        vc = rctx.namespace.name
        return defer.gatherResults([seen.exists(g, vc) for g in asked]).addCallback(
            lambda found: rewritten(services, rctx, request,
                                    {g for g, there in zip(asked, found) if there}))

    def rewritten(services, rctx, request, existing):
        resources = []
        rctx.config_refusals = {}
        limits = None if read_only else limits_for(services, rctx)
        seen = set()
        groups = reconfigured = 0
        for r in request.resources:
            kind = _RESOURCE_KINDS.get(r.resource_type)
            refusal = _NOT_AVAILABLE
            key = _resource_key(r)
            twice = key in seen
            seen.add(key)
            if twice:  # the broker would answer (and build) it once more
                refusal = _TWICE
            elif kind is not None:
                physical = rctx.to_physical(kind, r.resource_name)
                found = rctx.refusal(kind, physical) if kind == GROUP else None
                if found is None and kind == GROUP and limits is not None:
                    found = None if physical in existing else _group_beyond_capacity(
                        services, rctx, physical, r.resource_name,
                        _changes(r.configs, replaces_all))
                elif found is None and kind == GROUP:
                    groups += 1
                    if groups > GROUPS_DESCRIBED:
                        found = Refusal(r.resource_name, f"at most {GROUPS_DESCRIBED} "
                                        "groups' configs in one request",
                                        ErrorCode.invalid_request)
                violation = None if limits is None or kind != TOPIC else \
                    configs_allowed(limits, _changes(r.configs, replaces_all))
                if found is None and violation is None:
                    resources.append(replace(r, resource_name=physical))
                    if kind == TOPIC and not read_only:
                        reconfigured += getattr(services.topology, "partitions",
                                                {}).get(physical, 1)
                    continue
                if violation is not None:  # the topic's policy (policy.py)
                    found = Refusal(r.resource_name, violation.message,
                                    violation.code)
                # A refused group: never on the broker (altering it would make a
                # group config of its own), but the refused-resource path below.
                refusal = (ErrorCode(found.code or ErrorCode.invalid_group_id),
                           found.reason)
            elif read_only and r.resource_type == RESOURCE_BROKER:
                if rctx.rights is None or rctx.rights.on_cluster("DESCRIBE_CONFIGS"):
                    resources.append(r)  # the answer is cut to TENANT_BROKER_CONFIGS
                    continue
                rctx.rights.tell("DESCRIBE_CONFIGS", "CLUSTER", "kafka-cluster")
                refusal = (ErrorCode.cluster_authorization_failed, rctx.rights.reason(
                    "DESCRIBE_CONFIGS", "the cluster's", r.resource_name))
            # A decoy topic the broker refuses; restored with our error below.
            decoy = rctx.decoy_name(TOPIC, r.resource_name, "")
            rctx.config_refusals[decoy] = (r.resource_type, *refusal)
            resources.append(replace(r, resource_type=RESOURCE_TOPIC,
                                     resource_name=decoy))
        if not getattr(request, "validate_only", True):
            broker_work(services, rctx, reconfigured, RECONFIGURED_WORK)
        return replace(request, resources=tuple(resources))
    return rewrite


GROUPS_ASKED = 10
"""Groups of one config change the gateway asks the brokers about when the
last inventory did not list them (a group made a moment ago); the rest wait
for the next inventory."""
GROUPS_DESCRIBED = 1000
"""Group resources one DescribeConfigs may name.  A group need not exist to
be described, and the broker builds ~2 KB of configs for each: 30,000 names
in 289 KB asked for 65 MB (audit 22)."""


def _group_beyond_capacity(services, rctx, physical, logical, changes):
    """Altering the configs of a group that does not exist makes a config
    record of its own in the cluster's metadata, however many: only the
    groups the last usage inventory listed, or the group's coordinator says
    exist (``configs_request``; before a gateway's first inventory, every
    group is asked), take configs (not those let in since: a
    commit the broker refused made none); a Refusal for any other.  Configs
    set back to their defaults (records removed) are let through for any
    group."""
    seen = services.group_ids
    if seen is None or all(v is None for v in changes.values()):
        return None
    listed = seen.listed(physical)  # None: no inventory yet, the coordinator asked
    if listed or (listed is None and seen.exists is None):
        return None
    return Refusal(logical, "configs of a group that does not exist: only existing "
                   "groups take configs", POLICY_VIOLATION)


def _changes(configs, replaces_all):
    """{key: new value, None: back to the default} of an alteration; an
    AlterConfigs sets every config it does not name back to the default."""
    changes = {}
    for c in configs:
        operation = getattr(c, "config_operation", 0)
        changes[c.name] = None if operation == _DELETE else c.value
    if replaces_all:
        for key in CAPPED_CONFIGS:
            changes.setdefault(key, None)
    return changes


_DELETE = 1  # IncrementalAlterConfigs' config_operation


def _broker_configs(result):
    """A BROKER resource's configs cut to TENANT_BROKER_CONFIGS."""
    if not hasattr(result, "configs"):
        return result
    kept = []
    for c in result.configs:
        if c.name in TENANT_BROKER_CONFIGS:
            if getattr(c, "synonyms", None):
                c = replace(c, synonyms=tuple(
                    s for s in c.synonyms if s.name in TENANT_BROKER_CONFIGS))
            kept.append(c)
    return replace(result, configs=tuple(kept))


def configs_response(services, rctx, response):
    field_name = "results" if hasattr(response, "results") else "responses"
    items = []
    for r in getattr(response, field_name):
        refused = rctx.config_refusals.get(r.resource_name)
        if refused is not None:
            original_type, code, message = refused
            logical = rctx.refusal(TOPIC, r.resource_name).logical
            changes = dict(resource_type=original_type, resource_name=logical,
                           error_code=code, error_message=message)
            if hasattr(r, "configs"):
                changes["configs"] = ()
            items.append(replace(r, **changes))
            continue
        kind = _RESOURCE_KINDS.get(r.resource_type)
        if kind is not None:
            found = rctx.refusal(kind, r.resource_name)
            if found is not None:
                r = replace(r, resource_name=found.logical, error_message=found.reason)
                if found.code is not None:
                    r = replace(r, error_code=ErrorCode(found.code))
                    if hasattr(r, "configs"):
                        r = replace(r, configs=())
            else:
                r = replace(r, resource_name=rctx.to_logical(kind, r.resource_name),
                            error_message=rctx.namespace.scrub(r.error_message))
        elif r.resource_type == RESOURCE_BROKER:
            r = _broker_configs(replace(r, error_message=None
                                        if r.error_code == 0 else r.error_message))
        items.append(r)
    return replace(response, **{field_name: tuple(items)})
