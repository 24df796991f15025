"""Counting records by batch headers, and error codes of decoded responses."""

import struct
import uuid

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32
from twisted.trial import unittest

from vkafka.protocol.codec import encode_request
from vkafka.protocol.errors import first_error
from vkafka.protocol.headers import parse_request_header
from vkafka.protocol.produce import scan_produce
from vkafka.protocol.records import COUNT_AT, count_records

from .kafka_messages import (
    NO_THROTTLE, find_coordinator_response, produce_records, record_batch)


class CountRecordsTests(unittest.TestCase):
    def test_whole_batches(self):
        """The counts of consecutive batches add up; nothing else is read."""
        data = record_batch(1) + record_batch(10) + record_batch(2)
        self.assertEqual(count_records(data, 0, len(data)), 13)
        self.assertEqual(count_records(b"xx" + data, 2, 2 + len(data)), 13)
        self.assertEqual(count_records(memoryview(data), 0, len(data)), 13)

    def test_partial_batch_ignored(self):
        """A batch cut short (end of a Fetch) is not counted, at any cut."""
        data = record_batch(2) + record_batch(5)
        first = len(record_batch(2))
        for cut in range(first, len(data)):
            self.assertEqual(count_records(data, 0, cut), 2, cut)
        self.assertEqual(count_records(data, 0, first - 1), 0)

    def test_hostile_bytes(self):
        """Negative counts and lengths, legacy magic and garbage never raise and
        never count."""
        batch = bytearray(record_batch(3))
        struct.pack_into(">i", batch, COUNT_AT, -7)
        self.assertEqual(count_records(batch, 0, len(batch)), 0)
        legacy = bytearray(record_batch(3))
        legacy[16] = 1  # magic 1: a v0/v1 message set
        data = bytes(legacy) + record_batch(2)  # nothing after it is counted either
        self.assertEqual(count_records(data, 0, len(data)), 0)
        negative = b"\0" * 8 + struct.pack(">i", -1) + b"\0" * 60
        self.assertEqual(count_records(negative, 0, len(negative)), 0)
        for size in range(0, 80):
            count_records(b"\xff" * size, 0, size)

    def test_walk_stops_at_garbage(self):
        """Entries too short to be a v2 batch end the walk: hostile bytes cannot
        make it step through a large frame 12 bytes at a time (so the batch
        after them is not counted)."""
        data = bytes(12 * 1000) + record_batch(3)
        self.assertEqual(count_records(data, 0, len(data)), 0)


class ScanProduceTests(unittest.TestCase):
    def test_every_version(self):
        """acks and the record count of a Produce request, v3 to v13."""
        batches = record_batch(3) + record_batch(4)
        for version in range(3, 14):
            topic = uuid.uuid4() if version >= 13 else "t"
            for acks in (0, 1, -1):
                frame = encode_request(produce_records(topic, batches, acks, version),
                                       version, 7, "c")
                offset = parse_request_header(frame).body_offset
                self.assertEqual(scan_produce(frame, offset, version), (acks, 7),
                                 version)

    def test_not_batches_and_null_records(self):
        """Bytes that are no batch count none; null records are refused (a
        broker failed on them: test_produce_slicing.NullRecordsTests)."""
        from vkafka.protocol.headers import HeaderError

        from .test_produce_slicing import produce
        for version in (9, 13):
            frame = encode_request(produce(version), version, 7, "c")
            offset = parse_request_header(frame).body_offset
            self.assertEqual(scan_produce(frame, offset, version), (-1, 0))
        frame = encode_request(produce_records("t", None), 9, 7, "c")
        with self.assertRaises(HeaderError):
            scan_produce(frame, parse_request_header(frame).body_offset, 9)

    def test_truncated_raises(self):
        """A truncated request raises (the connection is closed), never miscounts."""
        frame = encode_request(produce_records("t", record_batch(2)), 9, 7, "c")
        offset = parse_request_header(frame).body_offset
        with self.assertRaises(Exception):
            scan_produce(frame[:-30], offset, 9)


class FirstErrorTests(unittest.TestCase):
    def test_nested_errors(self):
        """A nested entity's error is found when the top level has none."""
        response = find_coordinator_response([
            ("a", 1, "h", 1, 0), ("b", -1, "", -1, 15), ("c", -1, "", -1, 16)])
        self.assertEqual(first_error(response), ErrorCode.coordinator_not_available)
        self.assertEqual(first_error(find_coordinator_response([])), 0)

    def test_top_level_first(self):
        """The response's own error code wins over its entities'."""
        from kio.schema.describe_cluster.v1.response import DescribeClusterResponse
        response = DescribeClusterResponse(
            throttle_time=NO_THROTTLE, error_code=ErrorCode.cluster_authorization_failed,
            error_message=None, endpoint_type=1, cluster_id="c",
            controller_id=i32(1), brokers=(), cluster_authorized_operations=i32(0))
        self.assertEqual(first_error(response), ErrorCode.cluster_authorization_failed)

    def test_no_error_fields(self):
        """A response with no error field at all (Metadata v12 without topics) is none."""
        from .kafka_messages import metadata_response
        self.assertEqual(first_error(metadata_response([(1, "h", 1)])), 0)
