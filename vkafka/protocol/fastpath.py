# -*- test-case-name: tests.test_fastpath -*-
"""A cheap structural scan that lets big responses pass as bytes.

A Fetch response is mostly record batches.  When nothing in it needs
rewriting, the gateway must not decode and re-encode it; this scan walks
its structure by lengths alone (no copy) to find out, and on the way reads
what metrics want: the first error code and the number of records.
"""

import struct
from dataclasses import dataclass

from .headers import read_length, skip_string, skip_tagged_fields, write_uvarint
from .records import count_records

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class Scan:
    error: int
    """The first non-zero error code (top level, then partitions in order), or 0."""
    records: int
    """Records in the whole record batches (a partial last batch is not counted)."""
    tags_empty: bool
    """No top-level tagged fields: the only one is KIP-951's ``node_endpoints``,
    sent when a partition's leader moved (always True before v12)."""
    tags_at: int = -1
    """Where the top-level tagged fields start (flexible versions; else -1)."""


def scan_fetch(frame, offset, version):
    """Scan a Fetch response (v4 to v18) whose body starts at *offset*.

    Raises ValueError or struct.error if the response is truncated or has
    bytes after its end, so a malformed response never passes as bytes.
    """
    flexible = version >= 12
    pos = offset + 4  # throttle_time
    error = 0
    if version >= 7:
        (error,) = _I16.unpack_from(frame, pos)
        pos += 2 + 4  # error_code, session_id
    records = 0
    topics, pos = read_length(frame, pos, flexible)
    for _ in range(max(topics, 0)):
        pos = pos + 16 if version >= 13 else skip_string(frame, pos, flexible)
        partitions, pos = read_length(frame, pos, flexible)
        for _ in range(max(partitions, 0)):
            if not error:
                (error,) = _I16.unpack_from(frame, pos + 4)
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
            length, pos = read_length(frame, pos, flexible)
            if length > 0:  # the records, untouched
                if pos + length > len(frame):
                    raise ValueError("truncated fetch response")
                records += count_records(frame, pos, pos + length)
                pos += length
            if flexible:
                pos = skip_tagged_fields(frame, pos)
        if flexible:
            pos = skip_tagged_fields(frame, pos)
    return _end(frame, pos, flexible, error, records, "fetch")


def scan_produce_response(frame, offset, version):
    """Scan a Produce response (v3 to v13) whose body starts at *offset*.

    Here ``tags_empty`` means "nothing the tenant rewrite would touch besides
    names": no ``node_endpoints`` and no error message or record error, whose
    text could name physical topics (such a response is decoded, so the scan
    stops there).  Raises like ``scan_fetch``.
    """
    flexible = version >= 9
    error = 0
    topics, pos = read_length(frame, offset, flexible)
    for _ in range(max(topics, 0)):
        pos = pos + 16 if version >= 13 else skip_string(frame, pos, flexible)
        partitions, pos = read_length(frame, pos, flexible)
        for _ in range(max(partitions, 0)):
            if not error:
                (error,) = _I16.unpack_from(frame, pos + 4)
            # index, error, base offset, log append time, log start offset
            pos += 4 + 2 + 8 + 8 + (8 if version >= 5 else 0)
            if version >= 8:
                record_errors, pos = read_length(frame, pos, flexible)
                null_message = frame[pos] == 0 if flexible else \
                    _I16.unpack_from(frame, pos)[0] == -1
                if record_errors > 0 or not null_message:
                    return Scan(error, 0, False)
                pos += 1 if flexible else 2
            if flexible:
                pos = skip_tagged_fields(frame, pos)  # current_leader: ids only
        if flexible:
            pos = skip_tagged_fields(frame, pos)
    pos += 4  # throttle time
    return _end(frame, pos, flexible, error, 0, "produce")


def _end(frame, pos, flexible, error, records, api):
    """The Scan of a response whose last field ends at *pos*: only its top-level
    tagged fields may follow (flexible versions), and nothing after them."""
    if not flexible:
        if pos != len(frame):
            raise ValueError(f"{api} response: {len(frame) - pos} bytes unaccounted for")
        return Scan(error, records, True)
    if skip_tagged_fields(frame, pos) != len(frame):
        raise ValueError(f"{api} response: bytes after its tagged fields")
    return Scan(error, records, frame[pos] == 0, pos)


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
    raise ValueError(f"no tagged-field section of {length} bytes")
