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
    HeaderError, read_length, read_string, read_uvarint, skip_string,
    skip_tagged_fields, write_string, write_uvarint)
from .records import count_records

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def rewrite_produce(frame, body_offset, version, topic_name, topic_id, transactional_id):
    """``(frame, acks, records)``: the request frame with names rewritten, record
    bytes copied as they are; and what ``scan_produce`` reads, from the same walk.

    *topic_name*, *topic_id* and *transactional_id* map the client's value to the
    value to send (v13+ names topics by id).  When they change nothing (v13+, the
    tenant's own topic ids, no transactional id) the request is returned as it
    came, not copied.
    """
    flexible = version >= 9
    pieces = [frame[:body_offset]]
    txn, pos = read_string(frame, body_offset, flexible)
    pieces.append(write_string(transactional_id(txn) if txn is not None else None, flexible))
    changed = pieces[-1] != frame[body_offset:pos]
    pieces.append(frame[pos:pos + 6])  # acks, timeout
    (acks,) = _I16.unpack_from(frame, pos)
    pos += 6
    records = 0
    if flexible:
        count, pos = read_uvarint(frame, pos)
        topics = count - 1
        pieces.append(write_uvarint(count))
    else:
        (topics,) = _I32.unpack_from(frame, pos)
        pieces.append(frame[pos:pos + 4])
        pos += 4
    for _ in range(max(topics, 0)):
        if version >= 13:
            raw = bytes(frame[pos:pos + 16])
            pieces.append(topic_id(uuid.UUID(bytes=raw)).bytes)
            pos += 16
            changed = changed or pieces[-1] != raw
        else:
            name, pos = read_string(frame, pos, flexible)
            pieces.append(write_string(topic_name(name), flexible))
            changed = True
        start = pos  # the partitions, copied as they are
        pos, count = _partitions(frame, pos, flexible, True)
        records += count
        pieces.append(frame[start:pos])
    pieces.append(frame[pos:])  # top-level tagged fields
    return (b"".join(pieces) if changed else frame), acks, records


def _partitions(frame, pos, flexible, counted):
    """Walk one topic's partitions: (position after them, records in them if
    *counted*, else 0)."""
    records = 0
    partitions, pos = read_length(frame, pos, flexible)
    for _ in range(max(partitions, 0)):
        size, pos = read_length(frame, pos + 4, flexible)  # after the index
        if size > 0:
            if counted:
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
    """(acks, records) of a Produce request, read by lengths.

    ``acks=0`` gets no response; *records* counts the records of its whole
    batches (from the batch headers, nothing decoded).
    """
    flexible = version >= 9
    pos = skip_string(frame, body_offset, flexible)  # transactional id
    (acks,) = _I16.unpack_from(frame, pos)
    topics, pos = read_length(frame, pos + 6, flexible)  # after acks, timeout
    records = 0
    for _ in range(max(topics, 0)):
        pos = pos + 16 if version >= 13 else skip_string(frame, pos, flexible)
        pos, count = _partitions(frame, pos, flexible, True)
        records += count
    return acks, records
