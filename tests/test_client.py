"""The internal Kafka client (vkafka/client.py), against fake brokers in memory."""

import datetime
import socket
import threading

from kio.schema.create_topics.v7.response import CreatableTopicResult, CreateTopicsResponse
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.response import SaslAuthenticateResponse
from kio.schema.sasl_handshake.v1.response import SaslHandshakeResponse
from kio.static.primitive import i16, i32, i64Timedelta
from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial import unittest

from twisted.internet.task import Clock

from vkafka.client import (
    REQUEST_TIMEOUT, Connector, KafkaClientProtocol, ProtocolError, RequestTimedOut,
    Unreachable, ask_blocking,
    create_topic, tcp_endpoint, try_each)
from vkafka.protocol.codec import CodecError, decode_request
from vkafka.protocol.framing import FrameDecoder, frame
from vkafka.proxy.discovery import BROKERS_ONLY, fetch_brokers_blocking
from vkafka.proxy.security import SaslError, SaslPlainEndpoint

from .kafka_messages import NO_THROTTLE, metadata_response, response_frame

BROKERS = [(1, "kafka1", 9092), (2, "kafka2", 9092)]


def metadata_answer(correlation_id, brokers=BROKERS):
    return response_frame(correlation_id, metadata_response(brokers))


class FakeBroker(protocol.Protocol):
    """Decodes requests; ``answer(header, body)`` gives the response frame to
    send at once, or None to hold it (``held``)."""

    def __init__(self, answer=None):
        self.answer = answer or (lambda header, body: metadata_answer(
            header.correlation_id))
        self.decoder = FrameDecoder()
        self.requests = []
        self.reads = 0

    def dataReceived(self, data):
        self.reads += 1
        for payload in self.decoder.feed(data):
            header, body = decode_request(payload)
            self.requests.append((header, body))
            response = self.answer(header, body)
            if response is not None:
                self.transport.write(response)


def connected_pair(broker):
    """A client connected to *broker* through an iosim pump."""
    client = KafkaClientProtocol("test")
    pump = iosim.connect(broker, iosim.makeFakeServer(broker),
                         client, iosim.makeFakeClient(client))
    return client, pump


class ProtocolTests(unittest.TestCase):
    """Requests out, answers matched to them by correlation id."""

    def setUp(self):
        self.client = KafkaClientProtocol("test")
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)

    def sent(self):
        frames = FrameDecoder().feed(self.transport.value())
        self.transport.clear()
        return [decode_request(f)[0] for f in frames]

    def test_answers_matched_by_correlation_id(self):
        """Two requests of different APIs answered in reverse order: each
        Deferred gets its own answer, decoded with its own schema."""
        first = self.client.request(BROKERS_ONLY, 12)
        second = self.client.request(BROKERS_ONLY, 12, raw=True)
        headers = self.sent()
        self.assertEqual([h.correlation_id for h in headers], [1, 2])
        self.assertEqual({h.client_id for h in headers}, {"test"})
        self.client.dataReceived(metadata_answer(2, BROKERS[:1]))
        self.assertNoResult(first)
        payload = self.successResultOf(second)
        self.assertIsInstance(payload, bytes)
        self.assertEqual(payload[:4], (2).to_bytes(4, "big"))
        self.client.dataReceived(metadata_answer(1))
        self.assertEqual([b.node_id for b in self.successResultOf(first).brokers],
                         [1, 2])
        self.assertEqual(self.client.pending, {})

    def test_unknown_correlation_id_drops_the_connection(self):
        """An answer to nothing pending means the stream is out of step: the
        connection is dropped and every pending request fails, none is given
        a stranger's answer."""
        pending = [self.client.request(BROKERS_ONLY, 12) for _ in range(2)]
        self.client.dataReceived(metadata_answer(99))
        self.assertTrue(self.transport.disconnecting)
        for d in pending:
            self.assertIn("99", str(self.failureResultOf(d, ProtocolError).value))
        self.failureResultOf(self.client.request(BROKERS_ONLY, 12), ConnectionLost)

    def test_answer_after_the_unknown_one_is_not_delivered(self):
        """Frames read after the bad one, in the same read, are not matched."""
        d = self.client.request(BROKERS_ONLY, 12)
        self.client.dataReceived(metadata_answer(5) + metadata_answer(1))
        self.failureResultOf(d, ProtocolError)

    def test_bad_framing_drops_the_connection(self):
        """A negative size prefix (or a frame too short for a correlation id)
        fails the pending requests."""
        d = self.client.request(BROKERS_ONLY, 12)
        self.client.dataReceived(b"\xff\xff\xff\xff")
        self.failureResultOf(d, ProtocolError)
        self.assertTrue(self.transport.disconnecting)

    def test_undecodable_answer_fails_only_its_request(self):
        """Framing intact, body wrong: that request fails, the stream goes on."""
        first = self.client.request(BROKERS_ONLY, 12)
        second = self.client.request(BROKERS_ONLY, 12)
        self.client.dataReceived(frame((1).to_bytes(4, "big") + b"\x00\xff\xff"))
        self.failureResultOf(first, CodecError)
        self.client.dataReceived(metadata_answer(2))
        self.successResultOf(second)
        self.assertFalse(self.transport.disconnecting)

    def test_connection_loss_fails_pending(self):
        """Pending requests fail when the connection goes; later ones at once."""
        d = self.client.request(BROKERS_ONLY, 12)
        self.client.connectionLost(Failure(ConnectionDone("bye")))
        self.failureResultOf(d, ConnectionLost)
        self.failureResultOf(self.client.request(BROKERS_ONLY, 12), ConnectionLost)

    def test_a_broker_that_answers_nothing(self):
        """With a clock, a request unanswered for REQUEST_TIMEOUT seconds
        drops the connection and fails every request on it: a wedged
        broker holds no listing or inventory for ever.  Answered requests
        leave no timer behind."""
        clock = Clock()
        client = KafkaClientProtocol("test", clock=clock)
        transport = StringTransport()
        client.makeConnection(transport)
        answered = client.request(BROKERS_ONLY, 12)
        client.dataReceived(metadata_answer(1))
        self.successResultOf(answered)
        self.assertEqual(clock.getDelayedCalls(), [])
        first = client.request(BROKERS_ONLY, 12)
        clock.advance(REQUEST_TIMEOUT / 2)
        second = client.request(BROKERS_ONLY, 12)
        clock.advance(REQUEST_TIMEOUT / 2)
        self.assertIn("within 30 s", str(self.failureResultOf(first, RequestTimedOut).value))
        self.failureResultOf(second, RequestTimedOut)
        self.assertTrue(transport.disconnected)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.failureResultOf(client.request(BROKERS_ONLY, 12), ConnectionLost)

    def test_release_only_when_idle(self):
        """Handing the connection over is refused while an answer is due or
        bytes of one wait in the decoder: the next protocol would lose them."""
        d = self.client.request(BROKERS_ONLY, 12)
        self.assertRaises(ProtocolError, self.client.release)
        answer = metadata_answer(1)
        self.client.dataReceived(answer + b"\x00\x00")
        self.successResultOf(d)
        self.assertRaises(ProtocolError, self.client.release)
        idle = KafkaClientProtocol()
        idle.makeConnection(StringTransport())
        idle.release()
        self.assertFalse(idle.connected)


class PipelineTests(unittest.TestCase):
    """Over an iosim connection: many requests in flight at once."""

    def test_requests_pipelined(self):
        """Three requests leave before any answer (one read at the broker),
        and the answers, held and then sent together, reach each request."""
        held = []
        broker = FakeBroker(lambda header, body: held.append(header) and None)
        client, pump = connected_pair(broker)
        ds = [client.request(BROKERS_ONLY, 12) for _ in range(3)]
        pump.flush()
        self.assertEqual(broker.reads, 1)
        self.assertEqual([h.correlation_id for h in held], [1, 2, 3])
        broker.transport.write(b"".join(
            metadata_answer(h.correlation_id, BROKERS[:h.correlation_id - 1])
            for h in held))
        pump.flush()
        self.assertEqual([len(self.successResultOf(d).brokers) for d in ds], [0, 1, 2])

    def test_create_topic(self):
        """One CreateTopics v7 with the configs in order; fires with the topic's
        result whatever its error (callers choose which refusals matter)."""
        def answer(header, body):
            return response_frame(header.correlation_id, CreateTopicsResponse(
                throttle_time=NO_THROTTLE, topics=(CreatableTopicResult(
                    name=body.topics[0].name, topic_id=None,
                    error_code=ErrorCode.topic_already_exists, error_message="exists",
                    num_partitions=i32(-1), replication_factor=i16(-1),
                    configs=None),)))
        broker = FakeBroker(answer)
        client, pump = connected_pair(broker)
        d = create_topic(client, "t", 3, 2, {"z": "1", "a": "2"})
        pump.flush()
        [(header, body)] = broker.requests
        self.assertEqual((header.api_key, header.api_version), (19, 7))
        [topic] = body.topics
        self.assertEqual((topic.name, topic.num_partitions, topic.replication_factor),
                         ("t", 3, 2))
        self.assertEqual([(c.name, c.value) for c in topic.configs],
                         [("a", "2"), ("z", "1")])
        self.assertEqual(self.successResultOf(d).error_code,
                         ErrorCode.topic_already_exists)


class TryEachTests(unittest.TestCase):
    """One server after another, until one does."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.completer = iosim.ConnectionCompleter(self.reactor)
        self.broker = FakeBroker()
        factory = protocol.Factory.forProtocol(lambda: self.broker)
        self.reactor.listenTCP(9002, factory)
        self.connector = Connector(self.reactor, tcp_endpoint, "test")

    def test_falls_back_to_the_next_server(self):
        """The first refuses, the second answers: the answer is the second's,
        and its connection is closed after the one request."""
        d = self.connector.ask_first([("h1", 9001), ("h2", 9002), ("h3", 9003)],
                                     BROKERS_ONLY, 12)
        self.assertEqual([c[:2] for c in self.reactor.tcpClients], [("h1", 9001)])
        self.completer.failOnce()
        self.assertEqual([c[:2] for c in self.reactor.tcpClients], [("h2", 9002)])
        pump = self.completer.succeedOnce()
        pump.flush()
        self.assertEqual([b.node_id for b in self.successResultOf(d).brokers], [1, 2])
        self.assertEqual(self.reactor.tcpClients, [])  # h3 never tried
        self.assertTrue(pump.clientIO.disconnecting)

    def test_every_server_fails(self):
        """Unreachable names the last failure and keeps every one."""
        d = self.connector.ask_first([("h1", 9001), ("h3", 9003)], BROKERS_ONLY, 12)
        self.completer.failOnce()
        self.completer.failOnce(Failure(ConnectionRefusedError("nope")))
        failure = self.failureResultOf(d, Unreachable)
        self.assertEqual([(h, p) for h, p, _ in failure.value.errors],
                         [("h1", 9001), ("h3", 9003)])
        self.assertIn("h3:9003", str(failure.value))
        self.assertIsInstance(failure.value.last, ConnectionRefusedError)
        self.assertEqual(str(self.failureResultOf(try_each([], None), Unreachable)
                             .value), "no broker address known")

    def test_lost_answer_tries_the_next_server(self):
        """A server that accepts but hangs up before answering counts as a failure."""
        self.reactor.listenTCP(9001, protocol.Factory.forProtocol(
            lambda: FakeBroker(lambda header, body: None)))
        d = self.connector.ask_first([("h1", 9001), ("h2", 9002)], BROKERS_ONLY, 12)
        first = self.completer.succeedOnce()  # 9001: takes the request, no answer
        first.flush()
        self.assertNoResult(d)
        first.server.transport.loseConnection()
        first.flush()
        self.assertEqual([c[:2] for c in self.reactor.tcpClients], [("h2", 9002)])
        self.completer.succeedOnce().flush()
        self.assertEqual(len(self.successResultOf(d).brokers), 2)

    def test_cancellation_is_not_retried(self):
        """A cancelled attempt ends the walk (a client that went away)."""
        attempts = []

        def attempt(host, port):
            attempts.append(host)
            return defer.Deferred()
        d = try_each([("h1", 1), ("h2", 2)], attempt)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(attempts, ["h1"])


class SaslOverClientTests(unittest.TestCase):
    """The backend SASL/PLAIN login runs on the internal client, then hands over."""

    def setUp(self):
        self.handed = protocol.Protocol()
        self.handed.received = []
        self.handed.dataReceived = self.handed.received.append

        class Inner:
            def connect(inner, factory):
                self.wrapper = factory.buildProtocol(None)
                self.transport = StringTransport()
                self.wrapper.makeConnection(self.transport)
                return defer.succeed(self.wrapper)
        self.done = SaslPlainEndpoint(Inner(), "gw", "pw").connect(
            protocol.Factory.forProtocol(lambda: self.handed))

    def answer_handshake(self):
        [payload] = FrameDecoder().feed(self.transport.value())
        self.transport.clear()
        header, _ = decode_request(payload)
        self.wrapper.dataReceived(response_frame(header.correlation_id,
                                                 SaslHandshakeResponse(
            error_code=ErrorCode.none, mechanisms=("PLAIN",)), flexible=False))
        [payload] = FrameDecoder().feed(self.transport.value())
        self.transport.clear()
        header, body = decode_request(payload)
        self.assertEqual(body.auth_bytes, b"\x00gw\x00pw")
        return response_frame(header.correlation_id, SaslAuthenticateResponse(
            error_code=ErrorCode.none, error_message=None, auth_bytes=b"",
            session_lifetime=i64Timedelta.parse(datetime.timedelta(0))))

    def test_handed_over_with_nothing_buffered(self):
        """After the login the connection is the caller's: its first bytes
        reach it, none were kept by the login client."""
        self.wrapper.dataReceived(self.answer_handshake())
        self.assertIs(self.successResultOf(self.done), self.handed)
        self.wrapper.dataReceived(b"\x00\x00")
        self.assertEqual(self.handed.received, [b"\x00\x00"])

    def test_bytes_after_the_login_answer_fail_the_connect(self):
        """Bytes after SaslAuthenticate's answer in the same read would be lost
        by a hand-over: the login fails instead and the connection is dropped."""
        self.wrapper.dataReceived(self.answer_handshake() + b"\x00\x00")
        self.failureResultOf(self.done, SaslError)
        self.assertEqual(self.handed.received, [])
        self.assertIsNone(self.handed.transport)
        self.assertTrue(self.transport.disconnecting)

    def test_broker_hangs_up_during_login(self):
        """A hang-up before the answer fails the connect as a SASL error."""
        self.wrapper.connectionLost(Failure(ConnectionDone("closed")))
        failure = self.failureResultOf(self.done, SaslError)
        self.assertIn("during SASL", str(failure.value))


class BlockingTests(unittest.TestCase):
    """``ask_blocking`` (scripts, no reactor) over real loopback sockets."""

    def serve_once(self, response):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        self.addCleanup(server.close)

        def run():
            conn, _ = server.accept()
            with conn:
                [payload] = FrameDecoder().feed(conn.recv(65536))
                conn.sendall(response(decode_request(payload)[0]))
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        return server.getsockname()

    def closed_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()
        s.close()
        return address

    def test_fallback_and_decode(self):
        """A refused server, then one that answers: the brokers it names."""
        address = self.serve_once(lambda header: metadata_answer(header.correlation_id))
        self.assertEqual(fetch_brokers_blocking([self.closed_port(), address], 2),
                         BROKERS)

    def test_wrong_correlation_id_is_no_answer(self):
        """An answer to another request is not taken for ours."""
        address = self.serve_once(lambda header: metadata_answer(7))
        self.assertIsNone(ask_blocking([address], BROKERS_ONLY, 12, 2))
