"""Record batch codec: checked against kio's independent reader and writer."""

import datetime
import gzip
import io
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.records.readers import read_batch
from kio.records.schema import NewRecordBatch, Record as KioRecord, RecordHeader
from kio.records.writers import write_new_batch
from kio.static.primitive import TZAwareMicros, i8, i16, i32, i64
from twisted.trial import unittest

from vkafka.protocol import batches

NOW = datetime.datetime(2026, 11, 24, tzinfo=datetime.timezone.utc)


def kio_batch(values, base_offset=100, headers=()):
    records = tuple(KioRecord(
        attributes=i8(0), timestamp=TZAwareMicros.parse(NOW + datetime.timedelta(
            milliseconds=i)), offset=i64(base_offset + i), key=key, value=value,
        headers=tuple(RecordHeader(key=k, value=v) for k, v in headers))
        for i, (key, value) in enumerate(values))
    buffer = io.BytesIO()
    write_new_batch(buffer, NewRecordBatch(producer_id=i64(7), producer_epoch=i16(1),
                                           base_sequence=i32(3), attributes=i16(0),
                                           records=records))
    return buffer.getvalue()


class BatchTests(unittest.TestCase):
    def test_decode_kio_batch(self):
        raw = kio_batch([(b"k1", b"v1"), (None, b"v2"), (b"k3", None)],
                        headers=[(b"h", b"x")])
        [(offset, size)], end = batches.whole_batches(raw, 0, len(raw))
        self.assertEqual((offset, size, end), (0, len(raw), len(raw)))
        batch = batches.decode(raw, 0, size)
        self.assertEqual(batch.base_offset, 100)
        self.assertEqual([(r.key, r.value, r.offset_delta) for r in batch.records],
                         [(b"k1", b"v1", 0), (None, b"v2", 1), (b"k3", None, 2)])
        self.assertEqual(batch.records[0].headers, [(b"h", b"x")])

    def test_encode_round_trip_is_kio_readable(self):
        """Rewritten records get a CRC and length kio's reader accepts."""
        raw = kio_batch([(b"k", b"v" * 50), (b"k2", b"w")])
        batch = batches.decode(raw, 0, len(raw))
        for r in batch.records:
            r.key = b"london.orders\x00" + r.key
            r.headers.append((b"vkafka.topic", b"londonorders"))
        out = batches.encode(batch)
        parsed, size = read_batch(out, 0)
        self.assertEqual(size, len(out))
        self.assertEqual(parsed.base_offset, 100)
        self.assertEqual(parsed.producer_id, 7)
        self.assertEqual([r.key for r in parsed.records],
                         [b"london.orders\x00k", b"london.orders\x00k2"])
        self.assertEqual([r.offset for r in parsed.records], [100, 101])
        # and back
        again = batches.decode(out, 0, len(out))
        self.assertEqual(again.records[1].headers, [(b"vkafka.topic", b"londonorders")])

    def test_unchanged_batch_encodes_identically(self):
        raw = kio_batch([(b"a", b"b"), (b"c", b"d")], headers=[(b"x", None)])
        self.assertEqual(batches.encode(batches.decode(raw, 0, len(raw))), raw)

    def test_gzip_batch(self):
        raw = bytearray(kio_batch([(b"a", b"1"), (b"b", b"2")]))
        records = bytes(raw[61:])
        packed = gzip.compress(records)
        fields = list(batches.HEADER.unpack_from(raw, 0))
        fields[1] = 49 + len(packed)
        fields[5] |= 1
        compressed = batches.HEADER.pack(*fields) + packed
        batch = batches.decode(compressed, 0, len(compressed))
        self.assertEqual([r.value for r in batch.records], [b"1", b"2"])
        out = batches.encode(batch)
        self.assertEqual(read_batch(out, 0)[0].attributes & 7, 0)

    def test_gzip_bomb_refused(self):
        """A few kilobytes of gzip that inflate past MAX_INFLATED are refused
        before the gateway holds them: a tenant's decompression bomb."""
        bomb = gzip.compress(bytes(batches.MAX_INFLATED + 1))
        self.assertLess(len(bomb), 16 * 1024)
        e = self.assertRaises(batches.BatchError, batches.inflate, bomb)
        self.assertIn("inflate past", str(e))
        self.assertEqual(batches.inflate(gzip.compress(bytes(batches.MAX_INFLATED))),
                         bytes(batches.MAX_INFLATED))

    def test_a_request_inflates_to_a_bounded_total(self):
        """Batches of one Produce to concentrated topics come to at most
        MAX_BYTES, however many there are (each gzip batch may inflate to 8
        MiB: 16 of them, 132 KB on the wire, held the event loop 4 s)."""
        from vkafka.tenancy import concentration
        from vkafka.tenancy.concentration.records import MAX_BYTES
        from vkafka.tenancy.concentration.shared import Exchange, Refused
        value = bytes(MAX_BYTES // 3)
        raw = bytearray(kio_batch([(b"k", value)]))
        packed = gzip.compress(bytes(raw[61:]))
        fields = list(batches.HEADER.unpack_from(raw, 0))
        fields[1], fields[5] = 49 + len(packed), fields[5] | 1
        one = batches.HEADER.pack(*fields) + packed
        exchange = Exchange()
        concentration.tag_records(one + one, "londonorders", 0, exchange)
        self.assertGreater(exchange.bytes, 2 * len(value))
        e = self.assertRaises(Refused, concentration.tag_records, one + one,
                              "londonorders", 1, exchange)
        self.assertIn(f"{MAX_BYTES} bytes", str(e))

    def test_gzip_members_and_damage(self):
        """Several gzip members inflate as one; truncated or trailing garbage
        is a BatchError, as gzip.decompress would refuse it."""
        both = gzip.compress(b"one,") + gzip.compress(b"two")
        self.assertEqual(batches.inflate(both), b"one,two")
        for bad in (both[:-3], both + b"junk", b"not gzip"):
            self.assertRaises(batches.BatchError, batches.inflate, bad)

    def test_other_codecs_refused(self):
        raw = bytearray(kio_batch([(b"a", b"1")]))
        struct.pack_into(">h", raw, 21, 4)  # zstd
        e = self.assertRaises(batches.BatchError, batches.decode, bytes(raw), 0, len(raw))
        self.assertIn("zstd", str(e))

    def test_emptied_batch_keeps_offset_range(self):
        raw = kio_batch([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
        empty = batches.emptied(raw, 0)
        parsed, _ = read_batch(empty, 0)
        self.assertEqual((parsed.base_offset, parsed.last_offset_delta,
                          len(parsed.records)), (100, 2, 0))

    def test_partial_batch_left_out(self):
        raw = kio_batch([(b"a", b"1")])
        data = raw + raw[:30]
        found, end = batches.whole_batches(data, 0, len(data))
        self.assertEqual((found, end), ([(0, len(raw))], len(raw)))

    @settings(max_examples=60, deadline=None,
              suppress_health_check=list(HealthCheck))  # timing: not ours
    @given(st.lists(st.tuples(st.none() | st.binary(max_size=40),
                              st.none() | st.binary(max_size=200)), min_size=1,
                    max_size=20))
    def test_round_trip_property(self, values):
        raw = kio_batch(values)
        self.assertEqual(batches.encode(batches.decode(raw, 0, len(raw))), raw)

    @settings(max_examples=200, deadline=None,
              suppress_health_check=list(HealthCheck))  # timing: not ours
    @given(st.binary(min_size=61, max_size=400))
    def test_garbage_raises_batch_error_only(self, data):
        data = bytearray(data)
        data[16] = 2
        try:
            batches.decode(bytes(data), 0, len(data))
        except batches.BatchError:
            pass


class TaggingTests(unittest.TestCase):
    """Concentrated topics: records tagged on produce, untagged or emptied on fetch."""

    def test_tag_then_untag(self):
        from vkafka.tenancy import concentration
        raw = kio_batch([(b"k", b"v"), (None, b"w")], headers=[(b"app", b"1")])
        tagged = concentration.tag_records(raw, "londonorders", 2)
        batch = batches.decode(tagged, 0, len(tagged))
        self.assertEqual(batch.records[0].key, b"londonorders\x00k")
        self.assertIn((b"vkafka.topic", b"londonorders"), batch.records[1].headers)
        self.assertEqual(batch.fields[9:12], [-1, -1, -1])  # producer id cleared
        # as stored by the broker, at offset 500, with another topic's batch after
        stored = bytearray(tagged)
        struct.pack_into(">q", stored, 0, 500)
        other = bytearray(concentration.tag_records(kio_batch([(b"x", b"y")]),
                                                    "londonpayments", 2))
        struct.pack_into(">q", other, 0, 502)
        both = bytes(stored) + bytes(other)
        mine, gap = concentration.untag_records(both, "londonorders")
        self.assertEqual(gap, (502, 503))  # the other topic's batch: offset 502
        found, end = batches.whole_batches(mine, 0, len(mine))
        self.assertEqual(len(found), 2)
        first = batches.decode(mine, *found[0])
        self.assertEqual([(r.key, r.value, r.headers) for r in first.records],
                         [(b"k", b"v", [(b"app", b"1")]), (None, b"w", [(b"app", b"1")])])
        self.assertEqual(first.base_offset, 500)
        second = read_batch(mine, found[1][0])[0]
        self.assertEqual((len(second.records), second.last_offset_delta), (0, 0))

    def test_transactional_batches_refused(self):
        from vkafka.tenancy import concentration
        raw = bytearray(kio_batch([(b"k", b"v")]))
        struct.pack_into(">h", raw, 21, 0x10)
        self.assertRaises(concentration.Refused, concentration.tag_records, bytes(raw),
                          "v", 0)


class TaggingAttackTests(unittest.TestCase):
    """What a tenant sharing a concentrated topic tried against another."""

    def stored(self, values, virtual, base, headers=()):
        from vkafka.tenancy import concentration
        raw = bytearray(concentration.tag_records(kio_batch(values, headers=headers),
                                                  virtual, 0))
        struct.pack_into(">q", raw, 0, base)
        return bytes(raw)

    def test_partial_batch_never_forwarded(self):
        """A fetch cut inside another tenant's batch (the tenant picks its
        fetch sizes): none of that batch's bytes reach it."""
        from vkafka.tenancy import concentration
        mine = self.stored([(b"k", b"mine")], "aorders", 10)
        theirs = self.stored([(b"SECRET-KEY", b"SECRET-VALUE")], "borders", 11)
        for cut in range(1, len(theirs)):
            out, _ = concentration.untag_records(mine + theirs[:cut], "aorders")
            self.assertNotIn(b"SECRET", out, cut)
            self.assertNotIn(b"borders", out, cut)
            self.assertEqual(batches.whole_batches(out, 0, len(out))[1], len(out))

    def test_a_client_tag_is_refused(self):
        """A record carrying vkafka.topic itself (another logical topic's name
        under the naming rule) is refused on produce; and a stored record whose
        own headers name another topic before the gateway's tags is not
        that topic's."""
        from vkafka.tenancy import concentration
        for key in (b"vkafka.topic", b"vkafka.partition"):
            self.assertRaises(concentration.Refused, concentration.tag_records,
                              kio_batch([(b"k", b"v")], headers=[(key, b"borders")]),
                              "aorders", 0)
        raw = kio_batch([(b"k", b"INJECTED")], headers=[(b"vkafka.topic", b"borders")])
        batch = batches.decode(raw, 0, len(raw))  # as a writer past the gateway made it
        for r in batch.records:
            r.headers += [(b"vkafka.topic", b"aorders"), (b"vkafka.partition", b"0")]
        injected = batches.encode(batch)
        out, _ = concentration.untag_records(injected, "borders")
        self.assertNotIn(b"INJECTED", out)

    def test_records_bounded(self):
        """At most MAX_RECORDS records a Produce (each rewritten on the loop:
        a gzip batch of a million empty records is 11 KB); a Fetch answer
        untags about as many, then ends after a batch (the client goes on
        from there)."""
        from vkafka.tenancy import concentration
        from vkafka.tenancy.concentration import records as tagging
        many = kio_batch([(None, b"")] * 600)
        self.assertEqual(tagging.record_count(many * 3), 1800)
        stored = b"".join(self.stored([(None, b"")] * 600, "aorders", 600 * i)
                          for i in range(30))
        out, _ = concentration.untag_records(stored, "aorders")
        kept = batches.whole_batches(out, 0, len(out))[0]
        self.assertEqual(len(kept), -(-tagging.MAX_RECORDS // 601))


class WithoutProducerTests(unittest.TestCase):
    """without_producer: producer id, epoch and sequence cleared, CRC right."""

    def test_cleared_and_checked(self):
        one, two = kio_batch([(b"k", b"v1")]), kio_batch([(None, b"v2")], 200)
        out = batches.without_producer(one + two)
        self.assertEqual(len(out), len(one + two))
        first, size = read_batch(out, 0)  # kio checks the CRC
        second, _ = read_batch(out, size)
        for parsed in (first, second):
            self.assertEqual((parsed.producer_id, parsed.producer_epoch,
                              parsed.base_sequence), (-1, -1, -1))
        self.assertEqual([r.value for r in first.records + second.records],
                         [b"v1", b"v2"])

    def test_without_producer_as_it_came(self):
        raw = batches.without_producer(kio_batch([(b"k", b"v")]))
        self.assertIs(batches.without_producer(raw), raw)

    def test_transactional_control_partial_refused(self):
        raw = bytearray(kio_batch([(b"k", b"v")]))
        for flag in (batches.TRANSACTIONAL, batches.CONTROL):
            flagged = bytearray(raw)
            flagged[22] |= flag
            with self.assertRaises(batches.BatchError):
                batches.without_producer(bytes(flagged))
        with self.assertRaises(batches.BatchError):
            batches.without_producer(bytes(raw[:-1]))


from kio.schema.errors import ErrorCode  # noqa: E402

from .test_rights import NO_THROTTLE, SECONDS, RightsTestCase  # noqa: E402


class ConcentratedProduceRefusalTests(RightsTestCase):
    """A Produce the concentration layer refuses is answered per partition,
    as a broker answers a bad batch: the concentrated topic's partitions get
    a Kafka error code and the reason, the request's other topics are
    written, and the connection stays open (closed, the producer sent the
    same batch again until its delivery timeout)."""

    def setUp(self):
        super().setUp()
        self.vclusters.namespace("shop").set_alias("clicks", "shared.events",
                                                   concentrated=True, partitions=2)

    def produce(self, parts, version=9):
        """A Produce by the super user of (topic, partition, records) parts."""
        import importlib
        m = importlib.import_module(f"kio.schema.produce.v{version}.request")
        return m.ProduceRequest(transactional_id=None, acks=i16(-1), timeout=SECONDS,
                                topic_data=tuple(m.TopicProduceData(name=topic, partition_data=(
                m.PartitionProduceData(index=i32(index), records=records),))
                for topic, index, records in parts))

    def answer(self, sent):
        """The broker's answer to *sent*: a decoy topic unknown, others written."""
        from kio.schema.produce.v9 import response as r
        return r.ProduceResponse(throttle_time=NO_THROTTLE, responses=tuple(r.TopicProduceResponse(
                name=t.name, partition_responses=(r.PartitionProduceResponse(
                    index=t.partition_data[0].index, error_code=ErrorCode(
                        3 if t.name.startswith("!") else 0), base_offset=i64(5),
                    log_append_time=None, log_start_offset=i64(0), record_errors=(),
                    error_message=None),)) for t in sent.topic_data))

    def refused(self, records, index=0):
        """The client's answer for "clicks" (sent with "orders"): (code, message)."""
        outcome, pending = self.send(self.produce(
            [("clicks", index, records), ("orders", 0, kio_batch([(None, b"v")]))]),
            9, user="root")
        sent = self.forwarded(outcome)
        names = [t.name for t in sent.topic_data]
        self.assertTrue(names[0].startswith("!"), "nothing reaches the shared topic")
        self.assertEqual(names[1], "shoporders")
        answer = self.answered(pending, self.answer(sent))
        clicks, orders = answer.responses
        self.assertEqual((clicks.name, orders.name), ("clicks", "orders"))
        self.assertEqual(orders.partition_responses[0].error_code, ErrorCode.none)
        part = clicks.partition_responses[0]
        return part.error_code, part.error_message

    def test_reserved_header(self):
        code, message = self.refused(kio_batch([(None, b"v")], headers=[
            (b"vkafka.topic", b"other")]))
        self.assertEqual(code, ErrorCode.invalid_record)
        self.assertIn("'clicks': the headers vkafka.topic and vkafka.partition", message)

    def test_compression_not_supported(self):
        from .kafka_messages import compressed
        code, message = self.refused(compressed(kio_batch([(None, b"v")]), 3))  # lz4
        self.assertEqual(code, ErrorCode.unsupported_compression_type)
        self.assertIn("lz4 compression is not supported", message)

    def test_partition_past_the_logical_topic(self):
        code, message = self.refused(kio_batch([(None, b"v")]), index=2)
        self.assertEqual(code, ErrorCode.unknown_topic_or_partition)
        self.assertIn("'clicks' has 2 partitions, not partition 2", message)
