"""The audit log (vkafka/admin/audit.py): sampling, writes that never block
or raise, the events served by the admin API; in-memory store, fake clocks."""

import json

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial import unittest

from vkafka.admin.app import admin_root
from vkafka.admin.audit import NO_AUDIT, AuditLog, iso, parse_time
from vkafka.auth.tokens import TokenAuthority
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore, StoreUnavailable
from vkafka.tenancy.vclusters import VirtualClusters

from .test_admin import ADMIN, VIEWER, Clock, make_checker


class ControlledStore:
    """A store whose writes the test ends: each ``put`` waits in ``pending``."""

    def __init__(self):
        self.pending, self.written, self.subscribers = [], [], []

    def subscribe(self, callback):
        self.subscribers.append(callback)

    def put(self, key, value):
        d = defer.Deferred()
        self.pending.append((key, value, d))
        return d

    def succeed(self):
        key, value, d = self.pending.pop(0)
        self.written.append((key, value))
        for callback in self.subscribers:
            callback(key, value)
        d.callback(None)

    def fail(self):
        _, _, d = self.pending.pop(0)
        d.errback(StoreUnavailable("cannot write (test)"))


class SamplingTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.audit = AuditLog(self.clock.seconds, "gw1", refused_per_second=3)

    def refuse(self, vc="lon", times=1):
        for _ in range(times):
            self.audit.refused(vc, "User:app", "WRITE", "TOPIC", "orders", "Produce")

    def test_at_most_n_per_second_and_vcluster(self):
        """Ten refusals in one second: three events, the rest counted and
        carried by the next event of that virtual cluster."""
        self.refuse(times=10)
        self.refuse("par", times=2)
        events = self.audit.recent(kind="refused")
        self.assertEqual([e["vcluster"] for e in events], ["lon"] * 3 + ["par"] * 2)
        self.assertEqual(self.audit.suppressed, 7)
        self.assertEqual(events[0], {**events[0], "type": "refused", "principal":
                                     "User:app", "operation": "WRITE",
                                     "resourceType": "TOPIC", "name": "orders",
                                     "api": "Produce", "gateway": "gw1"})
        self.assertNotIn("suppressed", events[0])
        self.clock.advance(1)
        self.refuse()
        self.assertEqual(self.audit.recent(kind="refused")[-1]["suppressed"], 7)
        self.refuse()
        self.assertNotIn("suppressed", self.audit.recent(kind="refused")[-1])

    def test_at_most_m_per_second_in_all(self):
        audit = AuditLog(self.clock.seconds, refused_per_second=3,
                         refused_total_per_second=4)
        for vc in ("a", "b", "c"):
            for _ in range(3):
                audit.refused(vc, "User:x", "READ", "TOPIC", "t", "Fetch")
        self.assertEqual([e["vcluster"] for e in audit.recent()], ["a"] * 3 + ["b"])
        self.assertEqual(audit.suppressed, 5)
        self.clock.advance(1)
        audit.refused("c", "User:x", "READ", "TOPIC", "t", "Fetch")
        self.assertEqual(audit.recent()[-1]["suppressed"], 3)

    def test_recent_filters(self):
        self.audit.admin("admin", "POST", "/x", 200, "lon")
        self.clock.advance(10)
        self.audit.admin("admin", "POST", "/y", 400, "par", {"error": "bad"})
        self.refuse("par")
        start = self.clock.seconds() - 5
        self.assertEqual([e["path"] for e in self.audit.recent(
            vcluster="par", kind="admin")], ["/y"])
        self.assertEqual(len(self.audit.recent(since=start)), 2)
        self.assertEqual(len(self.audit.recent(until=start)), 1)
        self.assertEqual(len(self.audit.recent(limit=1)), 1)
        self.assertEqual(self.audit.recent(limit=1)[0]["type"], "refused")

    def test_memory_is_bounded(self):
        audit = AuditLog(self.clock.seconds, keep=5)
        for i in range(20):
            audit.admin("a", "POST", f"/{i}", 200)
        self.assertEqual([e["path"] for e in audit.recent()],
                         [f"/{i}" for i in range(15, 20)])

    def test_long_text_is_cut(self):
        """A refused name of megabytes (a Produce's topic) is kept, and
        written, as its first thousand characters and its length."""
        self.audit.refused("lon", "User:app", "WRITE", "TOPIC", "t" * 3_000_000,
                           "Produce")
        self.audit.refused("lon", "User:app", "WRITE", "TOPIC", "\U0001F600" * 900,
                           "Produce")  # each 12 bytes of JSON
        first, second = self.audit.recent()
        self.assertEqual(first["name"], "t" * 1000 + "... (3000000 characters)")
        import json
        self.assertLessEqual(len(json.dumps(second["name"])), 2100)
        self.assertTrue(second["name"].endswith("... (900 characters)"))

    def test_no_audit_does_nothing(self):
        NO_AUDIT.refused("lon", "User:a", "READ", "TOPIC", "t", "Fetch")
        NO_AUDIT.admin("a", "POST", "/", 200)
        self.assertEqual(NO_AUDIT.recent(), [])

    def test_times(self):
        self.assertEqual(iso(0), "1970-01-01T00:00:00.000Z")
        self.assertEqual(parse_time("1970-01-01T00:01Z"), 60)
        self.assertEqual(parse_time("1970-01-02"), 86400)
        self.assertRaises(ValueError, parse_time, "2026-02-30")


class WritingTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = ControlledStore()
        self.audit = AuditLog(self.clock.seconds, "gw1", self.store,
                              self.clock.callLater, queue=3)

    def written(self):
        return [e["path"] for _, v in self.store.written for e in v["events"]]

    def test_one_write_at_a_time_in_batches(self):
        """One record in flight; what queued meanwhile goes in the next one."""
        for i in range(3):
            self.audit.admin("a", "POST", f"/{i}", 200, "lon")
        self.assertEqual(len(self.store.pending), 1)
        self.store.succeed()
        self.assertEqual(len(self.store.pending), 1)
        self.store.succeed()
        self.assertEqual(self.store.pending, [])
        self.assertEqual([len(v["events"]) for _, v in self.store.written], [1, 2])
        self.assertEqual(self.written(), ["/0", "/1", "/2"])
        key = self.store.written[0][0]
        self.assertTrue(key.startswith("lon/1970-01-01T00:00:00.000Z/gw1@"), key)
        # read back from the topic: still one event each
        self.assertEqual(len(self.audit.recent()), 3)

    def test_a_failed_write_is_retried_with_backoff(self):
        """The topic cannot be written: nothing raises, the events wait and
        are written once the topic takes writes again."""
        self.audit.admin("a", "POST", "/0", 200)
        self.store.fail()
        self.assertEqual(self.store.pending, [])
        self.audit.admin("a", "POST", "/1", 200)  # queued behind the retry
        self.assertEqual(self.store.pending, [])
        self.clock.advance(0.5)
        self.store.fail()
        self.clock.advance(0.5)
        self.assertEqual(self.store.pending, [])  # the delay doubled
        self.clock.advance(0.5)
        self.store.succeed()
        self.assertEqual(self.store.pending, [])
        self.assertEqual(self.written(), ["/0", "/1"])
        self.assertEqual(self.audit.recent()[0]["path"], "/0")

    def test_queue_is_bounded(self):
        """While the topic is down, the oldest events beyond the bound are
        dropped and counted; every event stays readable here."""
        self.audit.admin("a", "POST", "/0", 200)
        self.store.fail()
        for i in range(1, 6):
            self.audit.admin("a", "POST", f"/{i}", 200)
        self.assertEqual((len(self.audit.queue), self.audit.dropped), (3, 3))
        self.assertEqual(len(self.audit.recent()), 6)
        self.audit.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_store_raising_at_once(self):
        class Raising:
            def subscribe(self, callback):
                pass

            def put(self, key, value):
                raise StoreUnavailable("no")
        audit = AuditLog(self.clock.seconds, store=Raising(),
                         call_later=self.clock.callLater)
        audit.admin("a", "POST", "/", 200)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        audit.stop()

    def test_other_gateways_events_are_read(self):
        other = {"id": "gw2@1-0", "at": iso(5), "time": 5.0, "gateway": "gw2",
                 "type": "admin", "user": "b", "method": "PUT", "path": "/p",
                 "status": 200, "vcluster": None}
        for callback in self.store.subscribers:
            callback("-/x/gw2@1-0", {"events": [other]})
            callback("-/x/gw2@1-0", {"events": [other]})  # a retried write
            callback("-/x/gw2@1-0", other)  # one event a record
            callback("junk", {"no": "id"})
            callback("junk", {"events": [1, None]})
            callback("junk", None)
        self.assertEqual(self.audit.recent(), [other])


class AuditApiTests(unittest.TestCase):
    """Admin writes, with their result, are events served at .../audit."""

    def setUp(self):
        clock = Clock()
        self.state = GatewayState(MemoryStore(), TokenAuthority("z" * 32, clock),
                                  VirtualClusters(), clock)
        self.audit = AuditLog(clock, "gw1")
        self.http = StubTreq(admin_root(self.state, make_checker(),
                                        lambda: (None, {"brokers": [1]}),
                                        audit=self.audit))

    @defer.inlineCallbacks
    def call(self, method, path, body=None, auth=ADMIN):
        response = yield self.http.request(
            method, f"http://gw/admin{path}", auth=auth,
            data=None if body is None else json.dumps(body))
        content = yield response.content()
        return response.code, json.loads(content) if content else None

    @defer.inlineCallbacks
    def test_writes_and_their_results(self):
        yield self.call("POST", "/vclusters/v1/vcluster/lon/username/sa", {})
        yield self.call("POST", "/vclusters/v1/vcluster/lon/username/sa", {"x": 1})
        yield self.call("PUT", "/vclusters/v1/vcluster/lon/rights", {"acls": True},
                        auth=VIEWER)
        yield self.call("GET", "/vclusters/v1/vcluster/lon")  # reads are not audited
        yield self.call("POST", "/resources/v1/apply", {"resources": [
            {"kind": "VirtualCluster", "name": "par"}]})
        code, answer = yield self.call("GET", "/vclusters/v1/audit")
        self.assertEqual(code, 200)
        events = answer["events"]
        self.assertEqual([(e["user"], e["method"], e["status"], e["vcluster"])
                          for e in events],
                         [("admin", "POST", 200, "lon"), ("admin", "POST", 400, "lon"),
                          ("viewer", "PUT", 403, "lon"), ("admin", "POST", 200, None)])
        self.assertEqual(events[1]["details"]["error"], "unknown_field")
        self.assertEqual(events[3]["details"],
                         {"changes": ["create VirtualCluster par"]})
        self.assertNotIn("token", json.dumps(events))  # no secret in the log
        code, answer = yield self.call("GET", "/vclusters/v1/audit?vcluster=lon&limit=2")
        self.assertEqual([e["status"] for e in answer["events"]], [400, 403])
        code, answer = yield self.call("GET", "/vclusters/v1/audit?from=2999-01-01")
        self.assertEqual((code, answer["events"]), (200, []))
        code, answer = yield self.call("GET", "/vclusters/v1/audit?limit=0")
        self.assertEqual((code, answer["field"]), (400, "limit"))

    @defer.inlineCallbacks
    def test_refusals_are_served(self):
        self.audit.refused("lon", "User:a", "READ", "TOPIC", "t", "Fetch")
        code, answer = yield self.call("GET", "/vclusters/v1/audit?type=refused")
        self.assertEqual([e["api"] for e in answer["events"]], ["Fetch"])


class WiringTests(unittest.TestCase):
    """``twistd vkafka``: the audit topic option and ``gateway.audit``."""

    def test_audit_topic_option(self):
        from twisted.python import usage
        from vkafka.tap import Options

        def parse(argv):
            options = Options({})
            options.parseOptions(argv)
            return options
        self.assertEqual(parse([])["audit-topic"], "_vkafka_audit")
        self.assertEqual(parse(["--audit-topic", "_vkafka_audit2"])["audit-topic"],
                         "_vkafka_audit2")
        for bad in ("audit", "_vkafka_state", "_vkafka_usage", "_vkafka bad"):
            e = self.assertRaises(usage.UsageError, parse, ["--audit-topic", bad])
            self.assertIn("--audit-topic", str(e))

    def test_tenant_gateway_has_an_audit_log(self):
        """In tenant mode the service maker gives the gateway an AuditLog on
        the audit topic (reachable as ``gateway.audit`` by the authorization
        filter); starting it opens nothing and blocks nothing."""
        from twisted.internet.testing import MemoryReactorClock
        from vkafka import tap
        from vkafka.proxy.gateway import Gateway

        made = []
        original = Gateway.__init__

        def remember(gateway, *args, **kwargs):
            original(gateway, *args, **kwargs)
            made.append(gateway)
        self.patch(Gateway, "__init__", remember)
        options = tap.Options({})
        options.parseOptions(["--security-protocol", "SASL_PLAINTEXT",
                              "--multi-tenancy", "true", "--token-secret", "s" * 32,
                              "--tuning", "false", "--audit-topic", "_vkafka_audit_t",
                              "--workers", "1"])
        reactor = MemoryReactorClock()
        service = tap.makeService(options, reactor)
        [gateway] = made
        self.assertIsInstance(gateway.audit, AuditLog)
        self.assertEqual(gateway.audit.store.topic, "_vkafka_audit_t")
        self.assertEqual(gateway.audit.store.configs["cleanup.policy"], "delete")
        gateway.audit.refused("lon", "User:a", "READ", "TOPIC", "t", "Fetch")
        self.assertEqual(len(gateway.audit.queue), 1)  # waits for the topic
        text = gateway.metrics.text().decode()
        self.assertIn("vkafka_audit_events_queued 1.0", text)
        self.assertIn("vkafka_audit_events_dropped_total 0.0", text)
        self.assertIn("vkafka_audit_refusals_suppressed_total 0.0", text)
        service.privilegedStartService()
        service.startService()
        service.stopService()
