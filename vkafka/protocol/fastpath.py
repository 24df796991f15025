# -*- test-case-name: tests.test_fastpath -*-
"""Cheap structural scans that let big responses pass as bytes.

A Fetch response is mostly record batches.  When nothing in it needs
rewriting, the gateway must not decode and re-encode it; these scans walk
its structure by lengths alone (no copy) to find out.
"""

from .headers import read_uvarint, skip_tagged_fields


def fetch_top_level_tags_empty(frame, offset, version):
    """True if a flexible (v12+) Fetch response has no top-level tagged fields.

    The only top-level tagged field is KIP-951's ``node_endpoints``, sent when
    a partition's leader moved; without it, v13+ responses name topics by id
    only and need no rewrite.  *offset* is where the body starts.
    """
    pos = offset + 4 + 2 + 4  # throttle_time, error_code, session_id
    topics, pos = read_uvarint(frame, pos)
    for _ in range(max(topics - 1, 0)):
        if version >= 13:
            pos += 16  # topic_id
        else:
            length, pos = read_uvarint(frame, pos)
            pos += max(length - 1, 0)
        partitions, pos = read_uvarint(frame, pos)
        for _ in range(max(partitions - 1, 0)):
            pos += 4 + 2 + 8 + 8 + 8  # index, error, high watermark, LSO, log start
            aborted, pos = read_uvarint(frame, pos)
            for _ in range(max(aborted - 1, 0)):
                pos = skip_tagged_fields(frame, pos + 16)
            pos += 4  # preferred_read_replica
            length, pos = read_uvarint(frame, pos)
            pos += max(length - 1, 0)  # records, untouched
            pos = skip_tagged_fields(frame, pos)
        pos = skip_tagged_fields(frame, pos)
    if pos >= len(frame):
        raise ValueError("truncated fetch response")
    return frame[pos] == 0 and pos + 1 == len(frame)
