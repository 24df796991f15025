"""Request and response header parsing."""

import struct

from twisted.trial import unittest

from vkafka.protocol.headers import (
    HeaderError, parse_request_header, request_body_offset, response_header_length)

from .kafka_messages import metadata_request, request_frame


class RequestHeaderTests(unittest.TestCase):
    def test_v2_flexible(self):
        """Metadata v12 uses header v2: client id then tagged fields."""
        payload = request_frame(metadata_request(), 12, 77, "my-client")[4:]
        header = parse_request_header(payload)
        self.assertEqual((header.api_key, header.api_version, header.correlation_id,
                          header.client_id), (3, 12, 77, "my-client"))
        self.assertEqual(header.body_offset, 8 + 2 + len("my-client") + 1)

    def test_v1_non_flexible(self):
        """Metadata v8 uses header v1: no tagged fields."""
        payload = struct.pack(">hhih", 3, 8, 5, 3) + b"abc" + b"rest"
        header = parse_request_header(payload)
        self.assertEqual(header.body_offset, 8 + 2 + 3)
        self.assertEqual(header.client_id, "abc")

    def test_null_client_id(self):
        """A null client id (length -1) is accepted."""
        header = parse_request_header(struct.pack(">hhih", 3, 8, 5, -1))
        self.assertIsNone(header.client_id)

    def test_truncated(self):
        """Truncated headers raise HeaderError, never IndexError."""
        payload = request_frame(metadata_request(), 12, 1, "client")[4:]
        for cut in range(0, 8 + 2 + 6):
            with self.assertRaises(HeaderError):
                parse_request_header(payload[:cut])

    def test_body_offset_alone(self):
        """request_body_offset (the forwarding path's) agrees with the full parse,
        and refuses the same truncations."""
        frames = [request_frame(metadata_request(), 12, 77, "my-client")[4:],
                  struct.pack(">hhih", 3, 8, 5, 3) + b"abc" + b"rest",
                  struct.pack(">hhih", 3, 8, 5, -1)]
        for frame in frames:
            self.assertEqual(request_body_offset(frame),
                             parse_request_header(frame).body_offset)
        for cut in range(0, 8 + 2 + len("my-client") + 1):
            with self.assertRaises(HeaderError):
                request_body_offset(frames[0][:cut])
        with self.assertRaises(HeaderError):
            request_body_offset(struct.pack(">hhih", 999, 0, 1, -1))

    def test_unknown_api(self):
        """An API key the codec doesn't know is a HeaderError."""
        with self.assertRaises(HeaderError):
            parse_request_header(struct.pack(">hhih", 999, 0, 1, -1))

    def test_response_header_lengths(self):
        """Flexible responses carry tagged fields; ApiVersions never does."""
        self.assertEqual(response_header_length(b"\x00\x00\x00\x01\x00", 3, 12), 5)
        self.assertEqual(response_header_length(b"\x00\x00\x00\x01", 3, 8), 4)
        self.assertEqual(response_header_length(b"\x00\x00\x00\x01\x00\x00", 18, 3), 4)


class LenientRequestTests(unittest.TestCase):
    def test_librdkafka_metadata_v13_trailing_bytes(self):
        """librdkafka's Metadata v13 carries 3 bytes past the schema; brokers ignore
        them, and so does the gateway (captured from confluent-kafka 2.16)."""
        from vkafka.protocol.codec import decode_request
        frame = bytes.fromhex("0003000d00000005000772646b61666b610000000000010000")
        header, request = decode_request(frame)
        self.assertEqual((header.client_id, request.topics), ("rdkafka", None))


class NullArrayTests(unittest.TestCase):
    """A null where the schema allows none is a decode error, in a request
    (a hostile client) and in a response (a broken broker) alike."""

    def test_request_and_response(self):
        import struct

        from kio.static.constants import EntityType

        from vkafka.protocol.codec import CodecError, decode_body, encode_body

        from .kafka_messages import metadata_response
        # Metadata v12 request: topics is nullable (all topics); a null
        # CreateTopics list is not.
        create = b"\x00" + struct.pack(">i", 1000) + b"\x00\x00"  # topics null
        with self.assertRaises(CodecError):
            decode_body(19, 5, EntityType.request, create, 0)
        body = encode_body(metadata_response([(1, "kafka1", 9092)]))
        self.assertEqual(body[-2:], b"\x01\x00")  # topics: empty, no tags
        decode_body(3, 12, EntityType.response, body, 0)
        with self.assertRaises(CodecError) as caught:
            decode_body(3, 12, EntityType.response, body[:-2] + b"\x00\x00", 0)
        self.assertIn("topics: null", str(caught.exception))


class SchemaFixTests(unittest.TestCase):
    def test_describe_transactions_of_an_empty_transaction(self):
        """Kafka describes a transactional id with no open transaction with
        transaction_start_time -1, which kio refuses: read as None and written
        back as -1, the answer passes (the connection used to be closed)."""
        from kio.static.constants import EntityType

        from vkafka.protocol.codec import decode_body, encode_body

        def text(s):
            return bytes([len(s) + 1]) + s.encode()
        state = (struct.pack(">h", 0) + text("tx") + text("Empty")
                 + struct.pack(">iqqh", 60000, -1, 7, 2) + b"\x01\x00")
        body = struct.pack(">i", 0) + b"\x02" + state + b"\x00"
        answer = decode_body(65, 0, EntityType.response, body, 0)
        self.assertIsNone(answer.transaction_states[0].transaction_start_time)
        self.assertEqual(bytes(encode_body(answer)), body)
        started = body.replace(struct.pack(">q", -1), struct.pack(">q", 1700000000000))
        answer = decode_body(65, 0, EntityType.response, started, 0)
        self.assertEqual(answer.transaction_states[0].transaction_start_time.year, 2023)
        self.assertEqual(bytes(encode_body(answer)), started)
