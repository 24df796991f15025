# -*- test-case-name: tests.test_concentration -*-
"""Committed offsets of concentrated topics.  The broker keeps a group's
offsets per physical partition, shared by every logical topic in it, so a
commit carries its logical topic in its metadata (``MARKER``) and OffsetFetch
splits the answer by it.  Offsets known to hold none of a topic's records
(gaps, learnt from fetches) let a commit skip them, so lag reads 0."""

import dataclasses

from .shared import ident, synthetic_id, with_group_topics

MARKER = "\x00vkafka:"


def commit_partition(services, virtual, index, partition):
    """OffsetCommit: *partition*'s commit marked as *virtual*'s, its offset
    moved past a gap."""
    offset = partition.committed_offset
    return dataclasses.replace(
        partition,
        committed_offset=type(offset)(committed_offset(services, virtual, index, offset)),
        committed_metadata=MARKER + virtual + "\x00" + (partition.committed_metadata or ""))


def committed_offset(services, virtual, partition, offset):
    """A commit inside a range with none of the topic's records moves to its
    end: a consumer that read everything (librdkafka commits the offset after
    the last record it was given) then shows lag 0."""
    gap = services.concentration_gaps.get((virtual, partition))
    if gap is not None and gap[0] <= offset < gap[1]:
        return gap[1]
    return offset


def learn_gap(services, key, gap):
    """Remember, per logical topic partition, the latest offset range known to
    hold none of its records (the log never changes below its end)."""
    gaps = services.concentration_gaps
    old = gaps.get(key)
    if old is not None and gap[0] <= old[1] and gap[1] >= old[0]:
        gap = (min(gap[0], old[0]), max(gap[1], old[1]))
    if old is None or gap[1] >= old[1]:
        gaps[key] = gap


def offset_fetch_response(services, rctx, exchange, response):
    """OffsetFetch: each group's physical topics split into logical ones."""
    def split(topics):
        return _offset_topics(exchange, rctx.concentrated, services.topology.topic_ids,
                              topics)
    return with_group_topics(response, split)


def _offset_topics(exchange, concentrated, topic_ids, topics):
    """Committed offsets of a physical topic, split by the logical topic named in
    their metadata (if it is still concentrated in that topic); offsets without
    one go to the logical topic asked for."""
    out = []
    for topic in topics:
        field, value = ident(topic)
        physical = topic_ids.get(value) if field == "topic_id" else value
        requested = exchange.by_physical.get(value, [])
        for virtual, partitions in _by_committer(topic, physical, requested,
                                                 concentrated).items():
            if virtual is None:
                if not requested:
                    out.append(dataclasses.replace(topic, partitions=tuple(partitions)))
                continue
            new = synthetic_id(virtual) if field == "topic_id" else virtual
            out.append(dataclasses.replace(topic, **{field: new,
                                                     "partitions": tuple(partitions)}))
    return tuple(out)


def _by_committer(topic, physical, requested, concentrated):
    """*topic*'s partitions by the logical topic that committed them, their
    marker removed: virtual name (None: no marker and not one logical topic
    asked for) -> [partition].  A commit of a logical topic no longer
    concentrated in *physical* was another mapping's: left out."""
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
    return groups
