# -*- test-case-name: tests.test_framing -*-
"""Kafka framing: every request and response is an int32 size then that many bytes."""

import struct

_SIZE = struct.Struct(">i")
SIZE = _SIZE
"""A frame's size prefix."""

DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024
"""Kafka's own default for ``socket.request.max.bytes`` (100 MiB)."""


class Malformed(ValueError):
    """Bytes that are not the Kafka message they claim to be (from a client or
    a broker): the connection is closed.  Every protocol error is one, so the
    splice catches exactly these, and a bug (any other exception) surfaces."""


class FrameError(Malformed):
    """The stream is not valid Kafka framing; the connection must be closed."""


def frame(payload):
    """Return *payload* with its size prefix, ready to write."""
    return _SIZE.pack(len(payload)) + payload


def size_prefix(length):
    """The four bytes that announce a frame of *length* bytes."""
    return _SIZE.pack(length)


def frame_parts(payload):
    """*payload* with its size prefix, as the pieces to send: the received bytes
    when the payload is a memoryview of a whole frame as it arrived (prefix
    included), else the prefix and the payload, neither copied."""
    if isinstance(payload, memoryview):
        whole = payload.obj
        if isinstance(whole, bytes) and len(whole) == len(payload) + 4:
            return (whole,)
    return (_SIZE.pack(len(payload)), payload)


def framed(payload):
    """*payload* with its size prefix as one bytes object (copied only when
    ``frame_parts`` has two pieces)."""
    parts = frame_parts(payload)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class FrameDecoder:
    """Cut a byte stream into frames, refusing any frame above a limit.

    The limit is checked as soon as a size prefix is seen, so an oversized
    frame is refused before its bytes are buffered.  Chunks of a large frame
    are kept in a list and joined once, when the frame is complete, instead of
    being appended to a growing buffer.
    """

    def __init__(self, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        self.max_frame_size = max_frame_size
        self.held = []
        """The received bytes of a frame not yet whole (empty between frames)."""
        self._buffered = 0
        self.partial_size = None
        """The size of the frame being received (prefix seen, bytes missing), or None."""

    def feed(self, data):
        """Add *data*; return the complete frame payloads (prefix removed).

        Payloads are memoryviews of the received bytes; ``framed`` returns
        one that fills its buffer without copying it again.  Only a frame
        that spans reads is joined, and only its own bytes: the frames after
        it in the read are views too, and just the start of the next frame
        is copied to be held.

        :raises FrameError: on a negative or oversized size prefix.
        """
        if not data:
            return []
        frames = []
        if not self.held:
            whole = self.whole(data)
            if whole is not None:
                return [whole]  # most reads of requests and answers
        elif self.partial_size is None:  # part of a size prefix held
            data = b"".join(self.held) + data
            self.held, self._buffered = [], 0
        else:  # the rest of a frame begun in an earlier read, and maybe more
            need = 4 + self.partial_size - self._buffered
            if len(data) < need:  # the common case for a large frame: wait
                self.held.append(data if type(data) is bytes else bytes(data))
                self._buffered += len(data)
                return []
            self.held.append(memoryview(data)[:need])
            frames.append(memoryview(b"".join(self.held))[4:])
            self.held, self._buffered, self.partial_size = [], 0, None
            if need == len(data):
                return frames
            data = memoryview(data)[need:]
        view = memoryview(data)
        pos, available = 0, len(view)
        while available - pos >= 4:
            (size,) = _SIZE.unpack_from(view, pos)
            if size < 0 or size > self.max_frame_size:
                raise FrameError(
                    f"frame size {size} outside 0..{self.max_frame_size}"
                )
            end = pos + 4 + size
            if end > available:
                self.partial_size = size
                break
            frames.append(view[pos + 4:end])  # a view: no copy
            pos = end
        if pos < available:  # a read that only begins a frame is kept as it is
            self.held = [data if not pos and type(data) is bytes else bytes(view[pos:])]
            self._buffered = available - pos
        return frames

    def whole(self, data):
        """The payload of *data* when it is exactly one whole frame and nothing
        is pending before it (a view, nothing copied), else None; *data* is
        then not taken (``feed`` it)."""
        if self.held or len(data) < 4:
            return None
        (size,) = _SIZE.unpack_from(data, 0)
        if size == len(data) - 4 and size <= self.max_frame_size:
            return memoryview(data)[4:]
        return None

    def take(self):
        """Hand over the bytes of the frame being received, its prefix included,
        and forget them: the caller consumes the rest of that frame itself."""
        chunks = self.held
        self.held, self._buffered, self.partial_size = [], 0, None
        return chunks

    @property
    def buffered(self):
        """Bytes received but not yet part of a complete frame."""
        return self._buffered
