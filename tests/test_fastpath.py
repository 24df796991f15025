"""The Fetch and Produce fast paths: a structural scan agrees with a full decode."""

import datetime
import random
import struct
import uuid

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i32Timedelta, i64
from twisted.trial import unittest

from vkafka.protocol.codec import encode_body
from vkafka.protocol.codec import decode_body
from vkafka.protocol.fastpath import (
    fetch_request_ids, produce_response_end, rename_produce_response, scan_fetch,
    scan_produce_response)
from vkafka.protocol.framing import Malformed
from vkafka.protocol.fetch_stream import FetchStream

from .kafka_messages import record_batch

BATCHES = record_batch(3) + record_batch(4)
"""Two whole batches: 7 records."""


def fetch_response(version, endpoints=(), records=BATCHES, errors=(0, 0), top_error=0,
                   topic=None):
    """An encoded Fetch response body: two entries of *topic* (a name before v13,
    an id from v13; default "t" or a random id), a partition per error code."""
    import importlib
    m = importlib.import_module(f"kio.schema.fetch.v{version}.response")
    fields = m.PartitionData.__dataclass_fields__

    def partition(error):
        kw = dict(partition_index=i32(0), error_code=ErrorCode(error),
                  high_watermark=i64(5), last_stable_offset=i64(5),
                  log_start_offset=i64(0), preferred_read_replica=i32(-1),
                  aborted_transactions=(m.AbortedTransaction(producer_id=i64(1),
                                                             first_offset=i64(2)),),
                  records=records)
        return m.PartitionData(**{k: v for k, v in kw.items() if k in fields})
    topic_kw = {"topic_id": topic or uuid.uuid4()} if version >= 13 else \
        {"topic": topic or "t"}
    topic = m.FetchableTopicResponse(partitions=tuple(map(partition, errors)),
                                     **topic_kw)
    kw = {"throttle_time": i32Timedelta.parse(datetime.timedelta(0)),
          "error_code": ErrorCode(top_error), "session_id": i32(0),
          "responses": (topic, topic)}
    if version >= 16:
        kw["node_endpoints"] = tuple(m.NodeEndpoint(node_id=i32(n), host="h",
                                                    port=i32(1)) for n in endpoints)
    return encode_body(m.FetchResponse(
        **{k: v for k, v in kw.items() if k in m.FetchResponse.__dataclass_fields__}))


class FetchScanTests(unittest.TestCase):
    def test_no_node_endpoints(self):
        """Without node_endpoints the scan says: pass as bytes (v4 to v18)."""
        for version in range(4, 19):
            self.assertTrue(scan_fetch(fetch_response(version), 0, version).tags_empty,
                            version)

    def test_node_endpoints_detected(self):
        """node_endpoints present: the scan says the response must be rewritten."""
        for version in (16, 17, 18):
            body = fetch_response(version, endpoints=(2,))
            self.assertFalse(scan_fetch(body, 0, version).tags_empty)

    def test_records_and_errors(self):
        """Every version: records of every partition's whole batches; the first
        non-zero error, the top-level one (v7+) before the partitions'."""
        for version in range(4, 19):
            scan = scan_fetch(fetch_response(version), 0, version)
            self.assertEqual((scan.error, scan.records), (0, 4 * 7), version)
            body = fetch_response(version, errors=(0, 6, 3), top_error=0)
            self.assertEqual(scan_fetch(body, 0, version).error, 6, version)
            if version >= 7:
                body = fetch_response(version, errors=(6,), top_error=71)
                self.assertEqual(scan_fetch(body, 0, version).error, 71, version)

    def test_partial_last_batch_not_counted(self):
        """A batch cut at the fetch's byte limit is skipped, the whole ones counted."""
        body = fetch_response(17, records=BATCHES[:-10])
        self.assertEqual(scan_fetch(body, 0, 17).records, 4 * 3)

    def test_null_records_and_truncation(self):
        """Null records scan fine; a truncated or overlong response raises, never
        passes."""
        for version in (11, 17):
            body = fetch_response(version, records=None)
            scan = scan_fetch(body, 0, version)
            self.assertEqual((scan.records, scan.tags_empty), (0, True))
            with self.assertRaises(Exception):
                scan_fetch(body[:-5], 0, version)
        with self.assertRaises(ValueError):
            scan_fetch(fetch_response(11) + b"\0", 0, 11)


def framed_fetch(version, body):
    """A whole Fetch response frame: size prefix, header (v1 from v12), *body*."""
    frame = struct.pack(">i", 7) + (b"\0" if version >= 12 else b"") + body
    return struct.pack(">i", len(frame)) + frame


def cut(data, rng):
    """*data* in chunks of random sizes, from one byte to most of it: headers,
    lengths and batch headers land across chunk boundaries."""
    chunks, at = [], 0
    while at < len(data):
        size = rng.choice((1, 2, 3, 7, 60, 61, 62, 200, 5000, 1 << 20))
        chunks.append(data[at:at + size])
        at += size
    return chunks


def stream_scan(version, chunks):
    stream = FetchStream(version)
    for chunk in chunks:
        stream.feed(chunk)
    return stream.finish()


class FetchStreamTests(unittest.TestCase):
    """The scan of a response as it arrives agrees with scan_fetch, however
    its bytes are cut."""

    def test_agrees_with_scan_fetch(self):
        rng = random.Random(7)
        many = b"".join(record_batch(rng.randint(1, 5)) for _ in range(20))
        cases = (dict(), dict(endpoints=(1, 2)), dict(records=many),
                 dict(records=many + many[:70]), dict(errors=(0, 3)),
                 dict(errors=(6,), top_error=71), dict(records=None))
        for version in range(4, 19):
            for kw in cases:
                whole = framed_fetch(version, fetch_response(version, **kw))
                header = 4 + (1 if version >= 12 else 0)
                want = scan_fetch(whole[4:], header, version)
                want = (want.error, want.records, want.tags_empty,
                        want.tags_at + 4 if want.tags_at >= 0 else -1)
                for _ in range(10):
                    got = stream_scan(version, cut(whole, rng))
                    self.assertEqual((got.error, got.records, got.tags_empty,
                                      got.tags_at), want, (version, kw))

    def test_malformed_raises(self):
        """Truncated, overlong, or with a records length past its end: raises."""
        for version in (11, 17):
            whole = framed_fetch(version, fetch_response(version))
            with self.assertRaises(ValueError):
                stream_scan(version, [whole[:-1]])
            with self.assertRaises(ValueError):
                stream_scan(version, [whole, b"\0"])
        whole = framed_fetch(17, fetch_response(17, records=None))
        with self.assertRaises(ValueError):  # 127 tagged fields announced, 25 there
            stream_scan(17, [whole[:-1], b"\x7f", b"\0" * 50])

    def test_keeps_no_records(self):
        """Megabytes of records pass through chunk by chunk and are not kept."""
        batches = record_batch(15, b"x" * 1024) * 200
        whole = framed_fetch(17, fetch_response(17, records=batches))
        stream = FetchStream(17)
        for at in range(0, len(whole), 1 << 20):
            stream.feed(whole[at:at + (1 << 20)])
            self.assertLess(len(stream._carry) + len(stream._head), 61)
        self.assertEqual(stream.finish().records, 2 * 2 * 200 * 15)


def produce_response(version, errors=(0, 0), message=None, record_errors=(),
                     endpoints=(), topics=None):
    """An encoded Produce response body: *topics* (default two: "t" before v13,
    random ids from v13), a partition per error code, the last with *message* and
    *record_errors*."""
    import importlib
    m = importlib.import_module(f"kio.schema.produce.v{version}.response")
    fields = m.PartitionProduceResponse.__dataclass_fields__

    def partition(i, error):
        last = i == len(errors) - 1
        kw = dict(index=i32(i), error_code=ErrorCode(error), base_offset=i64(7),
                  log_append_time=None, log_start_offset=i64(0),
                  record_errors=tuple(m.BatchIndexAndErrorMessage(
                      batch_index=i32(b), batch_index_error_message=None)
                      for b in record_errors) if last else (),
                  error_message=message if last else None)
        return m.PartitionProduceResponse(**{k: v for k, v in kw.items() if k in fields})

    parts = tuple(partition(i, e) for i, e in enumerate(errors))
    if topics is None:
        topics = (uuid.uuid4(), uuid.uuid4()) if version >= 13 else ("t", "t")
    topics = tuple(m.TopicProduceResponse(
        partition_responses=parts, **{"topic_id" if version >= 13 else "name": t})
        for t in topics)
    kw = {"responses": topics, "throttle_time": i32Timedelta.parse(datetime.timedelta(0))}
    if version >= 10:
        kw["node_endpoints"] = tuple(m.NodeEndpoint(node_id=i32(n), host="h",
                                                    port=i32(1)) for n in endpoints)
    return encode_body(m.ProduceResponse(
        **{k: v for k, v in kw.items() if k in m.ProduceResponse.__dataclass_fields__}))


class ProduceScanTests(unittest.TestCase):
    def test_plain_responses_pass(self):
        """No node_endpoints, no messages: pass as bytes, first error read (v3-v13)."""
        for version in range(3, 14):
            scan = scan_produce_response(produce_response(version), 0, version)
            self.assertEqual((scan.error, scan.tags_empty), (0, True), version)
            scan = scan_produce_response(produce_response(version, errors=(0, 6)), 0,
                                         version)
            self.assertEqual((scan.error, scan.tags_empty), (6, True), version)

    def test_what_must_be_rewritten(self):
        """node_endpoints (v10+), an error message or record errors (v8+): decoded."""
        for version in range(10, 14):
            body = produce_response(version, endpoints=(2,))
            self.assertFalse(scan_produce_response(body, 0, version).tags_empty)
        for version in range(8, 14):
            for body in (produce_response(version, errors=(0, 87), message="x"),
                         produce_response(version, errors=(0, 87), record_errors=(1,))):
                self.assertFalse(scan_produce_response(body, 0, version).tags_empty,
                                 version)

    def test_truncation_raises(self):
        """A truncated or overlong response raises, never passes."""
        for version in (8, 13):
            body = produce_response(version)
            with self.assertRaises(Exception):
                scan_produce_response(body[:-3], 0, version)
        with self.assertRaises(ValueError):
            scan_produce_response(produce_response(8) + b"\0", 0, 8)

    def test_partition_count_beyond_the_bytes_raises(self):
        """Before v8 a partition is fixed fields the walk steps over unread: a
        count of 2**31 - 1 after a first partition with an error walked 2**31
        steps (three minutes, found by the fuzzer).  Now it raises at once."""
        for version in range(3, 14):
            body = bytearray(produce_response(version, errors=(6,)))
            flexible = version >= 9
            at = 1 + (16 if version >= 13 else 1 + len(b"t")) if flexible else \
                4 + 2 + len(b"t")  # the first topic's partition count
            if flexible:  # a 5-byte varint: 2**31 - 1 partitions
                body[at:at + 1] = bytes([0xff, 0xff, 0xff, 0xff, 0x07])
            else:
                struct.pack_into(">i", body, at, 2**31 - 1)
            for walk in (scan_produce_response, produce_response_end):
                with self.assertRaises(Malformed, msg=f"v{version} {walk.__name__}"):
                    walk(bytes(body), 0, version)


class ProduceRenameTests(unittest.TestCase):
    def test_names_swapped_rest_kept(self):
        """v3-v12: each topic name replaced (longer or shorter), every other field
        as it was; None as soon as a name has no logical one."""
        from kio.static.constants import EntityType
        for version in range(3, 13):
            body = produce_response(version, errors=(0, 6), topics=("pa", "pb"))
            renamed = rename_produce_response(
                body, 0, version, {"pa": "a-much-longer-name", "pb": ""}.get)
            before = decode_body(0, version, EntityType.response, body, 0)
            after = decode_body(0, version, EntityType.response, renamed, 0)
            self.assertEqual([t.name for t in after.responses],
                             ["a-much-longer-name", ""], version)
            self.assertEqual([t.partition_responses for t in after.responses],
                             [t.partition_responses for t in before.responses])
            self.assertEqual(after.throttle_time, before.throttle_time)
            self.assertIsNone(rename_produce_response(body, 0, version,
                                                      {"pa": "a"}.get))


def fetch_request(version, ids=(), forgotten=(), replica=-1, rack="r1", partitions=2):
    """A Fetch request (v13+) for topics *ids*, forgetting *forgotten*."""
    import importlib

    from kio.static.primitive import i8
    m = importlib.import_module(f"kio.schema.fetch.v{version}.request")
    who = {"replica_id": i32(replica)} if version <= 14 else \
        {"replica_state": m.ReplicaState(replica_id=i32(replica), replica_epoch=i64(3))}
    return m.FetchRequest(
        **who, max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=500)),
        min_bytes=i32(1), max_bytes=i32(1 << 20), isolation_level=i8(1),
        session_id=i32(7), session_epoch=i32(2), rack_id=rack,
        topics=tuple(m.FetchTopic(topic_id=t, partitions=tuple(
            m.FetchPartition(partition=i32(p), fetch_offset=i64(100 * p),
                             partition_max_bytes=i32(1 << 20))
            for p in range(partitions))) for t in ids),
        forgotten_topics_data=tuple(m.ForgottenTopic(topic_id=t, partitions=(i32(0), i32(4)))
                                    for t in forgotten))


class FetchRequestIdsTests(unittest.TestCase):
    """fastpath.fetch_request_ids: where a Fetch request v13+ names topics."""

    def scan(self, version, request):
        from vkafka.protocol.headers import parse_request_header

        from .kafka_messages import request_frame
        raw = request_frame(request, version, 9)[4:]
        return raw, fetch_request_ids(raw, parse_request_header(raw).body_offset, version)

    def test_ids_and_replica_found_in_every_version(self):
        for version in range(13, 19):
            ids, forgotten = [uuid.uuid4() for _ in range(3)], [uuid.uuid4()]
            for replica in (-1, 2):
                raw, (found, positions, named) = self.scan(version, fetch_request(
                    version, ids, forgotten, replica))
                self.assertEqual(found, replica, version)
                self.assertEqual(named, 3 * 2 + 2, version)  # forgotten: 0 and 4
                self.assertEqual([uuid.UUID(bytes=raw[at:at + 16]) for at in positions],
                                 ids + forgotten, version)

    def test_a_partition_named_twice_refused(self):
        """rules/keys.ACROSS: a broker reads a Fetch's partitions into one
        map; one named 13,000 times took it 10-50 ms a request, its answer
        one partition.  Clients never name one twice, in one topic entry or
        in two; the same topic twice, other partitions in each (librdkafka
        may), passes."""
        from dataclasses import replace
        topic = uuid.uuid4()
        request = fetch_request(16, [topic, topic], partitions=3)
        first, second = request.topics
        other = replace(second, partitions=tuple(
            replace(p, partition=i32(p.partition + 3)) for p in second.partitions))
        self.assertEqual(len(self.scan(16, replace(request, topics=(first, other)))[1][1]), 2)
        for twice in (request.topics,  # partitions 0-2 in both entries
                      (replace(first, partitions=first.partitions * 2),)):
            with self.assertRaisesRegex(ValueError, "a partition named twice"):
                self.scan(16, replace(request, topics=twice))

    def test_empty_request(self):
        """An incremental fetch with nothing changed names no topic."""
        self.assertEqual(self.scan(16, fetch_request(16))[1], (-1, [], 0))

    def test_malformed_raises(self):
        from vkafka.protocol.headers import HeaderError, parse_request_header
        raw, _ = self.scan(17, fetch_request(17, [uuid.uuid4()], [uuid.uuid4()]))
        offset = parse_request_header(raw).body_offset
        for bad in [raw[:n] for n in range(offset, len(raw))] + [raw + b"\x00"]:
            with self.assertRaises((ValueError, struct.error, HeaderError)):
                fetch_request_ids(bad, offset, 17)
        # an array count far beyond the bytes left: refused at the first read past them
        huge = raw[:offset + 21] + bytes([0xff, 0xff, 0xff, 0x7f])
        with self.assertRaises(ValueError):
            fetch_request_ids(huge, offset, 16)
        with self.assertRaises(ValueError):
            fetch_request_ids(raw, offset, 12)  # names, not ids

    def test_known_tags_must_fill_their_size(self):
        """Kafka reads a tagged field it knows by its type, not by the size it
        declares: a partition's replica_directory_id (v17) or the top-level
        replica_state (v15+) declaring more bytes than it holds would have the
        broker read the rest as a topic (another tenant's id) or a replica the
        walk never saw.  Refused; exact sizes pass and are read."""
        from vkafka.protocol.headers import parse_request_header
        raw, (_, [at], _) = self.scan(17, fetch_request(17, [uuid.uuid4()]))
        offset = parse_request_header(raw).body_offset
        tags = at + 16 + 1 + 32  # after the id, the partition count and fields
        self.assertEqual(raw[tags], 0)

        def with_partition_tags(section):
            return raw[:tags] + section + raw[tags + 1:]
        exact = with_partition_tags(b"\x01\x00\x10" + bytes(16))
        self.assertEqual(len(fetch_request_ids(exact, offset, 17)[1]), 1)
        lying = with_partition_tags(b"\x01\x00\x43" + bytes(67))
        with self.assertRaises(ValueError):
            fetch_request_ids(lying, offset, 17)
        self.assertEqual(len(fetch_request_ids(lying, offset, 16)[1]), 1)  # unknown: by size

        state = struct.pack(">iq", 2, 5) + b"\x00"
        top = raw[:-16]  # the request's replica_state, the one tag at its end
        self.assertEqual(raw[-16:-13], b"\x01\x01\x0d")
        exact = top + b"\x01\x01\x0d" + state
        self.assertEqual(fetch_request_ids(exact, offset, 17)[0], 2)
        hidden = top + b"\x02\x01\x13" + struct.pack(">iq", -1, 5) + b"\x00" + \
            b"\x01\x0d" + state  # declares 19 bytes, holds 13: a second state inside
        with self.assertRaises(ValueError):
            fetch_request_ids(hidden, offset, 17)
        cluster = top + b"\x01\x00\x09" + b"\x02c" + bytes(7)
        with self.assertRaises(ValueError):
            fetch_request_ids(cluster, offset, 17)

    def test_v18_high_watermark_must_fill_its_size(self):
        """Fetch v18's partition tag 1 (high_watermark, an int64) declaring 24
        bytes, a topic id hidden after its 8: a broker reads the 8 and then
        the id as the next topic, which the walk never checked (another
        account's or tenant's topic).  Refused; 8 bytes pass, and a tag no
        version knows is skipped by its size, as the broker skips it."""
        from vkafka.protocol.headers import parse_request_header
        raw, (_, [at], _) = self.scan(18, fetch_request(18, [uuid.uuid4()]))
        offset = parse_request_header(raw).body_offset
        tags = at + 16 + 1 + 32
        self.assertEqual(raw[tags], 0)

        def with_partition_tags(section):
            return raw[:tags] + section + raw[tags + 1:]
        exact = with_partition_tags(b"\x01\x01\x08" + bytes(8))
        self.assertEqual(len(fetch_request_ids(exact, offset, 18)[1]), 1)
        lying = with_partition_tags(b"\x01\x01\x18" + bytes(8) + uuid.uuid4().bytes)
        with self.assertRaises(ValueError):
            fetch_request_ids(lying, offset, 18)
        unknown = with_partition_tags(b"\x01\x05\x18" + bytes(24))
        self.assertEqual(len(fetch_request_ids(unknown, offset, 18)[1]), 1)

    def test_walks_know_every_tag_a_broker_knows(self):
        """The walks by lengths agree with a broker only if they know each tag
        it reads by type.  Every tagged field of the Fetch versions walked
        (v13 up to the table's) is in an entity the Fetch walk checks (or
        inside such a tag's struct); no Produce version offered, and no
        request header, has one (their walks skip tags by size, as a broker
        skips tags it does not know)."""
        import dataclasses
        import importlib

        from vkafka.protocol.tags import request_tags
        from vkafka.tenancy.rules import tenant_rules

        def tagged(module):
            return {(name, f.name) for name, cls in vars(module).items()
                    if dataclasses.is_dataclass(cls) and isinstance(cls, type)
                    for f in dataclasses.fields(cls) if "tag" in f.metadata}
        rules = tenant_rules()
        walked = ("FetchRequest", "FetchTopic", "FetchPartition", "ForgottenTopic")
        for version in range(13, rules[1].max_version + 1):
            module = importlib.import_module(f"kio.schema.fetch.v{version}.request")
            tables = request_tags("fetch", version, *walked)
            found = tagged(module)
            self.assertEqual({(n, f) for n, f in found if n in walked},
                             {(n, f.name) for n, table in zip(walked, tables)
                              for f in dataclasses.fields(getattr(module, n))
                              if f.metadata.get("tag") in table}, version)
            self.assertLessEqual({n for n, _ in found}, {*walked, "ReplicaState"}, version)
        self.assertIn(1, request_tags("fetch", 18, *walked)[2])  # high_watermark
        for version in range(rules[0].min_version, rules[0].max_version + 1):
            module = importlib.import_module(f"kio.schema.produce.v{version}.request")
            self.assertEqual(tagged(module), set(), version)
        for version in (1, 2):
            module = importlib.import_module(f"kio.schema.request_header.v{version}.header")
            self.assertEqual(tagged(module), set(), version)

    def test_entries_bounded(self):
        """At most MAX_ENTRIES topics and partitions in all: a request of
        millions of small entries would hold the event loop for seconds."""
        from vkafka.protocol.headers import MAX_ENTRIES
        raw, (_, positions, _) = self.scan(16, fetch_request(
            16, [uuid.uuid4()], partitions=MAX_ENTRIES - 1))
        self.assertEqual(len(positions), 1)
        with self.assertRaises(Malformed) as caught:
            self.scan(16, fetch_request(16, [uuid.uuid4()], partitions=MAX_ENTRIES))
        self.assertIn("over 100000 topics and partitions", str(caught.exception))
