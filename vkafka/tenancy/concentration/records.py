# -*- test-case-name: tests.test_batches -*-
"""Record batches of concentrated topics: tagged with their logical topic on
the way in (Produce), untagged on the way out (Fetch), where every other
logical topic's batch is emptied.  Bytes only: protocol/batches.py is the
codec; which topic a request is for is the request and response sides'."""

import struct

from ...protocol import batches
from .shared import INVALID_RECORD, MESSAGE_TOO_LARGE, Refused

TAG = b"vkafka.topic"
PARTITION_TAG = b"vkafka.partition"
MAX_RECORDS = 10_000
"""Records one Produce may write to concentrated topics, and one Fetch answer
untag of them: each is decoded and encoded again on the event loop (~14 us),
and a gzip batch of 1,100,000 empty records is 11 KB on the wire."""


MAX_BYTES = batches.MAX_INFLATED
"""Bytes of records (uncompressed, tagged) one Produce may write to
concentrated topics: each is decoded and encoded again on the event loop."""


def record_count(records):
    """The records the whole batches of *records* say they hold."""
    found, _ = batches.whole_batches(records, 0, len(records))
    return sum(max(batches.HEADER.unpack_from(records, offset)[12], 0)
               for offset, _ in found)


def tag_records(records, virtual, partition, exchange=None):
    """Produce: every record tagged with its logical topic, keys prefixed.
    A record that carries the gateway's tags itself is refused: its header
    would say another logical topic's name, and that topic's readers would
    read it as theirs.  The batches of one request (*exchange*) come to at
    most MAX_BYTES, tags included: each gzip batch may inflate to 8 MiB, and
    a request of many such batches (8 KB each on the wire) held the event
    loop for seconds."""
    if not records:
        return records
    found, end = batches.whole_batches(records, 0, len(records))
    if end != len(records):
        raise Refused("a produce request with a partial record batch",
                      batches.CORRUPT_MESSAGE)
    tag, prefix = virtual.encode(), virtual.encode() + b"\x00"
    out = []
    for offset, size in found:
        left = MAX_BYTES - (exchange.bytes if exchange is not None else 0)
        try:
            batch = batches.decode(records, offset, size, limit=max(left, 0))
        except batches.BatchError as e:
            raise Refused(f"{e} (at most {MAX_BYTES} bytes of records a produce "
                          "to concentrated topics)", e.code) from None
        if batch.attributes & batches.TRANSACTIONAL or batch.is_control:
            raise Refused("transactions are not available on concentrated topics",
                          INVALID_RECORD)
        batch.fields[9:12] = [-1, -1, -1]  # producer id, epoch, base sequence
        for r in batch.records:
            if any(k in (TAG, PARTITION_TAG) for k, _ in r.headers):
                raise Refused("the headers vkafka.topic and vkafka.partition are "
                              "the gateway's on concentrated topics", INVALID_RECORD)
            r.headers.append((TAG, tag))
            r.headers.append((PARTITION_TAG, str(partition).encode()))
            if r.key is not None:
                r.key = prefix + r.key
        out.append(batches.encode(batch))
        if exchange is not None:
            exchange.bytes += len(out[-1])
            if exchange.bytes > MAX_BYTES:
                raise Refused(f"a produce to concentrated topics of more than "
                              f"{MAX_BYTES} bytes of records (uncompressed, tagged)",
                              MESSAGE_TOO_LARGE)
    return b"".join(out)


def untag_records(records, virtual):
    """Fetch: the logical topic's batches untagged; others emptied.  Returns
    (records, gap): gap is the offset range (start, end) after the topic's last
    batch here that holds none of its records, or None.

    A partial last batch is left out: its bytes are unchecked and may be
    another logical topic's (a tenant choosing its fetch sizes cut one where
    it liked); the client fetches from there again.  Past MAX_RECORDS of work
    (the topic's records, and a unit for each batch) the answer ends after a
    batch (at least one goes out), as a smaller fetch would."""
    found, end = batches.whole_batches(records, 0, len(records))
    tag, prefix = virtual.encode(), virtual.encode() + b"\x00"
    out = []
    gap_start = gap_end = None
    work = 0  # records untagged, and one for each batch passed or emptied
    for offset, size in found:
        if work >= MAX_RECORDS:
            break
        work += 1
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
        work += batches.HEADER.unpack_from(records, offset)[12]
        gap_start = gap_end
    gap = (gap_start, gap_end) if gap_start is not None and gap_start < gap_end else None
    return b"".join(out), gap


def _tagged(record, tag):
    """Whether *record* ends with the gateway's tags for *tag*: the gateway
    appends them after the client's own headers, and refuses a client's."""
    headers = record.headers
    return len(headers) >= 2 and headers[-2] == (TAG, tag) and \
        headers[-1][0] == PARTITION_TAG


def _untagged(records, offset, size, tag, prefix):
    """The batch at *offset* untagged if its records are the logical topic's
    (tagged *tag*; a batch is one topic's, so its first record tells, read
    alone), else None: the client must not see them."""
    try:
        first = batches.decode(records, offset, size, first_only=True)
    except batches.BatchError:
        return None  # not written through a gateway: nobody's logical topic
    if not first.records or not _tagged(first.records[0], tag):
        return None
    try:
        batch = batches.decode(records, offset, size)
    except batches.BatchError:
        return None
    for r in batch.records:
        r.headers = [(k, v) for k, v in r.headers if k not in (TAG, PARTITION_TAG)]
        if r.key is not None and r.key.startswith(prefix):
            r.key = r.key[len(prefix):]
    return batches.encode(batch)
