# -*- test-case-name: tests.test_produce_slicing -*-
"""Walk a Produce request by lengths: rename by slicing, read acks and records.

Record batches are most of a Produce request and must reach the broker
untouched; decoding them into objects and encoding them again (what a
generic codec does) costs two copies and an object per partition.  This
walks the request by lengths and rebuilds only the small parts that change.
"""

import struct
import uuid

from .headers import (
    MAX_ENTRIES, HeaderError, read_length, read_string, request_body_offset, skip_string,
    skip_tagged_fields, walkable, write_string)
from .batches import (
    COMPRESSION_MASK, HEADER, TRANSACTIONAL, BatchError, inflated_size)
from .records import walk_batches

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def rewrite_produce(frame, body_offset, version, topic_name=None, topic_id=None,
                    transactional_id=None, topic_field=None, known_ids=(),
                    producer=None, compressed=None, transactional=None,
                    partitions=None):
    """``(frame, acks, records)``: the request frame with names rewritten, record
    bytes copied as they are; and the request's acks and record count, from the
    same walk.

    *topic_name*, *topic_id* and *transactional_id* map the client's value to the
    value to send (v13+ names topics by id); None leaves that field as it is,
    unread.  *topic_field*, instead of *topic_name*, maps a topic name field's
    bytes as they came (length prefix included; a bytes copy, as the 16 bytes
    matched against *known_ids*: hashing a memoryview hashes the whole buffer
    under it, every byte of the read) to the field to send, or None
    to keep it: a caller that remembers its answers then reads no name; and
    topic ids whose 16 bytes are in *known_ids* are kept as they are, unread.  When
    they change nothing (v13+, the tenant's own topic ids, no transactional id
    or one that maps to itself) the request is returned as it came: the walk
    only notes what changes, and the frame is cut and joined only if something
    does, so the common case allocates nothing per topic or partition.
    *producer* is called with the batches' producer id, if any carries one
    (-2: two batches carry different ones); *compressed* with the ``(start,
    end)`` of each compressed batch, if there are any (before any name is
    decided); *transactional* with what ``transactional_partitions`` reads,
    if any partition's first batch is transactional; *partitions* with the
    number of partitions the request names (one named twice counts twice).
    """
    flexible = version >= 9
    if topic_field is None and topic_name is not None:
        topic_field = name_field(topic_name, flexible)
    acks, records, txn_end, fields, end, producer_id, packed, firsts, named = walk_request(
        frame, body_offset, flexible, version >= 13)
    if partitions is not None:
        partitions(named)
    if producer is not None and producer_id != -1:
        producer(producer_id)
    if compressed is not None and packed is not None:
        compressed(packed)
    if transactional is not None and firsts is not None:
        transactional(firsts)
    if len(fields) > MAX_TOPICS:
        raise HeaderError(f"produce request: {len(fields)} topics, over {MAX_TOPICS}")
    edits = []  # (start, end, bytes to put there), in order
    if transactional_id is not None:
        txn, _ = read_string(frame, body_offset, flexible)
        if txn is not None:
            field = write_string(transactional_id(txn), flexible)
            if field != frame[body_offset:txn_end]:
                edits.append((body_offset, txn_end, field))
    seen = set()  # a topic named twice: a broker hashes them (rules/keys.py)
    if version >= 13 and topic_id is not None:
        for start, stop in fields:
            raw_id = bytes(frame[start:stop])
            if raw_id in seen:
                raise HeaderError("produce request: a topic named twice")
            seen.add(raw_id)
            if raw_id not in known_ids:
                given = uuid.UUID(bytes=raw_id)
                sent = topic_id(given)
                if sent != given:
                    edits.append((start, stop, sent.bytes))
    elif version < 13 and topic_field is not None:
        for start, stop in fields:
            raw = bytes(frame[start:stop])
            if raw in seen:
                raise HeaderError("produce request: a topic named twice")
            seen.add(raw)
            field = topic_field(raw)
            if field is not None:
                edits.append((start, stop, field))
    if end < len(frame):  # dropped, as decoding would: nothing unread goes on
        edits.append((end, len(frame), b""))
    if not edits:
        return frame, acks, records
    pieces, copied = [], 0
    for start, stop, field in edits:
        pieces += (frame[copied:start], field)
        copied = stop
    pieces.append(frame[copied:])
    return b"".join(pieces), acks, records


MAX_TOPICS = 10_000
"""Topics one Produce may name.  Each is renamed in Python, here and in its
answer (~10 us a topic both ways): 49,000 empty ones in a 724 KB request held
the event loop for a second.  A producer names the topics it has batches for
on one broker; 10,000 in one request is far past any client's."""


def walk_request_py(frame, pos, flexible, by_id):
    """``(acks, records, end of the transactional id, [(start, end) of each
    topic's name or id field], end of the request, producer id, [(start, end)
    of each compressed batch] or None, [((start, end) of the topic's field,
    partition index, start of the batch) of each partition whose first batch
    is transactional] or None, partitions named in all)`` of a Produce
    request whose body starts at *pos*, walked by lengths; raises on
    truncation.  The producer id is its batches' (``_noted``: -1 none, -2
    several).  The reference for ``_walk.produce_request`` (the same walk
    compiled), and what runs where that is not built."""
    pos = skip_string(frame, pos, flexible)
    txn_end = pos
    (acks,) = _I16.unpack_from(frame, pos)
    topics, pos = read_length(frame, pos + 6, flexible)  # after acks, timeout
    budget = walkable(MAX_ENTRIES, topics, "produce")
    records = 0
    fields = []
    noted = [-1, None, None]
    for _ in range(max(topics, 0)):
        start = pos
        if by_id:
            if pos + 16 > len(frame):
                raise HeaderError("truncated topic id")
            pos += 16
        else:
            pos = skip_string(frame, pos, flexible)
            if pos > len(frame):
                raise HeaderError("truncated topic name")
        fields.append((start, pos))
        pos, count, budget = _partitions(frame, pos, flexible, budget, noted,
                                         field=(start, pos))
        records += count
    if flexible:
        pos = skip_tagged_fields(frame, pos)
    if pos > len(frame):
        raise HeaderError("truncated produce request")
    named = MAX_ENTRIES - budget - max(topics, 0)
    return acks, records, txn_end, fields, pos, noted[0], noted[1], noted[2], named


_I64 = struct.Struct(">q")


def _noted(frame, pos, end, limit, noted):
    """Note in ``noted[0]`` the producer id of the whole batches in [pos, end)
    that end by *limit* (those ``walk_batches`` counts): -1 while none
    carries one, the id while all that do carry the same, -2 once two
    differ; append the (start, end) of those compressed to ``noted[1]`` (a
    list made at the first)."""
    while end - pos >= 61:
        length = _I32.unpack_from(frame, pos + 8)[0]
        after = pos + 12 + length
        if length < 49 or after > limit or frame[pos + 16] != 2:
            return
        found = _I64.unpack_from(frame, pos + 43)[0]
        if found >= 0 and noted[0] != found:
            noted[0] = found if noted[0] == -1 else -2
        if frame[pos + 22] & 7:  # the attributes' codec
            if noted[1] is None:
                noted[1] = []
            noted[1].append((pos, after))
        pos = after


def rewrite_records(frame, body_offset, version, chosen, change):
    """The Produce request *frame* with ``change(records)`` (bytes of the same
    size: the length prefix stays) put in place of the records of every
    partition of each topic whose name or id field (its bytes, length prefix
    included) ``chosen`` takes; the rest as it came.  Walked in Python: only
    requests naming such a topic come here."""
    pieces, copied, picked = [], 0, {}
    for field, _, at, stop in record_regions(frame, body_offset, version):
        if field not in picked:
            picked[field] = chosen(bytes(frame[field[0]:field[1]]))
        if picked[field] and stop > at:
            pieces += (frame[copied:at], change(bytes(frame[at:stop])))
            copied = stop
    if not pieces:
        return frame
    pieces.append(frame[copied:])
    return b"".join(pieces)


def record_regions(frame, body_offset, version):
    """``((start, end) of the topic's name or id field, partition index,
    start, end)`` of each partition's records in a Produce request, walked
    in Python."""
    flexible = version >= 9
    pos = skip_string(frame, body_offset, flexible) + 6  # acks, timeout
    topics, pos = read_length(frame, pos, flexible)
    walkable(MAX_ENTRIES, topics, "produce")
    for _ in range(max(topics, 0)):
        start = pos
        pos = pos + 16 if version >= 13 else skip_string(frame, pos, flexible)
        if pos > len(frame):
            raise HeaderError("truncated topic name")
        field = (start, pos)
        if flexible:
            partitions, pos = read_length(frame, pos, True)
        else:
            (partitions,), pos = _I32.unpack_from(frame, pos), pos + 4
        walkable(MAX_ENTRIES, partitions, "produce")
        for _ in range(max(partitions, 0)):
            (index,), pos = _I32.unpack_from(frame, pos), pos + 4
            if flexible:
                size, at = read_length(frame, pos, True)
            else:
                (size,), at = _I32.unpack_from(frame, pos), pos + 4
            stop = at + max(size, 0)
            if stop > len(frame):
                raise HeaderError("truncated records")
            yield field, index, at, stop
            pos = skip_tagged_fields(frame, stop) if flexible else stop
        if flexible:
            pos = skip_tagged_fields(frame, pos)


def inflated(frame, spans, limit):
    """Bytes the compressed batches of a Produce request (their ``(start,
    end)`` in *frame*, as its walk found them) inflate to in all, counted to
    at most *limit* (``batches.inflated_size``), or the BatchError that
    stopped the count.  Pure: it runs in the codec thread."""
    total = 0
    view = memoryview(frame)
    try:
        for start, end in spans:
            if end - start > HEADER.size:
                total += inflated_size(frame[start + 22] & COMPRESSION_MASK,
                                       view[start + HEADER.size:end], limit - total)
    except BatchError as e:
        return e
    return total


def transactional_partitions(frame, firsts):
    """``(producer id, producer epoch, (topic field bytes, partition index))``
    of each partition of a Produce request whose first batch is
    transactional (a transaction's partitions: KIP-890's transactions add
    them by producing), from what its walk noted (*firsts*)."""
    for start, end, index, at in firsts:
        producer, epoch = _PRODUCER.unpack_from(frame, at + 43)
        yield producer, epoch, (bytes(frame[start:end]), index)


_PRODUCER = struct.Struct(">qh")


try:  # the same walk compiled (setup.py); tests/test_walk.py runs both
    from ._walk import produce_request as walk_request
except ImportError:  # no C compiler where this was installed
    walk_request = walk_request_py


def name_field(rename, flexible):
    """A *topic_field* mapping (raw name field -> field to send) made of one
    that maps names (``rename(name)``)."""
    def field(raw):
        name, _ = read_string(raw, 0, flexible)
        return write_string(rename(name), flexible)
    return field


def _partitions(frame, pos, flexible, budget, noted=None, field=None,
                _int32=_I32.unpack_from, _batches=walk_batches):
    """Walk one topic's partitions: (position after them, records in them,
    what is left of the *budget* of entries); with *noted*, what
    ``walk_request_py`` notes of them (*field*: the topic's).
    One-byte compact lengths and empty tag sections (nearly all of them) are
    read inline: this loop runs for every partition of every Produce."""
    records = 0
    end = len(frame)
    if flexible:
        partitions, pos = read_length(frame, pos, True)
    else:
        partitions, pos = _int32(frame, pos)[0], pos + 4
    budget = walkable(budget, partitions, "produce")
    for _ in range(max(partitions, 0)):
        index = pos
        pos += 4  # the partition index
        if not flexible:
            size, pos = _int32(frame, pos)[0], pos + 4
        elif pos < end and frame[pos] < 0x80:
            size, pos = frame[pos] - 1, pos + 1
        else:
            size, pos = read_length(frame, pos, True)
        if size < 0:  # Kafka's clients never send them; a broker failed on each
            raise HeaderError("produce request: null records")
        if noted is not None and size >= HEADER.size and pos + HEADER.size <= end and \
                frame[pos + 16] == 2 and frame[pos + 22] & TRANSACTIONAL:
            if noted[2] is None:
                noted[2] = []
            noted[2].append((*field, _I32.unpack_from(frame, index)[0], pos))
        if size > 0:
            stop = pos + size
            records += _batches(frame, pos, min(stop, end), stop)[0]
            if noted is not None:
                _noted(frame, pos, min(stop, end), stop, noted)
            pos = stop
        if flexible:
            pos = pos + 1 if pos < end and frame[pos] == 0 else \
                skip_tagged_fields(frame, pos)
    if flexible:
        pos = skip_tagged_fields(frame, pos)
    if pos > end:
        raise HeaderError("truncated produce request")
    return pos, records, budget


def scan_produce(frame, body_offset, version):
    """(acks, records) of a Produce request, read by lengths (``rewrite_produce``
    changing nothing).

    ``acks=0`` gets no response; *records* counts the records of its whole
    batches (from the batch headers, nothing decoded).  *body_offset* None:
    read from the header.
    """
    if body_offset is None:
        body_offset = request_body_offset(frame)
    return rewrite_produce(frame, body_offset, version)[1:]
