# -*- test-case-name: tests.test_batches -*-
"""Record batches of concentrated topics: tagged with their logical topic on
the way in (Produce), untagged on the way out (Fetch), where every other
logical topic's batch is emptied.  Bytes only: protocol/batches.py is the
codec; which topic a request is for is the request and response sides'."""

import struct

from ...protocol import batches
from .shared import Refused

TAG = b"vkafka.topic"
PARTITION_TAG = b"vkafka.partition"


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
        mine = _untagged(records, offset, size, tag, prefix)
        if mine is None:
            out.append(batches.emptied(records, offset))
            continue
        out.append(mine)
        gap_start = gap_end
    out.append(bytes(records[end:]))  # a partial last batch: the client refetches
    gap = (gap_start, gap_end) if gap_start is not None and gap_start < gap_end else None
    return b"".join(out), gap


def _untagged(records, offset, size, tag, prefix):
    """The batch at *offset* untagged if its records are the logical topic's
    (tagged *tag*; a batch is one topic's, so its first record tells), else
    None: the client must not see them."""
    try:
        batch = batches.decode(records, offset, size)
    except batches.BatchError:
        return None  # not written through a gateway: nobody's logical topic
    if not batch.records or (TAG, tag) not in batch.records[0].headers:
        return None
    for r in batch.records:
        r.headers = [(k, v) for k, v in r.headers if k not in (TAG, PARTITION_TAG)]
        if r.key is not None and r.key.startswith(prefix):
            r.key = r.key[len(prefix):]
    return batches.encode(batch)
