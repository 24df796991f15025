# -*- test-case-name: tests.test_fastpath -*-
"""A cheap structural scan that lets big responses pass as bytes.

A Fetch response is mostly record batches.  When nothing in it needs
rewriting, the gateway must not decode and re-encode it; this scan walks
its structure by lengths alone (no copy) to find out, and on the way reads
what metrics want: the first error code and the number of records.  A large
Fetch response, checked chunk by chunk as it is forwarded, is scanned by
fetch_stream.FetchStream instead (the same answers).
"""

import struct
from typing import NamedTuple

from .framing import Malformed
from .headers import (
    MAX_ENTRIES, read_length, read_string, read_uvarint, skip_string, skip_tagged_fields,
    walkable, write_string, write_uvarint)
from .records import count_records
from .tags import exact, exact_tags, request_tags

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I16_I32 = struct.Struct(">hi")
_I32_I32 = struct.Struct(">ii")


class Scan(NamedTuple):
    """What a scan found (a tuple: one is made for every answer the gateway
    forwards as bytes, and a frozen dataclass's making was ten Python-level
    attribute sets)."""

    error: int
    """The first non-zero error code (top level, then partitions in order), or 0."""
    records: int
    """Records in the whole record batches (a partial last batch is not counted)."""
    tags_empty: bool
    """No top-level tagged fields: the only one is KIP-951's ``node_endpoints``,
    sent when a partition's leader moved (always True before v12)."""
    tags_at: int = -1
    """Where the top-level tagged fields start (flexible versions; else -1)."""
    session_id: int = 0
    """Fetch (v7+): the fetch session the broker made or kept for this
    connection; connection-bound state (tenancy/sessions.py)."""
    topic_ids: tuple = ()
    """Fetch v13+: the 16-byte topic ids the response carries, so a response
    forwarded as bytes is still checked for topics that are not the tenant's."""
    names: tuple = ()
    """Produce and Fetch before v13: where each topic's name field is, (start,
    end) in order, so renaming it (``rename_fields``) walks nothing again."""


def scan_fetch(frame, offset, version):
    """Scan a Fetch response (v4 to v18) whose body starts at *offset*.

    Raises ValueError or struct.error if the response is truncated or has
    bytes after its end, so a malformed response never passes as bytes.
    """
    flexible = version >= 12
    pos = offset + 4  # throttle_time
    error = session = 0
    if version >= 7:
        error, session = _I16_I32.unpack_from(frame, pos)
        pos += 2 + 4  # error_code, session_id
    records = 0
    ids, names = [], []
    topics, pos = read_length(frame, pos, flexible)
    for _ in range(max(topics, 0)):
        if version >= 13:
            ids.append(bytes(frame[pos:pos + 16]))
            pos += 16
        else:
            start, pos = pos, skip_string(frame, pos, flexible)
            names.append((start, pos))
        partitions, pos = read_length(frame, pos, flexible)
        for _ in range(max(partitions, 0)):
            if not error:
                (error,) = _I16.unpack_from(frame, pos + 4)
            pos, found = _fetch_partition(frame, pos, version, flexible)
            records += found
        if flexible:
            pos = skip_tagged_fields(frame, pos)
    scan = _end(frame, pos, flexible, error, records, "fetch")
    if session or ids or names:
        scan = scan._replace(session_id=session, topic_ids=tuple(ids), names=names)
    return scan


def _fetch_partition(frame, pos, version, flexible):
    """(the position after one partition of a Fetch response, its records)."""
    # index, error, high watermark, last stable offset, log start offset
    pos += 4 + 2 + 8 + 8 + (8 if version >= 5 else 0)
    aborted, pos = read_length(frame, pos, flexible)
    if flexible:
        for _ in range(max(aborted, 0)):
            pos = skip_tagged_fields(frame, pos + 16)
    else:
        pos += 16 * max(aborted, 0)
    if version >= 11:
        pos += 4  # preferred_read_replica
    records = 0
    length, pos = read_length(frame, pos, flexible)
    if length > 0:  # the records, untouched
        if pos + length > len(frame):
            raise Malformed("truncated fetch response")
        records = count_records(frame, pos, pos + length)
        pos += length
    if flexible:
        pos = skip_tagged_fields(frame, pos)
    return pos, records


def scan_produce_response(frame, offset, version):
    """Scan a Produce response (v3 to v13) whose body starts at *offset*.

    Here ``tags_empty`` means "nothing the tenant rewrite would touch besides
    names": no ``node_endpoints`` and no error message or record error, whose
    text could name physical topics (such a response is decoded, so the scan
    stops there).  Before v13 the scan notes where the names are.  Raises
    like ``scan_fetch``.
    """
    error, clean, names, tags_at, tags_empty = walk_response(frame, offset, version)
    if not clean:
        return Scan(error, 0, False)
    return Scan(error, 0, tags_empty, tags_at, names=tuple(names))


def walk_response_py(frame, offset, version):
    """``(first error, clean, [(start, end) of each topic name field], where the
    top-level tags start or -1, no top-level tags)`` of a Produce response
    (``scan_produce_response``); not clean: the walk stopped at a record error
    or a message.  The reference for ``_walk.produce_response`` (the same walk
    compiled), and what runs where that is not built."""
    flexible = version >= 9
    error = 0
    names = []
    topics, pos = read_length(frame, offset, flexible)
    for _ in range(max(topics, 0)):
        if version >= 13:
            pos += 16
        else:
            start, pos = pos, skip_string(frame, pos, flexible)
            names.append((start, pos))
        pos, first, clean = _produce_partitions(frame, pos, version, flexible)
        error = error or first
        if not clean:
            return error, False, names, -1, False
    pos += 4  # throttle time
    scan = _end(frame, pos, flexible, error, 0, "produce")
    return error, True, names, scan.tags_at, scan.tags_empty


def produce_response_end(frame, offset, version):
    """Where a Produce response's throttle_time_ms is: after its topics,
    whatever their partitions hold (record errors, messages)."""
    flexible = version >= 9
    topics, pos = read_length(frame, offset, flexible)
    for _ in range(max(topics, 0)):
        pos = pos + 16 if version >= 13 else skip_string(frame, pos, flexible)
        partitions, pos = _partition_count(frame, pos, version, flexible)
        for _ in range(partitions):
            pos += 4 + 2 + 8 + 8 + (8 if version >= 5 else 0)
            if version >= 8:
                pos = _skip_record_errors(frame, pos, flexible)
            if flexible:
                pos = skip_tagged_fields(frame, pos)
        if flexible:
            pos = skip_tagged_fields(frame, pos)
    return pos


def _partition_count(frame, pos, version, flexible):
    """(partitions, position after the count) of a topic in a Produce response.
    A count the bytes left cannot hold raises: before v8 a partition is fixed
    fields the walk steps over without reading, so a count of 2**31 would
    otherwise be a loop of 2**31 steps (found by the fuzzer)."""
    partitions, pos = read_length(frame, pos, flexible)
    if partitions * (30 if version >= 5 else 22) > len(frame) - pos:
        raise Malformed(f"produce response: {partitions} partitions in "
                        f"{len(frame) - pos} bytes")
    return max(partitions, 0), pos


def _skip_record_errors(frame, pos, flexible):
    """A Produce partition's record errors and error message (v8+)."""
    errors, pos = read_length(frame, pos, flexible)
    for _ in range(max(errors, 0)):
        pos = skip_string(frame, pos + 4, flexible)  # batch index, message
        if flexible:
            pos = skip_tagged_fields(frame, pos)
    return skip_string(frame, pos, flexible)


def rename_produce_response(frame, offset, version, logical):
    """A Produce response before v13 (topics by name) with each name replaced by
    ``logical(name)``, by slicing: the partitions are copied as they are.  None
    if *logical* gives None for a name (the decoding rewrite then drops that
    topic).  Only for a response whose scan found nothing else to rewrite
    (``scan_produce_response(...).tags_empty``): kio's decode and re-encode cost
    ~50 us, and librdkafka, kafka-python and aiokafka produce before v13."""
    flexible = version >= 9
    scan = scan_produce_response(frame, offset, version)

    def field(raw):
        name, _ = read_string(raw, 0, flexible)
        new = None if name is None else logical(name)
        return None if new is None else write_string(new, flexible)
    return rename_fields(frame, scan.names, field)


def rename_fields(frame, spans, field):
    """*frame* with each field at *spans* ((start, end), in order) replaced by
    ``field(its bytes)`` (a bytes copy, which *field* may hash: never a view,
    whose hash would read the whole buffer under it), the rest copied as it
    is; None as soon as *field* gives None."""
    pieces, copied = [], 0
    for start, end in spans:
        new = field(bytes(frame[start:end]))
        if new is None:
            return None
        pieces += (frame[copied:start], new)
        copied = end
    pieces.append(frame[copied:])
    return b"".join(pieces)


def _produce_partitions(frame, pos, version, flexible):
    """One topic's partitions in a Produce response: (position after them, their
    first error code, clean).  Not clean: a record error or an error message
    (the walk stops there).  In flexible versions the usual partition (no
    record error, no message, no tagged field) is read as three literal bytes:
    this runs for every partition of every Produce answer."""
    error = 0
    end = len(frame)
    partitions, pos = _partition_count(frame, pos, version, flexible)
    for _ in range(partitions):
        if not error:
            (error,) = _I16.unpack_from(frame, pos + 4)
        # index, error, base offset, log append time, log start offset
        pos += 4 + 2 + 8 + 8 + (8 if version >= 5 else 0)
        if flexible and version >= 8 and pos + 3 <= end and frame[pos] == 1 \
                and frame[pos + 1] == 0 and frame[pos + 2] == 0:
            pos += 3  # no record errors, a null message, no tagged fields
            continue
        if version >= 8:
            record_errors, pos = read_length(frame, pos, flexible)
            if pos >= end:
                raise Malformed("truncated produce response")
            null_message = frame[pos] == 0 if flexible else \
                _I16.unpack_from(frame, pos)[0] == -1
            if record_errors > 0 or not null_message:
                return pos, error, False
            pos += 1 if flexible else 2
        if flexible:
            pos = skip_tagged_fields(frame, pos)  # current_leader: ids only
    if flexible:
        pos = skip_tagged_fields(frame, pos)
    return pos, error, True


def fetch_request_ids(frame, offset, version):
    """Where a Fetch request v13+ (topics by id) whose body starts at *offset*
    names topics: (its replica id, the positions of its 16-byte topic ids, in
    ``topics`` then ``forgotten_topics_data``, the partitions it names in
    both).  Walked by lengths: a consumer's long poll is checked without
    kio's decode and re-encode, the gateway's costliest step per Fetch
    request.  Raises ValueError or struct.error if the request is truncated
    or has bytes after its end."""
    if version < 13:
        raise Malformed(f"fetch request v{version} names topics by name")
    pos, end, ids = offset, len(frame), []
    replica, named = -1, 0
    if version <= 14:
        (replica,) = _I32.unpack_from(frame, pos)
        pos += 4
    pos += 4 + 4 + 4 + 1 + 4 + 4  # max wait, min/max bytes, isolation, session
    # Each entity's tags as a broker reads them (tags.py): a known one must fill
    # the size it declares, or the broker reads past it what this walk skipped.
    top_tags, topic_tags, partition_tags, forgotten_tags = request_tags(
        "fetch", version, "FetchRequest", "FetchTopic", "FetchPartition",
        "ForgottenTopic")
    topics, pos = _count(frame, pos)
    budget = walkable(MAX_ENTRIES, topics, "fetch")
    seen = set() if topics > 1 else None  # rules/keys.ACROSS: never twice
    for _ in range(topics):
        ids.append(pos)
        topic_id = bytes(frame[pos:pos + 16])
        partitions, pos = _count(frame, pos + 16)
        budget = walkable(budget, partitions, "fetch")
        named += partitions
        if partitions > 1 and seen is None:
            seen = set()
        for _ in range(partitions):
            if seen is not None:
                key = (topic_id, _I32.unpack_from(frame, pos)[0])
                if key in seen:
                    raise Malformed("fetch request: a partition named twice")
                seen.add(key)
            # partition, leader epoch, offset, last epoch, log start, max bytes
            pos += 32
            pos = pos + 1 if pos < end and frame[pos] == 0 else \
                exact_tags(frame, pos, partition_tags)
        pos = exact_tags(frame, pos, topic_tags)
    forgotten, pos = _count(frame, pos)
    budget = walkable(budget, forgotten, "fetch")
    for _ in range(forgotten):
        ids.append(pos)
        partitions, pos = _count(frame, pos + 16)
        named += partitions
        pos = exact_tags(frame, pos + 4 * partitions, forgotten_tags)
    pos = skip_string(frame, pos, True)  # rack id
    count, pos = read_uvarint(frame, pos)
    for _ in range(count):  # top-level tags: replica_state is tag 1 from v15
        tag, pos = read_uvarint(frame, pos)
        size, pos = read_uvarint(frame, pos)
        exact(frame, tag, pos, size, top_tags)
        if tag == 1 and version >= 15:
            (replica,) = _I32.unpack_from(frame, pos)
        pos += size
    if pos != end:
        raise Malformed("fetch request: truncated or bytes after its end")
    return replica, ids, named


def fetch_session(frame, offset, version):
    """(session id, session epoch, position of the id) of a Fetch request v7+
    whose body starts at *offset* (KIP-227): read in place, so the gateway can
    check the session is this connection's without decoding the request."""
    if version < 7:
        return 0, -1, -1
    pos = offset + (4 if version <= 14 else 0)  # replica id, until v15
    pos += 4 + 4 + 4 + 1  # max wait, min bytes, max bytes, isolation level
    session, epoch = _I32_I32.unpack_from(frame, pos)
    return session, epoch, pos


def fetch_request_walk(frame, offset, version):
    """(replica, topic id positions, partitions named, session id, session
    epoch, position of the session id): ``fetch_request_ids`` and
    ``fetch_session`` of a Fetch request v13+ in one.  A request as consumers
    send them (no tagged field, no partition named twice, at most 256
    partitions) is walked compiled (``_walk.fetch_request``: in Python these
    walks were a quarter of a consumer's Fetch request in the gateway); any
    other, malformed ones included, here, raising what these raise."""
    if plain_fetch_request is not None:
        walked = plain_fetch_request(frame, offset, version)
        if walked is not None:
            return walked
    replica, ids, named = fetch_request_ids(frame, offset, version)
    return (replica, ids, named, *fetch_session(frame, offset, version))


def _count(frame, pos):
    """A compact array's length and the position after it; null (not allowed
    here) raises.  Every entry is read past, so a length larger than the bytes
    left raises at the first read beyond them: no long walk."""
    count, pos = read_length(frame, pos, True)
    if count < 0:
        raise Malformed("fetch request: null array")
    return count, pos


def _end(frame, pos, flexible, error, records, api):
    """The Scan of a response whose last field ends at *pos*: only its top-level
    tagged fields may follow (flexible versions), and nothing after them."""
    if not flexible:
        if pos != len(frame):
            raise Malformed(f"{api} response: {len(frame) - pos} bytes unaccounted for")
        return Scan(error, records, True)
    if skip_tagged_fields(frame, pos) != len(frame):
        raise Malformed(f"{api} response: bytes after its tagged fields")
    return Scan(error, records, frame[pos] == 0, pos)


try:  # the same walks compiled (setup.py); tests/test_walk.py runs both
    from ._walk import fetch_request as plain_fetch_request
    from ._walk import produce_response as walk_response
except ImportError:  # no C compiler where this was installed
    walk_response, plain_fetch_request = walk_response_py, None


UNUSED_TAGS = (127, 16383)
"""Top-level tags no Fetch version the gateway offers defines (1- and 2-byte)."""


def neutral_tags(length):
    """A top-level tagged-field section of exactly *length* bytes (at least 3)
    holding one field with an unused tag, which clients skip: it stands in for
    fields the gateway cannot rewrite in place without changing the frame's size
    (``node_endpoints`` of a response already partly forwarded)."""
    for tag in UNUSED_TAGS:
        tag_bytes = write_uvarint(tag)
        for width in (1, 2, 3):
            size = length - 1 - len(tag_bytes) - width
            if size >= 0 and len(write_uvarint(size)) == width:
                return b"\x01" + tag_bytes + write_uvarint(size) + bytes(size)
    raise Malformed(f"no tagged-field section of {length} bytes")
