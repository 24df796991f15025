"""The splice and address rewriting, on in-memory transports (no sockets)."""

import struct

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from vkafka.protocol.codec import decode_response
from vkafka.protocol.framing import FrameDecoder, frame
from vkafka.proxy.gateway import Gateway
from vkafka.proxy.topology import Topology
from vkafka.tenancy.rules import passthrough_rules

from .kafka_messages import (
    api_versions_response, metadata_request, metadata_response, produce_request,
    request_frame, response_frame)

BROKERS = [(1, "kafka1", 9092), (2, "kafka2", 9093), (3, "kafka3", 9094)]


class FakeEndpoint:
    """Connects synchronously to a StringTransport, or fails if refused."""

    def __init__(self, world, host, port):
        self.world, self.address = world, (host, port)

    def connect(self, factory):
        self.world.attempts.append(self.address)
        if self.address in self.world.refused:
            return defer.fail(ConnectionRefusedError(str(self.address)))
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        self.world.brokers.append((self.address, proto, transport))
        proto.makeConnection(transport)
        return defer.succeed(proto)


class SpliceTests(unittest.TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.attempts, self.refused, self.brokers = [], set(), []
        self.topology = Topology([("kafka1", 9092)], "gw.example", 6969, 6, 1)
        self.topology.learn(BROKERS)
        self.gateway = Gateway(
            self.reactor, self.topology, passthrough_rules(), max_frame_size=1000,
            endpoint_factory=lambda reactor, h, p: FakeEndpoint(self, h, p))

    def connect_client(self, port=6970):
        proto = self.gateway.factory_for_port(port).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 5555))
        proto.makeConnection(transport)
        return proto, transport

    def responses(self, transport):
        return FrameDecoder().feed(transport.value())

    def test_routes_port_to_its_broker(self):
        """Port start+1 is spliced to broker min+1 (node 2)."""
        client, transport = self.connect_client(6970)
        self.assertEqual(self.attempts, [("kafka2", 9093)])
        self.assertEqual(transport.producerState, "producing")
        self.assertIs(transport.producer, client.unsent)  # its broker's behind it
        self.assertIs(client.unsent.broker.transport, self.brokers[0][2])

    def test_hears_the_tls_handshake(self):
        """Twisted's TLS calls ``handshakeCompleted`` only on a protocol that
        declares IHandshakeListener: without it an SNI-routed connection
        would never pick its broker."""
        from twisted.internet.interfaces import IHandshakeListener
        client, _ = self.connect_client(6970)
        self.assertTrue(IHandshakeListener.providedBy(client))

    def test_fallback_when_broker_refuses(self):
        """A refused broker falls back to another one, so any port bootstraps."""
        self.refused.add(("kafka2", 9093))
        client, transport = self.connect_client(6970)
        self.assertEqual(self.attempts[0], ("kafka2", 9093))
        self.assertEqual(len(self.brokers), 1)
        self.assertFalse(transport.disconnecting)

    def test_a_stand_in_retires_once_idle(self):
        """A connection another broker serves for its port's (refused, or
        not listed) is closed STAND_IN_LIFE later once no answer is owed:
        kept, it would stay there after its own broker came back, and a
        client would be told NOT_LEADER_OR_FOLLOWER there for ever (the
        metadata names the same port).  A connection to its own broker
        stays."""
        from vkafka.proxy.gateway import STAND_IN_LIFE
        self.refused.add(("kafka2", 9093))
        client, transport = self.connect_client(6970)
        own, own_transport = self.connect_client(6971)
        self.assertEqual([b[0] for b in self.brokers], [("kafka1", 9092), ("kafka3", 9094)])
        client.dataReceived(request_frame(metadata_request(), 12, 41))
        self.reactor.advance(STAND_IN_LIFE)
        self.assertFalse(transport.disconnecting)  # an answer is owed
        _, broker, broker_transport = self.brokers[0]
        broker.dataReceived(response_frame(41, metadata_response([(1, "kafka1", 9092)])))
        self.assertEqual(len(self.responses(transport)), 1)  # answered, then closed
        self.assertTrue(transport.disconnecting)
        self.assertTrue(broker_transport.disconnecting)
        self.reactor.advance(STAND_IN_LIFE * 10)
        self.assertFalse(own_transport.disconnecting)
        self.refused.clear()
        again, again_transport = self.connect_client(6970)
        self.assertEqual(self.brokers[-1][0], ("kafka2", 9093))

    def test_a_retired_connection_is_not_read_again(self):
        """A connection closed once idle (retired, or the gateway leaving)
        while a hold of its reads is timed: the hold's end does not resume
        a transport told to close (the atheris harness's transports raise,
        session 27's make reliability)."""
        from vkafka.proxy.gateway import STAND_IN_LIFE
        self.refused.add(("kafka2", 9093))
        client, transport = self.connect_client(6970)
        client.valve.hold_for("throttle", STAND_IN_LIFE * 2, self.reactor)
        self.reactor.advance(STAND_IN_LIFE)
        self.assertTrue(transport.disconnecting)
        self.reactor.advance(STAND_IN_LIFE * 2)  # raised here before
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_busy_stand_in_closed_after_a_grace(self):
        """A stand-in never idle (requests always in flight) is closed
        RETIRE_GRACE after it began to retire, answers owed or not."""
        from vkafka.proxy.gateway import STAND_IN_LIFE
        from vkafka.proxy.splice import RETIRE_GRACE
        self.refused.add(("kafka2", 9093))
        client, transport = self.connect_client(6970)
        client.dataReceived(request_frame(metadata_request(), 12, 41))
        self.reactor.advance(STAND_IN_LIFE)
        self.reactor.advance(RETIRE_GRACE - 0.1)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.2)
        self.assertTrue(transport.disconnected)  # aborted

    def test_all_brokers_down_closes_client(self):
        """With no broker reachable the client connection is closed cleanly."""
        self.refused.update((h, p) for _, h, p in BROKERS)
        client, transport = self.connect_client()
        self.assertTrue(transport.disconnecting)

    def test_client_paused_until_broker_connected(self):
        """The client is paused in connectionMade, resumed once the broker is up."""
        self.refused.update((h, p) for _, h, p in BROKERS)
        pending = defer.Deferred()
        self.gateway.endpoint_factory = lambda r, h, p: type(
            "E", (), {"connect": lambda self, f: pending})()
        client, transport = self.connect_client()
        self.assertEqual(transport.producerState, "paused")

    def test_metadata_addresses_rewritten(self):
        """Metadata brokers are answered with the gateway's host and ports."""
        client, transport = self.connect_client()
        _, broker, broker_transport = self.brokers[0]
        request = request_frame(metadata_request(), 12, 41)
        client.dataReceived(request)
        self.assertEqual(broker_transport.value(), request)
        broker.dataReceived(response_frame(41, metadata_response(
            [(1, "kafka1", 9092), (2, "kafka2", 9093), (4, "kafka4", 9095)])))
        [payload] = self.responses(transport)
        _, response = decode_response(payload, 3, 12)
        self.assertEqual([(b.node_id, b.host, b.port) for b in response.brokers],
                         [(1, "gw.example", 6969), (2, "gw.example", 6970),
                          (4, "gw.example", 6972)])
        self.assertEqual(self.topology.brokers[4], ("kafka4", 9095))

    def test_produce_node_endpoints_rewritten(self):
        """KIP-951 node_endpoints in a Produce v10 response name gateway ports."""
        from kio.schema.produce.v10.request import ProduceRequest
        from .kafka_messages import produce_response_with_endpoints
        import datetime
        from kio.static.primitive import i16, i32Timedelta
        client, transport = self.connect_client()
        _, broker, _ = self.brokers[0]
        client.dataReceived(request_frame(ProduceRequest(
            transactional_id=None, acks=i16(-1),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=1)),
            topic_data=()), 10, 3))
        broker.dataReceived(response_frame(3, produce_response_with_endpoints(
            [(3, "kafka3", 9094)])))
        _, response = decode_response(self.responses(transport)[0], 0, 10)
        self.assertEqual([(e.node_id, e.host, e.port) for e in response.node_endpoints],
                         [(3, "gw.example", 6971)])

    def test_find_coordinator_batched_rewritten(self):
        """FindCoordinator v4 coordinators name gateway ports; errors pass as they are."""
        from .kafka_messages import (
            find_coordinator_request, find_coordinator_response)
        client, transport = self.connect_client()
        _, broker, _ = self.brokers[0]
        client.dataReceived(request_frame(find_coordinator_request(["a", "b"]), 4, 9))
        broker.dataReceived(response_frame(9, find_coordinator_response(
            [("a", 3, "kafka3", 9094, 0), ("b", -1, "", -1, 15)])))
        _, response = decode_response(self.responses(transport)[0], 10, 4)
        self.assertEqual(
            [(c.key, c.node_id, c.host, c.port) for c in response.coordinators],
            [("a", 3, "gw.example", 6971), ("b", -1, "", -1)])

    def test_broker_outside_port_range_dropped(self):
        """A broker with no gateway port is left out rather than leaked."""
        client, transport = self.connect_client()
        _, broker, _ = self.brokers[0]
        client.dataReceived(request_frame(metadata_request(), 12, 1))
        broker.dataReceived(response_frame(1, metadata_response(
            [(1, "kafka1", 9092), (99, "kafka99", 9099)])))
        _, response = decode_response(self.responses(transport)[0], 3, 12)
        self.assertEqual([b.node_id for b in response.brokers], [1])
        self.assertNotIn(b"kafka", transport.value())

    def test_api_versions_cut_to_table(self):
        """ApiVersions offers only table rows, at versions both sides speak."""
        from kio.schema.api_versions.v3.request import ApiVersionsRequest
        client, transport = self.connect_client()
        _, broker, _ = self.brokers[0]
        client.dataReceived(request_frame(
            ApiVersionsRequest(client_software_name="t",
                               client_software_version="1"), 3, 7))
        broker.dataReceived(response_frame(7, api_versions_response(
            [(3, 0, 99), (1, 4, 17), (52, 0, 1), (76, 0, 1)]), flexible=False))
        _, response = decode_response(self.responses(transport)[0], 18, 3)
        offered = {a.api_key: (a.min_version, a.max_version) for a in response.api_keys}
        from vkafka.protocol.headers import codec_versions
        self.assertEqual(offered, {3: (0, codec_versions(3)[1]), 1: (4, 17)})

    def test_acks_zero_expects_no_response(self):
        """An acks=0 Produce is forwarded and not waited for; acks=1 is."""
        client, _ = self.connect_client()
        client.dataReceived(request_frame(produce_request(acks=0), 9, 1))
        self.assertEqual(len(client.sequencer), 0)
        client.dataReceived(request_frame(produce_request(acks=1), 9, 2))
        self.assertEqual([p.correlation_id for p in client.sequencer.pending], [2])

    def test_unoffered_api_closes(self):
        """A request for an API not in the table closes that connection."""
        client, transport = self.connect_client()
        _, _, broker_transport = self.brokers[0]
        client.dataReceived(frame(struct.pack(">hhih", 52, 0, 1, -1)))
        self.assertTrue(transport.disconnected)
        self.assertEqual(broker_transport.value(), b"")

    def test_oversized_frame_closes_only_that_client(self):
        """An oversized frame closes its own connection; another one goes on."""
        bad, bad_transport = self.connect_client()
        good, good_transport = self.connect_client()
        bad.dataReceived(struct.pack(">i", 1001))
        self.assertTrue(bad_transport.disconnected)
        good.dataReceived(request_frame(metadata_request(), 12, 1))
        self.assertFalse(good_transport.disconnecting)
        self.assertEqual(len(good.sequencer), 1)

    def test_garbage_never_raises(self):
        """Random bytes close the connection without an exception escaping."""
        import random
        rnd = random.Random(7)
        for _ in range(200):
            client, transport = self.connect_client()
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 40)))
            client.dataReceived(frame(body))
            _, _, broker_transport = self.brokers[-1]
            self.assertTrue(transport.disconnected
                            or broker_transport.value() == frame(body))

    def test_unsolicited_response_closes(self):
        """A response with no pending request closes the client connection."""
        client, transport = self.connect_client()
        _, broker, _ = self.brokers[0]
        broker.dataReceived(frame(struct.pack(">i", 5)))
        self.assertTrue(transport.disconnected)

    def test_broker_loss_closes_client(self):
        """When the broker side goes away, the client side is closed too."""
        from twisted.python.failure import Failure
        from twisted.internet.error import ConnectionLost
        client, transport = self.connect_client()
        _, broker, _ = self.brokers[0]
        broker.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(transport.disconnecting)

    def test_client_loss_closes_broker(self):
        """When the client goes away, the broker connection is closed."""
        from twisted.python.failure import Failure
        from twisted.internet.error import ConnectionDone
        client, _ = self.connect_client()
        _, _, broker_transport = self.brokers[0]
        client.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(broker_transport.disconnecting)
