# -*- test-case-name: tests.test_fastpath,tests.test_streaming -*-
"""The Fetch response scan of ``fastpath.scan_fetch``, done chunk by chunk.

A large Fetch response is forwarded to the client while it arrives
(proxy/streaming.py), so it is never held whole for ``scan_fetch``: this
checks it as its chunks pass, however they are cut, keeping none of its
records, and gives the same ``Scan``.
"""

from .fastpath import _I16, _I16_I32, _I32, Scan
from .framing import Malformed
from .records import walk_batches

_SKIP, _BYTES, _RECORDS, _MARK, _END = range(5)
"""What FetchStream's walk asks for next: skip n bytes, the next n bytes, a
records region of n bytes, note where the top-level tags start, the end."""


class FetchStream:
    """Scan a Fetch response as its bytes arrive, keeping none of its records.

    The same checks and figures as ``scan_fetch``, for a response forwarded
    while it arrives (streaming.Streamed): its chunks may be cut anywhere and the
    whole response is never held in one buffer, so its records are neither
    copied nor kept.  Positions count from the frame's size prefix.  ``feed``
    and ``finish`` raise ValueError or struct.error where ``scan_fetch`` would.
    ``scan_fetch`` stays for whole frames, the common case: for a small
    response it takes 7 us where this takes 26 us (tests hold the two to the
    same answers).  What runs is ``fetch_stream``: this walk compiled
    (_walk.FetchScan, ~25 times faster), with this one as its reference.
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
                yield from self._partition(version)
            if flexible:
                yield from self._tags()
        if flexible:
            yield _MARK, 0
            yield from self._tags()
        while True:
            yield _END, 0

    def _partition(self, version):
        """One partition of a topic of the response."""
        flexible = self._flexible
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


try:  # the same scan compiled (setup.py); tests/test_walk.py runs both
    from ._walk import FetchScan as _FetchScan
except ImportError:  # no C compiler where it was installed: the reference
    fetch_stream = FetchStream
else:
    class CompiledFetchStream(_FetchScan):
        """FetchStream's scan in C: ``feed`` walks a chunk in one call, where
        the Python walk steps a generator per field (a third of a streamed
        answer's own cost)."""

        __slots__ = ()

        def finish(self):
            return Scan(*super().finish())

    fetch_stream = CompiledFetchStream
"""What proxy/streaming.py scans a streamed Fetch answer with."""
