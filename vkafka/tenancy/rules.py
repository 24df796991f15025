# -*- test-case-name: tests.test_rules -*-
"""The per-API rule table: what the gateway does to each Kafka API.

An API key reaches a broker only if it has a row here (fail closed).  Each
row says up to which version the gateway offers the API and which response
rewrite it needs; every other request is forwarded as bytes.  ApiVersions
answers are cut down to exactly this table.
"""

import datetime
import typing
import uuid
from dataclasses import dataclass, replace
from typing import Callable

from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.static.constants import EntityType
from kio.static.primitive import i16, i32, i32Timedelta

from twisted.internet import defer
from twisted.logger import Logger

from ..auth.sasl import SASL_HANDSHAKE, VERSIONS as SASL_VERSIONS
from ..protocol.codec import encode_body
from ..protocol.fastpath import (
    fetch_request_ids, fetch_session, rename_produce_response, scan_fetch,
    scan_produce_response)
from ..protocol.headers import codec_versions
from ..protocol.produce import rewrite_produce
from .metadata_cache import made_of
from . import consumer_protocol as _cp
from .naming import GROUP, TOPIC, TRANSACTION, InvalidName
from .patterns import InvalidPattern, alternation, fullmatch, names_of
from .sessions import FETCH_SESSION_ID_NOT_FOUND, FetchSessions
from .walker import ZERO_UUID, Rejected
from .walker import rewrite_request as walk_request
from .walker import rewrite_response as walk_response

log = Logger()
_NO_THROTTLE = i32Timedelta.parse(datetime.timedelta(0))


@dataclass(frozen=True)
class Rule:
    api_key: int
    name: str
    min_version: int
    max_version: int
    rewrite_response: Callable | None = None
    """``(connection, request context, response) -> response``, from *rewrite_from* on."""
    rewrite_from: int = 0
    why: str = "forwarded unchanged"
    rewrite_request: Callable | None = None
    """``(connection, request context, request) -> request`` (tenant mode)."""
    local: bool = False
    """Answered by the gateway itself (SASL), never forwarded."""
    write: bool = False
    """Changes topics: read-only aliases are refused (TOPIC_AUTHORIZATION_FAILED)."""
    rewrite_frame: Callable | None = None
    """``(connection, request context, frame, body offset, version) -> frame``:
    rewrites the request without decoding it (hot path); used instead of
    *rewrite_request*, unless it declines with None."""
    scan_response: Callable | None = None
    """``(frame, body offset, version) -> fastpath.Scan``: reads a big response by
    lengths (hot path) for *passes_as_bytes* and the metrics (its first error
    code, its records)."""
    passes_as_bytes: Callable | None = None
    """``(scan, version, request context) -> bool``: True when this response needs
    no rewrite and is forwarded without decoding (hot path); needs *scan_response*."""
    rename_response: Callable | None = None
    """``(frame, body offset, version, scan, request context) -> frame or None``:
    the response with its names made logical by slicing, when nothing else in it
    must change; None: decode it (hot path); needs *scan_response*."""
    observe: Callable | None = None
    """``(request context, scan)``: connection-bound state a response creates
    (fetch sessions), read from its scan however the response is forwarded."""

    def needs_response_rewrite(self, version):
        return self.rewrite_response is not None and version >= self.rewrite_from


# --- response rewriters -------------------------------------------------------

def _endpoint(topology, node_id):
    return topology.gateway_address(node_id)


def rewrite_metadata(ctx, rctx, response):
    topology = ctx.topology
    if rctx is None:  # passthrough: the gateway's own state topics stay hidden
        from .naming import GATEWAY_TOPIC_PREFIX
        if any(t.name and t.name.startswith(GATEWAY_TOPIC_PREFIX)
               for t in response.topics):
            response = replace(response, topics=tuple(
                t for t in response.topics
                if not (t.name and t.name.startswith(GATEWAY_TOPIC_PREFIX))))
    topology.learn((b.node_id, b.host, b.port) for b in response.brokers)
    brokers = []
    for broker in response.brokers:
        address = _endpoint(topology, broker.node_id)
        if address is not None:
            brokers.append(replace(broker, host=address[0], port=address[1]))
    return replace(response, brokers=tuple(brokers))


def rewrite_describe_cluster(ctx, rctx, response):
    topology = ctx.topology
    topology.learn((b.broker_id, b.host, b.port) for b in response.brokers)
    brokers = []
    for broker in response.brokers:
        address = _endpoint(topology, broker.broker_id)
        if address is not None:
            brokers.append(replace(broker, host=address[0], port=address[1]))
    return replace(response, brokers=tuple(brokers))


def _rewrite_coordinator(topology, item):
    if item.node_id < 0 or item.error_code != 0:
        return item
    topology.learn([(item.node_id, item.host, item.port)])
    address = _endpoint(topology, item.node_id)
    if address is None:
        return replace(item, node_id=-1, host="", port=-1,  # the client retries
                       error_code=ErrorCode.coordinator_not_available)
    return replace(item, host=address[0], port=address[1])


def rewrite_find_coordinator(ctx, rctx, response):
    if hasattr(response, "coordinators"):
        return replace(response, coordinators=tuple(
            _rewrite_coordinator(ctx.topology, c) for c in response.coordinators
        ))
    return _rewrite_coordinator(ctx.topology, response)


def rewrite_node_endpoints(ctx, rctx, response):
    """KIP-951: Produce and Fetch name the new leader's address on errors."""
    if not response.node_endpoints:
        return response
    topology = ctx.topology
    topology.learn((e.node_id, e.host, e.port) for e in response.node_endpoints)
    endpoints = []
    for endpoint in response.node_endpoints:
        address = _endpoint(topology, endpoint.node_id)
        if address is not None:
            endpoints.append(replace(endpoint, host=address[0], port=address[1]))
    return replace(response, node_endpoints=tuple(endpoints))


def rewrite_api_versions(ctx, rctx, response):
    """Offer the intersection of the broker's versions and this table."""
    table = ctx.rules
    kept = []
    for api in response.api_keys:
        rule = table.get(api.api_key)
        if rule is None:
            continue
        low = max(api.min_version, rule.min_version)
        high = min(api.max_version, rule.max_version)
        if low <= high:
            kept.append(replace(api, min_version=low, max_version=high))
    # APIs the gateway answers itself (SASL) are offered whatever the broker says.
    present = {api.api_key for api in kept}
    template = response.api_keys[0] if response.api_keys else None
    for rule in table.values():
        if rule.local and rule.api_key not in present and template is not None:
            kept.append(replace(template, api_key=rule.api_key,
                                min_version=rule.min_version,
                                max_version=rule.max_version))
    return replace(response, api_keys=tuple(sorted(kept, key=lambda a: a.api_key)))


def local_api_versions(conn, version):
    """The ApiVersions answer body for a tenant at *version*, made by the
    gateway from the brokers' own answer (learnt by its refresh) cut to this
    table: tenants are answered before any broker connection is opened for
    them (that waits for authentication).  None if the brokers' answer is not
    known yet."""
    known = conn.topology.api_versions
    if known is None:
        return None

    module = load_payload_module(18, version, EntityType.response)
    response = _convert(known, module)
    return encode_body(rewrite_api_versions(conn, None, response))


def _convert(value, module):
    """A kio entity as the class of the same name in *module* (another version
    of the same message): fields it lacks are left out, fields it adds take
    their defaults."""
    import dataclasses

    cls = getattr(module, type(value).__name__)
    values = {}
    for f in dataclasses.fields(cls):
        if not hasattr(value, f.name):
            continue
        current = getattr(value, f.name)
        if dataclasses.is_dataclass(current):
            current = _convert(current, module)
        elif isinstance(current, tuple) and current and dataclasses.is_dataclass(
                current[0]):
            current = tuple(_convert(v, module) for v in current)
        values[f.name] = current
    return cls(**values)


# --- the table ----------------------------------------------------------------

# Client-facing APIs forwarded as bytes in passthrough mode: their requests and
# responses carry no broker address.  Broker-to-broker and controller APIs,
# share groups, streams groups, telemetry and DescribeQuorum (which lists
# controller addresses) are absent, hence refused.
_FORWARDED = {
    2: "ListOffsets", 8: "OffsetCommit", 9: "OffsetFetch", 11: "JoinGroup",
    12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups",
    16: "ListGroups", 17: "SaslHandshake", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn",
    28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls",
    32: "DescribeConfigs", 33: "AlterConfigs", 34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions",
    42: "DeleteGroups", 43: "ElectLeaders", 44: "IncrementalAlterConfigs",
    45: "AlterPartitionReassignments", 46: "ListPartitionReassignments",
    47: "OffsetDelete", 48: "DescribeClientQuotas", 49: "AlterClientQuotas",
    50: "DescribeUserScramCredentials", 51: "AlterUserScramCredentials",
    61: "DescribeProducers", 65: "DescribeTransactions", 66: "ListTransactions",
    68: "ConsumerGroupHeartbeat", 69: "ConsumerGroupDescribe",
    75: "DescribeTopicPartitions",
}

_REWRITTEN = {
    0: ("Produce", rewrite_node_endpoints, 10, "KIP-951 node_endpoints rewritten"),
    1: ("Fetch", rewrite_node_endpoints, 16, "KIP-951 node_endpoints rewritten"),
    3: ("Metadata", rewrite_metadata, 0,
        "broker addresses rewritten; the gateway's state topics hidden"),
    10: ("FindCoordinator", rewrite_find_coordinator, 0,
         "coordinator addresses rewritten"),
    18: ("ApiVersions", rewrite_api_versions, 0,
         "versions cut to this table and the codec"),
    60: ("DescribeCluster", rewrite_describe_cluster, 0,
         "broker addresses rewritten"),
}


def passes_as_bytes(scan, version, rctx):
    """Fetch and Produce v13+ name topics by id only: unless a decoy id must be
    restored, node_endpoints rewritten or an error message read, the response
    goes back as it came (passthrough mode: any version without them)."""
    if rctx is not None and (version < 13 or rctx.decoy_ids):
        return False
    if rctx is not None and not all(map(rctx.owns_topic_id, scan.topic_ids)):
        return False  # decoded: the walk drops topics that are not the tenant's
    return scan.tags_empty  # before v12 (not flexible) no node_endpoints at all


def _row(api_key, name, rewrite=None, rewrite_from=0, why="forwarded unchanged"):
    low, high = codec_versions(api_key)
    return Rule(api_key, name, low, high, rewrite, rewrite_from, why)


def passthrough_rules():
    """The table for PLAINTEXT passthrough mode: api key -> Rule."""
    table = {key: _row(key, name) for key, name in _FORWARDED.items()}
    for key, (name, fn, since, why) in _REWRITTEN.items():
        table[key] = _row(key, name, fn, since, why)
    table[1] = replace(table[1], scan_response=scan_fetch,
                       passes_as_bytes=passes_as_bytes)
    table[0] = replace(table[0], scan_response=scan_produce_response,
                       passes_as_bytes=passes_as_bytes)
    return dict(sorted(table.items()))


# --- tenant mode ---------------------------------------------------------------
#
# Every row below rewrites names with the schema-driven walker (walker.py):
# requests to physical names with unmappable names and foreign topic ids
# replaced by decoys the broker refuses; responses back to logical names with
# other tenants' entities dropped.  Rows with extra work name it in `why`.
# APIs absent here (ACLs, quotas, SCRAM, reassignments, leader election, log
# dirs, delegation tokens, features, telemetry, share and streams groups,
# broker-to-broker and controller APIs) are refused to tenants.



def _walk_req(conn, rctx, request):
    return walk_request(request, rctx)


def _walk_resp(conn, rctx, response):
    return walk_response(response, rctx)


def _then(first, second):
    def both(conn, rctx, message):
        return second(conn, rctx, first(conn, rctx, message))
    return both


LISTING_MAX_AGE = 2.0
"""Seconds a full topic listing serves tenants' all-topics Metadata requests."""


def _tenant_topics(topology, namespace):
    """The tenant's physical topic names, cached until the topic set changes."""
    key = made_of(topology, namespace)
    cached = getattr(namespace, "_listing", None)
    if cached is None or cached[0] != key:
        names = sorted(n for n in topology.topic_names if namespace.owns(TOPIC, n))
        names += sorted(a.physical for a in namespace.aliases.values()
                        if a.physical not in names)
        cached = namespace._listing = (key, tuple(names))
    return cached[1]


def _produce_response_names(frame, offset, version, scan, rctx):
    """Produce before v13 names topics.  With no decoy in the request and nothing
    but names to change (no node_endpoints, error message or record error), the
    names are swapped by slicing: what the walker would do, without kio's
    decode and re-encode (76 -> 33 us per request and response, in-process, for
    librdkafka's v10).  A name that is not the tenant's: decoded (and dropped)."""
    if version >= 13 or not scan.tags_empty or rctx.decoy_names or rctx.decoy_ids:
        return None
    namespace = rctx.namespace
    return rename_produce_response(frame, offset, version,
                                   lambda name: namespace.logical(TOPIC, name))


def _produce_frame(conn, rctx, frame, body_offset, version):
    """Produce: topics and transactional id renamed by slicing; records untouched
    (acks and the record count, read on the way, are left in the context)."""
    frame, acks, records = rewrite_produce(
        frame, body_offset, version,
        topic_name=lambda name: rctx.to_physical(TOPIC, name),
        topic_id=rctx.check_topic_id,
        transactional_id=lambda txn: rctx.to_physical(TRANSACTION, txn))
    rctx.produced = (acks, records)
    return frame


def _consumer_only(replica):
    """A Fetch as a replica (id >= 0) is a follower broker's: it reads records
    not yet committed and moves the leader's view of that follower.  A tenant's
    is refused (the connection is closed, the reason logged)."""
    if replica >= 0:
        raise Rejected(f"a Fetch as replica {replica} is a broker's request; refused")


def _fetch_sessions(conn, rctx, session_id, epoch, version):
    """Check the fetch session a request names against the connection's own
    (tenancy/sessions.py): 'forward', 'unbind' or 'refuse' (answered here)."""
    if conn.fetch_sessions is None:
        conn.fetch_sessions = FetchSessions()
    rctx.sessions = conn.fetch_sessions
    action = rctx.sessions.check(session_id, epoch)
    if action == "refuse":
        rctx.answer = _fetch_error(version, FETCH_SESSION_ID_NOT_FOUND)
    return action


def _fetch_error(version, code):
    """A Fetch response body with a top-level error and nothing else."""
    module = load_payload_module(1, version, EntityType.response)
    return encode_body(module.FetchResponse(
        throttle_time=_NO_THROTTLE, error_code=ErrorCode(code), session_id=i32(0),
        responses=()))


def _fetch_observe(rctx, scan):
    if rctx is not None and rctx.sessions is not None:
        rctx.sessions.created(scan.session_id)


def _fetch_response(conn, rctx, response):
    """Fetch, decoded: sessions noted, names and ids walked, node_endpoints."""
    if rctx.sessions is not None:
        rctx.sessions.created(getattr(response, "session_id", 0))
    return _node_endpoints(conn, rctx, walk_response(response, rctx))


def _fetch_request(conn, rctx, request):
    """Fetch, decoded (before v13, or when ``_fetch_frame`` declines): the
    session checked, names made physical, topic ids checked by the walker."""
    state = getattr(request, "replica_state", None)
    _consumer_only(request.replica_id if state is None else state.replica_id)
    if request.__version__ >= 7:
        action = _fetch_sessions(conn, rctx, request.session_id,
                                 request.session_epoch, request.__version__)
        if action == "refuse":
            return request
        if action == "unbind":
            request = replace(request, session_id=i32(0))
    return walk_request(request, rctx)


def _fetch_frame(conn, rctx, frame, body_offset, version):
    """Fetch v13+ names topics by id only: each id is checked where it lies, and
    the request goes on as it came (a foreign id swapped in place for a decoy,
    as the walker would).  A consumer's long poll thus costs no decode and
    re-encode.  Before v13 (names): None, so it is decoded and walked."""
    if version < 13:
        return None
    replica, positions = fetch_request_ids(frame, body_offset, version)
    _consumer_only(replica)
    out = None
    session_id, epoch, at = fetch_session(frame, body_offset, version)
    action = _fetch_sessions(conn, rctx, session_id, epoch, version)
    if action == "refuse":
        return frame
    if action == "unbind":
        out = bytearray(frame)
        out[at:at + 4] = bytes(4)
    for at in positions:
        topic_id = uuid.UUID(bytes=bytes(frame[at:at + 16]))
        checked = rctx.check_topic_id(topic_id)
        if checked != topic_id:
            if out is None:
                out = bytearray(frame)
            out[at:at + 16] = checked.bytes
    return frame if out is None else bytes(out)


def _metadata_request(conn, rctx, request):
    """All-topics requests cost O(the tenant's topics): they become a request for
    the tenant's topics by name, from a listing at most LISTING_MAX_AGE old (past
    half that age a new one is fetched in the background); with no fresh
    listing, one all-topics request refreshes it.  Answers are reused for a
    moment (metadata_cache.py)."""
    if request.topics is None:
        topology, namespace, gateway = conn.topology, rctx.namespace, conn.gateway
        now = gateway.reactor.seconds()
        rctx.answer = gateway.metadata_answers.get(topology, namespace, request, now)
        if rctx.answer is not None:
            return request  # answered by the gateway, never forwarded
        rctx.on_answer = gateway.metadata_answers.keeper(topology, namespace, request,
                                                         now)
        rctx.note_concentrated(namespace.concentrated())  # among "all topics"
        if topology.listing_at is not None and now - topology.listing_at < LISTING_MAX_AGE:
            if now - topology.listing_at >= LISTING_MAX_AGE / 2 and \
                    gateway.refresher is not None:
                gateway.refresher.refresh_listing()  # meanwhile, this one serves
            module = load_payload_module(3, request.__version__, EntityType.request)
            fields = module.MetadataRequestTopic.__dataclass_fields__
            names = _tenant_topics(topology, rctx.namespace)
            make = (lambda n: module.MetadataRequestTopic(name=n, topic_id=None)) \
                if "topic_id" in fields else (lambda n: module.MetadataRequestTopic(name=n))
            rctx.custom = "by-name"
            request = replace(request, topics=tuple(make(n) for n in names))
            return replace(request, allow_auto_topic_creation=False) \
                if hasattr(request, "allow_auto_topic_creation") else request
        rctx.custom = "listing"
    request = walk_request(request, rctx)
    if getattr(request, "allow_auto_topic_creation", False):
        request = replace(request, allow_auto_topic_creation=False)
    return request


def _metadata_response(conn, rctx, response):
    if rctx.custom == "listing":
        conn.topology.learn_listing(
            (t.name for t in response.topics if t.name and t.error_code == 0),
            conn.gateway.reactor.seconds())
    elif rctx.custom == "by-name":
        # topics deleted since the listing: forget them, don't show them
        gone = [t for t in response.topics
                if t.error_code == ErrorCode.unknown_topic_or_partition]
        for t in gone:
            conn.topology.learn_topic(t.name, exists=False)
        if gone:
            response = replace(response, topics=tuple(
                t for t in response.topics
                if t.error_code != ErrorCode.unknown_topic_or_partition))
    return rewrite_metadata(conn, rctx, walk_response(response, rctx))


def _describe_topic_partitions_request(conn, rctx, request):
    """KIP-966 pages by cursor through every topic the broker has.  A tenant
    pages only through its own: an all-topics request becomes a request for
    the tenant's topics by name, and its cursor only says where to start in
    that list (a cursor naming a topic that is not the tenant's, or no topic,
    starts at the next of the tenant's names, as a missing topic would)."""
    if request.topics:
        return walk_request(request, rctx)
    namespace, topology, gateway = rctx.namespace, conn.topology, conn.gateway
    if gateway.refresher is not None and (topology.listing_at is None or
            gateway.reactor.seconds() - topology.listing_at >= LISTING_MAX_AGE):
        gateway.refresher.refresh_listing()  # for the next page or request
    names = list(_tenant_topics(topology, namespace))
    cursor = request.cursor
    if cursor is not None:
        try:
            start = namespace.physical(TOPIC, cursor.topic_name)
        except InvalidName:
            start = namespace.prefix + cursor.topic_name
        names = [n for n in names if n >= start]
        if start not in names:
            cursor = None
        else:
            cursor = replace(cursor, topic_name=start)
    if not names:  # no topics at all would mean every topic to the broker
        module = load_payload_module(75, request.__version__, EntityType.response)
        rctx.answer = encode_body(module.DescribeTopicPartitionsResponse(
            throttle_time=_NO_THROTTLE, topics=(), next_cursor=None))
        return request
    rctx.custom = "by-name"
    make = typing.get_args(typing.get_type_hints(type(request))["topics"])[0]
    return replace(request, cursor=cursor, topics=tuple(make(name=n) for n in names))


def _describe_topic_partitions_response(conn, rctx, response):
    if rctx.custom == "by-name":  # topics deleted since the listing
        response = replace(response, topics=tuple(
            t for t in response.topics
            if t.error_code != ErrorCode.unknown_topic_or_partition))
    return walk_response(response, rctx)


def _repartitioned(conn, rctx, response):
    """CreatePartitions: answers that show the old partition count are stale."""
    if any(r.error_code == 0 for r in response.results):
        conn.topology.topics_changed()
    return response


def _offset_fetch_request(conn, rctx, request):
    """Offsets of every topic (null topics) include concentrated topics'."""
    rctx.note_concentrated(rctx.namespace.concentrated())
    return walk_request(request, rctx)


def _create_topics_request(conn, rctx, request):
    """Names a concentration rule matches become concentrated topics (a mapping
    in the shared state), never topics on the cluster; the rest are created."""
    namespace = rctx.namespace
    if not namespace.rules:
        return walk_request(request, rctx)
    from .concentration import create_by_rule

    kept, planned = [], []
    for t in request.topics:
        rule = None if t.name in namespace.aliases else namespace.rule_for(t.name)
        if rule is None:
            kept.append(t)
        else:
            planned.append((t.name, create_by_rule(conn, rctx, rule, t,
                                                   request.validate_only)))
    rctx.custom = planned
    return walk_request(replace(request, topics=tuple(kept)), rctx)


def _create_topics_response(conn, rctx, response):
    for t in response.topics:
        if t.error_code == 0:
            conn.topology.learn_topic(t.name)
    response = walk_response(response, rctx)
    if not rctx.custom:
        return response
    import typing

    from .concentration import synthetic_id

    names = [name for name, _ in rctx.custom]
    result = typing.get_args(typing.get_type_hints(type(response))["topics"])[0]
    fields = result.__dataclass_fields__

    def merge(outcomes):
        extra = []
        for name, (_, (code, message, partitions)) in zip(names, outcomes):
            alias = rctx.namespace.aliases.get(name)
            values = {"name": name, "error_code": ErrorCode(code),
                      "error_message": message, "topic_config_error_code": i16(0),
                      "num_partitions": i32(partitions), "replication_factor": i16(-1),
                      "configs": (), "topic_id": synthetic_id(alias.physical)
                      if code == 0 and alias is not None else ZERO_UUID}
            extra.append(result(**{k: v for k, v in values.items() if k in fields}))
        return replace(response, topics=response.topics + tuple(extra))
    return defer.DeferredList([d for _, d in rctx.custom],
                              fireOnOneErrback=True).addCallback(merge)


_COORDINATOR_KINDS = {0: GROUP, 1: TRANSACTION}


def _find_coordinator_request(conn, rctx, request):
    key_type = getattr(request, "key_type", 0)  # v0 has groups only
    rctx.custom = key_type  # the response's keys are renamed by this kind
    kind = _COORDINATOR_KINDS.get(key_type)

    def physical(key):
        if kind is None:
            return rctx.decoy_name(GROUP, key, "only group and transaction "
                                   "coordinators are available")
        return rctx.to_physical(kind, key)

    if hasattr(request, "coordinator_keys"):
        return replace(request, coordinator_keys=tuple(
            physical(k) for k in request.coordinator_keys))
    return replace(request, key=physical(request.key))


def _find_coordinator_response(conn, rctx, response):
    kind = _COORDINATOR_KINDS.get(rctx.custom, GROUP)
    if hasattr(response, "coordinators"):
        items = []
        for c in response.coordinators:
            found = rctx.refusal(kind, c.key) or rctx.refusal(GROUP, c.key)
            if found is not None:
                items.append(replace(c, key=found.logical, node_id=-1, host="",
                                     port=-1, error_code=ErrorCode.invalid_request,
                                     error_message=found.reason))
            else:
                items.append(replace(c, key=rctx.to_logical(kind, c.key)))
        response = replace(response, coordinators=tuple(items))
    elif rctx.refusals:
        _, found = next(rctx.all_refusals())
        response = replace(response, node_id=-1, host="", port=-1,
                           error_code=ErrorCode.invalid_request,
                           error_message=found.reason)
    return rewrite_find_coordinator(conn, rctx, response)


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


def _configs_request(read_only):
    def rewrite(conn, rctx, request):
        resources = []
        rctx.custom = {}
        for r in request.resources:
            kind = _RESOURCE_KINDS.get(r.resource_type)
            refusal = _NOT_AVAILABLE
            if kind is not None:
                physical = rctx.to_physical(kind, r.resource_name)
                found = rctx.refusal(kind, physical) if kind == GROUP else None
                if found is None:
                    resources.append(replace(r, resource_name=physical))
                    continue
                # A refused group: never on the broker (altering it would make a
                # group config of its own), but the refused-resource path below.
                refusal = (ErrorCode(found.code or ErrorCode.invalid_group_id),
                           found.reason)
            elif read_only and r.resource_type == RESOURCE_BROKER:
                resources.append(r)  # the answer is cut to TENANT_BROKER_CONFIGS
                continue
            # A decoy topic the broker refuses; restored with our error below.
            decoy = rctx.decoy_name(TOPIC, r.resource_name, "")
            rctx.custom[decoy] = (r.resource_type, *refusal)
            resources.append(replace(r, resource_type=RESOURCE_TOPIC,
                                     resource_name=decoy))
        return replace(request, resources=tuple(resources))
    return rewrite


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


def _configs_response(conn, rctx, response):
    field_name = "results" if hasattr(response, "results") else "responses"
    items = []
    for r in getattr(response, field_name):
        refused = rctx.custom.get(r.resource_name)
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


def _unknown_id_created(field, kind):
    """A request for which the broker creates what an unknown *field* names
    (a join, a KIP-848 heartbeat, a new transactional producer): a refused id
    goes as the empty string, which the broker refuses, creating nothing."""
    def rewrite(conn, rctx, request):
        value = getattr(request, field, None)
        if value and rctx.refusal(kind, value) is not None:
            request = replace(request, **{field: rctx.empty_decoy(kind, value)})
        return request
    return rewrite


def _commit_needs_a_group(conn, rctx, request):
    """A simple offset commit (generation -1) creates the group it names; a
    refused group id is sent with generation 0 instead, which the broker
    answers as for a group that does not exist (GROUP_ID_NOT_FOUND or
    ILLEGAL_GENERATION), creating nothing."""
    if rctx.refusal(GROUP, request.group_id) is not None:
        for name in ("generation_id_or_member_epoch", "generation_id"):
            if getattr(request, name, 0) < 0:
                request = replace(request, **{name: i32(0)})
    return request


def _heartbeat_request(conn, rctx, request):
    """KIP-848: names walked; a regex subscription is matched by the gateway
    over the tenant's logical topic names (tenancy/patterns.py) and the broker
    gets the exact alternation of the matching physical names, kept current
    at each heartbeat."""
    request = _unknown_id_created("group_id", GROUP)(
        conn, rctx, walk_request(request, rctx))
    if not hasattr(request, "subscribed_topic_regex"):  # v0: no regex
        return request
    subscriptions = conn.gateway.regex_subscriptions
    key = (rctx.namespace.name, request.group_id, request.member_id)
    if request.member_epoch < 0:  # leaving
        subscriptions.forget(key)
        return request
    regex = request.subscribed_topic_regex
    if regex is not None:
        if regex == "":
            subscriptions.forget(key)
            return request
        subscriptions.subscribe(key, regex)
    topology, namespace = conn.topology, rctx.namespace
    found = subscriptions.broker_regex(
        key, made_of(topology, namespace), lambda: _logical_topics(topology, namespace))
    if found is not None and (regex is not None or found[1]):
        request = replace(request, subscribed_topic_regex=found[0])
    return request


IDS_REFRESH_INTERVAL = 1.0
"""Seconds between listings asked for because a response named unknown ids."""


def _topic_ids_in(value, found):
    """Every topic id in a decoded message (nested entities included)."""
    import dataclasses
    for f in dataclasses.fields(value):
        current = getattr(value, f.name)
        if f.name == "topic_id" and isinstance(current, uuid.UUID):
            found.add(current)
        elif dataclasses.is_dataclass(current):
            _topic_ids_in(current, found)
        elif isinstance(current, tuple) and current and dataclasses.is_dataclass(
                current[0]):
            for v in current:
                _topic_ids_in(v, found)
    return found


def _ids_known_first(rewrite):
    """KIP-848 assignments name topics by id only.  An id the gateway has not
    learnt yet (a topic created through another gateway, or directly, since
    its last listing) would be dropped as not the tenant's, and the member
    would wait for the gateway's next refresh (30 s) to be assigned it: the
    gateway asks for a listing first (at most one a second), then rewrites."""
    def first(conn, rctx, response):
        ids = _topic_ids_in(response, set())
        ids.discard(ZERO_UUID)
        refresher, topology = conn.gateway.refresher, conn.topology
        now = conn.gateway.reactor.seconds()
        if refresher is None or all(i in rctx.topic_ids for i in ids) or (
                topology.listing_at is not None
                and now - topology.listing_at < IDS_REFRESH_INTERVAL):
            return rewrite(conn, rctx, response)
        return refresher.refresh().addCallback(
            lambda _: rewrite(conn, rctx, response))
    return first


def _logical_topics(topology, namespace):
    """The tenant's topics: logical name -> physical name."""
    names = {}
    for physical in _tenant_topics(topology, namespace):
        logical = namespace.logical(TOPIC, physical)
        if logical is not None:
            names[logical] = physical
    return names


def _group_describe_response(conn, rctx, response):
    """Members' regexes shown as the client sent them (or, for a member this
    gateway does not know, the logical names our alternation holds)."""
    response = walk_response(response, rctx)
    subscriptions, namespace = conn.gateway.regex_subscriptions, rctx.namespace

    def shown(group, member):
        regex = member.subscribed_topic_regex
        if not regex:
            return regex
        original = subscriptions.pattern((namespace.name, group, member.member_id))
        if original is not None:
            return original
        names = names_of(regex)
        if names is None:
            return None
        logical = [n for n in map(lambda p: namespace.logical(TOPIC, p), names) if n]
        return alternation(logical)

    groups = []
    for g in response.groups:
        physical = rctx.to_physical(GROUP, g.group_id) if g.group_id else ""
        members = tuple(replace(m, subscribed_topic_regex=shown(physical, m))
                        for m in g.members)
        groups.append(replace(g, members=members))
    return replace(response, groups=tuple(groups))


def _list_transactions_request(conn, rctx, request):
    """The id pattern is applied by the gateway (RE2, linear time) to the
    tenant's logical ids; the broker lists without it."""
    rctx.custom = getattr(request, "transactional_id_pattern", None)
    if rctx.custom is not None:
        request = replace(request, transactional_id_pattern=None)
    return request


def _list_transactions_response(conn, rctx, response):
    response = walk_response(response, rctx)
    if rctx.custom:
        try:
            kept = set(fullmatch(rctx.custom, [t.transactional_id
                                               for t in response.transaction_states]))
        except InvalidPattern:
            return replace(response, error_code=ErrorCode.invalid_regular_expression,
                           transaction_states=())
        response = replace(response, transaction_states=tuple(
            t for t in response.transaction_states if t.transactional_id in kept))
    return response


_WALKED = {
    2: "ListOffsets", 8: "OffsetCommit", 9: "OffsetFetch", 11: "JoinGroup",
    12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups",
    16: "ListGroups", 19: "CreateTopics", 21: "DeleteRecords",
    22: "InitProducerId", 23: "OffsetForLeaderEpoch", 24: "AddPartitionsToTxn",
    25: "AddOffsetsToTxn", 26: "EndTxn", 28: "TxnOffsetCommit",
    37: "CreatePartitions", 42: "DeleteGroups", 47: "OffsetDelete",
    61: "DescribeProducers", 65: "DescribeTransactions",
    75: "DescribeTopicPartitions",
}


def tenant_rules():
    """The table for virtual clusters: api key -> Rule (request and response rewrites)."""
    table = {key: _row(key, name, _walk_resp, 0, "names rewritten, others' dropped")
             for key, name in _WALKED.items()}
    for key in _WALKED:
        table[key] = replace(table[key], rewrite_request=_walk_req)

    def row(key, name, request, response, why, since=0):
        low, high = codec_versions(key)
        table[key] = Rule(key, name, low, high, response, since, why, request)

    row(0, "Produce", _walk_req, _then(_walk_resp, _node_endpoints),
        "names and topic ids rewritten by slicing (records untouched); KIP-951 "
        "node_endpoints rewritten; v13+ responses forwarded as bytes, older ones "
        "renamed by slicing, unless something else in them must change")
    table[0] = replace(table[0], rewrite_frame=_produce_frame,
                       scan_response=scan_produce_response,
                       passes_as_bytes=passes_as_bytes,
                       rename_response=_produce_response_names)
    row(1, "Fetch", _fetch_request, _fetch_response,
        "names (v<=12) and topic ids (v13+) checked and rewritten (v13+ requests "
        "by slicing: ids checked in place); fetch sessions bound to the "
        "connection that made them (others: FETCH_SESSION_ID_NOT_FOUND, or a "
        "full fetch without the session); fetches as a replica refused; "
        "node_endpoints; v13+ responses forwarded as bytes when every topic id "
        "in them is the tenant's and nothing else must change")
    table[1] = replace(table[1], rewrite_frame=_fetch_frame, scan_response=scan_fetch,
                       passes_as_bytes=passes_as_bytes, observe=_fetch_observe)
    row(3, "Metadata", _metadata_request, _metadata_response,
        "names and ids rewritten, other tenants' topics dropped, no auto-create, "
        "broker addresses rewritten; all-topics requests ask for the tenant's "
        "topics by name (listing at most 2 s old); their answers reused for up to "
        "--metadata-cache seconds")
    row(9, "OffsetFetch", _offset_fetch_request, _walk_resp,
        "names rewritten, others' dropped; concentrated topics' offsets split by "
        "logical topic")
    row(19, "CreateTopics", _create_topics_request, _create_topics_response,
        "names rewritten (invalid or colliding names refused); creations learnt; "
        "names a concentration rule matches become concentrated topics")
    row(10, "FindCoordinator", _find_coordinator_request, _find_coordinator_response,
        "group and transaction keys rewritten (others refused); addresses rewritten")
    row(18, "ApiVersions", None, rewrite_api_versions,
        "versions cut to this table; SASL answered by the gateway")
    row(32, "DescribeConfigs", _configs_request(True), _configs_response,
        "topic and group resources renamed; brokers read-only and cut to an "
        "allow-list (no listeners, addresses, paths, voters, secrets); others "
        "(BROKER_LOGGER, ...) refused")
    row(33, "AlterConfigs", _configs_request(False), _configs_response,
        "topic and group resources renamed; other resources refused")
    row(44, "IncrementalAlterConfigs", _configs_request(False), _configs_response,
        "topic and group resources renamed; other resources refused")
    row(75, "DescribeTopicPartitions", _describe_topic_partitions_request,
        _describe_topic_partitions_response,
        "names rewritten; paging (the cursor) only through the tenant's own "
        "topics: an all-topics request asks for them by name")
    row(60, "DescribeCluster", None, rewrite_describe_cluster,
        "broker addresses rewritten")
    row(66, "ListTransactions", _list_transactions_request, _list_transactions_response,
        "other tenants' ids dropped; the id pattern applied by the gateway (RE2)")
    row(68, "ConsumerGroupHeartbeat", _heartbeat_request,
        _ids_known_first(_walk_resp),
        "names rewritten; a regex subscription matched by the gateway (RE2) over "
        "the tenant's topics and sent as the exact alternation of their physical "
        "names, kept current; assignments by topic id checked (unknown ids: a "
        "listing first)")
    row(69, "ConsumerGroupDescribe", _walk_req,
        _ids_known_first(_group_describe_response),
        "names and ids rewritten, the regex shown as the client sent it")
    row(11, "JoinGroup", _then(_cp.join_group_request,
                               _unknown_id_created("group_id", GROUP)),
        _then(_walk_resp, _cp.join_group_response),
        "names rewritten; \"consumer\" protocol subscriptions (read by the broker) "
        "made physical, the leader's copies logical (others' topics dropped); "
        "unreadable ones or foreign names refused: INCONSISTENT_GROUP_PROTOCOL")
    row(14, "SyncGroup", _cp.sync_group_request,
        _then(_walk_resp, _cp.sync_group_response),
        "names rewritten; assignments the broker could read as the consumer "
        "protocol made physical, the member's logical (others' topics dropped); "
        "unreadable \"consumer\" ones or foreign names refused: "
        "INCONSISTENT_GROUP_PROTOCOL")
    table[15] = replace(table[15], rewrite_response=_then(
        _walk_resp, _cp.describe_groups_response), why="names rewritten, others' "
        "dropped; \"consumer\" members' subscriptions and assignments made logical")
    row(20, "DeleteTopics", _delete_topics_request, _delete_topics_response,
        "names and ids rewritten; deleting an alias removes the mapping, never "
        "the shared topic")
    table[37] = replace(table[37], rewrite_response=_then(_walk_resp, _repartitioned))
    table[22] = replace(table[22], rewrite_request=_then(
        _walk_req, _unknown_id_created("transactional_id", TRANSACTION)))
    for key in (8, 28):  # OffsetCommit, TxnOffsetCommit
        table[key] = replace(table[key], rewrite_request=_then(
            _walk_req, _commit_needs_a_group))
    for key in (0, 20, 21, 33, 37, 44):  # these change topics
        table[key] = replace(table[key], write=True)
    for key, (low, high) in SASL_VERSIONS.items():
        name = "SaslHandshake" if key == SASL_HANDSHAKE else "SaslAuthenticate"
        table[key] = Rule(key, name, low, high, None, 0,
                          "answered by the gateway (PLAIN with a vkafka token)",
                          None, True)
    from .fields import classified  # versions with an unclassified field: not offered
    return classified(dict(sorted(table.items())))


def _delete_topics_request(conn, rctx, request):
    """DeleteTopics of an alias removes the mapping; the physical topic stays."""
    namespace = rctx.namespace
    removed = []

    def alias_of(name, topic_id):
        if name is not None:
            alias = namespace.aliases.get(name)
        else:
            physical = rctx.topic_ids.get(topic_id)
            alias = physical and namespace.alias_for_physical(physical)
        if alias is None or alias.read_only:
            return None  # read-only aliases are refused by the walker (write=True)
        removed.append((name, topic_id, alias))
        return alias

    if hasattr(request, "topics"):
        kept = tuple(t for t in request.topics if alias_of(t.name, t.topic_id) is None)
        request = replace(request, topics=kept)
    else:
        kept = tuple(n for n in request.topic_names if alias_of(n, None) is None)
        request = replace(request, topic_names=kept)
    rctx.custom = removed
    for _, _, alias in removed:
        conn.gateway.forget_alias(namespace, alias.logical)
    return walk_request(request, rctx)


def _delete_topics_response(conn, rctx, response):
    for t in response.responses:
        if t.error_code == 0 and t.name:
            conn.topology.learn_topic(t.name, exists=False)
    response = walk_response(response, rctx)
    if not rctx.custom:
        return response

    module = load_payload_module(20, response.__version__, EntityType.response)
    result = module.DeletableTopicResult
    extra = []
    for name, topic_id, alias in rctx.custom:
        fields = {"name": name or alias.logical, "error_code": ErrorCode.none}
        if "topic_id" in result.__dataclass_fields__:
            fields["topic_id"] = topic_id or uuid.UUID(int=0)
        if "error_message" in result.__dataclass_fields__:
            fields["error_message"] = None
        extra.append(result(**fields))
    return replace(response, responses=response.responses + tuple(extra))


def _node_endpoints(conn, rctx, response):
    """KIP-951 addresses, in the versions that carry them."""
    if hasattr(response, "node_endpoints"):
        return rewrite_node_endpoints(conn, rctx, response)
    return response


def markdown_table():
    """docs/api-rules.md, generated from the tables above so it cannot drift."""
    from kio.schema.index import api_key_map

    passthrough, tenant = passthrough_rules(), tenant_rules()
    lines = [
        "# What vkafka does to each Kafka API",
        "",
        "Generated by `python -m vkafka.tenancy.rules` from `vkafka/tenancy/rules.py`;",
        "a test fails if this file and the code disagree. An API that is not offered",
        "is removed from ApiVersions and, if sent anyway, closes the connection.",
        "",
        "| key | API | passthrough (PLAINTEXT) | virtual cluster (SASL_PLAINTEXT) |",
        "|---:|---|---|---|",
    ]
    for key in sorted(api_key_map):
        name = "".join(p.capitalize() for p in api_key_map[key].split("_"))

        def cell(rule):
            if rule is None:
                return "refused"
            return f"v{rule.min_version}-{rule.max_version}: {rule.why}"
        lines.append(f"| {key} | {name} | {cell(passthrough.get(key))} | "
                     f"{cell(tenant.get(key))} |")
    from .fields import markdown  # then each tenant API's fields and their classes
    return "\n".join(lines) + "\n" + markdown()


if __name__ == "__main__":
    print(markdown_table(), end="")
