"""Namespaces that cannot overlap: the rule, the admin API's 409s, and what a
gateway does when the shared state holds an overlap anyway."""

import json

from kio.schema.errors import ErrorCode
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from vkafka.auth.tokens import TokenAuthority
from vkafka.names import overlap
from vkafka.protocol.codec import decode_response
from vkafka.protocol.framing import FrameDecoder
from vkafka.proxy.gateway import Gateway
from vkafka.proxy.topology import Topology
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore
from vkafka.tenancy.mode import Tenancy
from vkafka.tenancy.naming import TOPIC, InvalidName
from vkafka.tenancy.rules import tenant_rules
from vkafka.tenancy.vclusters import VirtualClusters

from .test_admin import ADMIN, BASE, make_api
from .test_splice import BROKERS, FakeEndpoint
from .test_tenant_splice import SECRET, authenticate, handshake

UNAVAILABLE = ("is unavailable: its names overlap another virtual cluster's; "
               "ask the operator")


class OverlapRuleTests(unittest.TestCase):
    def test_pairs(self):
        """One folded prefix starting the other overlaps; '.' and '_' are one."""
        for a, b in [("team", "teamA"), ("acme", "acme_eu"), ("acme", "acme.eu"),
                     ("acme_eu", "acme.eu"), ("a.b", "a_b"), ("x", "x")]:
            self.assertTrue(overlap(a, b), (a, b))
            self.assertTrue(overlap(b, a), (b, a))
        for a, b in [("london", "paris"), ("teamA", "teamB"), ("acme.eu", "acmeeu"),
                     ("ab", "a_b"), ("Team", "team")]:
            self.assertFalse(overlap(a, b), (a, b))

    def test_index_finds_every_overlap(self):
        """overlapping() finds shorter and longer prefixes, folded, not others."""
        vcs = VirtualClusters()
        vcs.define("acme")
        vcs.define("eu", "acme.eu")
        vcs.define("acmf")
        vcs.define("ac")
        self.assertEqual(vcs.overlapping("acme_eu"), ["ac", "acme", "eu"])
        self.assertEqual(vcs.overlapping("acme_e", exclude="ac"), ["acme", "eu"])
        self.assertEqual(vcs.overlapping("acmg"), ["ac"])
        self.assertEqual(vcs.overlapping("b"), [])

    def test_owner_counts_dot_as_underscore(self):
        """A physical name colliding with a name of a namespace is in it."""
        vcs = VirtualClusters()
        vcs.define("acme_eu")
        self.assertEqual(vcs.owner("acme.euOrders"), "acme_eu")
        self.assertIsNone(vcs.owner("acmeeuOrders"))


class OverlapStateTests(unittest.TestCase):
    """Virtual clusters as the shared state defines them."""

    def setUp(self):
        self.vcs = VirtualClusters()
        self.closed = []
        self.vcs.unavailable_listeners.append(lambda vc, why: self.closed.append(vc))
        self.team = self.vcs.define("team")

    def test_overlap_in_state_serves_neither(self):
        """team then teamA in the state: both unavailable, neither owns
        "teamAorders" (nor anything), and both names are logged."""
        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.assertEqual(self.team.logical(TOPIC, "teamAorders"), "Aorders")
        team_a = self.vcs.define("teamA")
        for name, ns in (("team", self.team), ("teamA", team_a)):
            self.assertEqual(self.vcs.unavailable(name),
                             f"virtual cluster {name} {UNAVAILABLE}")
            self.assertIsNone(ns.logical(TOPIC, "teamAorders"))
            self.assertFalse(ns.owns(TOPIC, f"{name}x"))
            self.assertRaises(InvalidName, ns.physical, TOPIC, "x")
        self.assertEqual(self.closed, ["team"])  # teamA had no namespace in use
        self.assertTrue(any(e.get("overlap") == ["team", "teamA"] for e in logged))

    def test_deleting_one_restores_the_other(self):
        """The operator's way out: delete one, the other is served again."""
        version = self.team.version
        self.vcs.define("teamA")
        self.assertGreater(self.team.version, version)  # cached views dropped
        self.vcs.remove("teamA")
        self.assertIsNone(self.vcs.unavailable("team"))
        self.assertEqual(self.team.logical(TOPIC, "teamAorders"), "Aorders")

    def test_implicit_newcomer_refused_without_effect(self):
        """A token's unknown teamA is refused; team stays served, unchanged."""
        self.assertEqual(self.vcs.unavailable("teamA"),
                         f"virtual cluster teamA {UNAVAILABLE}")
        self.assertEqual(self.vcs.conflicts("teamA"), ["team"])
        self.assertIsNone(self.vcs.unavailable("team"))
        self.assertEqual(self.vcs.names(), ["team"])
        self.assertIsNone(self.vcs.unavailable("paris"))

    def test_same_prefix_twice(self):
        """Two names, one prefix (an old state): both unavailable."""
        self.vcs.define("other", "team")
        self.assertIsNotNone(self.vcs.unavailable("team"))
        self.assertIsNotNone(self.vcs.unavailable("other"))


class ScrubTests(unittest.TestCase):
    def setUp(self):
        vcs = VirtualClusters()
        self.acme = vcs.define("acme")
        vcs.define("eu", "beta")

    def test_foreign_collision_unnamed(self):
        """Kafka names the topic a new one collides with: another's is not shown."""
        self.assertEqual(
            self.acme.scrub("Topic 'acmex.y' collides with existing topic: beta_x"),
            "Topic 'x.y' collides with an existing topic")
        self.assertEqual(
            self.acme.scrub("Topic 'acmex' collides with existing topic: plain.x"),
            "Topic 'x' collides with an existing topic")

    def test_own_collision_logical(self):
        """A collision with the tenant's own topic names it logically."""
        self.assertEqual(
            self.acme.scrub("Topic 'acmea.b' collides with existing topic: acmea_b"),
            "Topic 'a.b' collides with existing topic: a_b")


class AdminOverlapTests(unittest.TestCase):
    """The admin API refuses what would make namespaces overlap: 409, JSON."""

    def setUp(self):
        self.http, self.state, self.store, self.authority = make_api()

    @defer.inlineCallbacks
    def call(self, method, path, body=None):
        response = yield self.http.request(method, BASE + path, auth=ADMIN,
                                           data=None if body is None else
                                           json.dumps(body))
        content = yield response.content()
        return response.code, (json.loads(content) if content else None)

    @defer.inlineCallbacks
    def test_overlapping_vcluster_409(self):
        """team exists: teamA, te, and acme-eu with prefix "team.x" get 409
        naming team; nothing is written."""
        code, _ = yield self.call("POST", "/vcluster/team")
        self.assertEqual(code, 200)
        for path, body in [("/vcluster/teamA", None), ("/vcluster/te", None),
                           ("/vcluster/other", {"prefix": "team.x"})]:
            code, answer = yield self.call("POST", path, body)
            self.assertEqual((code, answer["error"], answer["vcluster"]),
                             (409, "conflict", "team"), path)
            self.assertIn("overlaps", answer["message"])
        self.assertEqual(sorted(self.state.clusters), ["team"])

    def test_simultaneous_overlapping_creations_one_wins(self):
        """Two gateways create team and teamA at once: both pass the check
        before either record is read back.  The state topic's order decides:
        the later (teamA) answers 409 and withdraws its record, the earlier
        answers 200 although it read teamA back too."""
        log = []  # (key, value, Deferred) written, not yet read back

        class SlowStore(MemoryStore):
            def put(self, key, value):
                d = defer.Deferred()
                log.append((key, value, d))
                return d

            def read_back(self):
                written, log[:] = list(log), []
                for key, value, _ in written:
                    MemoryStore.put(self, key, value)
                for *_, d in written:
                    d.callback(None)

        store = SlowStore()
        state = GatewayState(store, TokenAuthority("z" * 32, lambda: 0),
                             VirtualClusters(), lambda: 0)
        first = state.ensure_vcluster("team")
        second = state.ensure_vcluster("teamA")
        store.read_back()
        self.assertEqual(self.successResultOf(first)["name"], "team")
        self.assertEqual([w[:2] for w in log], [("vcluster/teamA", None)])  # withdrawn
        store.read_back()
        failure = self.failureResultOf(second)
        self.assertEqual((failure.value.status, failure.value.details),
                         (409, {"vcluster": "team"}))
        self.assertEqual(sorted(state.clusters), ["team"])
        self.assertIsNone(state.vclusters.unavailable("team"))

    @defer.inlineCallbacks
    def test_dot_and_underscore_409(self):
        """acme_eu exists: prefix "acme.eu" collides in Kafka, 409."""
        yield self.call("POST", "/vcluster/acme_eu")
        code, answer = yield self.call("POST", "/vcluster/eu", {"prefix": "acme.eu"})
        self.assertEqual((code, answer["vcluster"]), (409, "acme_eu"))

    @defer.inlineCallbacks
    def test_token_for_overlapping_vcluster_409(self):
        """Issuing a token would create teamA implicitly: 409, no account."""
        yield self.call("POST", "/vcluster/team/username/sa", {})
        code, answer = yield self.call("POST", "/vcluster/teamA/username/sa", {})
        self.assertEqual((code, answer["vcluster"]), (409, "team"))
        self.assertNotIn(("teamA", "sa"), self.state.accounts)

    @defer.inlineCallbacks
    def test_mapping_into_another_namespace_409(self):
        """paris may not map team's topic, even spelt with '.' for '_'."""
        yield self.call("POST", "/vcluster/team_x")
        for physical in ("team_xorders", "team.xorders"):
            code, answer = yield self.call("POST", "/vcluster/paris/topics/o",
                                           {"physicalTopicName": physical})
            self.assertEqual((code, answer["vcluster"]), (409, "team_x"), physical)

    @defer.inlineCallbacks
    def test_vcluster_over_a_mapped_topic_409(self):
        """london maps existingSharedTopic: a vcluster "exist" would own it."""
        yield self.call("POST", "/vcluster/london/topics/shared",
                        {"physicalTopicName": "existingSharedTopic"})
        code, answer = yield self.call("POST", "/vcluster/exist")
        self.assertEqual((code, answer["vcluster"]), (409, "london"))

    @defer.inlineCallbacks
    def test_demo_mappings_still_work(self):
        """The demo's unprefixed topics map into london and paris: 200."""
        for vc, logical, physical in [
                ("london", "existingLondonTopic", "existingLondonTopic"),
                ("paris", "existingParisTopic", "existingParisTopic"),
                ("london", "existingSharedTopic", "existingSharedTopic"),
                ("paris", "existingSharedTopic", "existingSharedTopic")]:
            code, answer = yield self.call("POST", f"/vcluster/{vc}/topics/{logical}",
                                           {"physicalTopicName": physical})
            self.assertEqual(code, 200, answer)
        code, _ = yield self.call("POST", "/vcluster/london/username/sa", {})
        self.assertEqual(code, 200)


class OverlapLoginTests(unittest.TestCase):
    """A state with an overlap, on in-memory transports: logins refused."""

    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_000_000)
        self.attempts, self.refused, self.brokers = [], set(), []
        self.authority = TokenAuthority(SECRET, self.reactor.seconds)
        self.tenancy = Tenancy(self.authority)
        self.store = MemoryStore()
        GatewayState(self.store, self.authority, self.tenancy.vclusters,
                     self.reactor.seconds)
        topology = Topology([("kafka1", 9092)], "gw", 6969, 3, 1)
        topology.learn(BROKERS)
        self.gateway = Gateway(
            self.reactor, topology, tenant_rules(),
            endpoint_factory=lambda r, h, p: FakeEndpoint(self, h, p),
            tenancy=self.tenancy)
        self.tenancy.vclusters.unavailable_listeners.append(
            self.gateway.close_unavailable)
        self.define("team")

    def define(self, name, prefix=None):
        """As an older gateway would have written it: no check."""
        self.store.put(f"vcluster/{name}", {"name": name, "prefix": prefix or name,
                                            "createdAt": 1})

    def login(self, vcluster):
        client = self.gateway.factory_for_port(6969).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 5))
        client.makeConnection(transport)
        client.dataReceived(handshake())
        client.dataReceived(authenticate(
            "sa", self.authority.issue(vcluster, "sa", 600)))
        _, answer = decode_response(FrameDecoder().feed(transport.value())[1], 36, 2)
        return answer, transport

    def test_both_refused_with_the_message(self):
        """team and teamA overlap in the state: both logins fail, the message
        names only the caller's own virtual cluster; paris still logs in."""
        answer, transport = self.login("team")
        self.assertEqual(answer.error_code, ErrorCode.none)
        self.define("teamA")
        self.assertTrue(transport.disconnecting)  # its open connection closed
        for name, other in (("team", "teamA"), ("teamA", "team")):
            answer, transport = self.login(name)
            self.assertEqual(answer.error_code, ErrorCode.sasl_authentication_failed)
            self.assertEqual(answer.error_message,
                             f"Authentication failed: virtual cluster {name} "
                             f"{UNAVAILABLE}")
            self.assertNotIn(other + " ", answer.error_message)
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.login("paris")[0].error_code, ErrorCode.none)

    def test_implicit_overlapping_token_refused(self):
        """A token for teamA, not in the state, overlaps team: refused, and
        team keeps being served."""
        answer, _ = self.login("teamA")
        self.assertEqual(answer.error_code, ErrorCode.sasl_authentication_failed)
        self.assertIn(UNAVAILABLE, answer.error_message)
        self.assertEqual(self.login("team")[0].error_code, ErrorCode.none)
        self.assertEqual(self.gateway.auth_failures, 1)
