"""The produce lane (filters/lane.py) against the rule table's path.

Two tenant connections on in-memory transports take the same requests, one
with the lane and one without: whatever the bytes (requests as clients send
them, others the lane must leave alone, every byte of a request poked), the
broker and the client see the same bytes, and the connection ends the same
way.  The lane must also take the requests it is for, or it saves nothing.
"""

import contextlib
import copy
import datetime
import importlib
import struct
import types
import uuid

from kio.schema.errors import ErrorCode
from kio.static.primitive import i16, i32, i32Timedelta
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from vkafka.filters import lane
from vkafka.protocol.framing import FrameDecoder, frame
from vkafka.proxy import splice

from .kafka_messages import record_batch, request_frame
from .test_fastpath import produce_response
from .test_tenant_splice import TenantSpliceBase

NAMES = ("t", "orders")
IDS = {name: uuid.UUID(int=n + 1) for n, name in enumerate(NAMES)}
VERSIONS = range(9, 14)


def produce(version, topics=(("t", (0,)),), correlation_id=7, acks=-1, txn=None,
            producer=-1, client_id="cli", value=b"v" * 20):
    """A framed Produce naming *topics* ((name, partitions) pairs; by id from
    v13), a small batch for each partition."""
    m = importlib.import_module(f"kio.schema.produce.v{version}.request")
    data = tuple(m.TopicProduceData(
        partition_data=tuple(m.PartitionProduceData(
            index=i32(p), records=record_batch(2, value, producer)) for p in parts),
        **({"topic_id": IDS.get(name, uuid.UUID(int=999))} if version >= 13
           else {"name": name}))
        for name, parts in topics)
    return request_frame(m.ProduceRequest(
        transactional_id=txn, acks=i16(acks),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=1)), topic_data=data),
        version, correlation_id, client_id)


def bytes_if_view(value):
    return bytes(value) if isinstance(value, memoryview) else value


class World(TenantSpliceBase):
    """One tenant connection that has produced once (its names and ids
    decided and remembered)."""

    __test__ = False  # a fixture, not a test case

    def runTest(self):  # pragma: no cover - what TestCase needs to be made
        pass

    def __init__(self, version, metrics=None):
        super().__init__()
        self.setUp()
        if metrics is not None:  # the connection made again, to count
            self.gateway.metrics = metrics
            self.client = self.gateway.factory_for_port(6969).buildProtocol(None)
            self.transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 5))
            self.client.makeConnection(self.transport)
        for name, topic_id in IDS.items():
            self.topology.topic_ids[topic_id] = "london" + name
            self.topology.learn_topic("london" + name, partitions=8)
        self.login()
        self.client.dataReceived(produce(version, [(n, (0,)) for n in NAMES], 1))
        self.broker.dataReceived(frame(struct.pack(">i", 1) + b"\x00" + produce_response(
            version, errors=(0,), topics=tuple(
                IDS[n] if version >= 13 else "london" + n for n in NAMES))))
        self.transport.clear()
        self.broker_transport.clear()

    def outcome(self, data, answer=None):
        """What the broker and the client got for *data* (and the broker's
        *answer*, if any), and whether the connection closed."""
        self.client.dataReceived(data)
        if answer is not None and not self.client.closed:
            self.broker.dataReceived(answer)
        return self.broker_transport.value(), self.transport.value(), self.client.closed


@contextlib.contextmanager
def lane_counted(on=True):
    """The lane on (counting the requests and answers it takes: a read's by
    ``read_in_lane`` and ``read_answers_in_lane`` count as ``in_lane``'s and
    ``answer_in_lane``'s) or off."""
    taken = {"in_lane": [], "answer_in_lane": []}
    spies = {  # the splice's name: (counted as, what it answers off, how many it took)
        "in_lane": ("in_lane", None, lambda r: r is not None),
        "read_in_lane": ("in_lane", ([], 0), lambda r: len(r[0])),
        "answer_in_lane": ("answer_in_lane", None, lambda r: r is not None),
        "read_answers_in_lane": ("answer_in_lane", ([], 0, []), lambda r: len(r[0])),
        # the walks the compiled bookkeeping calls (splice.lane_books)
        "produce_lane_many": ("in_lane", ([], 0), lambda r: len(r[0])),
        "produce_answer_lane_many": ("answer_in_lane", ([], 0, []), lambda r: len(r[0])),
    }
    originals = {name: getattr(splice, name) for name in spies}

    def spy(name):
        counted, off, took = spies[name]

        def called(*args):
            result = originals[name](*args) if on else off
            taken[counted].append(took(result))
            return result
        return called
    for name in spies:
        setattr(splice, name, spy(name))
    try:
        yield taken
    finally:
        for name, original in originals.items():
            setattr(splice, name, original)


@contextlib.contextmanager
def steady_decoys():
    """Decoys (random names and ids for what a tenant may not use) drawn
    from a counter, so that two connections make the same ones."""
    from vkafka.tenancy import context
    drawn = iter(range(1, 1 << 30))
    original = context.uuid
    context.uuid = types.SimpleNamespace(
        UUID=uuid.UUID, uuid4=lambda: uuid.UUID(int=(1 << 100) + next(drawn)))
    try:
        yield
    finally:
        context.uuid = original


def both(version, data, answer=None, counted="in_lane"):
    """(outcome with the lane, outcome without, requests (or answers: the
    *counted* "answer_in_lane") the lane took)."""
    outcomes = []
    for on in (True, False):
        with lane_counted(on) as taken, steady_decoys():
            outcomes.append(World(version).outcome(data, answer))
        if on:
            took = sum(taken[counted])
    return outcomes[0], outcomes[1], took


def answer_to(version, topics=("t",), correlation_id=7, header=b"\x00", **fields):
    """The broker's framed answer naming *topics*, no error unless *fields*
    (``produce_response``'s) say otherwise."""
    fields.setdefault("errors", (0,))
    return frame(struct.pack(">i", correlation_id) + header + produce_response(
        version, topics=tuple(IDS[n] if version >= 13 and n in IDS else
                              uuid.UUID(int=999) if version >= 13 else "london" + n
                              for n in topics), **fields))


class LaneTests(unittest.TestCase):
    def test_takes_what_producers_send(self):
        """Requests as producers send them: taken by the lane, with the same
        bytes to the broker and the same answer to the client as the rule
        table's path gives."""
        cases = [
            dict(),
            dict(topics=(("t", (0, 1, 2)), ("orders", (5,))), value=b"v" * 1024),
            dict(acks=1),
            dict(acks=0),
        ]
        for version in VERSIONS:
            for case in cases:
                topics = [n for n, _ in case.get("topics", (("t", (0,)),))]
                answer = None if case.get("acks") == 0 else answer_to(version, topics)
                with_lane, without, taken = both(version, produce(version, **case),
                                                 answer)
                self.assertEqual(with_lane, without, (version, case))
                self.assertEqual(taken, 1, (version, case))
                if answer is not None:
                    self.assertEqual(both(version, produce(version, **case), answer,
                                          "answer_in_lane")[2], 1, (version, case))
                self.assertFalse(with_lane[2])
                self.assertIn(b"london/cli", with_lane[0])

    def test_leaves_the_rest_alone(self):
        """What the lane must not decide goes the rule table's way: the same
        bytes, the same refusals."""
        many = tuple((f"n{i}", (0,)) for i in range(lane.LANE_TOPICS + 1))
        cases = [
            dict(txn="tx"),
            dict(topics=(("unknown", (0,)),)),
            dict(topics=(("t", (0,)), ("t", (1,)))),  # a topic named twice
            dict(topics=many),
            dict(topics=(("t", tuple(range(lane.LANE_PARTITIONS + 1))),)),
            dict(client_id="another"),
            dict(producer=42),  # a producer id not let write yet (its budget)
        ]
        for version in VERSIONS:
            for case in cases:
                with_lane, without, taken = both(version, produce(version, **case))
                self.assertEqual(with_lane, without, (version, case))
                self.assertEqual(taken, 0, (version, case))

    def test_every_byte_poked(self):
        """Each byte of a request the lane takes, set to 0, 0xff and flipped
        in its lowest bit: the same outcome either way."""
        for version in (9, 13):
            data = produce(version)
            took = 0
            for i in range(len(data)):  # the size prefix too: read whole or not
                for value in {0, 0xff, data[i] ^ 1}:
                    poked = data[:i] + bytes([value]) + data[i + 1:]
                    with_lane, without, taken = both(version, poked)
                    self.assertEqual(with_lane, without, (version, i, value))
                    took += taken
            self.assertGreater(took, 0)  # pokes in the records' values pass

    def test_declines(self):
        """ACLs on, an expired token, a producer id not yet let write, a
        compressed or transactional batch: the rule table's path decides."""
        version = 10
        world = World(version)
        client = world.client
        services = client.services
        rule = client.rules.get(0)

        def taken(data):
            payload = FrameDecoder().feed(data)[0]
            args = lane.lane_args(services, client.sasl, client.client_ids, rule)
            return None if args is None else lane.in_lane(args, payload)
        self.assertIsNotNone(taken(produce(version)))
        services.producer_ids, services.producer = object(), 5
        self.assertIsNone(taken(produce(version, producer=7)))
        self.assertIsNotNone(taken(produce(version, producer=5)))
        self.assertIsNotNone(taken(produce(version)))  # no producer id at all
        services.producer_ids = None
        for attributes in (1, 0x10):  # gzip; transactional
            data = bytearray(produce(version))
            at = data.index(record_batch(2)[:12]) + 21  # the batch's attributes
            data[at + 1] = attributes
            self.assertIsNone(taken(bytes(data)), attributes)
        authorizer = services.authorizer
        services.authorizer = lambda vc: types.SimpleNamespace(enabled=True)
        self.assertIsNone(taken(produce(version)))
        services.authorizer = authorizer
        world.reactor.advance(601)
        self.assertIsNone(taken(produce(version)))

    def test_args_remembered_while_nothing_changes(self):
        """A connection's LaneArgs give what ``lane_args`` would make at that
        moment: the same tuple while nothing changes, and made again when
        the producer id, the ACLs, the namespace's memo, the login's phase,
        the client id or the rule change; an expired token is seen at
        once."""
        from vkafka.filters.sasl import Phase
        version = 10
        world = World(version)
        client = world.client
        services, rule = client.services, client.rules.get(0)

        def check(rule=rule):
            got = client.lane_args.get(services, client.sasl, client.client_ids, rule)
            self.assertEqual(got, lane.lane_args(services, client.sasl,
                                                 client.client_ids, rule))
            return got
        first = check()
        self.assertIsNotNone(first)
        self.assertIs(check(), first)  # remembered
        services.producer_ids, services.producer = object(), 5
        self.assertEqual(check()[6], 5)
        services.producer = 6
        self.assertEqual(check()[6], 6)
        services.producer_ids, services.producer = None, -1
        authorizer = services.authorizer
        services.authorizer = lambda vc: types.SimpleNamespace(enabled=True)
        self.assertIsNone(check())
        services.authorizer = authorizer
        self.assertIsNotNone(check())
        namespace = client.sasl.namespace
        namespace.version += 1  # a mapping changed: a new memo
        self.assertIs(check()[4], namespace.memo().to_broker[True])
        self.assertIsNot(check()[4], first[4])
        client.sasl.phase = Phase.RAW  # a token renewal begun
        self.assertIsNone(check())
        client.sasl.phase = Phase.AUTHENTICATED
        self.assertIsNotNone(check())
        client.client_ids.given = b"\x00\x03two"
        self.assertEqual(check()[2], b"\x00\x03two")
        narrowed = types.SimpleNamespace(min_version=9, max_version=9)
        self.assertEqual(check(narrowed)[:2], (9, 9))
        self.assertIsNotNone(check())
        world.reactor.advance(601)  # the token expired
        self.assertIsNone(check())

    def test_reads_with_their_prefix(self):
        """A read given with its size prefix (``limit``) is taken as its
        payload would be, and only when the prefix says no more than the read
        holds and the frame is within the limit: FrameDecoder's checks, in
        the walk.  A read of requests is taken from its start, one by one
        while each is whole; an answer's read only when it is one whole
        frame."""
        def flat(taken):
            return None if taken is None else \
                (tuple(bytes(p) for p in taken[0]), *map(bytes_if_view, taken[1:]))

        for version in VERSIONS:
            client = World(version).client
            args = lane.lane_args(client.services, client.sasl, client.client_ids,
                                  client.rules.get(0))

            def taken(data, limit):
                requests, end = lane.read_in_lane(args, data, limit, 32)
                return [flat(r) for r in requests], end
            read, answer = produce(version), answer_to(version)
            size, answer_size = len(read) - 4, len(answer) - 4
            alone = flat(lane.in_lane(args, read[4:]))
            self.assertIsNotNone(alone)
            self.assertEqual(taken(read, size), ([alone + (len(read),)], len(read)))
            self.assertEqual(taken(read + b"\0", size), ([alone + (len(read),)],
                                                        len(read)))
            self.assertEqual(taken(read * 3, size)[1], 3 * len(read))
            self.assertEqual(taken(read * 3, size)[0][1:], [alone + (len(read),)] * 2)
            self.assertEqual(lane.read_in_lane(args, read * 3, size, 2)[1], 2 * len(read))
            for wrong in (read[:-1], read[:3], b"", struct.pack(">i", size + 1) + read[4:],
                          struct.pack(">i", size - 1) + read[4:],
                          struct.pack(">i", -1) + read[4:]):
                self.assertEqual(taken(wrong, size + 10), ([], 0), (version, wrong[:4]))
            self.assertEqual(taken(read, size - 1), ([], 0))  # over the limit
            owed = [types.SimpleNamespace(api_version=version, correlation_id=7 + n,
                                          lane=client.sasl.namespace) for n in range(3)]

            def answered(data, limit, owed=owed[:1]):
                answers, end, out = lane.read_answers_in_lane(data, limit, owed)
                self.assertEqual(b"".join(out), b"".join(
                    frame(bytes(a[0])) for a in answers))
                return [tuple(map(bytes_if_view, a)) for a in answers], end
            alone = lane.answer_in_lane(owed[0], answer[4:])
            self.assertIsNotNone(alone)
            alone = tuple(map(bytes_if_view, alone))
            self.assertEqual(answered(answer, answer_size), ([alone], len(answer)))
            self.assertEqual(answered(answer + b"\0", answer_size),
                             ([alone], len(answer)))
            three = b"".join(answer_to(version, correlation_id=7 + n) for n in range(3))
            self.assertEqual(answered(three, answer_size, owed)[1], len(three))
            self.assertEqual(answered(three, answer_size, owed[:2])[1], 2 * len(answer))
            self.assertEqual(answered(three, answer_size, owed[1:]), ([], 0))  # not in turn
            for wrong in (answer[:-1], answer[:3], b"",
                          struct.pack(">i", answer_size + 1) + answer[4:],
                          struct.pack(">i", answer_size - 1) + answer[4:],
                          struct.pack(">i", -1) + answer[4:]):
                self.assertEqual(answered(wrong, answer_size + 10), ([], 0),
                                 (version, wrong[:4]))
            self.assertEqual(answered(answer, answer_size - 1), ([], 0))

    def test_whole_reads_over_the_limits(self):
        """A whole read over the frame size limit, or an answer over what the
        gateway decodes, is refused as the general path refuses it: the
        connection closed, nothing passed on."""
        for version in (9, 13):
            world = World(version)
            read = produce(version)
            world.client.decoder.max_frame_size = len(read) - 5
            with whole_reads_counted() as counted:
                self.assertEqual(world.outcome(read), (b"", b"", True))
            self.assertEqual(counted, {"_lane_read": 0, "lane_answer": 0})
            world = World(version)
            answer = answer_to(version)
            world.client.gateway.max_decoded_response = len(answer) - 5
            with whole_reads_counted() as counted:
                sent, got, closed = world.outcome(read, answer)
            self.assertEqual(counted, {"_lane_read": 1, "lane_answer": 0})
            self.assertTrue(sent)
            self.assertEqual((got, closed), (b"", True))

    def test_answers_left_alone(self):
        """Answers the lane must not decide (broker addresses, record errors,
        error messages, a name it does not hold, another correlation id,
        header tags) go the rule table's way: the same bytes to the client."""
        cases = [
            dict(endpoints=(1,)),
            dict(errors=(0, 3), message="bad"),
            dict(errors=(47,), record_errors=(0,)),
            dict(topics=("unknown",)),
            dict(correlation_id=8),
            dict(header=b"\x01\x00\x00"),  # a tag, 0 bytes long
        ]
        for version in VERSIONS:
            for case in cases:
                if version < 10 and "endpoints" in case:
                    continue  # no node_endpoints before v10
                if version >= 13 and "topics" in case:
                    continue  # v13 answers pass as bytes, named by id
                with_lane, without, taken = both(
                    version, produce(version), answer_to(version, **case),
                    "answer_in_lane")
                self.assertEqual(with_lane, without, (version, case))
                self.assertEqual(taken, 0, (version, case))

    def test_every_answer_byte_poked(self):
        """Each byte of an answer the lane takes, set to 0, 0xff and flipped
        in its lowest bit: the same outcome either way."""
        for version in (9, 13):
            data, answer = produce(version), answer_to(version)
            took = 0
            for i in range(len(answer)):
                for value in {0, 0xff, answer[i] ^ 1}:
                    poked = answer[:i] + bytes([value]) + answer[i + 1:]
                    with_lane, without, taken = both(version, data, poked,
                                                     "answer_in_lane")
                    self.assertEqual(with_lane, without, (version, i, value))
                    took += taken
            self.assertGreater(took, 0)  # pokes of the offsets pass


@contextlib.contextmanager
def whole_reads_counted():
    """Counts of the reads taken whole (``ClientConnection._lane_read``, or
    the compiled read armed by it, ``Books.read``; ``lane_answer``, or
    ``Books.answers_read``), the general path declined.  The compiled reads
    are added as it ends."""
    counts = {"_lane_read": 0, "lane_answer": 0}
    originals = {name: getattr(splice.ClientConnection, name) for name in counts}
    made, lane_books = [], splice.lane_books

    def books_made(sequencer):
        books = lane_books(sequencer)
        made.append(books)
        return books
    splice.lane_books = books_made

    def spy(name):
        def called(*args):
            taken = originals[name](*args)
            counts[name] += bool(taken)
            return taken
        return called
    for name in counts:
        setattr(splice.ClientConnection, name, spy(name))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(splice.ClientConnection, name, original)
        splice.lane_books = lane_books
        made = [books for books in made if books is not None]
        counts["_lane_read"] += sum(books.whole for books in made)
        counts["lane_answer"] += sum(books.answers_whole for books in made)


def both_run(version, script):
    """``script(world)``'s outcome with the lane and without, and the reads
    taken whole with it ({"_lane_read": n, "lane_answer": m})."""
    outcomes = []
    for on in (True, False):
        with lane_counted(on), steady_decoys(), whole_reads_counted() as counts:
            world = World(version)
            script(world)
            outcomes.append((world.broker_transport.value(), world.transport.value(),
                             world.client.closed))
        if on:
            whole = dict(counts)
    return outcomes[0], outcomes[1], whole


def produce_throttle(version, payload):
    """The throttle time (seconds) of a Produce answer's *payload*."""
    from vkafka.protocol.codec import decode_response
    return decode_response(bytes(payload), 0, version)[1].throttle_time.total_seconds()


def produced_ids(data):
    """The correlation ids of the whole Produce requests in *data*."""
    return [bytes(f[4:8]) for f in FrameDecoder().feed(data) if f[:2] == b"\0\0"]


def feed(world, reads=(), answers=()):
    """The client's *reads*, then the broker's *answers*."""
    for data in reads:
        world.client.dataReceived(data)
    for data in answers:
        if not world.client.closed:
            world.broker.dataReceived(data)


class WholeReadTests(unittest.TestCase):
    """A read that is one whole lane Produce (or the answer to one), while
    nothing waits on the connection, skips the splice's framing, turns and
    outboxes (``_lane_read``, ``lane_answer``): the same bytes as the rule
    table's path, and never ahead of what waits."""

    def test_whole_reads_taken_whole(self):
        for version in (9, 13):
            request, answer = produce(version), answer_to(version)
            on, off, whole = both_run(version, lambda w: feed(w, [request], [answer]))
            self.assertEqual(on, off, version)
            self.assertEqual(whole, {"_lane_read": 1, "lane_answer": 1}, version)

    def test_a_whole_frame_after_part_of_one(self):
        """A read that is a whole frame by itself, after a read that left
        part of a frame (a request's, an answer's): it continues that frame,
        it is not taken by itself."""
        for version in (9, 13):
            request, answer = produce(version), answer_to(version)
            for cut in (2, 4, 9):
                scripts = (
                    (lambda w: feed(w, [request[:cut], request]), 0),
                    (lambda w: feed(w, [request], [answer[:cut], answer]), 1))
                for script, requests_whole in scripts:
                    on, off, whole = both_run(version, script)
                    self.assertEqual(on, off, (version, cut))
                    self.assertEqual(whole, {"_lane_read": requests_whole,
                                             "lane_answer": 0}, (version, cut))

    def test_split_and_joined_reads(self):
        """A request or answer over two reads (the general path's framing),
        two in one read (the lane's, frame by frame): the same bytes."""
        for version in (9, 13):
            first, second = produce(version, correlation_id=7), produce(
                version, correlation_id=8)
            answers = answer_to(version, correlation_id=7) + answer_to(
                version, correlation_id=8)
            for cut in (1, 4, 5, len(first) - 1, len(first) + 3):
                joined = first + second
                script = lambda w, cut=cut: feed(  # noqa: E731
                    w, [joined[:cut], joined[cut:]], [answers[:cut], answers[cut:]])
                on, off, whole = both_run(version, script)
                self.assertEqual(on, off, (version, cut))
                self.assertEqual(  # both answered, in order
                    [bytes(f[:4]) for f in FrameDecoder().feed(on[1])],
                    [struct.pack(">i", 7), struct.pack(">i", 8)], (version, cut))
            on, off, whole = both_run(version, lambda w: feed(
                w, [first + second], [answers]))
            self.assertEqual(on, off, version)
            self.assertEqual(whole, {"_lane_read": 1, "lane_answer": 1})

    def each_shape(self, version, shapes, counted):
        """Each of *shapes* ({name: (the client's reads, the broker's reads,
        requests or answers the lane takes)}) run with the lane and without:
        the same bytes, the connection open, the lane's *counted* calls
        taking as many; yields (name, reads, broker's reads, outcome, whole
        reads) for the test's own checks."""
        for name, (reads, given, lane_taken) in shapes.items():
            with lane_counted() as taken:
                on, off, whole = both_run(version, lambda w: feed(w, reads, given))
            self.assertEqual(on, off, name)
            self.assertFalse(on[2], name)
            self.assertEqual(sum(taken[counted]), lane_taken, name)
            yield name, reads, given, on, whole

    def test_several_in_one_read(self):
        """A pipelining producer's read of several requests: the lane takes
        them from the start while they are whole lane requests, the rest (a
        request of another kind, part of one) goes the general way after
        them, in order, the same bytes."""
        from .kafka_messages import metadata_request
        version = 11
        requests = [produce(version, correlation_id=20 + n) for n in range(4)]
        asked = request_frame(metadata_request(), 12, 30, "cli")
        answers = [answer_to(version, correlation_id=20 + n) for n in range(4)]
        shapes = {
            "three": ([b"".join(requests[:3])], answers[:3], 3),
            "a metadata between": ([requests[0] + asked + requests[1]],
                                   answers[:1], 2),
            "a metadata first": ([asked + requests[0] + requests[1]], (), 2),
            "part of the next": ([requests[0] + requests[1][:9],
                                  requests[1][9:] + requests[2]], answers[:3], 3),
            "a prefix cut": ([requests[0] + requests[1][:2],
                              requests[1][2:] + requests[2] + requests[3]],
                             answers, 4),
        }
        for name, reads, given, on, whole in self.each_shape(version, shapes, "in_lane"):
            self.assertEqual(  # every Produce reached the broker, in order
                produced_ids(on[0]), produced_ids(b"".join(reads)), name)
            self.assertEqual(whole["_lane_read"], 0 if name == "a metadata first"
                             else 1, name)

    def test_several_answers_in_one_read(self):
        """The broker's read of several answers: the lane takes them from the
        start while each answers the next lane request in line, the rest (an
        answer to a request that went the rule table's way, part of one)
        goes the general way after them, in order, the same bytes."""
        version = 10
        requests = [produce(version, correlation_id=60 + n) for n in range(3)]
        answers = [answer_to(version, correlation_id=60 + n) for n in range(3)]
        unknown = produce(version, [("new", (0,))], correlation_id=63)
        unknown_answer = answer_to(version, ["new"], correlation_id=63)
        joined = b"".join(answers)
        shapes = {  # reads of the client, reads of the broker, answers by the lane
            "three": ([b"".join(requests)], [joined], 3),
            "part of the next": ([b"".join(requests)], [
                answers[0] + answers[1][:7], answers[1][7:] + answers[2]], 3),
            "a prefix cut": ([b"".join(requests)], [
                answers[0] + answers[1][:3], answers[1][3:] + answers[2]], 3),
            "one by the rule table between": (
                [requests[0] + unknown + requests[1]],
                [answers[0] + unknown_answer + answers[1]], 2),
        }
        for name, reads, given, on, whole in self.each_shape(
                version, shapes, "answer_in_lane"):
            self.assertEqual(whole["lane_answer"], 1, name)
            self.assertEqual(  # every answer reached the client, in order
                [bytes(f[:4]) for f in FrameDecoder().feed(on[1])],
                [bytes(f[:4]) for f in FrameDecoder().feed(b"".join(given))], name)

    def test_several_answers_past_the_limit(self):
        """An answer in a read of several that is over what the gateway
        decodes (``--max-decoded-response``), first or later: the connection
        closes as on the general path, the answers before it sent."""
        version = 10
        small = (produce(version, correlation_id=70), answer_to(version, correlation_id=70))
        big = (produce(version, [("t", (0, 1, 2, 3))], correlation_id=71, value=b"v" * 2000),
               answer_to(version, correlation_id=71, errors=(0, 0, 0, 0)))
        for first, second in ((small, big), (big, small)):
            def script(world, first=first, second=second):
                world.gateway.max_decoded_response = len(small[1]) + 2
                feed(world, [first[0] + second[0]], [first[1] + second[1]])
            on, off, whole = both_run(version, script)
            self.assertEqual(on, off)
            self.assertTrue(on[2])
            self.assertEqual(len(FrameDecoder().feed(on[1])), first is small)

    def test_reads_after_closing_dropped(self):
        """A read that comes after the connection closed (the rest of a read
        whose first request closed it, or one Twisted delivers before the
        close takes effect): nothing framed, held or sent."""
        world = World(10)
        world.client.fail("closed for the test")
        world.broker_transport.clear()
        for data in (produce(10), produce(10) * 2, produce(10)[:9]):
            world.client.dataReceived(data)
        self.assertEqual((world.client.decoder.held, world.broker_transport.value()),
                         ([], b""))

    def test_several_in_one_read_bad_framing(self):
        """A read whose second frame has a size the gateway refuses (negative,
        past the limit): the connection closes, as on the general path, the
        first request sent on (as when the bad size comes in the next read)."""
        version = 10
        first = produce(version, correlation_id=40)
        for size in (-1, 200 * 1024 * 1024):
            data = first + struct.pack(">i", size) + b"\x00\x00\x00\x0a"
            on, off, whole = both_run(version, lambda w: feed(w, [data]))
            self.assertEqual((on[1:], off[1:]), (((b"", True),) * 2), size)
            self.assertEqual(produced_ids(on[0]), produced_ids(first), size)
            self.assertEqual(whole["_lane_read"], 1)
        bigger = produce(version, correlation_id=41, value=b"v" * 200)
        for data, sent in ((first + bigger, first), (bigger + first, b"")):
            def limited(world, data=data):  # whole in the read, past a limit
                world.client.decoder.max_frame_size = len(first) + 10
                feed(world, [data])
            on, off, whole = both_run(version, limited)
            self.assertEqual((on[1:], off[1:]), (((b"", True),) * 2))
            self.assertEqual(produced_ids(on[0]), produced_ids(sent))

    def test_several_in_one_read_in_turns(self):
        """More requests in one read than FRAMES_PER_TURN, or than may be
        owed (MAX_IN_FLIGHT): the lane takes up to there, the rest waits its
        turn, as on the general path."""
        version = 12
        count = splice.FRAMES_PER_TURN + 5
        data = b"".join(produce(version, correlation_id=100 + n) for n in range(count))
        decoder = FrameDecoder()

        def script(world, before=0):
            for n in range(before):
                world.client.dataReceived(produce(version, correlation_id=500 + n))
            world.broker_transport.clear()
            feed(world, [data])
            world.first_turn = len(decoder.feed(world.broker_transport.value()))
            world.reactor.advance(1)
            outcomes.append(world.first_turn)
        for before, first_turn in ((0, splice.FRAMES_PER_TURN),
                                   (splice.MAX_IN_FLIGHT - 3, 3)):
            outcomes = []
            on, off, whole = both_run(version, lambda w: script(w, before))
            self.assertEqual(on, off, before)
            self.assertEqual(outcomes, [first_turn, first_turn], before)
            self.assertEqual(whole["_lane_read"], before + 1, before)

    def test_several_in_one_read_throttled(self):
        """A request of a read that earns a throttle (the tenant's request
        rate): the lane stops after it, the rest of the read waits as on
        the general path, and goes once the throttle ends."""
        from vkafka.filters.throttle import TenantRates
        from vkafka.state.limits import Rates
        version = 10
        data = b"".join(produce(version, correlation_id=300 + n) for n in range(5))
        decoder = FrameDecoder()

        def script(world):
            rates = TenantRates(world.reactor.seconds)
            rates.set(Rates(requests_per_second=1000), {})
            world.client.rates = rates
            world.reactor.advance(0.0025)  # two requests and a half in the bucket
            world.broker_transport.clear()
            feed(world, [data])
            outcomes.append(len(decoder.feed(world.broker_transport.value())))
            world.reactor.advance(1)
        outcomes = []
        with lane_counted() as taken:
            on, off, whole = both_run(version, script)
        self.assertEqual(on, off)
        self.assertEqual(outcomes, [3, 3])  # the third earned the throttle
        self.assertEqual(produced_ids(on[0]), produced_ids(data))
        # the read's five walked at once, the two not sent walked again in their turn
        self.assertEqual(sum(taken["in_lane"]), 5 + 2)
        self.assertEqual(whole["_lane_read"], 1)

    def test_throttled_answers_say_so(self):
        """Under the tenant's rates, the answers to requests that earned no
        throttle go back by the lane; a read that holds the answer to one
        that did goes the general way, which writes the throttle into it:
        the same bytes either way."""
        from vkafka.filters.throttle import TenantRates
        from vkafka.state.limits import Rates
        for version in (9, 13):
            requests = [produce(version, correlation_id=400 + n) for n in range(4)]
            answers = [answer_to(version, correlation_id=400 + n) for n in range(4)]

            def script(world, requests=requests, answers=answers):
                rates = TenantRates(world.reactor.seconds)
                rates.set(Rates(requests_per_second=1000), {})
                world.client.rates = rates
                world.reactor.advance(0.0025)  # two requests and a half in the bucket
                feed(world, requests[:2], answers[:2])  # one answer a read: no throttle
                feed(world, [b"".join(requests[2:])])  # the third earns a throttle
                world.reactor.advance(1)  # the fourth goes after it
                feed(world, [], [b"".join(answers[2:])])
            with lane_counted() as taken:
                on, off, whole = both_run(version, script)
            self.assertEqual(on, off, version)
            sent = FrameDecoder().feed(on[1])
            self.assertEqual([bytes(f[:4]) for f in sent],
                             [struct.pack(">i", 400 + n) for n in range(4)], version)
            throttles = [produce_throttle(version, f) for f in sent]
            self.assertEqual([t > 0 for t in throttles], [False, False, True, False],
                             (version, throttles))
            self.assertEqual(whole["lane_answer"], 2, version)  # not the read of two
            self.assertEqual(sum(taken["answer_in_lane"]), 4, version)

    def test_counted_alike(self):
        """The metrics (requests, bytes, records, latency, answers by first
        error) count the lane's requests and answers as the rule table's
        path counts them: one answer a read, several, errors among them."""
        from vkafka.metrics import Metrics

        from .test_metrics import samples
        for version in (9, 13):
            requests = [produce(version, correlation_id=500 + n) for n in range(4)]
            answers = [answer_to(version, correlation_id=500 + n, errors=(6 * (n % 2),))
                       for n in range(4)]
            counted = []
            for on in (True, False):
                metrics = Metrics()
                with lane_counted(on) as taken, steady_decoys():
                    world = World(version, metrics)
                    feed(world, requests[:1])
                    world.reactor.advance(0.004)
                    feed(world, [], answers[:1])
                    feed(world, [b"".join(requests[1:])])
                    world.reactor.advance(0.3)
                    feed(world, [], [b"".join(answers[1:])])
                counted.append({key: value for key, value in samples(metrics).items()
                                if not key[0].endswith("_created")})
                if on:
                    self.assertEqual(sum(taken["answer_in_lane"]), 4, version)
            self.assertEqual({k: v for k, v in counted[0].items() if counted[1].get(k) != v}, {k: v for k, v in counted[1].items() if counted[0].get(k) != v}, version)
            errors = {dict(key[1])["error"]: value for key, value in counted[0].items()
                      if key[0] == "vkafka_responses_total"}
            self.assertEqual(errors, {"none": 3, "not_leader_or_follower": 2}, version)

    def test_never_ahead_of_what_waits(self):
        """A read while the connection waits (a throttle, a request held for
        a rule, the tenant's loop debt, MAX_IN_FLIGHT answers owed, the
        gateway draining) goes the general way: nothing overtakes."""
        from vkafka.filters.throttle import LoopShare
        version = 10
        request, answer = produce(version, correlation_id=50), answer_to(
            version, correlation_id=50)

        def throttled(world):
            world.client.hold_reads(0.5)

        def waiting(world):  # as ClientConnection._wait_for leaves it
            world.client._held = []
            world.client.valve.hold("waiting")

        def in_debt(world):
            share = LoopShare(0.25, world.reactor.seconds, world.reactor.callLater)
            world.gateway.loop_share = share
            world.client.loop_debt = share.bucket("london")
            world.client.loop_debt.tokens = -1.0

        def owed(world):
            for n in range(splice.MAX_IN_FLIGHT):
                world.client.dataReceived(produce(version, correlation_id=100 + n))

        def draining(world):
            world.gateway.draining = True

        for prepare in (throttled, waiting, in_debt, owed, draining):
            def script(world, prepare=prepare):
                prepare(world)
                world.broker_transport.clear()
                feed(world, [request])
                world.before = world.broker_transport.value()
                world.reactor.advance(10)
                if prepare is not owed:
                    feed(world, (), [answer])
            on, off, whole = both_run(version, script)
            self.assertEqual(on, off, prepare.__name__)
            self.assertEqual(whole["_lane_read"],  # those owed came whole
                             splice.MAX_IN_FLIGHT if prepare is owed else 0,
                             prepare.__name__)
        # and what waits is sent once it may go: the same as the lane's bytes
        on, off, _ = both_run(version, lambda w: (throttled(w), feed(w, [request]),
                                                  w.reactor.advance(1)))
        self.assertIn(b"london/cli", on[0])

    def test_answer_behind_another_goes_the_general_way(self):
        """The answer to a lane request behind a request that did not come
        by the lane (its answer first, in order)."""
        from .kafka_messages import metadata_request
        version = 11
        asked = request_frame(metadata_request(), 12, 8, "cli")
        request, answer = produce(version, correlation_id=9), answer_to(
            version, correlation_id=9)
        on, off, whole = both_run(version, lambda w: feed(
            w, [asked, request], [answer]))
        self.assertEqual(on, off)
        self.assertEqual(whole["lane_answer"], 0)


def api_versions_answered_here(correlation_id):
    """(an ApiVersions request the gateway answers itself, with
    *correlation_id*; the brokers' ApiVersions answer it is made from)."""
    from kio.schema.api_versions.v3.request import ApiVersionsRequest
    from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
    asked = request_frame(ApiVersionsRequest(client_software_name="c",
                                             client_software_version="1"),
                          3, correlation_id, "cli")
    known = ApiVersionsResponse(
        error_code=ErrorCode.none, throttle_time=i32Timedelta.parse(
            datetime.timedelta(0)), api_keys=(ApiVersion(
                api_key=i16(0), min_version=i16(3), max_version=i16(12)),))
    return asked, known


class PythonBooks:
    """The same tests with the lane's bookkeeping in Python (the reference
    that ``_lane.c`` is held to; where the C is not built it does it all)."""

    def setUp(self):
        super().setUp()
        self.patch(splice, "COMPILED_BOOKS", False)


class PythonLaneTests(PythonBooks, LaneTests):
    pass


class PythonWholeReadTests(PythonBooks, WholeReadTests):
    pass


def socket_outbox(case):
    """An Outbox on a plain TCP transport over a socketpair, nothing queued
    (what the compiled bookkeeping sends on at once), and the peer socket."""
    from vkafka.proxy.outbox import Outbox

    from .test_streaming import WriteNowTests
    transport, peer = WriteNowTests.transport(case)
    peer.setblocking(False)
    return Outbox(transport), peer


def received(peer):
    """All the bytes waiting on *peer*."""
    got = b""
    try:
        while chunk := peer.recv(1 << 20):
            got += chunk
    except BlockingIOError:
        pass
    return got


def reference(version, reads, answers):
    """What the broker and the client got with the Python bookkeeping."""
    with steady_decoys():
        original, splice.COMPILED_BOOKS = splice.COMPILED_BOOKS, False
        try:
            world = World(version)
        finally:
            splice.COMPILED_BOOKS = original
        feed(world, reads, answers)
    return world.broker_transport.value(), world.transport.value()


class BooksTests(unittest.TestCase):
    """The compiled bookkeeping (``_lane.Books``) on plain sockets: what it
    sends at once, what it leaves to the outbox, and its refusals."""

    def test_compiled_books_are_built(self):
        self.assertIsNotNone(splice.Books, "vkafka/proxy/_lane.c is not built: "
                                           "run make setup (a C compiler is needed)")
        self.assertIsInstance(World(9).client.books, splice.Books)

    def world_on_sockets(self, version):
        world = World(version)
        world.client.upstream, broker_peer = socket_outbox(self)
        world.client.outbox, client_peer = socket_outbox(self)
        return world, broker_peer, client_peer

    def test_sent_on_the_socket(self):
        """Requests one a read and several a read, answers likewise: each
        read sent at once, the same bytes as the Python's, nothing queued,
        nothing owed after."""
        for version in (9, 13):
            requests = [produce(version, correlation_id=20 + n) for n in range(4)]
            answers = [answer_to(version, correlation_id=20 + n) for n in range(4)]
            reads, replies = [requests[0], b"".join(requests[1:])], \
                [answers[0], b"".join(answers[1:])]
            with steady_decoys(), whole_reads_counted() as counts:
                world, broker_peer, client_peer = self.world_on_sockets(version)
                feed(world, reads[:1], replies[:1])
                feed(world, reads[1:], replies[1:])
            self.assertEqual(counts, {"_lane_read": 2, "lane_answer": 2}, version)
            self.assertEqual((received(broker_peer), received(client_peer)),
                             reference(version, reads, replies), version)
            self.assertEqual(world.client.upstream.transport.queued, [])
            self.assertEqual(world.client.outbox.transport.queued, [])
            self.assertEqual(len(world.client.sequencer.pending), 0)

    def test_room_told_when_answers_leave(self):
        """The sequencer's ``release`` is asked only when it has work; one
        who waits for room (``Sequencer.room``) is told once the lane's
        answers left, and an answer the gateway made behind them leaves."""
        for version in (9, 13):
            with steady_decoys(), whole_reads_counted() as counts:
                world, _, client_peer = self.world_on_sockets(version)
                feed(world, [produce(version, correlation_id=50)])
                told = []
                world.client.sequencer.room = lambda: told.append(True)
                feed(world, (), [answer_to(version, correlation_id=50)])
            self.assertEqual(counts, {"_lane_read": 1, "lane_answer": 1}, version)
            self.assertEqual((told, world.client.sequencer.room), ([True], None), version)
            self.assertEqual(len(world.client.sequencer.pending), 0)

    def test_owed_with_when_it_was_sent(self):
        """Each request is owed its answer, sent at the reactor's time (an
        acks=0 request none), of the lane's namespace."""
        world = World(11)
        world.reactor.advance(5)
        feed(world, [produce(11, correlation_id=30) + produce(11, correlation_id=31,
                                                              acks=0)
                     + produce(11, correlation_id=32)])
        owed = list(world.client.sequencer.pending)
        from vkafka.proxy.sequencer import Pending
        rule = world.client.rules.get(0)
        self.assertEqual(owed, [Pending(n, 0, 11, rule, sent=world.reactor.seconds(),
                                        lane=world.client.sasl.namespace)
                                for n in (30, 32)])
        self.assertEqual([p.correlation_id for p in owed], [30, 32])
        self.assertEqual({p.sent for p in owed}, {world.reactor.seconds()})
        self.assertEqual({p.lane for p in owed}, {world.client.sasl.namespace})
        self.assertEqual({(p.api_key, p.api_version, p.local, p.waiting) for p in owed},
                         {(0, 11, None, False)})

    def test_socket_full_rest_queued_in_order(self):
        """What the socket does not take goes to Twisted's queue, in order."""
        version = 10
        requests = [produce(version, correlation_id=40 + n) for n in range(3)]
        with steady_decoys():
            world, broker_peer, _ = self.world_on_sockets(version)
            sock = world.client.upstream.transport.socket
            filled = 0
            try:
                while True:
                    filled += sock.send(b"x" * 65536)
            except BlockingIOError:
                pass
            feed(world, [b"".join(requests)])
        queued = b"".join(bytes(p) for p in world.client.upstream.transport.queued)
        self.assertEqual(queued, reference(version, [b"".join(requests)], [])[0])
        self.assertEqual(len(received(broker_peer)), filled)

    def test_route_watched(self):
        """Once a send went to the socket at once, the next ones go there
        without asking ``sendable`` while nothing it reads changed (proxy/
        _lane.c's routes); each change of it (Twisted queues bytes, the
        connection closes, the outbox is held, another transport or socket)
        sends the next read where the Python's would go, nothing lost."""
        import socket
        version = 10
        requests = [produce(version, correlation_id=60 + n) for n in range(3)]
        first, full = (reference(version, r, [])[0] for r in (requests[:2], requests))
        queued = lambda t, o: b"".join(bytes(p) for p in t.queued)  # noqa: E731

        def other_socket(t, o):
            t.socket, peer = socket.socketpair()
            peer.setblocking(False)
            self.addCleanup(t.socket.close)
            self.addCleanup(peer.close)
            return lambda t, o: received(peer)

        changes = {  # name: (the change, where the third read went)
            "queued by Twisted": (lambda t, o: setattr(t, "_tempDataLen", 3), queued),
            "a buffer": (lambda t, o: setattr(t, "dataBuffer", b"abc"), queued),
            "disconnecting": (lambda t, o: setattr(t, "disconnecting", True), queued),
            "not connected": (lambda t, o: setattr(t, "connected", False), queued),
            "write closed": (lambda t, o: setattr(t, "_writeDisconnected", True), queued),
            "TLS": (lambda t, o: setattr(t, "TLS", True), queued),
            "held": (lambda t, o: setattr(o, "held", True),
                     lambda t, o: b"".join(bytes(p) for p in o.parts)),
            "another transport": (lambda t, o: setattr(o, "transport", types.SimpleNamespace(
                queued=t.queued, write=t.write, writeSequence=t.writeSequence)), queued),
            "another socket": (other_socket, None),
        }
        asked, compiled = [], splice.compiled_sendable()

        def sendable(transport, plain):
            asked.append(transport)
            return compiled[0](transport, plain)
        self.patch(splice, "compiled_sendable", lambda: (sendable, compiled[1]))
        for name, (change, went) in changes.items():
            with steady_decoys():
                world, broker_peer, _ = self.world_on_sockets(version)
                outbox = world.client.upstream
                transport = outbox.transport
                del asked[:]
                feed(world, requests[:2])
                self.assertEqual(len(asked), 1, name)  # the second by the route
                at_once = received(broker_peer)
                went = change(transport, outbox) or went
                feed(world, requests[2:])
            self.assertEqual((at_once, went(transport, outbox), received(broker_peer)),
                             (first, full[len(first):], b""), name)

    def test_held_outbox_keeps_the_pieces(self):
        """A held outbox (the general path's hold) gets the pieces in order."""
        version = 12
        request = produce(version, correlation_id=50)
        with steady_decoys():
            world = World(version)
            world.client.upstream.hold()
            feed(world, [request])
            world.client.upstream.release()
        self.assertEqual(world.broker_transport.value(),
                         reference(version, [request], [])[0])

    def test_refusals(self):
        books = World(9).client.books
        with self.assertRaises(TypeError):
            books.forward(b"")
        with self.assertRaises(TypeError):
            books.answer(b"", 1, 1)
        with self.assertRaises(TypeError):
            splice.Books()
        from collections import deque

        from vkafka.proxy.sequencer import Pending
        template = Pending(0, 0, 0, None)
        with self.assertRaises(ValueError):
            splice.Books(deque(), template, None, (), *[None] * 4, (0.1,) * 65)
        for no_pending in (object(), types.SimpleNamespace(correlation_id=1),
                           __import__("fractions").Fraction(1)):
            with self.assertRaises(TypeError):
                splice.Books(deque(), no_pending, None, (), *[None] * 4, ())

    def test_what_waits_behind_goes_after(self):
        """An answer the gateway made (ApiVersions) behind a lane request
        leaves right after the lane's answer, in order."""
        version = 11
        asked, known = api_versions_answered_here(61)
        request, answer = produce(version, correlation_id=60), answer_to(
            version, correlation_id=60)
        outcomes = []
        for compiled in (True, False):
            self.patch(splice, "COMPILED_BOOKS", compiled)
            with steady_decoys(), whole_reads_counted() as counts:
                world = World(version)
                world.topology.api_versions = known
                feed(world, [request, asked])
                self.assertEqual(world.transport.value(), b"")  # behind the lane's
                feed(world, [], [answer])
            self.assertEqual(counts["lane_answer"], 1)
            outcomes.append((world.broker_transport.value(), world.transport.value()))
        self.assertEqual(outcomes[0], outcomes[1])
        self.assertEqual([bytes(f[:4]) for f in FrameDecoder().feed(
            world.transport.value())], [struct.pack(">i", 60), struct.pack(">i", 61)])

    def test_the_lane_stops_at_what_waits(self):
        """Lane requests on both sides of an answer the gateway made: one read
        of both broker answers gives the lane the first only (the one before
        the made answer); the rest leaves in order, the made answer between,
        though the client gave the made answer's request and the last the
        same correlation id (the lane must not pair the broker's with it)."""
        version = 11
        asked, known = api_versions_answered_here(72)
        requests = [produce(version, correlation_id=70), asked,
                    produce(version, correlation_id=72)]
        answers = answer_to(version, correlation_id=70) + answer_to(
            version, correlation_id=72)
        outcomes = []
        for compiled in (True, False):
            self.patch(splice, "COMPILED_BOOKS", compiled)
            with steady_decoys(), whole_reads_counted() as counts:
                world = World(version)
                world.topology.api_versions = known
                feed(world, requests, [answers])
            self.assertEqual(counts["lane_answer"], 1, compiled)
            outcomes.append((world.broker_transport.value(), world.transport.value()))
        self.assertEqual(outcomes[0], outcomes[1])
        self.assertEqual([bytes(f[:4]) for f in FrameDecoder().feed(
            world.transport.value())], [struct.pack(">i", n) for n in (70, 72, 72)])

    def test_latency_on_a_bound(self):
        """A latency of exactly a bucket's bound counts in that bucket (the
        bound is "le"), as the Python's bisect_left counts it."""
        from vkafka.metrics import Metrics

        from .test_metrics import samples
        request, answer = produce(9, correlation_id=70), answer_to(9, correlation_id=70)
        counted = []
        for compiled in (True, False):
            self.patch(splice, "COMPILED_BOOKS", compiled)
            metrics = Metrics()
            with steady_decoys():
                world = World(9, metrics)
                feed(world, [request])
                world.reactor.advance(0.5)
                feed(world, [], [answer])
            counted.append({k: v for k, v in samples(metrics).items()
                            if k[0] == "vkafka_request_latency_seconds_bucket"
                            and dict(k[1])["api"] == "Produce"})
        self.assertEqual(counted[0], counted[1])
        self.assertEqual([v for k, v in counted[0].items()
                          if dict(k[1])["le"] in ("0.25", "0.5")], [1.0, 2.0])


def armed_world(case, prepare, answer=None):
    """A World of *case*'s version, *prepare(world)* done, that then sent a
    Produce the Python path took whole (and got *answer*), and its Books."""
    world = World(case.version)
    books = world.client.books
    case.assertIsNotNone(books, "vkafka/proxy/_lane.c is not built: "
                                "run make setup (a C compiler is needed)")
    if prepare is not None:
        prepare(world)
    world.outcome(produce(case.version, correlation_id=20), answer)
    return world, books


class CompiledReadTests(unittest.TestCase):
    """The compiled read (``Books.read``, a lane connection's
    ``dataReceived``): armed by a read the Python path took whole, it sends
    the next ones itself, until anything it was armed from changes; then
    the read goes the Python way, which decides it afresh."""

    version = 10

    def armed(self, prepare=None):
        """A World whose compiled read is armed (after *prepare(world)*),
        and the reads that went the Python way from then on (the class
        patched first: a change of the class disarms, see test_class_changed)."""
        python = []
        lane_read = splice.ClientConnection._lane_read
        self.patch(splice.ClientConnection, "_lane_read",
                   lambda conn, data: python.append(data) or lane_read(conn, data))
        world, books = armed_world(self, prepare)
        self.assertTrue(books.armed)
        del python[:]
        return world, books, python

    def test_armed_reads_sent_compiled(self):
        """Read after read, the compiled read sends them: the same bytes as
        the Python path, none of them through it."""
        world, books, python = self.armed()
        for n in range(3):
            sent, _, closed = world.outcome(produce(self.version, correlation_id=30 + n))
            self.assertIn(b"london/cli", sent)
            self.assertFalse(closed)
        self.assertEqual((books.whole, python), (3, []))
        reads = [produce(self.version, correlation_id=30 + n) for n in range(3)]
        on, off, whole = both_run(self.version, lambda w: feed(w, reads))
        self.assertEqual((on, whole["_lane_read"]), (off, 3))

    def test_any_change_goes_the_python_way(self):
        """Each thing the read was armed from, changed: the next read goes
        the Python way (which may arm it again), not the compiled one."""
        from vkafka.filters.sasl import Phase
        from vkafka.filters.throttle import LoopShare

        def with_share(world):
            share = LoopShare(0.25, world.reactor.seconds, world.reactor.callLater)
            world.client.loop_debt = share.bucket("london")

        def with_rates(world):
            world.client.rates = types.SimpleNamespace(
                limited=False, request=lambda api_key, size: 0.0)

        authorized = [types.SimpleNamespace(enabled=False)]

        def with_authorizer(world):
            world.client.services.authorizer = lambda vcluster: authorized[0]

        def renamed_rule(world):
            world.client.rules[0] = copy.copy(world.client.rules[0])

        def new_authorizer(world):
            authorized[0] = types.SimpleNamespace(enabled=False)

        changes = {
            "closed": (None, lambda w: setattr(w.client, "closed", True)),
            "retiring": (None, lambda w: setattr(w.client, "retiring", True)),
            "draining": (None, lambda w: setattr(w.gateway, "draining", True)),
            "held": (None, lambda w: w.client.valve.hold("throttle")),
            # a read before the expiry's timer closes the connection:
            "expired": (None, lambda w: (w.client.login.stop(), w.reactor.advance(601))),
            "claims": (None, lambda w: setattr(w.client.sasl, "claims",
                                               copy.copy(w.client.sasl.claims))),
            "phase": (None, lambda w: setattr(w.client.sasl, "phase", Phase.HANDSHAKEN)),
            "mapping": (None, lambda w: setattr(w.client.sasl.namespace, "version",
                                                w.client.sasl.namespace.version + 1)),
            "prefixes": (None, lambda w: setattr(
                w.client.sasl.namespace.prefixes, "generation",
                w.client.sasl.namespace.prefixes.generation + 1)),
            "unavailable": (None, lambda w: setattr(w.client.sasl.namespace,
                                                    "unavailable", "overlaps")),
            "producer": (None, lambda w: setattr(w.client.services, "producer", 4242)),
            "client id": (None, lambda w: setattr(w.client.client_ids, "given",
                                                  b"\x00\x03two")),
            "rule": (None, renamed_rule),
            "authorizer replaced": (None, with_authorizer),
            "authorizer's answer": (with_authorizer, new_authorizer),
            "loop share set": (None, with_share),
            "loop share in debt": (with_share, lambda w: setattr(
                w.client.loop_debt, "tokens", -1.0)),
            "loop share queued": (with_share, lambda w: w.client.loop_debt.waiting.append(
                (object(), 0.0))),
            "rates set": (None, with_rates),
            "rates limited": (with_rates, lambda w: setattr(w.client.rates, "limited", True)),
        }
        for name, (prepare, change) in changes.items():
            world, books, python = self.armed(prepare)
            change(world)
            try:
                world.client.dataReceived(produce(self.version, correlation_id=40))
            except AttributeError:  # the Python way, with a stand-in of the test's
                pass
            self.assertEqual((books.whole, len(python)), (0, 1), name)

    def test_in_flight_bound(self):
        """Reads owed answers up to MAX_IN_FLIGHT are sent compiled; the
        next goes the Python way (which holds it)."""
        world, books, python = self.armed()
        owed = len(world.client.sequencer.pending)
        for n in range(splice.MAX_IN_FLIGHT - owed):
            world.client.dataReceived(produce(self.version, correlation_id=100 + n))
        self.assertEqual((books.whole, python), (splice.MAX_IN_FLIGHT - owed, []))
        world.client.dataReceived(produce(self.version, correlation_id=99))
        self.assertEqual((books.whole, len(python)), (splice.MAX_IN_FLIGHT - owed, 1))

    def test_not_taken_whole_disarms(self):
        """A read the lane does not take whole (part of a request, another
        API) goes the Python way and disarms the compiled read."""
        for read in (produce(self.version, correlation_id=50)[:-3],
                     request_frame(importlib.import_module(
                         "kio.schema.metadata.v12.request").MetadataRequest(
                             topics=None, allow_auto_topic_creation=False,
                             include_topic_authorized_operations=False), 12, 50, "cli")):
            world, books, python = self.armed()
            world.client.dataReceived(read)
            self.assertEqual((books.whole, books.armed), (0, 0))

    def test_refusals(self):
        """Arming and reading say what is wrong, on a Books not installed or
        with watches that are not triples."""
        books = splice.lane_books(World(self.version).client.sequencer)
        with self.assertRaises(TypeError):
            books.read(b"")
        with self.assertRaises(TypeError):
            books.arm((), 1, None, None, None, None, None, None, 0.0, (), (), ())
        world = World(self.version)
        for attrs, items, calls in ((((world, "x"),), (), ()),
                                    ((), (([], 1, 2),), ()),
                                    ((), (), ((None, 1, 2),))):
            with self.assertRaises(TypeError):
                world.client.books.arm((), 1, None, None, None, None, None, None, 0.0,
                                       attrs, items, calls)

    def test_each_kind_of_watch(self):
        """Each way a watch is checked (proxy/_watch.h): a change of what it
        watches sends the next read the Python way.  A slot read at its
        offset; an object's __dict__ and its type, by their versions (an
        attribute of the instance or of the class; the __dict__ or the
        class replaced); a property, looked up by name; a dict's item."""
        class Slotted:
            __slots__ = ("v",)

        class Plain:
            flag = False

        class Computed:
            v = property(lambda self: self.hidden)

        def world_watching(obj, name, items=False):
            watched = lane.LaneArgs.watched

            def more(args, services, login, client_ids):
                attrs, dicts, calls = watched(args, services, login, client_ids)
                if items:
                    return attrs, dicts, calls
                return attrs + ((obj, name, getattr(obj, name)),), dicts, calls
            self.patch(lane.LaneArgs, "watched", more)
            return self.armed()

        def plain():
            p = Plain()
            p.v = object()
            return p

        def computed():
            c = Computed()
            c.hidden = object()
            return c

        slotted = Slotted()
        slotted.v = object()
        cases = {
            "slot": (slotted, "v", lambda o: setattr(o, "v", object())),
            "instance attribute": (plain(), "v", lambda o: setattr(o, "v", object())),
            "another attribute": (plain(), "v", lambda o: setattr(o, "w", 1)),
            "class attribute": (plain(), "flag", lambda o: setattr(Plain, "flag", True)),
            "__dict__ replaced": (plain(), "v", lambda o: setattr(o, "__dict__", {"v": 1})),
            "__class__ replaced": (plain(), "v", lambda o: setattr(
                o, "__class__", type("Other", (Plain,), {}))),
            "property": (computed(), "v", lambda o: setattr(o, "hidden", object())),
        }
        for name, (obj, attribute, change) in cases.items():
            Plain.flag = False
            world, books, python = world_watching(obj, attribute)
            world.client.dataReceived(produce(self.version, correlation_id=40))
            self.assertEqual((books.whole, python), (1, []), name)  # unchanged: compiled
            change(obj)
            world.client.dataReceived(produce(self.version, correlation_id=41))
            self.assertEqual((books.whole, len(python)), (1, 1), name)
        world, books, python = world_watching(None, None, items=True)
        world.client.rules[12345] = None  # the rules' dict changed: Python way
        world.client.dataReceived(produce(self.version, correlation_id=40))
        self.assertEqual((books.whole, len(python)), (0, 1))

    def test_the_states_authorizer_watched_by_its_cache(self):
        """With the gateway state's authorizer, nothing is called at each
        read: its cache of authorizers is watched (``GatewayState.
        authorizer_watch``); a rights change (which empties the cache's
        entry) sends the next read the Python way."""
        from vkafka.auth.tokens import TokenAuthority
        from vkafka.state.model import GatewayState
        from vkafka.state.store import MemoryStore
        from vkafka.tenancy.mode import Tenancy
        authority = TokenAuthority("s" * 32)
        state = GatewayState(MemoryStore(), authority, Tenancy(authority).vclusters,
                             lambda: 0.0)
        state.ensure_vcluster("london")

        def with_state(world):
            world.client.services.authorizer = state.authorizer
        world, books, python = self.armed(with_state)
        self.assertEqual(world.client.lane_args.watched(
            world.client.services, world.client.sasl, world.client.client_ids)[2], ())
        world.client.dataReceived(produce(self.version, correlation_id=40))
        self.assertEqual((books.whole, python), (1, []))
        state.put_rights("london", False)  # the same answer, OFF; asked again
        world.client.dataReceived(produce(self.version, correlation_id=41))
        self.assertEqual((books.whole, len(python)), (1, 1))

    def test_not_armed_from_what_is_not_so(self):
        """A watch of a value the attribute does not have leaves the read
        disarmed: the next read goes the Python way."""
        watched = lane.LaneArgs.watched
        self.patch(lane.LaneArgs, "watched", lambda *a: (
            watched(*a)[0] + ((a[1], "producer", object()),), *watched(*a)[1:]))
        world, books = armed_world(self, None)
        self.assertEqual(books.armed, 0)


class CompiledAnswersTests(unittest.TestCase):
    """The compiled read of answers (``Books.answers_read``, the broker
    connection's ``dataReceived``): armed by a read of answers the Python
    path (``lane_answer``) took whole, it sends the next ones itself until
    anything it was armed from changes."""

    version = 10

    def armed(self, prepare=None):
        """A World whose compiled read of answers is armed (after
        *prepare(world)*), and the reads that went the Python way from then
        on."""
        python = []
        lane_answer = splice.ClientConnection.lane_answer
        self.patch(splice.ClientConnection, "lane_answer",
                   lambda conn, broker, data: python.append(data) or lane_answer(
                       conn, broker, data))
        world, books = armed_world(self, prepare, answer_to(self.version,
                                                            correlation_id=20))
        self.assertTrue(books.answers_armed)
        del python[:]
        return world, books, python

    def test_armed_answers_sent_compiled(self):
        world, books, python = self.armed()
        for n in range(3):
            _, got, closed = world.outcome(produce(self.version, correlation_id=30 + n),
                                           answer_to(self.version, correlation_id=30 + n))
            self.assertFalse(closed)
        self.assertEqual((books.answers_whole, python), (3, []))
        self.assertEqual(len(world.client.sequencer.pending), 0)
        reads = [(produce(self.version, correlation_id=30 + n),
                  answer_to(self.version, correlation_id=30 + n)) for n in range(3)]

        def script(w):
            for read, answer in reads:
                feed(w, [read], [answer])
        on, off, whole = both_run(self.version, script)
        self.assertEqual((on, whole["lane_answer"]), (off, 3))

    def test_any_change_goes_the_python_way(self):
        """Each thing the read of answers was armed from, changed: the next
        one goes the Python way, not the compiled one."""
        def with_rates(world):
            world.client.rates = types.SimpleNamespace(
                limited=False, request=lambda api_key, size: 0.0,
                response=lambda pending, frame: (frame, 0.0))

        changes = {
            "closed": (None, lambda w: setattr(w.client, "closed", True)),
            "retiring": (None, lambda w: setattr(w.client, "retiring", True)),
            "draining": (None, lambda w: setattr(w.gateway, "draining", True)),
            "streamed": (None, lambda w: setattr(w.broker, "streamed", object())),
            "metrics": (None, lambda w: setattr(w.client, "metrics", object())),
            "decoded": (None, lambda w: setattr(w.gateway, "max_decoded_response", 10)),
            "frames": (None, lambda w: setattr(w.broker.decoder, "max_frame_size", 10)),
            "rates set": (None, with_rates),
            "rates limited": (with_rates, lambda w: setattr(w.client.rates, "limited",
                                                            True)),
        }
        for name, (prepare, change) in changes.items():
            world, books, python = self.armed(prepare)
            world.client.dataReceived(produce(self.version, correlation_id=40))
            change(world)
            try:
                world.broker.dataReceived(answer_to(self.version, correlation_id=40))
            except AttributeError:  # the Python way, with a stand-in of the test's
                pass
            self.assertEqual(books.answers_whole, 0, name)  # not sent compiled

    def test_names_kept_while_the_memo_is(self):
        """The names answers are renamed with are the namespace's memo's,
        asked again only when the memo would change (``memo_watch``): a new
        memo, while an answer is owed, is asked for (and, empty, sends that
        answer the Python way, which decides the names again)."""
        from vkafka.tenancy.naming import Namespace
        asked = []
        memo = Namespace.memo
        self.patch(Namespace, "memo", lambda ns: asked.append(ns) or memo(ns))
        world, books, python = self.armed()
        namespace = world.client.sasl.namespace
        compiled = []
        for n in range(7):
            world.client.dataReceived(produce(self.version, correlation_id=40 + n))
            if n == 2:  # a new memo while the answer is owed
                namespace.version += 1
            del asked[:]
            before = books.answers_whole
            _, got, _ = world.outcome(b"", answer_to(self.version, correlation_id=40 + n))
            self.assertIn(b"\x02t", got)  # the logical name, "t"
            compiled.append((books.answers_whole - before, bool(asked)))
        self.assertEqual(compiled[:3], [(1, False), (1, False), (0, True)])
        self.assertEqual(compiled[-2:], [(1, False), (1, False)])

    def test_not_taken_whole_disarms(self):
        """Part of an answer goes the Python way and disarms."""
        world, books, python = self.armed()
        world.client.dataReceived(produce(self.version, correlation_id=50))
        world.broker.dataReceived(answer_to(self.version, correlation_id=50)[:-2])
        self.assertEqual((books.answers_whole, books.answers_armed, len(python)),
                         (0, 0, 1))

    def test_refusals(self):
        books = splice.lane_books(World(self.version).client.sequencer)
        with self.assertRaises(TypeError):
            books.answers_read(b"")
        with self.assertRaises(TypeError):
            books.install_answers(None, None, None)
        world = World(self.version)
        with self.assertRaises(TypeError):
            world.client.books.arm_answers(1, None, None, None, ((world, "x"),))
