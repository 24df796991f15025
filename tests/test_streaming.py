"""Large Fetch responses forwarded as they arrive (streaming.Streamed)."""

import itertools
import resource
import socket
import struct
import uuid

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from vkafka.metrics import Metrics
from vkafka.protocol.fastpath import neutral_tags, scan_fetch
from vkafka.protocol.framing import FrameDecoder
from vkafka.proxy.gateway import Gateway
from vkafka.proxy.streaming import HOLD_BACK, STREAM_FROM
from vkafka.tuning import READ_SIZE, tune_allocator
from vkafka.proxy.topology import Topology
from vkafka.tenancy.rules import passthrough_rules

from .kafka_messages import fetch_request, record_batch, request_frame
from .test_metrics import fetch_frame
from .test_splice import BROKERS, FakeEndpoint
from .test_metadata_cache import metadata_answer
from .test_tenant_splice import TenantSpliceBase, metadata_for

BIG = b"".join(record_batch(10, b"v" * 1000) for _ in range(40))
"""400 records in 40 batches, about 400 KB: above STREAM_FROM."""


def pieces(data, size=50_000):
    return [data[i:i + size] for i in range(0, len(data), size)]


class PassthroughStreamingTests(unittest.TestCase):
    def setUp(self):
        self.attempts, self.refused, self.brokers = [], set(), []
        topology = Topology([("kafka1", 9092)], "gw", 6969, 3, 1)
        topology.learn(BROKERS)
        self.metrics = Metrics()
        self.gateway = Gateway(MemoryReactorClock(), topology, passthrough_rules(),
                               endpoint_factory=lambda r, h, p: FakeEndpoint(self, h, p),
                               metrics=self.metrics)
        self.client = self.gateway.factory_for_port(6969).buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 5))
        self.client.makeConnection(self.transport)
        _, self.broker, _ = self.brokers[-1]

    def test_forwarded_while_it_arrives(self):
        """The client has most of the response before its end reached the
        gateway; in the end it has the broker's bytes exactly."""
        self.assertGreater(len(BIG), STREAM_FROM)
        self.client.dataReceived(request_frame(fetch_request("t", version=12), 12, 4))
        raw = fetch_frame(4, 12, records=BIG, errors=(0,))
        parts = pieces(raw)
        for part in parts[:-1]:
            self.broker.dataReceived(part)
        self.assertGreater(len(self.transport.value()), len(raw) - len(parts[-1])
                           - HOLD_BACK - 1)
        self.assertEqual(raw[:len(self.transport.value())], self.transport.value())
        self.broker.dataReceived(parts[-1])
        self.assertEqual(self.transport.value(), raw)
        self.assertEqual(len(self.client.sequencer), 0)

    def test_reads_from_the_middle_skip_the_general_path(self):
        """A read all of which goes out at once (everything before it sent,
        none of it in the held-back tail) is scanned and written straight
        away (``Streamed.passes``); the rest, the first read and those
        reaching the tail, take the broker connection's general path."""
        from vkafka.proxy.broker import BrokerConnection
        general = []
        real = BrokerConnection.received
        self.patch(BrokerConnection, "received",
                   lambda broker, data: (general.append(len(data)), real(broker, data))[1])
        self.client.dataReceived(request_frame(fetch_request("t", version=12), 12, 4))
        raw = fetch_frame(4, 12, records=BIG, errors=(0,))
        parts = pieces(raw)
        for part in parts:
            self.broker.dataReceived(part)
        self.assertEqual(self.transport.value(), raw)
        ends = list(itertools.accumulate(map(len, parts)))
        self.assertEqual(general, [len(part) for part, end in zip(parts, ends)
                                   if end == ends[0] or end > len(raw) - HOLD_BACK])
        self.assertLess(len(general), len(parts) - 3)

    def test_next_response_follows(self):
        """Bytes after the streamed response (the next one) are framed as usual."""
        self.client.dataReceived(request_frame(fetch_request("t", version=12), 12, 4))
        self.client.dataReceived(request_frame(fetch_request("t", version=12), 12, 5))
        first = fetch_frame(4, 12, records=BIG, errors=(0,))
        second = fetch_frame(5, 12, records=record_batch(2), errors=(0,))
        for part in pieces(first + second, 70_001):
            self.broker.dataReceived(part)
        self.assertEqual(FrameDecoder(1 << 30).feed(self.transport.value()),
                         [memoryview(first)[4:], memoryview(second)[4:]])

    def test_node_endpoints_neutralised(self):
        """node_endpoints found at the end: replaced by an unused tag of the same
        length, so the frame size already sent stays true and no broker address
        reaches the client."""
        self.client.dataReceived(request_frame(fetch_request(uuid.uuid4(), version=17),
                                               17, 4))
        raw = fetch_frame(4, 17, records=BIG, errors=(6,), endpoints=(2,))
        for part in pieces(raw):
            self.broker.dataReceived(part)
        out = self.transport.value()
        self.assertEqual(len(out), len(raw))
        scan = scan_fetch(memoryview(raw)[4:], 5, 17)
        at = scan.tags_at + 4
        self.assertEqual(out[:at], raw[:at])
        self.assertEqual(out[at:], neutral_tags(len(raw) - at))
        self.assertNotEqual(out[at:], raw[at:])

    def test_metrics(self):
        """A streamed response is counted like any: its records (two topic entries
        of 400) and its first error."""
        self.client.dataReceived(request_frame(fetch_request("t", version=12), 12, 4))
        for part in pieces(fetch_frame(4, 12, records=BIG, errors=(0,))):
            self.broker.dataReceived(part)
        found = {(m.name, s.name, tuple(sorted(s.labels.items()))): s.value
                 for m in self.metrics.registry.collect() for s in m.samples}
        self.assertEqual(found[("vkafka_records", "vkafka_records_total",
                                (("direction", "out"), ("vcluster", "-")))], 800)
        self.assertEqual(found[("vkafka_streamed_responses",
                                "vkafka_streamed_responses_total",
                                (("vcluster", "-"),))], 1)

    def test_malformed_closes(self):
        """A response that turns out malformed once whole closes the connection."""
        self.client.dataReceived(request_frame(fetch_request("t", version=12), 12, 4))
        raw = bytearray(fetch_frame(4, 12, records=BIG, errors=(0,)))
        raw[-1] = 7  # a tagged-field count claiming fields that are not there
        for part in pieces(bytes(raw)):
            self.broker.dataReceived(part)
        self.assertTrue(self.transport.disconnecting)

    def test_wrong_correlation_id_closes(self):
        self.client.dataReceived(request_frame(fetch_request("t", version=12), 12, 4))
        for part in pieces(fetch_frame(9, 12, records=BIG, errors=(0,))):
            self.broker.dataReceived(part)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), b"")


class TenantStreamingTests(TenantSpliceBase):
    def test_own_topic_id_streamed(self):
        """Fetch v17 of the tenant's own topic id: forwarded as it arrives."""
        own = uuid.uuid4()
        self.topology.topic_ids[own] = "londont"
        self.login()
        self.client.dataReceived(request_frame(fetch_request(own, version=17), 17, 5))
        raw = fetch_frame(5, 17, records=BIG, errors=(0,), topic=own)
        parts = pieces(raw)
        for part in parts[:-1]:
            self.broker.dataReceived(part)
        self.assertGreater(len(self.transport.value()), STREAM_FROM)
        self.broker.dataReceived(parts[-1])
        self.assertEqual(self.transport.value(), raw)

    def test_a_scan_of_many_partitions_charged(self):
        """20,000 partitions answered with an error (asked for partitions that
        do not exist) in ~1 MB: streamed, its walk through them is timed
        chunk by chunk and, past SMALL_WORK, the tenant's loop share pays for
        it, as for a response scanned whole (filters/responses.py).  The
        compiled scan takes ~1.4 ms for them here (the Python walk ~200 ms),
        so the work clock is made to tick 5 ms a reading."""
        from vkafka.filters.throttle import LoopShare
        own = uuid.uuid4()
        self.topology.topic_ids[own] = "londont"
        self.gateway.loop_share = LoopShare(0.25, self.reactor.seconds,
                                            self.reactor.callLater)
        self.login()
        self.client.services.loop_share = self.gateway.loop_share
        self.client.dataReceived(request_frame(fetch_request(own, version=17), 17, 5))
        raw = fetch_frame(5, 17, records=None, errors=(3,) * 10_000, topic=own)
        parts = pieces(raw)
        readings = itertools.count()
        self.client.services.work_clock = lambda: next(readings) * 0.005
        for part in parts:
            self.broker.dataReceived(part)
        self.assertEqual(self.transport.value(), raw)
        self.assertEqual(next(readings), 2 * len(parts))  # each chunk's scan timed
        self.assertLess(self.gateway.loop_share.bucket("london").tokens,
                        0.25 - 0.005 * len(parts) + 0.001)  # and all of it paid

    def fetching_own(self):
        """(own, foreign): two topic ids, the tenant's and another's; logged
        in, a Fetch v17 of its own sent (correlation id 5)."""
        own, foreign = uuid.uuid4(), uuid.uuid4()
        self.topology.topic_ids[own] = "londont"
        self.topology.topic_ids[foreign] = "parist"
        self.login()
        self.client.dataReceived(request_frame(fetch_request(own, version=17), 17, 5))
        return own, foreign

    def test_foreign_topic_id_stops_the_stream(self):
        """A streamed response naming a topic that is not the tenant's (a mapping
        removed while its fetch session read it): the connection is closed
        before any byte of that topic is forwarded."""
        own, foreign = self.fetching_own()
        raw = fetch_frame(5, 17, records=BIG, errors=(0,), topic=foreign)
        for part in pieces(raw):
            self.broker.dataReceived(part)
        self.assertTrue(self.transport.disconnecting)
        self.assertNotIn(foreign.bytes, self.transport.value())
        self.assertNotIn(BIG[:1000], self.transport.value())

    def test_foreign_topic_id_in_a_read_from_the_middle(self):
        """The same when the foreign id comes in a read from the middle of
        the response, which would otherwise go out at once: nothing of that
        read is forwarded, and the connection is closed."""
        own, foreign = self.fetching_own()
        raw = fetch_frame(5, 17, records=BIG, errors=(0,), topic=own)
        at = raw.index(own.bytes, raw.index(own.bytes) + 16)  # its second entry
        raw = raw[:at] + foreign.bytes + raw[at + 16:]
        parts = pieces(raw)
        holding = at // 50_000
        self.assertLess(at + 16, len(raw) - HOLD_BACK)
        for part in parts[:holding]:
            self.broker.dataReceived(part)
        sent = self.transport.value()
        self.assertEqual(sent, raw[:len(sent)])
        self.assertGreater(len(sent), at - 100_000)
        self.assertFalse(self.transport.disconnecting)
        self.broker.dataReceived(parts[holding])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.transport.value(), sent)

    def test_reads_from_the_middle_compiled(self):
        """In tenant mode the compiled read of answers (proxy/_lane.c,
        ``middle_read``) takes the reads from the middle of a streamed answer
        itself, as ``Streamed.passes`` would (called only for the reads it
        declines, which reach the tail): the client gets the broker's bytes
        exactly, each read scanned once, in its turn."""
        from vkafka.proxy.streaming import Streamed
        own, _ = self.fetching_own()
        python, scanned = [], []
        passes, scan = Streamed.passes, Streamed._scanned
        self.patch(Streamed, "passes", lambda streamed, data: (
            python.append(len(data)), passes(streamed, data))[1])
        self.patch(Streamed, "_scanned", lambda streamed, data: (
            scanned.append(len(data)), scan(streamed, data))[1])
        raw = fetch_frame(5, 17, records=BIG, errors=(0,), topic=own)
        parts = pieces(raw)
        for part in parts:
            self.broker.dataReceived(part)
        self.assertEqual(self.transport.value(), raw)
        ends = list(itertools.accumulate(map(len, parts)))
        middle = [end for end in ends if end != ends[0] and end <= len(raw) - HOLD_BACK]
        self.assertGreater(len(middle), 3)
        self.assertEqual(self.client.books.middle_reads, len(middle))
        self.assertEqual(python, [len(part) for part, end in zip(parts, ends)
                                  if end > len(raw) - HOLD_BACK])  # declined
        self.assertEqual(scanned, list(map(len, parts)))
        self.assertEqual(len(self.client.sequencer), 0)

    def test_decoy_waits_for_the_whole_response(self):
        """Another tenant's topic id became a decoy: the response is rewritten, so
        nothing is forwarded before it is whole."""
        foreign = uuid.uuid4()
        self.topology.topic_ids[foreign] = "parist"
        self.login()
        self.client.dataReceived(request_frame(fetch_request(foreign, version=17), 17, 5))
        raw = fetch_frame(5, 17, records=BIG, errors=(0,), topic=uuid.uuid4())
        for part in pieces(raw)[:-1]:
            self.broker.dataReceived(part)
        self.assertEqual(self.transport.value(), b"")

    def test_local_answer_waits_its_turn(self):
        """A cached Metadata answer for a later request goes out after the
        streamed response, never inside it."""
        self.topology.learn_listing({"londona"}, self.reactor.seconds())
        own = uuid.uuid4()
        self.topology.topic_ids[own] = "londont"
        self.login()
        self.client.dataReceived(metadata_for(None, 3))
        self.broker.dataReceived(metadata_answer(3, ("londona",)))
        self.transport.clear()
        self.client.dataReceived(request_frame(fetch_request(own, version=17), 17, 5))
        raw = fetch_frame(5, 17, records=BIG, errors=(0,), topic=own)
        parts = pieces(raw)
        self.broker.dataReceived(parts[0])
        self.client.dataReceived(metadata_for(None, 6))  # answered from the cache
        for part in parts[1:]:
            self.broker.dataReceived(part)
        frames = FrameDecoder(1 << 30).feed(self.transport.value())
        self.assertEqual([struct.unpack_from(">i", f)[0] for f in frames], [5, 6])
        self.assertEqual(bytes(frames[0]), raw[4:])


class WriteNowTests(unittest.TestCase):
    """outbox.write_now: plain TCP with nothing queued sends at once; anything
    else goes through Twisted's queue, in order.  A socketpair, no reactor."""

    def transport(self):
        import socket

        from twisted.internet import tcp
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        transport = tcp.Server.__new__(tcp.Server)
        transport.socket, transport.connected, transport.disconnecting = ours, True, False
        transport._tempDataLen, transport.dataBuffer, transport.offset = 0, b"", 0
        transport._writeDisconnected = False
        transport.queued = []
        transport.write = transport.queued.append
        transport.writeSequence = transport.queued.extend
        return transport, theirs

    def test_sent_at_once(self):
        from vkafka.proxy.outbox import write_now
        transport, peer = self.transport()
        write_now(transport, b"hello")
        self.assertEqual(peer.recv(10), b"hello")
        self.assertEqual(transport.queued, [])

    def test_queued_behind_queued_bytes(self):
        """Bytes already queued go first: the new ones queue behind them."""
        from vkafka.proxy.outbox import write_now
        transport, peer = self.transport()
        transport._tempDataLen = 3
        write_now(transport, b"later")
        self.assertEqual(transport.queued, [b"later"])
        peer.setblocking(False)
        with self.assertRaises(BlockingIOError):
            peer.recv(10)

    def test_rest_queued_when_socket_full(self):
        """What the socket does not take is queued, nothing lost or reordered."""
        from vkafka.proxy.outbox import write_now
        transport, peer = self.transport()
        data = bytes(range(256)) * 40_000  # ~10 MB: more than a socket buffer
        write_now(transport, data)
        [rest] = transport.queued
        self.assertGreater(len(rest), 0)
        received = b""
        peer.settimeout(5)
        while len(received) < len(data) - len(rest):
            received += peer.recv(1 << 20)
        self.assertEqual(received + rest, data)

    def test_tls_and_other_transports_queue(self):
        from vkafka.proxy.outbox import write_now
        transport = StringTransport()
        write_now(transport, b"x")
        self.assertEqual(transport.value(), b"x")
        tls, peer = self.transport()
        tls.TLS = True
        write_now(tls, b"secret")
        self.assertEqual(tls.queued, [b"secret"])


class CountingSocket:
    """A socket that notes its send calls (sendmsg: how many pieces)."""

    def __init__(self, sock):
        self.sock, self.calls = sock, []

    def send(self, data):
        self.calls.append("send")
        return self.sock.send(data)

    def sendmsg(self, buffers):
        self.calls.append(len(buffers))
        return self.sock.sendmsg(buffers)


class OutboxTests(unittest.TestCase):
    """outbox.Outbox: writes held during a read go out in one sendmsg, in order;
    what the socket does not take is queued behind, nothing lost."""

    transport = WriteNowTests.transport

    def outbox(self):
        from vkafka.proxy.outbox import Outbox
        transport, peer = self.transport()
        transport.socket = CountingSocket(transport.socket)
        return Outbox(transport), transport, peer

    def receive(self, peer, size):
        peer.settimeout(5)
        received = b""
        while len(received) < size:
            received += peer.recv(1 << 20)
        return received

    def test_held_writes_sent_in_one_call(self):
        outbox, transport, peer = self.outbox()
        outbox.hold()
        outbox.write_frame(memoryview(b"xxrequest-one")[2:])  # a slice: prefix + view
        outbox.write(b"raw")
        outbox.write_frame(b"two")
        peer.setblocking(False)
        with self.assertRaises(BlockingIOError):
            peer.recv(10)  # nothing sent while held
        outbox.release()
        self.assertEqual(transport.socket.calls, [5])
        expected = b"\0\0\0\x0brequest-one" + b"raw" + b"\0\0\0\x03two"
        self.assertEqual(self.receive(peer, len(expected)), expected)
        self.assertEqual(transport.queued, [])

    def test_not_held_sent_at_once(self):
        outbox, transport, peer = self.outbox()
        outbox.write_frame(b"one")
        self.assertEqual(transport.socket.calls, ["send"])
        self.assertEqual(self.receive(peer, 7), b"\0\0\0\x03one")

    def test_rest_queued_in_order(self):
        outbox, transport, peer = self.outbox()
        parts = [bytes([i]) * 300_000 for i in range(40)]  # 12 MB: more than fits
        outbox.hold()
        for part in parts:
            outbox.write(memoryview(part))
        outbox.release()
        data = b"".join(parts)
        rest = b"".join(transport.queued)
        self.assertGreater(len(rest), 0)
        self.assertEqual(self.receive(peer, len(data) - len(rest)) + rest, data)

    def test_frame_pieces_partly_sent(self):
        """A frame's pieces (a tuple, as the lane and ClientIds give them),
        more than the socket takes: what it took, then the rest queued, in
        order, the piece it cut sent from where it stopped."""
        outbox, transport, peer = self.outbox()
        parts = tuple(memoryview(bytes([i]) * 1_000_003) for i in range(12))
        outbox.write_parts(parts)
        self.assertEqual(transport.socket.calls, [12])
        data = b"".join(parts)
        rest = b"".join(transport.queued)
        self.assertGreater(len(rest), 0)
        self.assertNotEqual(len(rest) % 1_000_003, 0)  # a piece was cut
        self.assertEqual(self.receive(peer, len(data) - len(rest)) + rest, data)

    def test_more_pieces_than_one_call_takes(self):
        """More pieces than IOV_BATCH: several sendmsg calls, all in order."""
        from vkafka.proxy.outbox import IOV_BATCH
        outbox, transport, peer = self.outbox()
        parts = [b"%05d" % i for i in range(3 * IOV_BATCH)]
        outbox.hold()
        for part in parts:
            outbox.write(part)
        outbox.release()
        self.assertEqual(transport.socket.calls, [IOV_BATCH] * 3)
        self.assertEqual(self.receive(peer, 5 * len(parts)), b"".join(parts))


class SendPartsTests(unittest.TestCase):
    """outbox's sendmsg of pieces on a plain socket, compiled (_send.c) and
    in Python: the same contract (None: all sent; else the rest, in order,
    the piece cut where the socket stopped), on socketpairs."""

    def test_compiled_send_is_built(self):
        """`make setup` built vkafka/proxy/_send.c and the outbox uses it on
        plain sockets (without gcc and Python's headers it sends in Python,
        slower per request; this fails there, saying so)."""
        from vkafka.proxy import outbox
        try:
            from vkafka.proxy import _send
        except ImportError as e:
            self.fail(f"vkafka/proxy/_send.c is not built ({e}): `make setup` "
                      "needs a C compiler and Python's headers")
        self.assertIs(outbox.send_parts, _send.send_parts)

    def pair(self):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        return ours, theirs

    def each(self):
        from vkafka.proxy.outbox import send_parts, sent_in_python
        return (("compiled", send_parts), ("python", sent_in_python))

    def receive(self, peer, size):
        return OutboxTests.receive(self, peer, size)

    def test_all_taken(self):
        for name, send in self.each():
            ours, theirs = self.pair()
            parts = (b"\0\0\0\x05", memoryview(b"xhello")[1:], bytearray(b"!"), b"")
            self.assertIsNone(send(ours, parts), name)
            self.assertEqual(self.receive(theirs, 10), b"\0\0\0\x05hello!", name)
            self.assertIsNone(send(ours, []), name)

    def test_more_pieces_than_one_call_takes(self):
        from vkafka.proxy.outbox import IOV_BATCH
        for name, send in self.each():
            ours, theirs = self.pair()
            parts = [b"%05d" % i for i in range(3 * IOV_BATCH + 7)]
            self.assertIsNone(send(ours, parts), name)
            self.assertEqual(self.receive(theirs, 5 * len(parts)), b"".join(parts), name)

    def test_rest_given_back_in_order(self):
        """More than the socket takes: the rest from the piece it cut (a
        view from where it stopped), nothing lost or reordered."""
        for name, send in self.each():
            ours, theirs = self.pair()
            parts = tuple(memoryview(bytes([i]) * 1_000_003) for i in range(12))
            rest = send(ours, parts)
            self.assertIsInstance(rest, list, name)
            self.assertIsInstance(rest[0], memoryview, name)
            self.assertNotEqual(len(rest[0]), 1_000_003, name)  # a piece was cut
            self.assertTrue(all(r is p for r, p in zip(rest[1:], parts[-len(rest) + 1:])))
            data, left = b"".join(parts), b"".join(bytes(r) for r in rest)
            self.assertEqual(self.receive(theirs, len(data) - len(left)) + left, data,
                             name)

    def test_socket_error_gives_everything_back(self):
        """A peer gone (EPIPE, no SIGPIPE), or the socket closed: all of it
        back, for Twisted's queue to meet the error and report it."""
        for name, send in self.each():
            ours, theirs = self.pair()
            theirs.close()
            parts = [b"one", memoryview(b"two")]
            self.assertEqual([bytes(p) for p in send(ours, parts)], [b"one", b"two"], name)
            ours.close()  # closed here too (fileno() is -1)
            self.assertEqual([bytes(p) for p in send(ours, parts)], [b"one", b"two"], name)

    def test_bad_pieces_refused(self):
        for name, send in self.each():
            ours, _ = self.pair()
            with self.assertRaises(TypeError, msg=name):
                send(ours, [b"one", 5])
        from vkafka.proxy.outbox import send_parts
        ours, _ = self.pair()
        with self.assertRaises(TypeError):
            send_parts(ours, b"not a list")
        with self.assertRaises(TypeError):
            send_parts(ours)
        with self.assertRaises(TypeError):
            send_parts(object(), [b"x"])

    def test_outbox_sends_compiled_on_plain_sockets(self):
        """A plain socket's pieces go through send_parts (a socket tests wrap
        to count calls goes the Python way)."""
        from vkafka.proxy import outbox
        calls = []
        original = outbox.send_parts
        outbox.send_parts = lambda sock, parts: calls.append(len(parts)) or original(
            sock, parts)
        self.addCleanup(setattr, outbox, "send_parts", original)
        transport, peer = WriteNowTests.transport(self)
        outbox.write_all(transport, (b"\0\0\0\x03", b"one"))
        self.assertEqual(calls, [2])
        self.assertEqual(self.receive(peer, 7), b"\0\0\0\x03one")
        self.assertEqual(transport.queued, [])


class AllocatorTests(unittest.TestCase):
    def test_reads_map_no_fresh_pages(self):
        """Once tuned, a READ_SIZE read that gets a 31 KB Produce request takes
        no page faults: its buffer comes from the heap.  Untuned, glibc maps it
        afresh (about 9 faults a read, plus mmap, mremap and munmap)."""
        self.assertTrue(tune_allocator())
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        request = b"x" * 31000

        def reads(count):
            for _ in range(count):
                a.sendall(request)
                got = 0
                while got < len(request):
                    got += len(b.recv(READ_SIZE))
        reads(50)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        reads(500)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        self.assertLess(faults, 100)
