# -*- test-case-name: tests.test_framing -*-
"""Kafka framing: every request and response is an int32 size then that many bytes."""

import struct

_SIZE = struct.Struct(">i")

DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024
"""Kafka's own default for ``socket.request.max.bytes`` (100 MiB)."""


class FrameError(ValueError):
    """The stream is not valid Kafka framing; the connection must be closed."""


def frame(payload):
    """Return *payload* with its size prefix, ready to write."""
    return _SIZE.pack(len(payload)) + payload


def size_prefix(length):
    """The four bytes that announce a frame of *length* bytes."""
    return _SIZE.pack(length)


class FrameDecoder:
    """Cut a byte stream into frames, refusing any frame above a limit.

    The limit is checked as soon as a size prefix is seen, so an oversized
    frame is refused before its bytes are buffered.
    """

    def __init__(self, max_frame_size=DEFAULT_MAX_FRAME_SIZE):
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()

    def feed(self, data):
        """Add *data*; return the list of complete frame payloads (prefix removed).

        :raises FrameError: on a negative or oversized size prefix.
        """
        buf = self._buffer
        buf += data
        frames = []
        pos = 0
        available = len(buf)
        while available - pos >= 4:
            (size,) = _SIZE.unpack_from(buf, pos)
            if size < 0 or size > self.max_frame_size:
                raise FrameError(
                    f"frame size {size} outside 0..{self.max_frame_size}"
                )
            end = pos + 4 + size
            if end > available:
                break
            frames.append(bytes(buf[pos + 4:end]))
            pos = end
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self):
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)
