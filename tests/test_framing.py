"""Kafka framing: splitting a stream into frames and refusing bad sizes."""

import struct

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial import unittest

from vkafka.protocol.framing import FrameDecoder, FrameError, frame, frame_parts


class FrameDecoderTests(unittest.TestCase):
    def test_whole_frames(self):
        """Two frames in one chunk come out as two payloads."""
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(frame(b"abc") + frame(b"")), [b"abc", b""])
        self.assertEqual(decoder.buffered, 0)

    def test_split_frames(self):
        """A frame cut anywhere is reassembled once its last byte arrives."""
        data = frame(b"hello") + frame(b"world!")
        for cut in range(len(data) + 1):
            decoder = FrameDecoder()
            out = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
            self.assertEqual(out, [b"hello", b"world!"])

    def test_oversized_refused_before_buffering(self):
        """A size above the limit is refused as soon as the prefix is seen."""
        decoder = FrameDecoder(max_frame_size=10)
        with self.assertRaises(FrameError):
            decoder.feed(struct.pack(">i", 11))

    def test_one_whole_frame_not_copied(self):
        """A read that is exactly one frame: its payload is a view of the read,
        which is then sent as it came (frame_parts gives the read itself)."""
        data = frame(b"request")
        [payload] = FrameDecoder().feed(data)
        self.assertIs(payload.obj, data)
        self.assertEqual(frame_parts(payload), (data,))

    def test_frame_over_two_reads_joined_alone(self):
        """A frame that ends in a later read is joined from its own bytes
        only; the whole frames after it in that read are views of the read
        (not copied), and only the start of the next one is held, copied."""
        first, second, third = frame(b"a" * 10), frame(b"b" * 7), frame(b"c" * 9)
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(first[:6]), [])
        read = first[6:] + second + third[:5]
        joined, view = decoder.feed(read)
        self.assertEqual((joined, view), (b"a" * 10, b"b" * 7))
        self.assertEqual(len(joined.obj), len(first))  # its bytes, and no more
        self.assertIs(view.obj, read)
        self.assertEqual((decoder.held, decoder.buffered, decoder.partial_size),
                         ([third[:5]], 5, 9))
        self.assertEqual(decoder.feed(memoryview(third)[5:]), [b"c" * 9])

    def test_views_held_as_bytes(self):
        """Part of a frame given as a view of a larger read is held as bytes
        of its own: the read is not kept alive behind it."""
        read = b"x" * 100 + frame(b"payload")
        decoder = FrameDecoder()
        decoder.feed(memoryview(read)[100:103])
        decoder.feed(memoryview(read)[103:106])
        self.assertTrue(all(type(part) is bytes for part in decoder.held))
        self.assertEqual(decoder.feed(memoryview(read)[106:]), [b"payload"])

    def test_oversized_whole_frame_refused(self):
        """The whole-frame shortcut keeps the size limit."""
        with self.assertRaises(FrameError):
            FrameDecoder(max_frame_size=10).feed(frame(b"x" * 11))

    def test_negative_size(self):
        """A negative size prefix is refused."""
        with self.assertRaises(FrameError):
            FrameDecoder().feed(struct.pack(">i", -1))

    @settings(deadline=None, suppress_health_check=list(HealthCheck))  # timing: not ours
    @given(st.lists(st.binary(max_size=50), max_size=10), st.data())
    def test_any_chunking(self, payloads, data):
        """However the stream is chunked, the payloads come out intact and in order."""
        stream = b"".join(frame(p) for p in payloads)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
        decoder = FrameDecoder()
        out = []
        start = 0
        for cut in cuts + [len(stream)]:
            out += decoder.feed(stream[start:cut])
            start = cut
        self.assertEqual(out, payloads)
