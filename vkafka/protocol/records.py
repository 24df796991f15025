# -*- test-case-name: tests.test_records -*-
"""Count the records in record batches without decoding them.

Records pass through the gateway as bytes (no decompression, no copy), yet
operators want records per second.  A v2 record batch states its record
count in its fixed header, so counting is a walk from batch to batch by
their lengths, reading two integers per batch.
"""

import struct

_I32 = struct.Struct(">i")
LENGTH_AT = 8
"""baseOffset (int64), then batchLength (int32): the bytes after this field."""
MAGIC_AT = 16
"""After batchLength and partitionLeaderEpoch (int32); the same place in the
legacy v0/v1 message format (after its crc)."""
COUNT_AT = 57
"""The records count (int32) closes the 61-byte v2 batch header."""
HEADER = COUNT_AT + 4
OVERHEAD = LENGTH_AT + 4
"""A batch's whole size is this plus its batchLength."""


def count_records(buf, start, end):
    """Records in the v2 batches of ``buf[start:end]``, walked from the start.

    A partial batch at the end (a Fetch response cut at its byte limit) is
    not counted; the walk stops at anything that is not a whole v2 batch
    (legacy magic 0/1 message sets, which Kafka 4 no longer writes, or
    garbage), so each step covers at least 61 bytes however hostile the
    bytes.  A negative count counts as none.  About 0.3 us a batch.
    """
    return walk_batches(buf, start, end, end)[0]


def walk_batches(buf, pos, end, limit, _int32=_I32.unpack_from):
    """``count_records`` for a records region that ends at *limit*, which may
    lie past *end* (the region goes on in later bytes: fetch_stream.FetchStream).
    Returns (records, position of the first batch not walked, whether counting
    may go on there).  The walk stops for good at a batch that ends past *limit*
    or is not a whole v2 batch; it pauses when fewer than a header's bytes are
    left before *end* (the position may then lie past *end*: that batch ends in
    later bytes).  The offsets are literals and the unpacker a local: this is
    the per-batch loop of every Produce request and Fetch response."""
    records = 0
    while end - pos >= 61:  # HEADER
        length = _int32(buf, pos + 8)[0]  # LENGTH_AT
        after = pos + 12 + length  # OVERHEAD
        if length < 49 or after > limit or buf[pos + 16] != 2:  # MAGIC_AT
            return records, pos, False
        count = _int32(buf, pos + 57)[0]  # COUNT_AT
        if count > 0:
            records += count
        pos = after
    return records, pos, limit - pos >= 61
