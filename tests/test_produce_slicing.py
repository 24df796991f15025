"""Produce renaming by slicing gives exactly what the codec would (every version)."""

import dataclasses
import datetime
import importlib
import uuid

from kio.static.primitive import i16, i32, i32Timedelta
from twisted.trial import unittest

from vkafka.filters.tenant import REWRITE_ERRORS
from vkafka.protocol.codec import decode_request, encode_body, encode_request
from vkafka.protocol.headers import parse_request_header
from vkafka.protocol.produce import rewrite_produce, scan_produce

IDS = [uuid.uuid4(), uuid.uuid4()]


def produce(version, txn="tx"):
    m = importlib.import_module(f"kio.schema.produce.v{version}.request")
    partitions = tuple(m.PartitionProduceData(index=i32(p), records=b"batch%d" % p * 50)
                       for p in range(3))
    key = {"topic_id": IDS[0]} if version >= 13 else {"name": "orders"}
    key2 = {"topic_id": IDS[1]} if version >= 13 else {"name": "other"}
    return m.ProduceRequest(
        transactional_id=txn, acks=i16(-1),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
        topic_data=(m.TopicProduceData(partition_data=partitions, **key),
                    m.TopicProduceData(partition_data=partitions[:1], **key2)))


class ProduceSlicingTests(unittest.TestCase):
    def test_matches_codec(self):
        """For v3..v13, with and without a transactional id, slicing == decode/encode."""
        for version in range(3, 14):
            for txn in ("tx", None):
                frame = encode_request(produce(version, txn), version, 5, "c")
                header = parse_request_header(frame)
                out, acks, records = rewrite_produce(frame, header.body_offset, version,
                                      topic_name=lambda n: "vc" + n,
                                      topic_id=lambda i: IDS[1] if i == IDS[0] else i,
                                      transactional_id=lambda t: "vc" + t)
                _, request = decode_request(frame)
                expected = dataclasses.replace(
                    request,
                    transactional_id=None if txn is None else "vctx",
                    topic_data=tuple(
                        dataclasses.replace(t, **(
                            {"topic_id": IDS[1] if t.topic_id == IDS[0] else t.topic_id}
                            if version >= 13 else {"name": "vc" + t.name}))
                        for t in request.topic_data))
                self.assertEqual(out, frame[:header.body_offset] + encode_body(expected),
                                 version)
                self.assertEqual((acks, records),
                                 scan_produce(frame, header.body_offset, version))

    def test_unchanged_request_not_copied(self):
        """v13 with the tenant's own ids and no transactional id: the very same
        frame comes back (nothing to rename, nothing copied)."""
        frame = memoryview(encode_request(produce(13), 13, 5, "c"))
        header = parse_request_header(frame)
        out, acks, records = rewrite_produce(frame, header.body_offset, 13,
                                             lambda n: n, lambda i: i, lambda t: t)
        self.assertIs(out, frame)
        self.assertEqual((acks, records), scan_produce(frame, header.body_offset, 13))
        renamed, _, _ = rewrite_produce(frame, header.body_offset, 13, lambda n: n,
                                        lambda i: IDS[1], lambda t: t)
        self.assertIsNot(renamed, frame)

    def test_truncated_raises(self):
        """A request cut anywhere, at any version, raises one of the errors the
        tenant filter turns into a closed connection (REWRITE_ERRORS), never
        forwarded and never another exception: a v13 request cut inside a
        topic id raised ValueError from uuid.UUID, which escaped the filter.
        Bytes after the request are dropped, as decoding it would: nothing
        unread reaches the broker (brokers ignore them; librdkafka sends some)."""
        for version in range(3, 14):
            frame = encode_request(produce(version), version, 5, "c")
            header = parse_request_header(frame)
            for cut in range(header.body_offset, len(frame)):
                with self.assertRaises(REWRITE_ERRORS, msg=f"v{version} cut {cut}"):
                    rewrite_produce(frame[:cut], header.body_offset, version,
                                    lambda n: n, lambda i: i, lambda t: t)
            self.assertEqual(rewrite_produce(frame + b"\x00\x07", header.body_offset,
                                             version), (frame, -1, 0), version)

    def test_entries_bounded(self):
        """At most MAX_ENTRIES topics and partitions in all: a partition with
        no records is six bytes, and a 100 MB request of them would hold the
        event loop for seconds."""
        import struct

        from vkafka.protocol.headers import MAX_ENTRIES, HeaderError, write_uvarint

        def request(partitions):  # v9: one topic "t", partitions with no records
            body = b"\x00" + struct.pack(">hi", -1, 30000) + write_uvarint(2) + \
                b"\x02t" + write_uvarint(partitions + 1) + \
                (struct.pack(">i", 0) + b"\x01\x00") * partitions + b"\x00\x00"
            return struct.pack(">hhih", 0, 9, 1, 1) + b"c\x00" + body
        frame = request(MAX_ENTRIES - 1)
        self.assertEqual(rewrite_produce(frame, 12, 9)[1:], (-1, 0))
        with self.assertRaises(HeaderError) as caught:
            rewrite_produce(request(MAX_ENTRIES), 12, 9)
        self.assertIn("over 100000 topics and partitions", str(caught.exception))


class NullRecordsTests(unittest.TestCase):
    def test_null_records_refused(self):
        """Null records (no client sends them) made a Kafka 4.1 broker fail
        each request with a NullPointerException and a stack trace in its
        log: refused by both walks."""
        import struct

        from vkafka.protocol.headers import HeaderError
        from vkafka.protocol.produce import walk_request_py
        body = b"\x00" + struct.pack(">hi", -1, 30000) + b"\x02\x02t\x02" + \
            struct.pack(">i", 0) + b"\x00\x00\x00"  # one partition, null records
        frame = struct.pack(">hhih", 0, 9, 1, 1) + b"c\x00" + body
        for walk in (rewrite_produce, lambda f, o, v: walk_request_py(f, o, True, False)):
            with self.assertRaises(HeaderError) as caught:
                walk(frame, 12, 9)
            self.assertIn("null records", str(caught.exception))


class RewriteRecordsTests(unittest.TestCase):
    """rewrite_records: the records of the chosen topics changed in place,
    the rest of the request as it came (every version)."""

    def test_matches_codec(self):
        from vkafka.protocol.produce import rewrite_records
        for version in range(3, 14):
            frame = encode_request(produce(version), version, 5, "c")
            header = parse_request_header(frame)
            first = IDS[0].bytes if version >= 13 else None

            def chosen(field):
                return field == first if version >= 13 else field.endswith(b"orders")
            out = rewrite_records(frame, header.body_offset, version, chosen,
                                  lambda records: records.upper())
            _, request = decode_request(frame)
            expected = dataclasses.replace(request, topic_data=(dataclasses.replace(
                request.topic_data[0], partition_data=tuple(
                    dataclasses.replace(p, records=p.records.upper())
                    for p in request.topic_data[0].partition_data)),
                request.topic_data[1]))
            self.assertEqual(out, frame[:header.body_offset] + encode_body(expected),
                             version)
            self.assertIs(rewrite_records(frame, header.body_offset, version,
                                          lambda field: False, bytes.upper), frame)
