# -*- test-case-name: tests.test_streaming -*-
"""Large Fetch responses forwarded to the client while they arrive.

Store-and-forward of multi-MiB Fetch responses doubled their transfer time
and halved consumer throughput; a response that passes as bytes is instead
cut through, scanned as it passes and never held whole.
"""

import struct

from ..filters.responses import goes_through_concentration
from ..protocol.fastpath import Scan, neutral_tags
from ..protocol.fetch_stream import fetch_stream
from ..protocol.framing import Malformed
from ..tenancy.context import Rejected
from ..tenancy.services import SMALL_WORK

STREAM_FROM = 256 * 1024
"""Responses this big that pass as bytes are forwarded as they arrive
(cut-through) rather than once whole: store-and-forward of multi-MiB Fetch
responses doubled their transfer time and halved consumer throughput."""

HOLD_BACK = 64 * 1024
"""The last bytes of a streamed response, kept until it is whole: its top-level
tagged fields (KIP-951 node_endpoints, broker addresses) are in them."""

PASSES = Scan(0, 0, True)
"""What a response's scan says when nothing in it needs rewriting."""

_HEAD = struct.Struct(">ii")


def stream_for(client, decoder):
    """A Streamed for the large response *decoder* has begun for *client*, or
    None when it must be whole before it is forwarded: a rewrite may change
    it, or a rate limit must write its throttle time first."""
    head = client.sequencer.streamable()
    if head is None or decoder.buffered < 8 or client.rates is not None and \
            client.rates.limited or goes_through_concentration(client.services, head):
        return None
    rule = head.rule
    if rule.scan_response is None or rule.passes_as_bytes is None or \
            not rule.passes_as_bytes(PASSES, head.api_version, head.context):
        return None
    chunks = decoder.take()
    first = chunks[0] if len(chunks[0]) >= 8 else b"".join(chunks)
    size, correlation_id = _HEAD.unpack_from(first, 0)
    if correlation_id != head.correlation_id:
        client.fail(f"broker answered correlation id {correlation_id}, "
                    f"expected {head.correlation_id}")
        return None
    return Streamed(client, head, chunks, size + 4)


class Streamed:
    """A large Fetch response forwarded to the client while it arrives.

    Its bytes go out as received, except the last HOLD_BACK, and are scanned
    as they pass (fetch_stream.fetch_stream, compiled: records and error for
    the metrics; malformed framing closes the connection; the scan's loop
    time charged to the tenant, as a whole answer's), so the response is
    never copied or held whole.  If it carries node_endpoints, they are
    replaced in the held-back tail by an unused tag of the same length
    (fastpath.neutral_tags), so the client refreshes metadata instead of
    learning broker addresses.
    """

    def __init__(self, client, pending, chunks, total):
        self.client = client
        self.pending = pending
        self.total = total  # prefix included
        self.limit = total - HOLD_BACK
        context = pending.context
        self.scan = fetch_stream(pending.api_version, None if context is None
                                else context.check_streamed_id)
        self.work = 0.0     # loop seconds its scan took: the tenant's
        self.chunks = []    # received, not wholly written yet
        self.received = 0
        self.sent = 0
        self._offset = 0    # bytes of chunks[0] already written
        for chunk in chunks:
            if not self._add(chunk):
                return
        self._forward()

    def _scanned(self, chunk):
        """*chunk* through the scan, its loop time the tenant's; False when
        it is malformed (the connection failed)."""
        clock = self.client.services.work_clock
        start = clock()
        try:
            self.scan.feed(chunk)
        except (Malformed, Rejected, struct.error) as e:
            self.client.fail(f"malformed Fetch response (partly forwarded): {e}")
            return False
        finally:
            self.work += clock() - start
        return True

    def _add(self, chunk):
        if not self._scanned(chunk):
            return False
        self.received += len(chunk)
        self.chunks.append(chunk)
        return True

    def passes(self, data):
        """A read from the middle of the response (all it received before
        was sent, and this ends before the held-back tail): scanned and
        written at once, True.  Most of a response's reads are such; they
        skip the broker connection's general path (its framing, its outbox
        held for one send) and this one's bookkeeping.  False: nothing done
        (``feed`` takes it).  In tenant mode the compiled read of answers
        does this itself (proxy/_lane.c, ``middle_read``, calling
        ``_scanned``); this is its reference, and the way where it is not
        built or in passthrough mode."""
        received = self.received + len(data)
        if received > self.limit or self.chunks or self.client.closed:
            return False
        if self._scanned(data):
            self.received = self.sent = received
            self.client.outbox.write(data)
        return True

    def feed(self, data):
        """Take *data*: the bytes after this response once it is whole (maybe
        b""), None while it is not."""
        if self.client.closed:
            return None
        room = self.total - self.received
        rest = b""
        if len(data) > room:
            data, rest = data[:room], data[room:]
        if not self._add(data):
            return None
        self._forward()
        if self.received < self.total:
            return None
        self._finished()
        return None if self.client.closed else rest

    def _finished(self):
        """Whole: check it, send its tail, let the responses behind it go."""
        client, pending = self.client, self.pending
        try:
            tail, scan = self.finish()
        except (Malformed, Rejected, struct.error) as e:
            return client.fail(f"malformed Fetch response (partly forwarded): {e}")
        if pending.rule.observe is not None:
            pending.rule.observe(pending.context, scan)
        for piece in tail:  # held by the read: one send
            client.outbox.write(piece)
        if self.work >= SMALL_WORK:  # a scan of many partitions, as when whole
            client.charge(self.work)
        if client.metrics is not None:
            client.metrics.streamed.inc()
            client.metrics.response(pending.rule.name, self.total,
                                    client.gateway.reactor.seconds() - pending.sent,
                                    scan.error, scan.records)
        client.sequencer.streamed()

    def tail(self):
        """The bytes received and not sent yet, as pieces (not joined: the
        outbox sends them in one sendmsg)."""
        if not self.chunks:
            return []
        first = self.chunks[0]
        return [memoryview(first)[self._offset:] if self._offset else first,
                *self.chunks[1:]]

    def finish(self):
        """(the pieces still to send, the whole response's Scan) once it is
        whole; its tagged fields neutralised.  Raises Malformed."""
        scan = self.scan.finish()
        tail = self.tail()
        if not scan.tags_empty:
            at = scan.tags_at
            if at < self.sent:
                raise Malformed("Fetch response tagged fields larger than "
                                f"{HOLD_BACK} bytes; cannot rewrite them")
            tail = [b"".join(tail)[:at - self.sent] + neutral_tags(self.total - at)]
        return tail, scan

    def _forward(self):
        outbox = self.client.outbox
        while self.chunks and self.sent < self.limit:
            chunk = self.chunks[0]
            end = min(len(chunk), self._offset + self.limit - self.sent)
            whole = self._offset == 0 and end == len(chunk)
            outbox.write(chunk if whole else memoryview(chunk)[self._offset:end])
            self.sent += end - self._offset
            if end == len(chunk):
                self.chunks.pop(0)
                self._offset = 0
            else:
                self._offset = end
