# -*- test-case-name: tests.test_concentration -*-
"""The request side: a concentrated topic's virtual name (or synthetic id)
swapped for its physical topic, with what the response will need noted in
an Exchange (rctx.concentration).  Produce records are tagged here and
OffsetCommit commits marked; any API with no rule here is refused."""

import dataclasses

from kio.static.primitive import i64

from .offsets import commit_partition
from .records import MAX_RECORDS, record_count, tag_records
from .refusal import refuse
from .shared import (MESSAGE_TOO_LARGE, UNKNOWN_TOPIC_ID, UNKNOWN_TOPIC_OR_PARTITION,
                     Exchange, Refused, ident, with_group_topics)

SUPPORTED = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata",
             8: "OffsetCommit", 9: "OffsetFetch", 32: "DescribeConfigs"}
_LISTS = {0: ("topic_data",), 1: ("topics", "forgotten_topics_data"), 2: ("topics",),
          3: ("topics",), 8: ("topics",)}
_PARTITION = ("index", "partition", "partition_index")


def rewrite_request(services, rctx, api_key, request):
    """*request* with concentrated topics swapped for their physical topic;
    in APIs this layer has no rule for, they become decoys the broker refuses
    and the client gets a Kafka error saying why (fail closed)."""
    if api_key not in SUPPORTED:
        return refuse(rctx, api_key, request)
    exchange = rctx.concentration = Exchange()
    if api_key == 32:
        return _describe_configs_request(rctx, exchange, request)
    if api_key == 9:
        return _offset_fetch_request(services, rctx, exchange, request)
    if api_key == 3 and request.topics is None:  # all topics: each is in its target
        for virtual, alias in rctx.concentrated.items():
            exchange.use(alias.target, virtual, alias)
    changes = {}
    for field in _LISTS[api_key]:
        items = getattr(request, field, None)
        if items is not None:
            changes[field] = tuple(_request_topic(services, rctx, exchange, api_key, t)
                                   for t in items)
            if api_key == 3:
                changes[field] = _unique(changes[field])
    return dataclasses.replace(request, **changes)


def _unique(topics):
    """Metadata and OffsetFetch: logical topics of one physical topic asked
    together are one physical topic asked once (the response is split again)."""
    seen, out = set(), []
    for t in topics:
        key = ident(t)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return tuple(out)


def _alias_for(rctx, field, value):
    """(virtual name, Alias or None) of a topic named by *field*."""
    if field == "topic_id":
        virtual = rctx.topic_ids.get(value)
    else:
        virtual = value
    return virtual, rctx.concentrated.get(virtual)


def _physical_id(topic_ids, physical):
    """The broker's id of *physical*: a request by id must carry the real one."""
    for topic_id, name in topic_ids.items():
        if name == physical:
            return topic_id
    raise Refused(f"topic id of {physical!r} not known yet", UNKNOWN_TOPIC_ID)


def _request_topic(services, rctx, exchange, api_key, topic):
    """One topic entry of a request: a concentrated one names its physical
    topic instead, and its partitions are checked and rewritten."""
    field, value = ident(topic)
    virtual, alias = _alias_for(rctx, field, value)
    if alias is None:
        return topic
    physical = alias.target
    new = (_physical_id(services.topology.topic_ids, physical) if field == "topic_id"
           else physical)
    users = exchange.use(new, virtual, alias)
    if len(users) > 1 and api_key != 3:  # the answer could not be told apart
        raise Refused(f"{' and '.join(a.logical for _, a in users)} share a physical "
                      f"topic and cannot go in one request")
    changes = {field: new}
    changes.update(_request_partitions(services, exchange, api_key, virtual, alias,
                                       topic))
    return dataclasses.replace(topic, **changes)


def _request_partitions(services, exchange, api_key, virtual, alias, topic):
    """The changed partition list of a topic entry (a dict to merge), or {}."""
    partitions = getattr(topic, "partitions", None) or getattr(topic, "partition_data",
                                                                None)
    if not partitions:
        return {}
    field = "partitions" if hasattr(topic, "partitions") else "partition_data"
    return {field: tuple(_request_partition(services, exchange, api_key, virtual,
                                            alias, p) for p in partitions)}


SHARED_POSITIONS = (-1, -2)
"""ListOffsets LATEST and EARLIEST: the physical partition's ends, which every
logical topic in it shares (docs/concentration.md)."""


def _request_partition(services, exchange, api_key, virtual, alias, partition):
    """One partition of a concentrated topic: refused past the logical topic's
    partition count; Produce records tagged, OffsetCommit commits marked;
    a ListOffsets by time (or for the largest timestamp, or a tier's end)
    asks for LATEST instead and is answered UNSUPPORTED_FOR_MESSAGE_FORMAT
    (responses.py): the broker would find another logical topic's record and
    give away its offset and timestamp."""
    index = partition if isinstance(partition, int) else next(
        getattr(partition, n) for n in _PARTITION if hasattr(partition, n))
    if not 0 <= index < alias.partitions:
        raise Refused(f"{alias.logical!r} has {alias.partitions} partitions, "
                      f"not partition {index}", UNKNOWN_TOPIC_OR_PARTITION)
    if api_key == 0:
        exchange.records += record_count(partition.records or b"")
        if exchange.records > MAX_RECORDS:
            raise Refused(f"a produce of more than {MAX_RECORDS} records to "
                          "concentrated topics (each is rewritten on the event loop)",
                          MESSAGE_TOO_LARGE)
        return dataclasses.replace(partition, records=tag_records(
            partition.records, virtual, index, exchange))
    if api_key == 8:
        return commit_partition(services, virtual, index, partition)
    if api_key == 2 and partition.timestamp not in SHARED_POSITIONS:
        exchange.by_time.add((virtual, index))
        return dataclasses.replace(partition, timestamp=i64(-1))
    return partition


def _describe_configs_request(rctx, exchange, request):
    """DescribeConfigs: a concentrated topic's configuration is its physical
    topic's, so that is what is asked for."""
    resources = []
    for r in request.resources:
        alias = rctx.concentrated.get(r.resource_name) if r.resource_type == 2 else None
        if alias is not None:
            exchange.use(alias.target, r.resource_name, alias)
            r = dataclasses.replace(r, resource_name=alias.target)
        resources.append(r)
    return dataclasses.replace(request, resources=tuple(resources))


def _offset_fetch_request(services, rctx, exchange, request):
    """OffsetFetch: the physical topics of each group's topics, each asked once."""
    def topics(items):
        if items is None:
            return None
        return _unique(tuple(_request_topic(services, rctx, exchange, 3, t)
                             for t in items))
    return with_group_topics(request, topics)
