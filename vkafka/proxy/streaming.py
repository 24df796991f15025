# -*- test-case-name: tests.test_streaming -*-
"""Large Fetch responses forwarded to the client while they arrive.

Store-and-forward of multi-MiB Fetch responses doubled their transfer time
and halved consumer throughput; a response that passes as bytes is instead
cut through, scanned as it passes and never held whole.
"""

import struct

from ..protocol.fastpath import FetchStream, Scan
from ..protocol.framing import Malformed
from ..tenancy.walker import Rejected

STREAM_FROM = 256 * 1024
"""Responses this big that pass as bytes are forwarded as they arrive
(cut-through) rather than once whole: store-and-forward of multi-MiB Fetch
responses doubled their transfer time and halved consumer throughput."""

HOLD_BACK = 64 * 1024
"""The last bytes of a streamed response, kept until it is whole: its top-level
tagged fields (KIP-951 node_endpoints, broker addresses) are in them."""

PASSES = Scan(0, 0, True)
"""What a response's scan says when nothing in it needs rewriting."""


class Streamed:
    """A large Fetch response forwarded to the client while it arrives.

    Its bytes go out as received, except the last HOLD_BACK, and are scanned as
    they pass (fastpath.FetchStream: records and error for the metrics;
    malformed framing closes the connection), so the response is never copied
    or held whole.  If it carries node_endpoints, they are replaced in the
    held-back tail by an unused tag of the same length (fastpath.neutral_tags),
    so the client refreshes metadata instead of learning broker addresses.
    """

    def __init__(self, client, pending, chunks, total):
        self.client = client
        self.pending = pending
        self.total = total  # prefix included
        self.limit = total - HOLD_BACK
        context = pending.context
        self.scan = FetchStream(pending.api_version, None if context is None
                                else context.check_streamed_id)
        self.chunks = []    # received, not wholly written yet
        self.received = 0
        self.sent = 0
        self._offset = 0    # bytes of chunks[0] already written
        for chunk in chunks:
            if not self._add(chunk):
                return
        self._forward()

    def _add(self, chunk):
        try:
            self.scan.feed(chunk)
        except (Malformed, Rejected, struct.error) as e:
            self.client.fail(f"malformed Fetch response (partly forwarded): {e}")
            return False
        self.received += len(chunk)
        self.chunks.append(chunk)
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
        self.client.stream_finished(self)
        return None if self.client.closed else rest

    def tail(self):
        """The bytes received and not sent yet."""
        if not self.chunks:
            return b""
        return b"".join([memoryview(self.chunks[0])[self._offset:], *self.chunks[1:]])

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
