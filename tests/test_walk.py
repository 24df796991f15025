"""The compiled walks (vkafka/protocol/_walk.c: the produce path's, a
consumer's Fetch request's, and the scan of a streamed Fetch answer) answer
exactly as their Python references, on every cut and poke of every version
(the Fetch request's, where it answers: it declines all but the plain ones).

The C walk is what runs; the Python one is the reference it must match, and
what runs where no compiler was found.  Both are fed the same bytes, whole,
cut at every byte and with each byte set to a few values: either both raise,
or both return the same positions, counts and errors.
"""

import random
import struct
from dataclasses import replace

from twisted.trial import unittest

from vkafka.protocol import fastpath, fetch_stream, produce
from vkafka.protocol.codec import encode_request
from vkafka.protocol.framing import Malformed
from vkafka.protocol.headers import HeaderError, parse_request_header
from .test_fastpath import (fetch_response, framed_fetch, produce_response,
                            record_batch)
from .test_produce_slicing import produce as produce_request

POKES = (0x00, 0x01, 0x7F, 0x80, 0xFF)


def batch(records, payload=20, producer=0, codec=0, epoch=0):
    """A record batch as the walk sees it (offset, length, magic 2, codec and
    transactional bit, producer id and epoch, count)."""
    body = bytearray(49 + payload)
    body[4] = 2  # magic, after the partition leader epoch
    body[10] = codec  # the attributes' low byte, after the CRC
    struct.pack_into(">qh", body, 31, producer, epoch)
    struct.pack_into(">i", body, 45, records)  # the count closes the header
    return struct.pack(">qi", 0, len(body)) + bytes(body)


RECORDS = batch(3) + batch(4, codec=1) + batch(5)[:30]  # two whole batches, a partial one


def requests():
    """(version, frame, body offset): every version, with and without a
    transactional id, the records real batch headers."""
    for version in range(3, 14):
        for txn in ("tx", None):
            request = produce_request(version, txn)
            request = replace(request, topic_data=tuple(
                replace(t, partition_data=tuple(replace(p, records=RECORDS)
                                                for p in t.partition_data))
                for t in request.topic_data))
            frame = encode_request(request, version, 7, "client")
            yield version, frame, parse_request_header(frame).body_offset


def responses():
    """(version, body): plain, with errors, a message, record errors, endpoints."""
    for version in range(3, 14):
        yield version, produce_response(version)
        yield version, produce_response(version, errors=(0, 6))
        if version >= 8:
            yield version, produce_response(version, errors=(0, 87), message="m")
            yield version, produce_response(version, errors=(0, 87), record_errors=(1,))
        if version >= 10:
            yield version, produce_response(version, endpoints=(2,))


def variants(data, start):
    """*data* whole, cut at every byte after *start*, every byte after
    *start* poked, and with bytes after its end."""
    yield data
    yield data + b"\x00\x07"
    for cut in range(start, len(data)):
        yield data[:cut]
    for at in range(start, len(data)):
        for value in POKES:
            if data[at] != value:
                yield data[:at] + bytes([value]) + data[at + 1:]


def outcome(walk, *args):
    """What *walk* did: its answer, lists made tuples, or that it raised."""
    try:
        result = walk(*args)
    except (Malformed, struct.error):  # HeaderError is a Malformed
        return "raised"
    return tuple(tuple(x) if isinstance(x, list) else x for x in result)


class CompiledWalkTests(unittest.TestCase):
    def test_compiled_walk_is_built(self):
        """`make setup` built the C walks and the produce path uses them (a
        machine without gcc and Python's headers runs the slower Python walks;
        this fails there, saying so)."""
        try:
            from vkafka.protocol import _walk
        except ImportError as e:
            self.fail(f"vkafka/protocol/_walk.c is not built ({e}): `make setup` "
                      "needs a C compiler and Python's headers")
        self.assertIs(produce.walk_request, _walk.produce_request)
        self.assertIs(fastpath.walk_response, _walk.produce_response)
        self.assertTrue(issubclass(fetch_stream.fetch_stream, _walk.FetchScan))

    def test_request_walks_agree(self):
        """Every Produce request version, cut and poked: the same answer."""
        from vkafka.protocol import _walk
        cases = raised = 0
        for version, frame, offset in requests():
            flexible, by_id = version >= 9, version >= 13
            for data in variants(frame, offset):
                expected = outcome(produce.walk_request_py, data, offset, flexible,
                                   by_id)
                got = outcome(_walk.produce_request, data, offset, flexible, by_id)
                self.assertEqual(got, expected, (version, data.hex()))
                self.assertEqual(outcome(_walk.produce_request, memoryview(data),
                                         offset, flexible, by_id), expected)
                cases += 1
                raised += expected == "raised"
        self.assertGreater(cases, 20_000)
        self.assertGreater(raised, cases // 10)  # the sweep reaches the errors
        self.assertLess(raised, cases)

    def test_records_counted(self):
        """Whole batches counted, a partial one not, as the Python walk does;
        the partitions named, each time it is named."""
        for version, frame, offset in requests():
            acks, records, _, fields, end, producer, packed, _, named = \
                produce.walk_request(frame, offset, version >= 9, version >= 13)
            self.assertEqual((acks, records, len(fields), end, producer,
                              [frame[start:stop] for start, stop in packed], named),
                             (-1, 7 * 4, 2, len(frame), 0, [batch(4, codec=1)] * 4, 4),
                             version)

    def test_compressed_batches_noted(self):
        """The (start, end) of the whole compressed batches (any codec bits,
        the partial batch not read), None without any.  Both walks agree."""
        cases = [  # (each partition's records, the compressed batches noted)
            ((batch(1),) * 4, None),
            ((batch(1, codec=1), batch(1)), [batch(1, codec=1)] * 2),
            ((batch(1, codec=4) + batch(1, codec=7, payload=50), batch(2)),
             [batch(1, codec=4), batch(1, codec=7, payload=50)] * 2),
            ((batch(1) + batch(1, codec=3)[:40],), None),
        ]
        self.assertBothWalksNote(cases, 6, lambda frame, spans: spans and [
            frame[start:stop] for start, stop in spans])

    def test_transactional_partitions_noted(self):
        """Each partition whose first batch is transactional (its topic field,
        index and batch), whole or not; later batches not read; None without
        any.  Both walks agree, and ``transactional_partitions`` reads them."""
        txn = batch(1, codec=0x10, producer=7, epoch=3)
        cases = [  # (each partition's records, (producer, epoch) noted of each)
            ((batch(1),) * 4, None),
            ((txn, batch(1)), [(7, 3)] * 2),
            ((batch(1) + txn, txn[:61], txn[:60]), [(7, 3)]),  # of 4 partitions
        ]

        def read(frame, firsts):
            return firsts and [(producer, epoch) for producer, epoch, (field, index)
                               in produce.transactional_partitions(frame, firsts)]
        self.assertBothWalksNote(cases, 7, read)
        frame, offset = next((f, o) for v, f, o in requests() if v == 9)
        raw = bytearray(frame)
        first = raw.find(RECORDS)
        raw[first + 22] |= 0x10
        firsts = produce.walk_request(bytes(raw), offset, True, False)[7]
        self.assertEqual(list(produce.transactional_partitions(bytes(raw), firsts)),
                         [(0, 0, (b"\x07orders", 0))])

    def test_producer_noted(self):
        """The batches' producer id: -1 if none carries one, the id if all
        that do carry the same, -2 if two differ (in one partition or two);
        the partial batch is not read.  Both walks agree."""
        cases = [  # (each partition's records, producer noted)
            ((batch(1, producer=-1),) * 4, -1),
            ((batch(1, producer=-1), batch(1, producer=5)), 5),
            ((batch(1, producer=5) + batch(1, producer=-1), batch(2, producer=5)), 5),
            ((batch(1, producer=5) + batch(1, producer=6),), -2),
            ((batch(1, producer=5), batch(1, producer=2 ** 40)), -2),
            ((batch(1, producer=2 ** 62) + batch(1, producer=7)[:40],), 2 ** 62),
        ]
        self.assertBothWalksNote(cases, 5)

    def assertBothWalksNote(self, cases, index, read=lambda frame, found: found):
        """Both walks give *index* of their answer (``read(frame, it)``) as
        each case expects (its records in every partition of each version's
        request)."""
        from vkafka.protocol import _walk
        for records, expected in cases:
            for version in range(3, 14):
                request = produce_request(version)
                parts = iter(records * 4)
                request = replace(request, topic_data=tuple(
                    replace(t, partition_data=tuple(
                        replace(p, records=next(parts)) for p in t.partition_data))
                    for t in request.topic_data))
                frame = encode_request(request, version, 7, "client")
                offset = parse_request_header(frame).body_offset
                for walk in (_walk.produce_request, produce.walk_request_py):
                    found = walk(frame, offset, version >= 9, version >= 13)[index]
                    self.assertEqual(read(frame, found), expected,
                                     (version, expected, walk))

    def test_response_walks_agree(self):
        """Every Produce response version and kind, cut and poked: the same answer."""
        from vkafka.protocol import _walk
        cases = 0
        for version, body in responses():
            for data in variants(body, 0):
                expected = outcome(fastpath.walk_response_py, data, 0, version)
                self.assertEqual(outcome(_walk.produce_response, data, 0, version),
                                 expected, (version, data.hex()))
                cases += 1
        self.assertGreater(cases, 10_000)

    def test_random_bytes(self):
        """Random bytes after a plausible start: the same answer, no crash."""
        from vkafka.protocol import _walk
        rng = random.Random(24)
        for _ in range(20_000):
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
            for flexible in (False, True):
                for by_id in (False, True):
                    self.assertEqual(
                        outcome(_walk.produce_request, data, 0, flexible, by_id),
                        outcome(produce.walk_request_py, data, 0, flexible, by_id))
            version = rng.randrange(3, 14)
            self.assertEqual(outcome(_walk.produce_response, data, 0, version),
                             outcome(fastpath.walk_response_py, data, 0, version))

    def test_length_scans_agree(self):
        """lengths.check's scan for a possible 2**32 length, compiled and as a
        regex: the same answer on random bytes (high bytes likely, so runs
        of four are common), every offset, and bytes or a memoryview."""
        from vkafka.protocol import _walk, lengths
        self.assertIs(lengths.maybe_huge, _walk.maybe_huge)
        rng = random.Random(25)
        found = 0
        for _ in range(5_000):
            data = bytes(rng.choice((0x00, 0x0f, 0x10, 0x7f, 0x80, 0xff, rng.getrandbits(8)))
                         for _ in range(rng.randrange(0, 40)))
            for offset in (-3, 0, 1, 5, len(data) - 5, len(data), len(data) + 9):
                expected = lengths.maybe_huge_py(data, offset)
                self.assertEqual(_walk.maybe_huge(data, offset), expected,
                                 (data.hex(), offset))
                self.assertEqual(_walk.maybe_huge(memoryview(data), offset), expected)
                found += expected
        self.assertGreater(found, 1000)

    def test_offset_past_the_end(self):
        """An offset at or past the end raises, never reads beyond the buffer."""
        from vkafka.protocol import _walk
        for offset in (0, 3, 10, 1 << 40):
            with self.assertRaises(HeaderError):
                _walk.produce_request(b"\x00\x01", offset, True, False)
            with self.assertRaises(HeaderError):
                _walk.produce_response(b"\x00\x01", offset, 9)


def fetch_answers():
    """(version, frame): every Fetch answer version, with batches (a partial
    one last), no records, an error, and (v16+) node endpoints."""
    records = record_batch(2) + record_batch(3) + record_batch(1)[:70]
    for version in range(4, 19):
        yield version, framed_fetch(version, fetch_response(version, records=records))
        yield version, framed_fetch(version, fetch_response(
            version, records=None, errors=(0, 6), top_error=0))
        if version >= 16:
            yield version, framed_fetch(version, fetch_response(
                version, endpoints=(1,), records=record_batch(1)))


def scanned(make, version, chunks):
    """What a streamed scan made by *make* found in *chunks*: its Scan and
    the ids it was asked to check (and at which chunk), or that it raised."""
    checked, at = [], [0]
    try:
        scan = make(version, lambda topic_id: checked.append((at[0], topic_id)))
        for at[0], chunk in enumerate(chunks):
            scan.feed(chunk)
        return scan.finish(), checked
    except (Malformed, struct.error):
        return "raised", checked


class CompiledFetchScanTests(unittest.TestCase):
    """_walk.FetchScan against fetch_stream.FetchStream, its reference."""

    def assertAgree(self, version, chunks, *why):
        expected = scanned(fetch_stream.FetchStream, version, chunks)
        self.assertEqual(scanned(fetch_stream.fetch_stream, version, chunks),
                         expected, why)
        return expected[0] == "raised"

    def test_cut_anywhere(self):
        """Each answer whole, in two pieces cut at every byte, in one-byte
        chunks, and in random chunks: the same Scan, the same ids checked in
        the same chunk (before any of its topic's bytes go on)."""
        rng = random.Random(11)
        for version, frame in fetch_answers():
            self.assertFalse(self.assertAgree(version, [frame]), version)
            for cut in range(len(frame)):
                self.assertFalse(self.assertAgree(
                    version, [frame[:cut], frame[cut:]], version, cut))
            self.assertFalse(self.assertAgree(
                version, [frame[i:i + 1] for i in range(len(frame))], version))
            for _ in range(20):
                chunks, at = [], 0
                while at < len(frame):
                    size = rng.choice((1, 2, 5, 16, 61, 62, 300))
                    chunks.append(frame[at:at + size])
                    at += size
                self.assertFalse(self.assertAgree(version, chunks, version))

    def test_poked_truncated_and_overlong(self):
        """Every byte poked, every truncation, bytes past the end: both scans
        raise, or both give the same Scan, fed whole and in two halves."""
        cases = raised = 0
        for version, frame in fetch_answers():
            for data in variants(frame, 8):
                for chunks in ([data], [data[:len(data) // 2], data[len(data) // 2:]]):
                    raised += self.assertAgree(version, chunks, version, data.hex())
                    cases += 1
        self.assertGreater(cases, 50_000)
        self.assertGreater(raised, cases // 10)  # the sweep reaches the errors
        self.assertLess(raised, cases)

    def test_a_refused_id_stops_the_scan(self):
        """check_id raising (a topic not the tenant's) propagates from feed."""
        version, frame = next((v, f) for v, f in fetch_answers() if v == 13)

        def refuse(topic_id):
            raise ValueError("not yours")
        for make in (fetch_stream.FetchStream, fetch_stream.fetch_stream):
            with self.assertRaises(ValueError):
                make(version, refuse).feed(frame)

    def test_records_counted_across_chunks(self):
        """Megabytes of 16 KB batches in 64 KB chunks: every record counted."""
        batches = record_batch(15, b"x" * 16000) * 70
        frame = framed_fetch(17, fetch_response(17, records=batches))
        scan = fetch_stream.fetch_stream(17)
        for at in range(0, len(frame), 65536):
            scan.feed(memoryview(frame)[at:at + 65536])  # any bytes-like chunk
        self.assertEqual(scan.finish().records, 2 * 2 * 70 * 15)


def plain_fetch_requests():
    """(version, frame, body offset): Fetch requests v13+ as consumers send
    them (no tagged field): none, one or three topics of one to three
    partitions, forgotten topics, the same topic twice with other
    partitions, and (v13-14) a replica id."""
    import importlib
    import uuid

    from .test_fastpath import fetch_request
    ids = [uuid.UUID(int=n * 0x0101010101010101) for n in range(1, 5)]
    for version in range(13, 19):
        m = importlib.import_module(f"kio.schema.fetch.v{version}.request")
        for topics, forgotten, partitions in (((), (), 1), (ids[:1], (), 2),
                                              (ids[:3], ids[3:], 3), ((), ids[:2], 1)):
            request = fetch_request(version, topics, forgotten, partitions=partitions)
            if version >= 15:  # no replica state: no tag
                request = replace(request, replica_state=m.ReplicaState())
            frame = encode_request(request, version, 9, "consumer")
            yield version, frame, parse_request_header(frame).body_offset
        first = fetch_request(version, ids[:1], partitions=2)
        again = replace(first.topics[0], partitions=tuple(
            replace(p, partition=p.partition + 2) for p in first.topics[0].partitions))
        twice = replace(first, topics=(first.topics[0], again))
        if version >= 15:
            twice = replace(twice, replica_state=m.ReplicaState())
        frame = encode_request(twice, version, 9, "consumer")
        yield version, frame, parse_request_header(frame).body_offset


def fetch_walked_py(frame, offset, version):
    """The Python walks the compiled fetch_request stands for."""
    return (*fastpath.fetch_request_ids(frame, offset, version),
            *fastpath.fetch_session(frame, offset, version))


class CompiledFetchRequestTests(unittest.TestCase):
    """_walk.fetch_request, fastpath.fetch_request_walk's compiled plain case,
    against the Python walks: where it answers, the same answer; where they
    raise, it declines (None) and they decide."""

    def test_used(self):
        from vkafka.protocol import _walk
        self.assertIs(fastpath.plain_fetch_request, _walk.fetch_request)

    def test_plain_requests_taken(self):
        from vkafka.protocol import _walk
        for version, frame, offset in plain_fetch_requests():
            got = _walk.fetch_request(frame, offset, version)
            self.assertIsNotNone(got, (version, frame.hex()))
            self.assertEqual(outcome(_walk.fetch_request, memoryview(frame), offset,
                                     version), outcome(fetch_walked_py, frame, offset,
                                                       version), version)
            self.assertEqual(fastpath.fetch_request_walk(frame, offset, version), got)

    def test_cut_poked_and_overlong(self):
        """Every cut and poke of every plain request: the compiled walk
        answers as the Python walks or declines, and declines wherever they
        raise (a partition named twice, a null array, bytes after the end)."""
        from vkafka.protocol import _walk
        cases = taken = raised = 0
        for version, frame, offset in plain_fetch_requests():
            for data in variants(frame, offset):
                expected = outcome(fetch_walked_py, data, offset, version)
                got = _walk.fetch_request(data, offset, version)
                if got is not None:
                    self.assertEqual(outcome(_walk.fetch_request, data, offset, version),
                                     expected, (version, data.hex()))
                    taken += 1
                self.assertEqual(outcome(fastpath.fetch_request_walk, data, offset,
                                         version), expected, (version, data.hex()))
                cases += 1
                raised += expected == "raised"
        self.assertGreater(cases, 10_000)
        self.assertGreater(raised, cases // 10)
        self.assertGreater(taken, cases // 10)

    def test_what_it_declines(self):
        """Tagged fields (the Python walk checks known tags' sizes), a
        partition named twice, more than 256 partitions, names (before v13)
        and offsets outside the frame: None."""
        import uuid

        from vkafka.protocol import _walk

        from .test_fastpath import fetch_request
        topic = uuid.uuid4()
        tagged = encode_request(fetch_request(17, [topic]), 17, 9, "c")  # replica state
        twice = fetch_request(16, [topic], partitions=2)
        twice = replace(twice, topics=(replace(twice.topics[0], partitions=twice.topics[
            0].partitions * 2),))
        many = fetch_request(16, [topic], partitions=257)
        for version, frame in ((17, tagged), (16, encode_request(twice, 16, 9, "c")),
                               (16, encode_request(many, 16, 9, "c"))):
            offset = parse_request_header(frame).body_offset
            self.assertIsNone(_walk.fetch_request(frame, offset, version))
        self.assertEqual(len(fastpath.fetch_request_walk(
            encode_request(many, 16, 9, "c"), offset, 16)[1]), 1)
        for offset in (-1, 1 << 40):
            self.assertIsNone(_walk.fetch_request(tagged, offset, 17))
        self.assertIsNone(_walk.fetch_request(tagged, 0, 12))

    def test_random_bytes(self):
        from vkafka.protocol import _walk
        rng = random.Random(26)
        for _ in range(20_000):
            data = bytes(rng.choice((0x00, 0x01, 0x02, 0x80, rng.getrandbits(8)))
                         for _ in range(rng.randrange(0, 90)))
            version = rng.randrange(13, 19)
            got = _walk.fetch_request(data, 0, version)
            if got is not None:
                self.assertEqual(outcome(_walk.fetch_request, data, 0, version),
                                 outcome(fetch_walked_py, data, 0, version), data.hex())
