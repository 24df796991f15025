# -*- test-case-name: tests.test_fastpath -*-
"""A cheap structural scan that lets big responses pass as bytes.

A Fetch response is mostly record batches.  When nothing in it needs
rewriting, the gateway must not decode and re-encode it; this scan walks
its structure by lengths alone (no copy) to find out, and on the way reads
what metrics want: the first error code and the number of records.
"""

import struct
from dataclasses import dataclass, replace

from .framing import Malformed
from .headers import (
    read_length, read_string, read_uvarint, skip_string, skip_tagged_fields,
    write_string, write_uvarint)
from .records import count_records, walk_batches

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I16_I32 = struct.Struct(">hi")
_I32_I32 = struct.Struct(">ii")


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
    session_id: int = 0
    """Fetch (v7+): the fetch session the broker made or kept for this
    connection; connection-bound state (tenancy/sessions.py)."""
    topic_ids: tuple = ()
    """Fetch v13+: the 16-byte topic ids the response carries, so a response
    forwarded as bytes is still checked for topics that are not the tenant's."""


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
    ids = []
    topics, pos = read_length(frame, pos, flexible)
    for _ in range(max(topics, 0)):
        if version >= 13:
            ids.append(bytes(frame[pos:pos + 16]))
            pos += 16
        else:
            pos = skip_string(frame, pos, flexible)
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
                    raise Malformed("truncated fetch response")
                records += count_records(frame, pos, pos + length)
                pos += length
            if flexible:
                pos = skip_tagged_fields(frame, pos)
        if flexible:
            pos = skip_tagged_fields(frame, pos)
    scan = _end(frame, pos, flexible, error, records, "fetch")
    if session or ids:
        scan = replace(scan, session_id=session, topic_ids=tuple(ids))
    return scan


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
        pos, first, clean = _produce_partitions(frame, pos, version, flexible)
        error = error or first
        if not clean:
            return Scan(error, 0, False)
    pos += 4  # throttle time
    return _end(frame, pos, flexible, error, 0, "produce")


def rename_produce_response(frame, offset, version, logical):
    """A Produce response before v13 (topics by name) with each name replaced by
    ``logical(name)``, by slicing: the partitions are copied as they are.  None
    if *logical* gives None for a name (the decoding rewrite then drops that
    topic).  Only for a response whose scan found nothing else to rewrite
    (``scan_produce_response(...).tags_empty``): kio's decode and re-encode cost
    ~50 us, and librdkafka, kafka-python and aiokafka produce before v13."""
    flexible = version >= 9
    topics, pos = read_length(frame, offset, flexible)
    pieces = [frame[:pos]]
    for _ in range(max(topics, 0)):
        name, after = read_string(frame, pos, flexible)
        new = None if name is None else logical(name)
        if new is None:
            return None
        pieces.append(write_string(new, flexible))
        pos = _produce_partitions(frame, after, version, flexible)[0]
        pieces.append(frame[after:pos])
    pieces.append(frame[pos:])  # throttle time, top-level tags
    return b"".join(pieces)


def _produce_partitions(frame, pos, version, flexible):
    """One topic's partitions in a Produce response: (position after them, their
    first error code, clean).  Not clean: a record error or an error message
    (the walk stops there)."""
    error = 0
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
    ``topics`` then ``forgotten_topics_data``).  Walked by lengths: a consumer's
    long poll is checked without kio's decode and re-encode, the gateway's
    costliest step per Fetch request.  Raises ValueError or struct.error if
    the request is truncated or has bytes after its end."""
    if version < 13:
        raise Malformed(f"fetch request v{version} names topics by name")
    pos, end, ids = offset, len(frame), []
    replica = -1
    if version <= 14:
        (replica,) = _I32.unpack_from(frame, pos)
        pos += 4
    pos += 4 + 4 + 4 + 1 + 4 + 4  # max wait, min/max bytes, isolation, session
    topics, pos = _count(frame, pos)
    for _ in range(topics):
        ids.append(pos)
        partitions, pos = _count(frame, pos + 16)
        for _ in range(partitions):
            # partition, leader epoch, offset, last epoch, log start, max bytes
            pos = skip_tagged_fields(frame, pos + 32)
        pos = skip_tagged_fields(frame, pos)
    forgotten, pos = _count(frame, pos)
    for _ in range(forgotten):
        ids.append(pos)
        partitions, pos = _count(frame, pos + 16)
        pos = skip_tagged_fields(frame, pos + 4 * partitions)
    pos = skip_string(frame, pos, True)  # rack id
    count, pos = read_uvarint(frame, pos)
    for _ in range(count):  # top-level tags: replica_state is tag 1 from v15
        tag, pos = read_uvarint(frame, pos)
        size, pos = read_uvarint(frame, pos)
        if tag == 1 and version >= 15:
            (replica,) = _I32.unpack_from(frame, pos)
        pos += size
    if pos != end:
        raise Malformed("fetch request: truncated or bytes after its end")
    return replica, ids


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


_SKIP, _BYTES, _RECORDS, _MARK, _END = range(5)
"""What FetchStream's walk asks for next: skip n bytes, the next n bytes, a
records region of n bytes, note where the top-level tags start, the end."""


class FetchStream:
    """Scan a Fetch response as its bytes arrive, keeping none of its records.

    The same checks and figures as ``scan_fetch``, for a response forwarded
    while it arrives (splice.Streamed): its chunks may be cut anywhere and the
    whole response is never held in one buffer, so its records are neither
    copied nor kept.  Positions count from the frame's size prefix.  ``feed``
    and ``finish`` raise ValueError or struct.error where ``scan_fetch`` would.
    ``scan_fetch`` stays for whole frames, the common case: for a small
    response it takes 7 us where this takes 26 us (tests hold the two to the
    same answers).
    """

    def __init__(self, version, check_id=None):
        self.at = 0            # bytes fed so far
        self.error = 0
        self.session_id = 0
        self.topic_ids = []
        self._check_id = check_id
        """Called with each 16-byte topic id as it arrives, before any of that
        topic's bytes are forwarded; raises ValueError for a foreign one."""
        self.records = 0
        self.tags_at = -1
        self.tags_empty = True
        self._flexible = version >= 12
        self._carry = b""      # the start of a field split across chunks
        self._region_end = 0   # where the current records region ends
        self._batch_at = -1    # where its next batch starts; -1: not counting
        self._head = b""       # the start of a batch header split across chunks
        self._steps = self._walk(version)
        self._want = next(self._steps)

    def feed(self, chunk):
        base = self.at
        pos, end = 0, len(chunk)
        while pos < end:
            kind, n = self._want
            if kind == _SKIP:
                step = min(n, end - pos)
                pos += step
                if step < n:
                    self._want = (_SKIP, n - step)
                    break
                self._next(None, base + pos)
            elif kind == _BYTES:
                if self._carry or end - pos < n:
                    take = min(n - len(self._carry), end - pos)
                    self._carry += chunk[pos:pos + take]
                    pos += take
                    if len(self._carry) < n:
                        break
                    data, self._carry = self._carry, b""
                else:
                    data = chunk[pos:pos + n]
                    pos += n
                self._next(data, base + pos)
            elif kind == _RECORDS:
                if self._batch_at >= 0:
                    self._count(chunk, base, end)
                region_end = self._region_end - base
                if region_end > end:
                    break
                pos = region_end
                self._next(None, base + pos)
            elif kind == _MARK:
                self.tags_at = base + pos
                self.tags_empty = chunk[pos] == 0
                self._next(None, base + pos)
            else:
                raise Malformed("fetch response: bytes after its end")
        self.at = base + end

    def _next(self, value, at):
        """Give the walk *value*; take its next need, which starts at *at*."""
        want = self._steps.send(value)
        while want[0] == _SKIP and want[1] == 0:
            want = self._steps.send(None)
        if want[0] == _RECORDS:
            self._region_end = at + want[1]
            self._batch_at = at if want[1] >= 61 else -1
        self._want = want

    def _count(self, chunk, base, end):
        """Count the batches of the current records region that start in
        *chunk* (which starts at *base*), carrying a header cut at its end."""
        limit = self._region_end - base
        while self._batch_at >= 0:
            rel = self._batch_at - base
            if rel < 0:  # a header begun in an earlier chunk
                head = self._head + chunk[:61 - len(self._head)]
                if len(head) < 61:
                    self._head = head
                    return
                self._head = b""
                records, after, going = walk_batches(head, 0, 61, limit - rel)
                self.records += records
                self._batch_at = self._batch_at + after if going else -1
            elif rel + 61 > end:
                if rel < end:
                    self._head = chunk[rel:end]
                return
            else:
                records, after, going = walk_batches(chunk, rel, end, limit)
                self.records += records
                self._batch_at = base + after if going else -1

    def finish(self):
        """The Scan of the response, once all its bytes were fed."""
        if self._want[0] != _END:
            raise Malformed("truncated fetch response")
        return Scan(self.error, self.records, self.tags_empty, self.tags_at,
                    self.session_id, tuple(self.topic_ids))

    def _walk(self, version):
        """The response's structure, as scan_fetch reads it, one need at a time."""
        flexible = self._flexible
        yield _SKIP, 8  # size, correlation id (checked by the caller)
        if flexible:
            yield from self._tags()  # response header v1
        head = yield _BYTES, 10 if version >= 7 else 4
        if version >= 7:
            self.error, self.session_id = _I16_I32.unpack_from(head, 4)
        for _ in range(max((yield from self._length()), 0)):
            if version >= 13:
                topic_id = yield _BYTES, 16
                if self._check_id is not None:
                    self._check_id(topic_id)
                self.topic_ids.append(topic_id)
            else:
                yield _SKIP, max((yield from self._length(string=True)), 0)
            for _ in range(max((yield from self._length()), 0)):
                # index, error, high watermark, last stable offset, log start offset
                fixed = yield _BYTES, 4 + 2 + 8 + 8 + (8 if version >= 5 else 0)
                if not self.error:
                    (self.error,) = _I16.unpack_from(fixed, 4)
                for _ in range(max((yield from self._length()), 0)):
                    yield _SKIP, 16  # aborted transaction
                    if flexible:
                        yield from self._tags()
                if version >= 11:
                    yield _SKIP, 4  # preferred_read_replica
                length = yield from self._length()
                if length > 0:
                    yield _RECORDS, length
                if flexible:
                    yield from self._tags()
            if flexible:
                yield from self._tags()
        if flexible:
            yield _MARK, 0
            yield from self._tags()
        while True:
            yield _END, 0

    def _length(self, string=False):
        """An array, bytes or (string=True) string length: -1 is null."""
        if self._flexible:
            return (yield from self._uvarint()) - 1
        if string:
            return _I16.unpack((yield _BYTES, 2))[0]
        return _I32.unpack((yield _BYTES, 4))[0]

    def _uvarint(self):
        value = shift = 0
        while True:
            (byte,) = yield _BYTES, 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 28:
                raise Malformed("varint too long")

    def _tags(self):
        for _ in range((yield from self._uvarint())):
            yield from self._uvarint()  # tag
            yield _SKIP, (yield from self._uvarint())


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
