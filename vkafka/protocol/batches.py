# -*- test-case-name: tests.test_batches -*-
"""Record batches (magic v2) taken apart and put back together.

Only concentrated topics need this (DESIGN: bytes you don't need stay bytes):
their records carry the logical topic in a header and in the key, added on
produce and removed on fetch.  Batches are decoded record by record, rebuilt
uncompressed, and get a fresh CRC-32C; what the broker and clients rely on
(base offset, offset deltas, timestamps, producer fields) is kept.
"""

import struct
import zlib
from dataclasses import dataclass

from crc32c import crc32c

from .framing import Malformed
from .headers import HeaderError, read_uvarint

HEADER = struct.Struct(">qiibIhiqqqhii")
"""base offset, batch length, leader epoch, magic, crc, attributes, last offset
delta, base timestamp, max timestamp, producer id, producer epoch, base
sequence, record count: 61 bytes."""
CRC_FROM = 21  # the CRC covers the attributes to the end
COMPRESSION_MASK = 0x07
TRANSACTIONAL = 0x10
CONTROL = 0x20
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


CORRUPT_MESSAGE, MESSAGE_TOO_LARGE = 2, 10
UNSUPPORTED_FOR_MESSAGE_FORMAT, UNSUPPORTED_COMPRESSION_TYPE = 43, 76


class BatchError(Malformed):
    """A batch this gateway cannot take apart (wrong magic, codec, bytes);
    ``code``: the Kafka error a Produce of it is answered with."""

    def __init__(self, message, code=CORRUPT_MESSAGE):
        super().__init__(message)
        self.code = code


MAX_INFLATED = 8 * 1024 * 1024
"""The most a gzip batch's records may inflate to.  A few kilobytes of gzip
can stand for gigabytes (a decompression bomb); the batch goes on to the
broker uncompressed, whose max.message.bytes (1 MiB by default) is far less."""


def inflate(data, limit=MAX_INFLATED):
    """gzip records (one member or several), inflated to at most *limit*
    bytes: past it, or not gzip, a BatchError."""
    out, data = bytearray(), bytes(data)
    try:
        while data:
            member = zlib.decompressobj(31)  # 31: gzip header and trailer
            out += member.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise BatchError(f"gzip records inflate past {limit} bytes",
                                 MESSAGE_TOO_LARGE)
            if not member.eof:
                raise BatchError("bad gzip records: truncated")
            data = member.unused_data
    except zlib.error as e:
        raise BatchError(f"bad gzip records: {e}") from None
    return bytes(out)


def inflated_size(codec, data, limit):
    """Bytes the *codec* records *data* inflate to, counted to at most
    *limit* (past it: a BatchError, MESSAGE_TOO_LARGE), nothing kept: a
    broker inflates every compressed batch to validate its records, ~3 ms of
    its CPU per MiB, and 1 KB of gzip stands for 1 MB of zeros, of zstd for
    far more (audit 25).  Not that codec's bytes: CORRUPT_MESSAGE; a codec
    Kafka does not have: UNSUPPORTED_COMPRESSION_TYPE."""
    inflate_ = _INFLATERS.get(codec)
    if inflate_ is None:
        raise BatchError(f"compression codec {codec} does not exist",
                         UNSUPPORTED_COMPRESSION_TYPE)
    try:
        return inflate_(data, limit)
    except BatchError:
        raise
    except Exception as e:  # each library's own error for bad bytes
        raise BatchError(f"bad {CODECS[codec]} records: {e}") from None


_CHUNK = 1 << 20
"""Bytes inflated at a time when counting (none of them kept)."""


def _past(codec, limit):
    return BatchError(f"{codec} records inflate past {limit} bytes", MESSAGE_TOO_LARGE)


def _gzip_size(data, limit):
    """Every gzip member (Java's GZIPInputStream reads them all)."""
    size = 0
    while data:
        member = zlib.decompressobj(31)
        while True:
            size += len(member.decompress(data, _CHUNK))
            if size > limit:
                raise _past("gzip", limit)
            data = member.unconsumed_tail
            if member.eof or not data:
                break
        if not member.eof:
            raise BatchError("bad gzip records: truncated")
        data = member.unused_data
    return size


def _lz4_size(data, limit):
    """Every LZ4 frame (Kafka's are frames, KafkaLZ4BlockInputStream)."""
    import lz4.frame
    size = 0
    while data:
        frame = lz4.frame.LZ4FrameDecompressor()
        size += len(frame.decompress(data, _CHUNK))
        while not frame.eof and size <= limit and not frame.needs_input:
            size += len(frame.decompress(b"", _CHUNK))
        if size > limit:
            raise _past("lz4", limit)
        if not frame.eof:
            raise BatchError("bad lz4 records: truncated")
        data = frame.unused_data
    return size


ZSTD_WINDOW_MAX = 1 << 27
"""The largest zstd window taken, zstd's own default bound (a frame may ask
its decoder for a window of up to 2 GiB, memory it holds while it reads)."""


def _zstd_size(data, limit):
    """Every zstd frame, as zstd-jni's stream reads them."""
    import zstandard
    reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW_MAX).stream_reader(
        data, read_across_frames=True)
    size = 0
    while True:
        got = len(reader.read(_CHUNK))
        if not got:
            return size
        size += got
        if size > limit:
            raise _past("zstd", limit)


_SNAPPY_MAGIC = b"\x82SNAPPY\x00"


def _snappy_size(data, limit):
    """Snappy says each block's inflated size in its first bytes, which a
    decoder allocates and then fills: their sum, nothing inflated.  Kafka's
    is xerial's framing (a 16-byte header, then blocks each after its
    4-byte length); bytes without the header are one raw block, as xerial
    reads them."""
    blocks = []
    if data[:8] == _SNAPPY_MAGIC and len(data) >= 16:
        pos = 16
        while pos < len(data):
            if pos + 4 > len(data):
                raise BatchError("bad snappy records: truncated")
            (length,) = struct.unpack_from(">i", data, pos)
            if length < 0 or pos + 4 + length > len(data):
                raise BatchError("bad snappy records: truncated")
            blocks.append(data[pos + 4:pos + 4 + length])
            pos += 4 + length
    else:
        blocks.append(data)
    size = 0
    for block in blocks:
        try:
            declared, _ = read_uvarint(block, 0)
        except (HeaderError, IndexError):
            raise BatchError("bad snappy records: no length") from None
        size += declared
        if size > limit:
            raise _past("snappy", limit)
    return size


_INFLATERS = {1: _gzip_size, 2: _snappy_size, 3: _lz4_size, 4: _zstd_size}


@dataclass(slots=True)
class Record:
    attributes: int
    timestamp_delta: int
    offset_delta: int
    key: bytes | None
    value: bytes | None
    headers: list


def _zigzag(value):
    return (value << 1) ^ (value >> 63)


def _varint(value):
    value = _zigzag(value) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf, pos):
    """A signed (zigzag) varint or varlong of a record; BatchError if bad."""
    try:
        value, pos = read_uvarint(buf, pos, 63)
    except HeaderError as e:
        raise BatchError(str(e)) from None
    return (value >> 1) ^ -(value & 1), pos


def _read_bytes(buf, pos):
    length, pos = _read_varint(buf, pos)
    if length < 0:
        return None, pos
    if pos + length > len(buf):
        raise BatchError("truncated record field")
    return bytes(buf[pos:pos + length]), pos + length


def _bytes(value):
    return _varint(-1) if value is None else _varint(len(value)) + value


def whole_batches(buf, start, end):
    """(offset, size) of each whole batch in ``buf[start:end]``; then the offset
    of a trailing partial batch (or *end*)."""
    pos = start
    out = []
    while pos + 12 <= end:
        (length,) = struct.unpack_from(">i", buf, pos + 8)
        size = 12 + length
        if length < HEADER.size - 12 or pos + size > end:
            break
        out.append((pos, size))
        pos += size
    return out, pos


@dataclass(slots=True)
class Batch:
    fields: list
    """HEADER's fields, in order."""
    records: list

    @property
    def base_offset(self):
        return self.fields[0]

    @property
    def attributes(self):
        return self.fields[5]

    @property
    def is_control(self):
        return bool(self.attributes & CONTROL)


def decode(buf, offset, size, first_only=False, limit=MAX_INFLATED):
    """The batch at ``buf[offset:offset+size]`` with its records decoded (only
    the first with *first_only*: what a batch is tagged with, read without
    decoding thousands of records); gzip records inflated to at most *limit*
    bytes."""
    fields = list(HEADER.unpack_from(buf, offset))
    if fields[3] != 2:
        raise BatchError(f"record batch magic {fields[3]} (only v2 is supported)",
                         UNSUPPORTED_FOR_MESSAGE_FORMAT)
    body = memoryview(buf)[offset + HEADER.size:offset + size]
    codec = fields[5] & COMPRESSION_MASK
    if codec == 1:
        body = inflate(body, limit)
    elif codec != 0:
        raise BatchError(f"{CODECS.get(codec, codec)} compression is not supported "
                         f"on concentrated topics (use none or gzip)",
                         UNSUPPORTED_COMPRESSION_TYPE)
    records = []
    pos = 0
    for _ in range(min(fields[12], 1) if first_only else fields[12]):
        length, pos = _read_varint(body, pos)
        end = pos + length
        if length < 1 or end > len(body):
            raise BatchError("truncated record")
        attributes = body[pos]
        timestamp_delta, p = _read_varint(body, pos + 1)
        offset_delta, p = _read_varint(body, p)
        key, p = _read_bytes(body, p)
        value, p = _read_bytes(body, p)
        count, p = _read_varint(body, p)
        headers = []
        for _ in range(max(count, 0)):
            hkey, p = _read_bytes(body, p)
            hvalue, p = _read_bytes(body, p)
            headers.append((hkey, hvalue))
        if p != end:
            raise BatchError("record length does not match its fields")
        records.append(Record(attributes, timestamp_delta, offset_delta, key, value,
                              headers))
        pos = end
    return Batch(fields, records)


def encode(batch):
    """The batch's bytes, uncompressed, with its length and CRC recomputed."""
    parts = []
    for r in batch.records:
        body = (bytes([r.attributes & 0xFF]) + _varint(r.timestamp_delta)
                + _varint(r.offset_delta) + _bytes(r.key) + _bytes(r.value)
                + _varint(len(r.headers))
                + b"".join(_bytes(k) + _bytes(v) for k, v in r.headers))
        parts.append(_varint(len(body)) + body)
    records = b"".join(parts)
    fields = list(batch.fields)
    fields[1] = HEADER.size - 12 + len(records)
    fields[5] &= ~COMPRESSION_MASK
    fields[12] = len(batch.records)
    fields[4] = 0
    raw = bytearray(HEADER.pack(*fields) + records)
    struct.pack_into(">I", raw, 17, crc32c(bytes(raw[CRC_FROM:])))
    return bytes(raw)


def emptied(buf, offset):
    """The batch at *offset* with no records: it keeps its offset range (last
    offset delta), so a consumer moves past it as past a compacted batch.
    Nothing of the original is left but that range: no timestamps, no
    producer, not transactional."""
    fields = list(HEADER.unpack_from(buf, offset))
    fields[5] &= ~(COMPRESSION_MASK | TRANSACTIONAL)
    fields[7:12] = [-1, -1, -1, -1, -1]  # timestamps, producer id, epoch, sequence
    return encode(Batch(fields, []))


_PRODUCER = struct.Struct(">qhi")  # producer id, epoch, base sequence
_PRODUCER_AT = 43
_NO_PRODUCER = _PRODUCER.pack(-1, -1, -1)


def without_producer(buf):
    """The record batches *buf* (a partition's records in a Produce) with
    each batch's producer id, epoch and base sequence cleared and its CRC
    recomputed; records, compression and timestamps untouched (bytes
    returned as they came when no batch names a producer).

    A producer id is broker-wide state that nothing ties to a tenant: on a
    topic others write too, a batch carrying another writer's id could
    fence it or be taken for its next record.  Cleared, the broker writes
    the batch as from a producer without idempotence.

    :raises BatchError: for a transactional or control batch (those must
        carry their producer), or a batch that is not magic v2."""
    whole, end = whole_batches(buf, 0, len(buf))
    if end != len(buf):
        raise BatchError("a produce request with a partial record batch")
    out, copied = [], 0
    for pos, size in whole:
        fields = HEADER.unpack_from(buf, pos)
        if fields[3] != 2:
            raise BatchError(f"record batch magic {fields[3]} (only v2 is supported)")
        if fields[5] & (TRANSACTIONAL | CONTROL):
            raise BatchError("a transactional or control batch on a topic "
                             "written from outside the virtual cluster")
        if fields[9] == -1 and fields[10] == -1 and fields[11] == -1:
            continue
        batch = bytearray(buf[pos:pos + size])
        batch[_PRODUCER_AT:_PRODUCER_AT + _PRODUCER.size] = _NO_PRODUCER
        struct.pack_into(">I", batch, 17, crc32c(memoryview(batch)[CRC_FROM:]))
        out += (buf[copied:pos], batch)
        copied = pos + size
    if not out:
        return buf
    out.append(buf[copied:])
    return b"".join(out)
