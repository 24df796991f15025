# -*- test-case-name: tests.test_concentration -*-
"""Concentrated topics: many logical topics stored in one physical topic.

The tenant layer sees a concentrated topic under a *virtual* physical name
(the prefix rule's name, never created on the cluster; see naming.Alias).
This layer, applied after the tenant rewrite of a request and before the
tenant rewrite of its response, swaps that virtual name (and its synthetic
topic id) for the real topic, and:

- Produce: tags every record with the virtual name (header ``vkafka.topic``)
  and prefixes its key with it (so compaction keeps logical topics apart);
  producer ids are cleared (one broker-side sequence per physical partition
  cannot serve several logical topics), so retries are at-least-once.
- Fetch: keeps the batches of the fetched logical topic, untagged; every
  other batch becomes an empty batch over the same offsets, which clients
  step over as they do over a compacted batch.
- Metadata: the logical topic gets its own partition count (at most the
  physical one's) and a synthetic topic id.
- OffsetCommit/OffsetFetch: the committed metadata carries the virtual name,
  so a group's offsets come back under the right logical topic.

Offsets are the physical topic's (increasing, with gaps where other logical
topics' records are); see docs/concentration.md for exactly what holds.
Any other API that names a concentrated topic is refused (fail closed).
"""

import dataclasses
import struct
import uuid

from twisted.internet import defer

from ..protocol import batches
from ..state.model import StateError
from ..state.store import StoreUnavailable
from . import walker
from .walker import Rejected
from .naming import TOPIC

TAG = b"vkafka.topic"
PARTITION_TAG = b"vkafka.partition"
MARKER = "\x00vkafka:"
_SYNTHETIC = uuid.UUID("6b61666b-612d-7669-7274-75616c746f70")  # uuid5 namespace
_IDENT = ("name", "topic", "topic_id")
_PARTITION = ("index", "partition", "partition_index")
SUPPORTED = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata",
             8: "OffsetCommit", 9: "OffsetFetch", 32: "DescribeConfigs"}
_LISTS = {0: ("topic_data",), 1: ("topics", "forgotten_topics_data"), 2: ("topics",),
          3: ("topics",), 8: ("topics",)}
_RESPONSE_LISTS = {0: "responses", 1: "responses", 2: "topics", 3: "topics",
                   8: "topics"}


class Refused(Rejected, ValueError):
    """A request this layer will not send on a concentrated topic's behalf."""


def synthetic_id(virtual):
    """The topic id a concentrated logical topic is known by (stable everywhere)."""
    return uuid.uuid5(_SYNTHETIC, virtual)


def _ident(entity):
    """(field, value) naming the topic of *entity*: its name, else its id."""
    found = None, None
    for name in _IDENT:
        if hasattr(entity, name):
            value = getattr(entity, name)
            if value is not None:
                return name, value
            found = found if found[0] else (name, None)
    return found


def _physical_id(topic_ids, physical):
    for topic_id, name in topic_ids.items():
        if name == physical:
            return topic_id
    raise Refused(f"topic id of {physical!r} not known yet")


class Exchange:
    """What one request's concentration rewrite leaves for its response."""

    __slots__ = ("by_physical", "partitions")

    def __init__(self):
        self.by_physical = {}  # physical name or id -> [(virtual, alias)]
        self.partitions = {}   # (virtual, partition) -> requested


# --- requests -------------------------------------------------------------------

def rewrite_request(conn, rctx, api_key, request):
    """*request* with concentrated topics swapped for their physical topic;
    in APIs this layer has no rule for, they become decoys the broker refuses
    and the client gets a Kafka error saying why (fail closed)."""
    if api_key not in SUPPORTED:
        return _refuse(rctx, api_key, request)
    exchange = rctx.concentration = Exchange()
    if api_key == 32:
        return _describe_configs_request(rctx, exchange, request)
    if api_key == 9:
        return _offset_fetch_request(conn, rctx, exchange, request)
    if api_key == 3 and request.topics is None:  # all topics: each is in its target
        for virtual, alias in rctx.concentrated.items():
            exchange.by_physical.setdefault(alias.target, []).append((virtual, alias))
    changes = {}
    for field in _LISTS[api_key]:
        items = getattr(request, field, None)
        if items is not None:
            changes[field] = tuple(_request_topic(conn, rctx, exchange, api_key, t)
                                   for t in items)
            if api_key == 3:
                changes[field] = _unique(changes[field])
    return dataclasses.replace(request, **changes)


INVALID_CONFIG, INVALID_REQUEST, TOPIC_ALREADY_EXISTS = 40, 42, 36
INVALID_PARTITIONS, REQUEST_TIMED_OUT = 37, 7
_REFUSALS = {
    19: ("{} is a concentrated topic: it exists", TOPIC_ALREADY_EXISTS),
    33: ("{}'s configuration is its physical topic's (concentrated): not "
         "changeable per logical topic", INVALID_CONFIG),
    44: ("{}'s configuration is its physical topic's (concentrated): not "
         "changeable per logical topic", INVALID_CONFIG),
}


class _Refuser:
    """A walker context that turns concentrated names and ids into decoys."""

    def __init__(self, rctx, api_key):
        self.rctx = rctx
        self.reason, self.code = _REFUSALS.get(api_key, (
            f"{{}} is a concentrated topic: API {api_key} is not available on it",
            INVALID_REQUEST))

    def _why(self, alias):
        return self.reason.format(repr(alias.logical))

    def to_physical(self, kind, name):
        alias = self.rctx.concentrated.get(name) if kind == TOPIC else None
        if alias is None:
            return name
        return self.rctx.decoy_name(TOPIC, alias.logical, self._why(alias), self.code)

    def check_topic_id(self, topic_id):
        alias = self.rctx.concentrated.get(self.rctx.topic_ids.get(topic_id))
        if alias is None:
            return topic_id
        decoy = uuid.uuid4()
        self.rctx.decoy_ids[decoy] = (topic_id, self._why(alias), self.code)
        self.rctx.refusals += 1
        return decoy


def _refuse(rctx, api_key, request):
    refuser = _Refuser(rctx, api_key)
    if api_key in (33, 44):  # config resources name topics as plain strings
        return dataclasses.replace(request, resources=tuple(
            dataclasses.replace(r, resource_name=refuser.to_physical(
                TOPIC, r.resource_name)) if r.resource_type == 2 else r
            for r in request.resources))
    return walker.rewrite_request(request, refuser)


def _unique(topics):
    seen, out = set(), []
    for t in topics:
        key = _ident(t)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return tuple(out)


def _alias_for(rctx, field, value):
    if field == "topic_id":
        virtual = rctx.topic_ids.get(value)
    else:
        virtual = value
    return virtual, rctx.concentrated.get(virtual)


def _request_topic(conn, rctx, exchange, api_key, topic):
    topic_ids = conn.topology.topic_ids
    field, value = _ident(topic)
    virtual, alias = _alias_for(rctx, field, value)
    if alias is None:
        return topic
    physical = alias.target
    new = _physical_id(topic_ids, physical) if field == "topic_id" else physical
    users = exchange.by_physical.setdefault(new, [])
    if (virtual, alias) not in users:
        users.append((virtual, alias))
    if len(users) > 1 and api_key != 3:
        raise Refused(f"{' and '.join(a.logical for _, a in users)} share a physical "
                      f"topic and cannot go in one request")
    changes = {field: new}
    partitions = getattr(topic, "partitions", None) or getattr(topic, "partition_data",
                                                                None)
    if partitions:
        kept = []
        for p in partitions:
            index = p if isinstance(p, int) else next(
                getattr(p, n) for n in _PARTITION if hasattr(p, n))
            if not 0 <= index < alias.partitions:
                raise Refused(f"{alias.logical!r} has {alias.partitions} partitions, "
                              f"not partition {index}")
            if api_key == 0:
                p = dataclasses.replace(p, records=tag_records(p.records, virtual, index))
            elif api_key == 8:
                p = dataclasses.replace(
                    p, committed_offset=type(p.committed_offset)(committed_offset(
                        conn, virtual, index, p.committed_offset)),
                    committed_metadata=MARKER + virtual + "\x00"
                    + (p.committed_metadata or ""))
            kept.append(p)
        changes["partitions" if hasattr(topic, "partitions") else "partition_data"] = \
            tuple(kept)
    return dataclasses.replace(topic, **changes)


def _describe_configs_request(rctx, exchange, request):
    resources = []
    for r in request.resources:
        alias = rctx.concentrated.get(r.resource_name) if r.resource_type == 2 else None
        if alias is not None:
            exchange.by_physical.setdefault(alias.target, []).append(
                (r.resource_name, alias))
            r = dataclasses.replace(r, resource_name=alias.target)
        resources.append(r)
    return dataclasses.replace(request, resources=tuple(resources))


def _offset_fetch_request(conn, rctx, exchange, request):
    def topics(items):
        if items is None:
            return None
        return _unique(tuple(_request_topic(conn, rctx, exchange, 3, t)
                             for t in items))
    if hasattr(request, "groups"):
        return dataclasses.replace(request, groups=tuple(
            dataclasses.replace(g, topics=topics(g.topics)) for g in request.groups))
    return dataclasses.replace(request, topics=topics(request.topics))


def tag_records(records, virtual, partition):
    """Produce: every record tagged with its logical topic, keys prefixed."""
    if not records:
        return records
    found, end = batches.whole_batches(records, 0, len(records))
    if end != len(records):
        raise Refused("a produce request with a partial record batch")
    tag, prefix = virtual.encode(), virtual.encode() + b"\x00"
    out = []
    for offset, size in found:
        batch = batches.decode(records, offset, size)
        if batch.attributes & batches.TRANSACTIONAL or batch.is_control:
            raise Refused("transactions are not available on concentrated topics")
        batch.fields[9:12] = [-1, -1, -1]  # producer id, epoch, base sequence
        for r in batch.records:
            r.headers.append((TAG, tag))
            r.headers.append((PARTITION_TAG, str(partition).encode()))
            if r.key is not None:
                r.key = prefix + r.key
        out.append(batches.encode(batch))
    return b"".join(out)


# --- concentration rules: CreateTopics ----------------------------------------

def create_by_rule(conn, rctx, rule, topic, validate_only):
    """A CreateTopics entry a concentration rule matches: a concentrated mapping
    in the shared state instead of a topic.  Fires with (error code, message,
    partitions).  Only cleanup.policy can be set: it picks the physical topic;
    every other key would apply to the whole physical topic, so it is refused."""
    configs = {c.name: c.value for c in topic.configs or ()}
    others = sorted(set(configs) - {"cleanup.policy"})
    if others:
        return defer.succeed((INVALID_CONFIG, f"only cleanup.policy can be set on a "
                              f"concentrated topic (rule {rule.name!r}), not "
                              f"{', '.join(others)}", -1))
    policy = configs.get("cleanup.policy")
    target = rule.target(policy)
    if target is None:
        return defer.succeed((INVALID_CONFIG, f"concentration rule {rule.name!r} has "
                              f"no physical topic for cleanup.policy="
                              f"{policy or 'delete'}", -1))
    partitions = topic.num_partitions if topic.num_partitions > 0 else None
    state = conn.gateway.state

    @defer.inlineCallbacks
    def run():
        try:
            if validate_only:
                count = (yield state.topic_exists(target)) if state.topic_exists else 0
                if partitions and count and partitions > count:
                    return (INVALID_PARTITIONS, f"at most the {count} partitions of "
                            f"{target!r}", -1)
                return 0, None, partitions or count or -1
            value = yield state.put_mapping(rctx.namespace.name, topic.name, {
                "physicalTopicName": target, "readOnly": False, "concentrated": True,
                **({"partitions": partitions} if partitions else {})})
            return 0, None, value.get("partitions", -1)
        except StateError as e:
            code = {400: INVALID_PARTITIONS, 409: TOPIC_ALREADY_EXISTS}.get(
                e.status, INVALID_REQUEST)
            return code, e.message, -1
        except StoreUnavailable as e:
            return REQUEST_TIMED_OUT, f"cannot record the topic: {e}", -1
    return run()


# --- responses ------------------------------------------------------------------

def rewrite_response(conn, rctx, api_key, response):
    exchange = rctx.concentration or Exchange()  # a fetch session's later answers
    if api_key == 32:
        return dataclasses.replace(response, results=tuple(
            _describe_configs_result(exchange, r) for r in response.results))
    if api_key == 9:
        return _offset_fetch_response(conn, rctx, exchange, response)
    field = _RESPONSE_LISTS[api_key]
    sessions = _fetch_sessions(conn) if api_key == 1 else None
    if sessions is not None:
        for physical, users in exchange.by_physical.items():
            sessions[physical] = users[0]
    out = []
    for topic in getattr(response, field):
        ident, value = _ident(topic)
        users = exchange.by_physical.get(value)
        if users is None and sessions is not None:
            users = [sessions[value]] if value in sessions else None
        if not users:
            out.append(topic)
            continue
        for virtual, alias in users:
            out.append(_response_topic(conn, api_key, topic, ident, virtual, alias))
    return dataclasses.replace(response, **{field: tuple(out)})


def _fetch_sessions(conn):
    """Fetch sessions answer for partitions of earlier requests: remember which
    logical topic each physical one was fetched for, per connection."""
    sessions = getattr(conn, "concentrated_fetches", None)
    if sessions is None:
        sessions = conn.concentrated_fetches = {}
    return sessions


def _response_topic(conn, api_key, topic, ident, virtual, alias):
    if ident == "topic_id":
        new = synthetic_id(virtual)
        conn.topology.topic_ids[new] = virtual
    else:
        new = virtual
    changes = {ident: new}
    if api_key == 3:
        changes["topic_id"] = synthetic_id(virtual)
        conn.topology.topic_ids[changes["topic_id"]] = virtual
        changes["partitions"] = tuple(p for p in topic.partitions
                                      if p.partition_index < alias.partitions)
    elif api_key == 1:
        partitions = []
        for p in topic.partitions:
            if p.records:
                records, gap = untag_records(p.records, virtual)
                if gap is not None:
                    _learn_gap(conn, (virtual, p.partition_index), gap)
                p = dataclasses.replace(p, records=records)
            partitions.append(p)
        changes["partitions"] = tuple(partitions)
    return dataclasses.replace(topic, **changes)


def untag_records(records, virtual):
    """Fetch: the logical topic's batches untagged; others emptied.  Returns
    (records, gap): gap is the offset range (start, end) after the topic's last
    batch here that holds none of its records, or None."""
    found, end = batches.whole_batches(records, 0, len(records))
    tag, prefix = virtual.encode(), virtual.encode() + b"\x00"
    out = []
    gap_start = gap_end = None
    for offset, size in found:
        base, attributes, last_delta = (struct.unpack_from(">q", records, offset)[0],
                                        *struct.unpack_from(">hi", records, offset + 21))
        gap_end = base + last_delta + 1
        if gap_start is None:
            gap_start = base  # until a batch of the topic says otherwise
        if attributes & batches.CONTROL:
            out.append(bytes(records[offset:offset + size]))
            continue
        try:
            batch = batches.decode(records, offset, size)
        except batches.BatchError:
            batch = None  # not written through a gateway: nobody's logical topic
        first = batch.records[0] if batch is not None and batch.records else None
        if first is None or (TAG, tag) not in first.headers:
            out.append(batches.emptied(records, offset))
            continue
        for r in batch.records:
            r.headers = [(k, v) for k, v in r.headers if k not in (TAG, PARTITION_TAG)]
            if r.key is not None and r.key.startswith(prefix):
                r.key = r.key[len(prefix):]
        out.append(batches.encode(batch))
        gap_start = gap_end
    out.append(bytes(records[end:]))  # a partial last batch: the client refetches
    gap = (gap_start, gap_end) if gap_start is not None and gap_start < gap_end else None
    return b"".join(out), gap


def _learn_gap(conn, key, gap):
    """Remember, per logical topic partition, the latest offset range known to
    hold none of its records (the log never changes below its end)."""
    gaps = conn.gateway.concentration_gaps
    old = gaps.get(key)
    if old is not None and gap[0] <= old[1] and gap[1] >= old[0]:
        gap = (min(gap[0], old[0]), max(gap[1], old[1]))
    if old is None or gap[1] >= old[1]:
        gaps[key] = gap


def committed_offset(conn, virtual, partition, offset):
    """A commit inside a range with none of the topic's records moves to its
    end: a consumer that read everything (librdkafka commits the offset after
    the last record it was given) then shows lag 0."""
    gap = conn.gateway.concentration_gaps.get((virtual, partition))
    if gap is not None and gap[0] <= offset < gap[1]:
        return gap[1]
    return offset


def _describe_configs_result(exchange, result):
    users = exchange.by_physical.get(result.resource_name) if \
        result.resource_type == 2 else None
    if not users:
        return result
    return dataclasses.replace(result, resource_name=users[0][0])


def _offset_fetch_response(conn, rctx, exchange, response):
    def split(topics):
        return _offset_topics(exchange, rctx.concentrated, conn.topology.topic_ids,
                              topics)
    if hasattr(response, "groups"):
        return dataclasses.replace(response, groups=tuple(
            dataclasses.replace(g, topics=split(g.topics)) for g in response.groups))
    return dataclasses.replace(response, topics=split(response.topics))


def _offset_topics(exchange, concentrated, topic_ids, topics):
    """Committed offsets of a physical topic, split by the logical topic named in
    their metadata (if it is still concentrated in that topic); offsets without
    one go to the logical topic asked for."""
    out = []
    for topic in topics:
        ident, value = _ident(topic)
        physical = topic_ids.get(value) if ident == "topic_id" else value
        requested = exchange.by_physical.get(value, [])
        groups = {}
        for p in topic.partitions:
            metadata = p.metadata or ""
            virtual = None
            if metadata.startswith(MARKER):
                virtual, _, rest = metadata[len(MARKER):].partition("\x00")
                p = dataclasses.replace(p, metadata=rest)
                alias = concentrated.get(virtual)
                if alias is None or alias.target != physical:
                    continue  # committed when the mapping was another one
            elif len(requested) == 1:
                virtual = requested[0][0]
            groups.setdefault(virtual, []).append(p)
        for virtual, partitions in groups.items():
            if virtual is None:
                if not requested:
                    out.append(dataclasses.replace(topic, partitions=tuple(partitions)))
                continue
            new = synthetic_id(virtual) if ident == "topic_id" else virtual
            out.append(dataclasses.replace(topic, **{ident: new,
                                                     "partitions": tuple(partitions)}))
    return tuple(out)
