"""The gateway cluster: membership through the state store, the per-client
broker mapping, and leaving on SIGTERM (in memory, on a task.Clock)."""

import datetime
from collections import Counter

from kio.schema.metadata.v12.response import MetadataResponse, MetadataResponseBroker
from kio.static.primitive import i32, i32Timedelta
from twisted.application import service
from twisted.internet import defer, task
from twisted.trial import unittest

from vkafka.proxy.leave import LeavingService
from vkafka.proxy.splice import client_key
from vkafka.proxy.topology import Topology
from vkafka.state import membership as m
from vkafka.state.store import MemoryStore
from vkafka.tenancy.rules.addresses import mapping_key, rewrite_metadata
from vkafka.tenancy.services import Services


def gateway(store, clock, port, cluster="c1", rack=None, name=None):
    """A gateway's Membership on *store*: host ``gw<port>``, 3 ports from *port*."""
    return m.Membership(name or f"gw{port}", store, clock.seconds,
                        lambda: {"host": f"h{port}", "port": port, "ports": 3,
                                 "minBroker": 1}, cluster, rack)


class MembershipTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1000)
        self.store = MemoryStore()
        self.one = gateway(self.store, self.clock, 6000)
        self.two = gateway(self.store, self.clock, 7000)

    def ids(self, membership):
        return [n.id for n in membership.nodes()]

    def test_alone_until_the_other_beats(self):
        self.assertEqual(self.ids(self.one), ["gw6000"])
        self.assertEqual(self.one.mapping("k", {1: 0, 2: 0}), {})
        self.two.beat()
        self.assertEqual(self.ids(self.one), ["gw6000", "gw7000"])
        self.assertEqual(self.ids(self.two), ["gw7000"])  # one has not said so yet
        self.one.beat()
        self.assertEqual(self.ids(self.two), ["gw6000", "gw7000"])

    def test_dead_after_silence(self):
        self.one.start(self.clock)
        self.two.start(self.clock)
        self.clock.pump([m.BEAT_EVERY] * 10)
        self.assertEqual(self.ids(self.one), ["gw6000", "gw7000"])
        self.two.stop()  # killed: no more beats
        self.clock.advance(m.DEAD_AFTER - 1.01)
        self.assertIn("gw7000", self.ids(self.one))
        self.clock.advance(1.02)
        self.assertEqual(self.ids(self.one), ["gw6000"])
        self.assertEqual(self.one.alive(), {"gw6000"})
        self.one.stop()

    def test_leaving_is_known_at_once(self):
        self.one.beat()
        self.two.beat()
        self.two.leave()
        self.assertEqual(self.ids(self.one), ["gw6000"])
        self.assertEqual(self.ids(self.two), ["gw6000"])  # not in its own answers

    def test_other_clusters_and_self_mode_apart(self):
        other = gateway(self.store, self.clock, 8000, cluster="c2")
        other.beat()
        self.two.beat()
        self.assertEqual(self.ids(self.one), ["gw6000", "gw7000"])
        self.assertEqual(self.ids(other), ["gw8000"])
        self.assertEqual(self.one.alive(), {"gw6000", "gw7000", "gw8000"})
        self.one.advertise = False
        self.assertEqual(self.one.nodes(), ())

    def test_catching_up_at_start_counts_from_the_record(self):
        """Records read at start are old: a gateway dead for a minute is dead."""
        self.store.put("gateway/old", {"at": self.clock.seconds() - 60,
                                       "cluster": "c1", "host": "h", "port": 1,
                                       "ports": 3, "minBroker": 1})
        self.store.put("gateway/recent", {"at": self.clock.seconds() - 1,
                                          "cluster": "c1", "host": "h", "port": 2,
                                          "ports": 3, "minBroker": 1})
        self.store.ready = defer.Deferred()  # loading
        late = gateway(self.store, self.clock, 9000)
        self.assertEqual(self.ids(late), ["gw9000", "recent"])

    def test_clients_mapped_alike_by_every_gateway(self):
        self.one.beat()
        self.two.beat()
        brokers = {1: 0, 2: 0, 3: 0}
        for key in ("a", "b", "c"):
            self.assertEqual(self.one.mapping(key, brokers),
                             self.two.mapping(key, brokers))


def node(name, rack=None, port=6000):
    return m.Node(name, name, port, 6, 1, rack)


class AssignTests(unittest.TestCase):
    nodes = (node("a"), node("b"), node("c"))

    def test_a_clients_brokers_spread_evenly(self):
        for key in map(str, range(200)):
            used = Counter(n.id for n in m.assign(key, [1, 2, 3], self.nodes).values())
            self.assertEqual(sorted(used.values()), [1, 1, 1])
            used = Counter(n.id for n in m.assign(key, [1, 2, 3, 4, 5],
                                                  self.nodes).values())
            self.assertLessEqual(max(used.values()), 2)

    def test_stable_and_spread_over_clients(self):
        first = {k: m.assign(k, [1], self.nodes)[1].id for k in map(str, range(300))}
        again = {k: m.assign(k, [1], self.nodes)[1].id for k in map(str, range(300))}
        self.assertEqual(first, again)
        counts = Counter(first.values())
        self.assertEqual(set(counts), {"a", "b", "c"})
        self.assertGreater(min(counts.values()), 60)

    def test_a_death_moves_little(self):
        """Brokers on the survivors mostly stay where they were."""
        moved = stayed = 0
        for key in map(str, range(300)):
            before = m.assign(key, [1, 2, 3], self.nodes)
            after = m.assign(key, [1, 2, 3], self.nodes[:2])
            for broker, was in before.items():
                if was.id != "c":
                    if after[broker].id == was.id:
                        stayed += 1
                    else:
                        moved += 1
        print(f"\nsurvivors' brokers kept: {stayed} of {stayed + moved}")
        self.assertGreater(stayed, 3 * moved)

    def test_rack_first(self):
        nodes = (node("a", "r1"), node("b", "r2"), node("c", "r1"))
        for key in map(str, range(50)):
            self.assertEqual({n.rack for n in m.assign(key, [1, 2, 3], nodes,
                                                       "r1").values()}, {"r1"})
        # no node of that rack: any
        self.assertTrue(m.assign("k", [1, 2], nodes, "r9"))

    def test_node_addresses(self):
        n = m.Node("x", "host", 7000, 3, 1)
        self.assertEqual(n.address(1), ("host", 7000))
        self.assertEqual(n.address(3), ("host", 7002))
        self.assertIsNone(n.address(4))
        self.assertIsNone(m.Node.from_record("y", {"at": 1}))


class AddressTests(unittest.TestCase):
    """Metadata answers name, for each broker, the gateway the client is sent to."""

    def setUp(self):
        self.clock = task.Clock()
        store = MemoryStore()
        self.own = gateway(store, self.clock, 6000)
        self.topology = Topology([("k", 9092)], "h6000", 6000, 3, 1)

    def answer(self, membership, key="10.0.0.1/app"):
        services = Services(self.topology, self.clock, {}, membership=membership,
                            client_key=key)
        response = MetadataResponse(
            throttle_time=i32Timedelta.parse(datetime.timedelta(0)), brokers=tuple(
                MetadataResponseBroker(node_id=i32(n), host=f"b{n}", port=i32(9092),
                                       rack=None) for n in (1, 2, 3)),
            cluster_id="x", controller_id=i32(1), topics=())
        return {b.node_id: (b.host, b.port)
                for b in rewrite_metadata(services, None, response).brokers}, services

    def test_own_addresses_without_a_cluster(self):
        want = {1: ("h6000", 6000), 2: ("h6000", 6001), 3: ("h6000", 6002)}
        self.assertEqual(self.answer(None)[0], want)
        self.assertEqual(self.answer(self.own)[0], want)  # alone in its cluster

    def test_mapped_over_the_cluster(self):
        for port in (7000, 8000):
            gateway(self.own.store, self.clock, port).beat()
        hosts = Counter()
        for i in range(60):
            addresses, services = self.answer(self.own, f"10.0.0.{i}/app")
            self.assertEqual(len({h for h, _ in addresses.values()}), 3)
            for broker, (host, port) in addresses.items():
                self.assertEqual(port, int(host[1:]) + broker - 1)
                hosts[host] += 1
            self.assertIsNotNone(mapping_key(services))
        self.assertEqual(set(hosts.values()), {60})

    def test_client_key(self):
        class Peer:
            host = "10.1.1.1"
        frame = b"\x00\x03\x00\x0c\x00\x00\x00\x01\x00\x03app" + b"\x00" * 4
        self.assertEqual(client_key(Peer, frame), "10.1.1.1/app")
        self.assertEqual(client_key(Peer, frame[:8] + b"\xff\xff"), "10.1.1.1")


class FakeConnection:
    def __init__(self, gateway, busy):
        self.gateway, self.busy = gateway, busy
        gateway.connections.add(self)

    def close_if_idle(self):
        if self.busy:
            return False
        self.close()
        return True

    def close(self):
        self.gateway.connections.discard(self)
        self.gateway.closed.append(self)


class FakeGateway:
    def __init__(self, membership):
        self.membership = membership
        self.connections = set()
        self.closed = []
        self.draining = False


class Listener(service.Service):
    stopped = False

    def stopService(self):
        self.stopped = True
        return super().stopService()


class LeavingTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = MemoryStore()
        self.me = gateway(self.store, self.clock, 6000)
        self.other = gateway(self.store, self.clock, 7000)
        self.other.beat()
        self.gw = FakeGateway(self.me)
        self.top = LeavingService(self.clock)
        self.top.gateway, self.top.timeout = self.gw, 5.0
        self.listener = Listener()
        self.listener.setServiceParent(self.top)
        self.top.listeners.append(self.listener)
        self.top.startService()

    def test_hand_over_then_close(self):
        idle = FakeConnection(self.gw, busy=False)
        busy = FakeConnection(self.gw, busy=True)
        stopped = self.top.stopService()
        self.assertEqual([n.id for n in self.other.nodes()], ["gw7000"])  # said at once
        self.assertTrue(self.listener.stopped)  # nobody new
        self.assertEqual(self.gw.closed, [])  # the others read it first
        self.clock.advance(1.0)
        self.assertTrue(self.gw.draining)
        self.clock.advance(0.1)
        self.assertEqual(self.gw.closed, [idle])
        self.assertNoResult(stopped)
        self.clock.pump([0.05] * 100)  # the deadline: the rest
        self.assertEqual(self.gw.closed, [idle, busy])
        self.successResultOf(stopped)

    def test_done_when_all_idle(self):
        FakeConnection(self.gw, busy=False)
        stopped = self.top.stopService()
        self.clock.advance(1.0)
        self.clock.advance(0.1)
        self.successResultOf(stopped)

    def test_alone_stops_at_once(self):
        self.other.leave()
        FakeConnection(self.gw, busy=True)
        self.successResultOf(self.top.stopService())
        self.assertFalse(self.gw.draining)


class SpliceDrainTests(unittest.TestCase):
    """Leaving: a connection closes once no response is owed on it, after the
    response; the mapping reaches clients through the real splice."""

    def setUp(self):
        from twisted.internet.testing import MemoryReactorClock

        from vkafka.proxy.gateway import Gateway
        from vkafka.tenancy.rules import passthrough_rules

        from .test_splice import BROKERS, FakeEndpoint
        self.reactor = MemoryReactorClock()
        self.attempts, self.refused, self.brokers = [], set(), []
        self.topology = Topology([("kafka1", 9092)], "h6000", 6000, 3, 1)
        self.topology.learn(BROKERS)
        self.gateway = Gateway(
            self.reactor, self.topology, passthrough_rules(),
            endpoint_factory=lambda reactor, h, p: FakeEndpoint(self, h, p))

    def connect(self):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport
        proto = self.gateway.factory_for_port(6001).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 5555))
        proto.makeConnection(transport)
        return proto, transport

    def test_closed_once_idle(self):
        from .kafka_messages import metadata_request, metadata_response, \
            request_frame, response_frame
        client, transport = self.connect()
        self.assertTrue(client.close_if_idle())  # nothing owed: closed at once
        self.assertTrue(transport.disconnecting)
        client, transport = self.connect()
        _, broker, _ = self.brokers[-1]
        client.dataReceived(request_frame(metadata_request(), 12, 7))
        self.gateway.draining = True
        self.assertFalse(client.close_if_idle())  # a response is owed
        self.assertFalse(transport.disconnecting)
        broker.dataReceived(response_frame(7, metadata_response(BROKERS_AT)))
        self.assertTrue(transport.value())  # the answer went out first
        self.assertTrue(transport.disconnecting)

    def test_mapping_through_the_splice(self):
        from vkafka.protocol.codec import decode_response
        from vkafka.protocol.framing import FrameDecoder

        from .kafka_messages import metadata_request, metadata_response, \
            request_frame, response_frame
        clock = task.Clock()
        store = MemoryStore()
        self.gateway.membership = gateway(store, clock, 6000)
        gateway(store, clock, 7000).beat()
        gateway(store, clock, 8000).beat()
        client, transport = self.connect()
        _, broker, _ = self.brokers[-1]
        client.dataReceived(request_frame(metadata_request(), 12, 9))
        self.assertTrue(client.services.client_key.startswith("10.0.0.9/"))
        broker.dataReceived(response_frame(9, metadata_response(BROKERS_AT)))
        [payload] = FrameDecoder().feed(transport.value())
        _, response = decode_response(payload, 3, 12)
        self.assertEqual(sorted(b.host for b in response.brokers),
                         ["h6000", "h7000", "h8000"])


BROKERS_AT = [(1, "kafka1", 9092), (2, "kafka2", 9093), (3, "kafka3", 9094)]
