# -*- test-case-name: tests.test_concentration -*-
"""The response side: each physical topic in an answer given back as the
logical topics the request asked for (from the request's Exchange), with
their own partitions and synthetic ids; Fetch records untagged and other
topics' batches emptied; OffsetFetch split by commit (offsets.py)."""

import dataclasses

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64

from .offsets import learn_gap, offset_fetch_response
from .records import untag_records
from .shared import Exchange, ident, synthetic_id

_RESPONSE_LISTS = {0: "responses", 1: "responses", 2: "topics", 3: "topics",
                   8: "topics"}


def rewrite_response(services, rctx, api_key, response):
    """*response* with each physical topic the request concentrated answered
    as its logical topics."""
    exchange = rctx.concentration or Exchange()  # a fetch session's later answers
    if api_key == 32:
        return dataclasses.replace(response, results=tuple(
            _describe_configs_result(exchange, r) for r in response.results))
    if api_key == 9:
        return offset_fetch_response(services, rctx, exchange, response)
    field = _RESPONSE_LISTS[api_key]
    answered_for = _answered_for(services, exchange, api_key)
    out = []
    for topic in getattr(response, field):
        kind, value = ident(topic)
        users = answered_for.get(value)
        if not users:
            out.append(topic)
            continue
        out.extend(_response_topic(services, exchange, api_key, topic, kind, virtual,
                                   alias) for virtual, alias in users)
    return dataclasses.replace(response, **{field: tuple(out)})


def _answered_for(services, exchange, api_key):
    """Physical topic (name or id) -> [(virtual, alias)] it answers for.
    Fetch sessions answer for partitions of earlier requests: remember which
    logical topic each physical one was fetched for, per connection."""
    if api_key != 1:
        return exchange.by_physical
    sessions = services.concentrated_fetches
    if sessions is None:
        sessions = services.concentrated_fetches = {}
    for physical, users in exchange.by_physical.items():
        sessions[physical] = users[0]
    return {**{physical: [user] for physical, user in sessions.items()},
            **exchange.by_physical}


def _response_topic(services, exchange, api_key, topic, kind, virtual, alias):
    """*topic* of the answer as logical topic *virtual*."""
    if kind == "topic_id":
        new = synthetic_id(virtual)
        services.topology.topic_ids[new] = virtual
    else:
        new = virtual
    changes = {kind: new}
    if api_key == 3:
        if hasattr(topic, "topic_id"):  # Metadata v10+: before it, names only
            changes["topic_id"] = synthetic_id(virtual)
            services.topology.topic_ids[changes["topic_id"]] = virtual
        changes["partitions"] = tuple(p for p in topic.partitions
                                      if p.partition_index < alias.partitions)
    elif api_key == 1:
        changes["partitions"] = tuple(_fetched_partition(services, virtual, p)
                                      for p in topic.partitions)
    elif api_key == 2 and exchange.by_time:
        changes["partitions"] = tuple(
            _not_searchable(p) if (virtual, p.partition_index) in exchange.by_time
            else p for p in topic.partitions)
    return dataclasses.replace(topic, **changes)


def _not_searchable(partition):
    """A ListOffsets partition asked by time: not answered (the broker's answer
    was for LATEST).  Clients read this code as "no offset for that time"
    (the Java consumer's offsetsForTimes gives null), as from a broker whose
    log has no timestamps to search."""
    changes = {"error_code": ErrorCode.unsupported_for_message_format, "timestamp": i64(-1),
               "offset": i64(-1)}
    if hasattr(partition, "leader_epoch"):
        changes["leader_epoch"] = i32(-1)
    return dataclasses.replace(partition, **changes)


def _fetched_partition(services, virtual, partition):
    """A fetched partition with only *virtual*'s records, and the offsets
    known to hold none of them remembered for its commits."""
    if not partition.records:
        return partition
    records, gap = untag_records(partition.records, virtual)
    if gap is not None:
        learn_gap(services, (virtual, partition.partition_index), gap)
    return dataclasses.replace(partition, records=records)


def _describe_configs_result(exchange, result):
    """DescribeConfigs: the physical topic's configuration under the logical name."""
    users = exchange.by_physical.get(result.resource_name) if \
        result.resource_type == 2 else None
    if not users:
        return result
    return dataclasses.replace(result, resource_name=users[0][0])
