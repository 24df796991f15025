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
    HeaderError, read_length, read_string, request_body_offset, skip_string,
    skip_tagged_fields,
    write_string)
from .records import count_records

_I16 = struct.Struct(">h")


def rewrite_produce(frame, body_offset, version, topic_name=None, topic_id=None,
                    transactional_id=None):
    """``(frame, acks, records)``: the request frame with names rewritten, record
    bytes copied as they are; and the request's acks and record count, from the
    same walk.

    *topic_name*, *topic_id* and *transactional_id* map the client's value to the
    value to send (v13+ names topics by id); None leaves that field as it is,
    unread.  When they change nothing (v13+, the tenant's own topic ids, no
    transactional id or one that maps to itself) the request is returned as it
    came: the walk only notes what changes, and the frame is cut and joined only
    if something does, so the common case allocates nothing per topic or
    partition.
    """
    flexible = version >= 9
    edits = []  # (start, end, bytes to put there), in order
    if transactional_id is None:
        pos = skip_string(frame, body_offset, flexible)
    else:
        txn, pos = read_string(frame, body_offset, flexible)
        if txn is not None:
            field = write_string(transactional_id(txn), flexible)
            if field != frame[body_offset:pos]:
                edits.append((body_offset, pos, field))
    (acks,) = _I16.unpack_from(frame, pos)
    topics, pos = read_length(frame, pos + 6, flexible)  # after acks, timeout
    records = 0
    for _ in range(max(topics, 0)):
        if version >= 13:
            if topic_id is not None:
                given = uuid.UUID(bytes=bytes(frame[pos:pos + 16]))
                sent = topic_id(given)
                if sent != given:
                    edits.append((pos, pos + 16, sent.bytes))
            pos += 16
        elif topic_name is None:
            pos = skip_string(frame, pos, flexible)
        else:
            start = pos
            name, pos = read_string(frame, pos, flexible)
            edits.append((start, pos, write_string(topic_name(name), flexible)))
        pos, count = _partitions(frame, pos, flexible)
        records += count
    if not edits:
        return frame, acks, records
    pieces, copied = [], 0
    for start, end, field in edits:
        pieces += (frame[copied:start], field)
        copied = end
    pieces.append(frame[copied:])
    return b"".join(pieces), acks, records


def _partitions(frame, pos, flexible):
    """Walk one topic's partitions: (position after them, records in them)."""
    records = 0
    partitions, pos = read_length(frame, pos, flexible)
    for _ in range(max(partitions, 0)):
        size, pos = read_length(frame, pos + 4, flexible)  # after the index
        if size > 0:
            records += count_records(frame, pos, min(pos + size, len(frame)))
            pos += size
        if flexible:
            pos = skip_tagged_fields(frame, pos)
    if flexible:
        pos = skip_tagged_fields(frame, pos)
    if pos > len(frame):
        raise HeaderError("truncated produce request")
    return pos, records


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
