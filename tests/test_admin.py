"""The admin API with treq's StubTreq: no sockets, every documented status."""

import copy
import json

import bcrypt
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.trial import unittest

from vkafka.admin.app import DEFAULT_LIFETIME, AdminApp, admin_root, document_path
from vkafka.admin.openapi import V1 as V1_PATH
from vkafka.admin.openapi import Contract, SchemaValidator, document, python_regex
from vkafka.admin.users import LoginThrottle, UserChecker, parse_users
from vkafka.auth.tokens import TokenAuthority
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore
from vkafka.tenancy.vclusters import VirtualClusters

from .usage_fakes import FakeCluster, make_usage

BASE = "http://gw/admin/vclusters/v1"
ADMIN = ("admin", "conduktor")
VIEWER = ("viewer", "look")


class Clock:
    now = 1_000_000.0

    def __call__(self):
        return self.now


def make_checker():
    """ADMIN (plain password) and VIEWER (read-only, bcrypt), checked inline."""
    hashed = bcrypt.hashpw(b"look", bcrypt.gensalt(4)).decode()
    users = parse_users(f"admin:conduktor,viewer:{hashed}:ro", allow_plain=True)
    return UserChecker(users, run_blocking=lambda f, *a: f(*a))


def make_api(ready=True, throttle=None, cluster=None, workers=None):
    """The admin API over in-memory state; its usage inventory asks *cluster*
    (a usage_fakes.FakeCluster)."""
    clock = Clock()
    store = MemoryStore()
    authority = TokenAuthority("z" * 32, clock)
    state = GatewayState(store, authority, VirtualClusters(), clock)
    checker = make_checker()
    health = (lambda: (None, {"brokers": [1]})) if ready else (
        lambda: ("cannot reach the Kafka cluster: refused", {"brokers": []}))
    root = admin_root(state, checker, health,
                      throttle=LoginThrottle(clock) if throttle is None else throttle,
                      usage=make_usage(state, clock, cluster or FakeCluster()),
                      workers=workers)
    return StubTreq(root), state, store, authority


class AdminApiTests(unittest.TestCase):
    def setUp(self):
        self.http, self.state, self.store, self.authority = make_api()

    @defer.inlineCallbacks
    def call(self, method, url, body=None, auth=ADMIN, raw=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        response = yield self.http.request(method, url, data=data, auth=auth)
        content = yield response.content()
        parsed = None
        if response.headers.getRawHeaders(b"content-type", [b""])[0].startswith(
                b"application/json") and content:
            parsed = json.loads(content)
        return response.code, parsed

    @defer.inlineCallbacks
    def test_demo_create_account(self):
        """The demo's call creates the cluster and account and answers a token."""
        code, body = yield self.call("POST", f"{BASE}/vcluster/london/username/sa",
                                     {"lifeTimeSeconds": 7776000})
        self.assertEqual(code, 200)
        claims = self.authority.verify("sa", body["token"])
        self.assertEqual((claims.vcluster, claims.expires_at - claims.issued_at),
                         ("london", 7776000))
        code, body = yield self.call("GET", f"{BASE}/vcluster/london")
        self.assertEqual((code, body["prefix"], body["serviceAccounts"]),
                         (200, "london", ["sa"]))

    @defer.inlineCallbacks
    def test_demo_mapping(self):
        """The demo's mapping call answers the mapping as the demo shows."""
        code, body = yield self.call(
            "POST", f"{BASE}/vcluster/london/topics/existingLondonTopic",
            {"physicalTopicName": "existingLondonTopic", "readOnly": False,
             "concentrated": False})
        self.assertEqual((code, body), (200, {
            "logicalTopicName": "existingLondonTopic",
            "physicalTopicName": "existingLondonTopic",
            "readOnly": False, "concentrated": False}))
        code, body = yield self.call("GET", f"{BASE}/vcluster/london/topics")
        self.assertEqual([m["logicalTopicName"] for m in body["topicMappings"]],
                         ["existingLondonTopic"])
        code, _ = yield self.call(
            "DELETE", f"{BASE}/vcluster/london/topics/existingLondonTopic")
        self.assertEqual(code, 204)
        code, body = yield self.call(
            "DELETE", f"{BASE}/vcluster/london/topics/existingLondonTopic")
        self.assertEqual((code, body["error"]), (404, "not_found"))

    @defer.inlineCallbacks
    def test_workers_behind_credentials(self):
        """``GET /admin/workers`` gives each worker's connections per virtual
        cluster to an admin user only (/health, open, names no tenant); a
        gateway without workers answers a JSON 404."""
        code, body = yield self.call("GET", "http://localhost/admin/workers")
        self.assertEqual((code, body["error"]), (404, "not_found"))

        class Workers:
            def details(self, names=False):
                entry = {"index": 0, "ready": True, "connections": 2}
                return [dict(entry, vclusters={"london": 2}) if names else entry]
        self.http, *_ = make_api(workers=Workers())
        code, body = yield self.call("GET", "http://localhost/admin/workers")
        self.assertEqual((code, body["workers"][0]["vclusters"]), (200, {"london": 2}))
        code, _ = yield self.call("GET", "http://localhost/admin/workers", auth=None)
        self.assertEqual(code, 401)

    @defer.inlineCallbacks
    def test_unauthorized(self):
        """No credentials or wrong ones: 401."""
        for auth in (None, ("admin", "wrong"), ("nobody", "x")):
            code, _ = yield self.call("GET", BASE, auth=auth)
            self.assertEqual(code, 401)

    @defer.inlineCallbacks
    def test_read_only_user(self):
        """A read-only user reads (bcrypt hash) but gets 403 on writes."""
        code, _ = yield self.call("GET", BASE, auth=VIEWER)
        self.assertEqual(code, 200)
        code, body = yield self.call("POST", f"{BASE}/vcluster/x/username/sa", {},
                                     auth=VIEWER)
        self.assertEqual((code, body["error"]), (403, "forbidden"))

    @defer.inlineCallbacks
    def test_bad_input(self):
        """Bad JSON, unknown fields, bad types, invalid names, bad lifetimes: 400
        JSON naming the field (none for a body that is not a JSON object)."""
        user = f"{BASE}/vcluster/london/username/sa"
        topics = f"{BASE}/vcluster/london/topics"
        cases = [
            (user, None, b"{nope", "bad_json", None),
            (user, None, b"[1]", "bad_json", None),
            (user, None, b"[" * 100000, "bad_json", None),  # was a 500
            (user, {"lifetime": 5}, None, "unknown_field", "lifetime"),
            (user, {"lifeTimeSeconds": "5"}, None, "bad_field", "lifeTimeSeconds"),
            (user, {"lifeTimeSeconds": 5.0}, None, "bad_field", "lifeTimeSeconds"),
            (user, {"lifeTimeSeconds": True}, None, "bad_field", "lifeTimeSeconds"),
            (user, {"lifeTimeSeconds": 0}, None, "bad_field", "lifeTimeSeconds"),
            (user, {"lifeTimeSeconds": 10 ** 12}, None, "bad_field", "lifeTimeSeconds"),
            (user, {"lifetime": 5, "lifeTimeSeconds": "x"}, None, "unknown_field",
             "lifetime"),  # unknown fields first, as always
            (f"{BASE}/vcluster/bad.name/username/sa", {}, None, "invalid_name",
             "vcluster"),
            (f"{topics}/t", {}, None, "missing_field", "physicalTopicName"),
            (f"{topics}/t", {"physicalTopicName": "a b"}, None, "invalid_name",
             "physicalTopicName"),
            (f"{topics}/t", {"physicalTopicName": "p", "readOnly": "yes"}, None,
             "bad_field", "readOnly"),
            (f"{topics}/..", {"physicalTopicName": "p"}, None, "invalid_name", "topic"),
            (f"{topics}/t", {"physicalTopicName": "p", "create": {"x": 1}}, None,
             "unknown_field", "create.x"),
            (f"{topics}/t", {"physicalTopicName": "p", "create": {"partitions": 0}},
             None, "bad_field", "create.partitions"),
            (f"{topics}/t", {"physicalTopicName": "p", "create": {"configs": {"a": 1}}},
             None, "bad_field", "create.configs.a"),
            (f"{BASE}/vcluster/pre", {"prefix": "_bad"}, None, "invalid_name", "prefix"),
            (f"{BASE}/vcluster/london/concentration-rules/r",
             {"pattern": "", "physicalTopicName": "p"}, None, "bad_field", "pattern"),
            (f"{user}/revoke", {"x": 1}, None, "unknown_field", "x"),
        ]
        for url, body, raw, error, field in cases:
            code, answer = yield self.call("POST", url, body, raw=raw)
            self.assertEqual((code, answer["error"], answer.get("field")),
                             (400, error, field), (url, body))
            self.assertTrue(answer["message"])
            if field is not None:  # the message says which field too, and why
                self.assertIn(field.rsplit(".", 1)[-1], answer["message"])

    @defer.inlineCallbacks
    def test_not_found(self):
        """Unknown virtual cluster, account, mapping or endpoint: 404 JSON."""
        for method, url in [("GET", f"{BASE}/vcluster/nope"),
                            ("DELETE", f"{BASE}/vcluster/nope"),
                            ("GET", f"{BASE}/vcluster/nope/username"),
                            ("GET", f"{BASE}/vcluster/nope/topics"),
                            ("POST", f"{BASE}/vcluster/nope/username/sa/revoke"),
                            ("GET", "http://gw/admin/nothing")]:
            code, body = yield self.call(method, url)
            self.assertEqual((code, body["error"]), (404, "not_found"), url)

    @defer.inlineCallbacks
    def test_revoke_and_delete(self):
        """Revocation refuses older tokens; deleting a cluster refuses all of them."""
        _, body = yield self.call("POST", f"{BASE}/vcluster/london/username/sa", {})
        old = body["token"]
        code, _ = yield self.call("POST", f"{BASE}/vcluster/london/username/sa/revoke")
        self.assertEqual(code, 200)
        self.assertRaises(Exception, self.authority.verify, "sa", old)
        Clock.now += 1
        _, body = yield self.call("POST", f"{BASE}/vcluster/london/username/sa", {})
        self.authority.verify("sa", body["token"])
        code, _ = yield self.call("DELETE", f"{BASE}/vcluster/london")
        self.assertEqual(code, 204)
        self.assertRaises(Exception, self.authority.verify, "sa", body["token"])
        code, _ = yield self.call("GET", f"{BASE}/vcluster/london")
        self.assertEqual(code, 404)

    @defer.inlineCallbacks
    def test_configured_prefix(self):
        """A virtual cluster created with its own prefix renames with that prefix."""
        code, body = yield self.call("POST", f"{BASE}/vcluster/paris", {"prefix": "fr_"})
        self.assertEqual((code, body["prefix"]), (200, "fr_"))
        from vkafka.tenancy.naming import TOPIC
        self.assertEqual(self.state.vclusters.namespace("paris").physical(TOPIC, "t"),
                         "fr_t")
        code, body = yield self.call("POST", f"{BASE}/vcluster/paris", {"prefix": "x_"})
        self.assertEqual((code, body["error"]), (409, "conflict"))

    @defer.inlineCallbacks
    def test_prefix_conflict(self):
        """A virtual cluster whose prefix another one uses: 409."""
        yield self.state.ensure_vcluster("a", prefix="shared")
        from vkafka.state.model import StateError
        try:
            yield self.state.ensure_vcluster("b", prefix="shared")
        except StateError as e:
            self.assertEqual(e.status, 409)
        else:
            self.fail("no conflict")

    @defer.inlineCallbacks
    def test_internal_topics_never_mapped(self):
        """The gateways' state, usage and audit topics and Kafka's own are never
        mapped (through __consumer_offsets a tenant read every group's offsets),
        plainly, read-only, concentrated or as a rule's target: 400."""
        for physical in ("__consumer_offsets", "__transaction_state", "_vkafka_state",
                         "_vkafka_usage", "_vkafka_audit"):
            for path, body in (
                    (f"{BASE}/vcluster/a/topics/x", {"physicalTopicName": physical}),
                    (f"{BASE}/vcluster/a/topics/x", {"physicalTopicName": physical,
                                                     "readOnly": True}),
                    (f"{BASE}/vcluster/a/topics/x", {"physicalTopicName": physical,
                                                     "concentrated": True}),
                    (f"{BASE}/vcluster/a/concentration-rules/r",
                     {"pattern": "e-.*", "physicalTopicName": physical})):
                code, answer = yield self.call("POST", path, body)
                self.assertEqual((code, answer["error"]), (400, "bad_field"), body)
                self.assertIn("internal topic", answer["message"])

    @defer.inlineCallbacks
    def test_rule_patterns_are_re2(self):
        """Rule patterns are matched in RE2 (linear time) against names a tenant
        chooses: a backreference is refused; (a+)+b matches at once."""
        code, answer = yield self.call(
            "POST", f"{BASE}/vcluster/a/concentration-rules/r",
            {"pattern": r"(a)\1", "physicalTopicName": "conc"})
        self.assertEqual((code, answer["error"]), (400, "bad_field"))
        from vkafka.names import ConcentrationRule
        rule = ConcentrationRule("r", "(a+)+b", ())
        self.assertFalse(rule.matches("a" * 5000 + "c"))

    @defer.inlineCallbacks
    def test_concentrated_and_plain_never_share_a_topic(self):
        """A plain mapping would show every tenant's tagged records: 409 both ways."""
        code, _ = yield self.call("POST", f"{BASE}/vcluster/a/topics/x",
                                  {"physicalTopicName": "conc", "concentrated": True})
        self.assertEqual(code, 200)
        code, body = yield self.call("POST", f"{BASE}/vcluster/b/topics/y",
                                     {"physicalTopicName": "conc"})
        self.assertEqual(code, 409)
        self.assertIn("concentrated topics", body["message"])
        code, _ = yield self.call("POST", f"{BASE}/vcluster/b/topics/z",
                                  {"physicalTopicName": "plain"})
        self.assertEqual(code, 200)
        for path, body in ((f"{BASE}/vcluster/a/topics/w",
                            {"physicalTopicName": "plain", "concentrated": True}),
                           (f"{BASE}/vcluster/a/concentration-rules/r",
                            {"pattern": "e-.*", "physicalTopicName": "plain"})):
            code, answer = yield self.call("POST", path, body)
            self.assertEqual(code, 409, answer)
            self.assertIn("a plain mapping", answer["message"])

    @defer.inlineCallbacks
    def test_store_unavailable(self):
        """The store refusing writes: 503 with a message, reads still work."""
        self.store.available = False
        code, body = yield self.call("POST", f"{BASE}/vcluster/london/username/sa", {})
        self.assertEqual((code, body["error"]), (503, "unavailable"))
        code, _ = yield self.call("GET", BASE)
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_health(self):
        """/health needs no credentials: 200 when ready, 503 with the reason if not."""
        code, body = yield self.call("GET", "http://gw/health", auth=None)
        self.assertEqual((code, body["status"]), (200, "ready"))
        self.http = make_api(ready=False)[0]
        code, body = yield self.call("GET", "http://gw/health", auth=None)
        self.assertEqual(code, 503)
        self.assertIn("cannot reach", body["reason"])

    @defer.inlineCallbacks
    def test_method_not_allowed(self):
        """A method a path does not take: 405 JSON with Allow (never a 5xx)."""
        for url, allowed in [("http://gw/health", b"GET, HEAD"),
                             (BASE, b"GET, HEAD")]:
            response = yield self.http.request("TRACE", url, auth=ADMIN)
            body = json.loads((yield response.content()))
            self.assertEqual((response.code, body["error"]),
                             (405, "method_not_allowed"), url)
            self.assertEqual(response.headers.getRawHeaders(b"allow"), [allowed])

    @defer.inlineCallbacks
    def test_openapi_served(self):
        """/admin/openapi.json is the document."""
        code, body = yield self.call("GET", "http://gw/admin/openapi.json")
        self.assertEqual((code, body), (200, document()))


class OpenApiTests(unittest.TestCase):
    def test_routes_match_document(self):
        """Every Klein route is documented and every documented path is routed."""
        routed = {("/health", "get")}
        for rule in AdminApp.app.url_map.iter_rules():
            path = "/admin" + rule.rule.replace("<", "{").replace(">", "}")
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routed.add((path, method.lower()))
        documented = {(path, method) for path, item in document()["paths"].items()
                      for method in item if method != "parameters"}
        self.assertEqual(routed, documented)

    def test_documented_responses_exist(self):
        """Each documented (path, method, status) is produced by a request here."""
        cluster = FakeCluster()
        http, state, store, _ = make_api(cluster=cluster)
        documented = {(path, method, status)
                      for path, item in document()["paths"].items()
                      for method, op in item.items() if method != "parameters"
                      for status in op["responses"]}
        seen = set()
        state.topic_exists = lambda name: defer.succeed(name != "missing")

        @defer.inlineCallbacks
        def run():
            V1 = "/admin/vclusters/v1"
            vc, user, topic = f"{V1}/vcluster/{{vcluster}}", \
                f"{V1}/vcluster/{{vcluster}}/username/{{username}}", \
                f"{V1}/vcluster/{{vcluster}}/topics/{{topic}}"
            rules = f"{V1}/vcluster/{{vcluster}}/concentration-rules"
            rule = f"{rules}/{{rule}}"
            limits = f"{vc}/limits"
            usage = f"{vc}/usage"
            yield state.ensure_vcluster("lon")
            cluster.down = True  # and no inventory taken yet
            response = yield http.request("GET", f"http://gw{V1}/vcluster/lon/usage",
                                          auth=ADMIN)
            seen.add((usage, "get", str(response.code)))
            cluster.down = False
            scenarios = [
                ("/health", "get", "/health", None, None),
                ("/admin/openapi.json", "get", "/admin/openapi.json", None, ADMIN),
                ("/admin/workers", "get", "/admin/workers", None, ADMIN),
                ("/admin/dashboard", "get", "/admin/dashboard", None, ADMIN),
                ("/admin/dashboard.json", "get", "/admin/dashboard.json", None, ADMIN),
                ("/admin/dashboard.json", "get", "/admin/dashboard.json?vc=none", None,
                 ADMIN),
                ("/admin/dashboard.json", "get", "/admin/dashboard.json?vc=lon", None,
                 ADMIN),
                (V1, "get", V1, None, ADMIN),
                (user, "post", f"{V1}/vcluster/lon/username/sa", {}, ADMIN),
                (user, "post", f"{V1}/vcluster/lon/username/sa", {"x": 1}, ADMIN),
                (user, "post", f"{V1}/vcluster/lon/username/sa", {}, VIEWER),
                (vc, "post", f"{V1}/vcluster/pre", {"prefix": "p_"}, ADMIN),
                (vc, "post", f"{V1}/vcluster/pre", {"prefix": "other_"}, ADMIN),
                (vc, "post", f"{V1}/vcluster/pre", {"prefix": "_bad"}, ADMIN),
                (vc, "post", f"{V1}/vcluster/pre", {}, VIEWER),
                (vc, "get", f"{V1}/vcluster/lon", None, ADMIN),
                (vc, "get", f"{V1}/vcluster/none", None, ADMIN),
                (f"{vc}/username", "get", f"{V1}/vcluster/lon/username", None, ADMIN),
                (f"{vc}/username", "get", f"{V1}/vcluster/no/username", None, ADMIN),
                (f"{vc}/topics", "get", f"{V1}/vcluster/lon/topics", None, ADMIN),
                (f"{vc}/topics", "get", f"{V1}/vcluster/no/topics", None, ADMIN),
                (topic, "post", f"{V1}/vcluster/lon/topics/t",
                 {"physicalTopicName": "p"}, ADMIN),
                (topic, "post", f"{V1}/vcluster/lon/topics/t", {}, ADMIN),
                (topic, "post", f"{V1}/vcluster/lon/topics/t", {}, VIEWER),
                (topic, "delete", f"{V1}/vcluster/lon/topics/t", None, ADMIN),
                (topic, "delete", f"{V1}/vcluster/lon/topics/t", None, ADMIN),
                (topic, "delete", f"{V1}/vcluster/lon/topics/t", None, VIEWER),
                (f"{user}/revoke", "post", f"{V1}/vcluster/lon/username/sa/revoke",
                 None, ADMIN),
                (f"{user}/revoke", "post", f"{V1}/vcluster/lon/username/x/revoke",
                 None, ADMIN),
                (f"{user}/revoke", "post", f"{V1}/vcluster/lon/username/sa/revoke",
                 None, VIEWER),
                (f"{user}/revoke", "post", f"{V1}/vcluster/lon/username/sa/revoke",
                 {"x": 1}, ADMIN),
                (user, "post", f"{V1}/vcluster/p_/username/sa", {}, ADMIN),
                (topic, "post", f"{V1}/vcluster/lon/topics/u",
                 {"physicalTopicName": "lonx"}, ADMIN),
                (topic, "post", f"{V1}/vcluster/lon/topics/u",
                 {"physicalTopicName": "missing"}, ADMIN),
                (rules, "get", f"{V1}/vcluster/lon/concentration-rules", None, ADMIN),
                (rules, "get", f"{V1}/vcluster/no/concentration-rules", None, ADMIN),
                (rule, "post", f"{V1}/vcluster/lon/concentration-rules/r",
                 {"pattern": "orders-.*", "physicalTopicName": "conc"}, ADMIN),
                (rule, "post", f"{V1}/vcluster/lon/concentration-rules/r",
                 {"pattern": "(", "physicalTopicName": "conc"}, ADMIN),
                (rule, "post", f"{V1}/vcluster/lon/concentration-rules/r",
                 {"pattern": "x", "physicalTopicName": "missing"}, ADMIN),
                (rule, "post", f"{V1}/vcluster/lon/concentration-rules/r",
                 {"pattern": "x", "physicalTopicName": "lonx"}, ADMIN),
                (rule, "post", f"{V1}/vcluster/lon/concentration-rules/r",
                 {"pattern": "x", "physicalTopicName": "conc"}, VIEWER),
                (rule, "delete", f"{V1}/vcluster/lon/concentration-rules/r", None,
                 ADMIN),
                (rule, "delete", f"{V1}/vcluster/lon/concentration-rules/r", None,
                 ADMIN),
                (rule, "delete", f"{V1}/vcluster/lon/concentration-rules/r", None,
                 VIEWER),
                (limits, "get", f"{V1}/vcluster/lon/limits", None, ADMIN),
                (limits, "get", f"{V1}/vcluster/no/limits", None, ADMIN),
                (limits, "post", f"{V1}/vcluster/lon/limits",
                 {"capacity": {"topics": 1}}, ADMIN),
                (limits, "post", f"{V1}/vcluster/lon/limits",
                 {"capacity": {"topics": -1}}, ADMIN),
                (limits, "post", f"{V1}/vcluster/lon/limits", {}, VIEWER),
                (limits, "post", f"{V1}/vcluster/no/limits", {}, ADMIN),
                (limits, "delete", f"{V1}/vcluster/lon/limits", None, ADMIN),
                (limits, "delete", f"{V1}/vcluster/lon/limits", None, VIEWER),
                (limits, "delete", f"{V1}/vcluster/no/limits", None, ADMIN),
                (usage, "get", f"{V1}/vcluster/lon/usage", None, ADMIN),
                (usage, "get", f"{V1}/vcluster/lon/usage?from=2026-02-30", None,
                 ADMIN),
                (usage, "get", f"{V1}/vcluster/no/usage", None, ADMIN),
                (f"{V1}/usage", "get", f"{V1}/usage?format=csv", None, ADMIN),
                (f"{V1}/usage", "get", f"{V1}/usage?format=xml", None, ADMIN),
                (vc, "delete", f"{V1}/vcluster/lon", None, VIEWER),
                (vc, "delete", f"{V1}/vcluster/lon", None, ADMIN),
                (vc, "delete", f"{V1}/vcluster/lon", None, ADMIN),
                *rights_scenarios(V1),
            ]
            for path, method, url, body, auth in scenarios:
                for who in ([auth] if auth is None else [auth, ("admin", "bad")]):
                    response = yield http.request(
                        method.upper(), "http://gw" + url, auth=who,
                        data=None if body is None else json.dumps(body))
                    yield response.content()
                    seen.add((path, method, str(response.code)))
            store.available = False
            for path, method, url, body in [
                    (vc, "post", f"{V1}/vcluster/new2", {}),
                    (user, "post", f"{V1}/vcluster/new/username/sa", {}),
                    (topic, "post", f"{V1}/vcluster/lon2/topics/t",
                     {"physicalTopicName": "p"}),
                    (rule, "post", f"{V1}/vcluster/lon2/concentration-rules/r",
                     {"pattern": "x", "physicalTopicName": "q"})]:
                response = yield http.request(method.upper(), "http://gw" + url,
                                              auth=ADMIN, data=json.dumps(body))
                seen.add((path, method, str(response.code)))
            store.available = True
            yield state.create_account("gone", "sa", 60)
            yield state.put_mapping("gone", "t", {"physicalTopicName": "p",
                                                  "readOnly": False,
                                                  "concentrated": False})
            yield state.put_rule("gone", "r", {"pattern": "x", "physicalTopicName": "q"})
            store.available = False
            for path, method, url in [(f"{user}/revoke", "post",
                                       f"{V1}/vcluster/gone/username/sa/revoke"),
                                      (vc, "delete", f"{V1}/vcluster/gone"),
                                      (topic, "delete", f"{V1}/vcluster/gone/topics/t"),
                                      (rule, "delete",
                                       f"{V1}/vcluster/gone/concentration-rules/r"),
                                      (limits, "delete", f"{V1}/vcluster/gone/limits")]:
                response = yield http.request(method.upper(), "http://gw" + url,
                                              auth=ADMIN)
                seen.add((path, method, str(response.code)))
            response = yield http.request("POST", f"http://gw{V1}/vcluster/gone/limits",
                                          auth=ADMIN, data=b"{}")
            seen.add((limits, "post", str(response.code)))
            store.available = True
            yield unavailable_rights_scenarios(state, store, http, seen)
            seen.add(("/health", "get", "503"))  # covered by AdminApiTests.test_health
            seen.add(("/admin/workers", "get", "200"))  # AdminApiTests.test_workers_...
            for _ in range(3):  # three wrong passwords: this address must wait
                response = yield http.request("GET", "http://gw" + V1,
                                              auth=("admin", "bad"))
                yield response.content()
            for path, method, _ in documented:
                if path == "/health":
                    continue
                url = path.replace("{vcluster}", "lon").replace(
                    "{username}", "sa").replace("{topic}", "t").replace("{rule}", "r")
                response = yield http.request(method.upper(), "http://gw" + url,
                                              auth=ADMIN)
                yield response.content()
                seen.add((path, method, str(response.code)))

        failures = []
        run().addErrback(failures.append)
        self.assertEqual(failures, [])
        self.assertEqual(documented - seen, set())


ACL = {"resourceType": "TOPIC", "name": "t", "principal": "User:sa",
       "operation": "READ", "permission": "ALLOW"}
BAD_ACL = {**ACL, "resourceType": "CLUSTER"}  # the cluster is named kafka-cluster
RES = "/admin/resources/v1"


def rights_scenarios(V1):
    """(path, method, url, body, user) covering each documented status of the
    rights, ACL, audit and declarative resource endpoints."""
    user = f"{V1}/vcluster/{{vcluster}}/username/{{username}}"
    rights, acls = f"{V1}/vcluster/{{vcluster}}/rights", f"{V1}/vcluster/{{vcluster}}/acls"
    rvc = f"{RES}/vclusters/{{vcluster}}"
    rsa, rtm = f"{rvc}/serviceaccounts/{{username}}", f"{rvc}/topicmappings/{{topic}}"
    racl, rlim = f"{rvc}/aclset", f"{rvc}/limits"
    out = [
        (user, "post", f"{V1}/vcluster/acl1/username/sa", {}, ADMIN),
        (user, "delete", f"{V1}/vcluster/acl1/username/sa", None, VIEWER),
        (user, "delete", f"{V1}/vcluster/acl1/username/sa", None, ADMIN),
        (user, "delete", f"{V1}/vcluster/acl1/username/sa", None, ADMIN),
        (rights, "get", f"{V1}/vcluster/acl1/rights", None, ADMIN),
        (rights, "get", f"{V1}/vcluster/no/rights", None, ADMIN),
        (rights, "put", f"{V1}/vcluster/acl1/rights", {"acls": True}, ADMIN),
        (rights, "put", f"{V1}/vcluster/acl1/rights", {"acls": "x"}, ADMIN),
        (rights, "put", f"{V1}/vcluster/acl1/rights", {"acls": True}, VIEWER),
        (rights, "put", f"{V1}/vcluster/no/rights", {"acls": True}, ADMIN),
        (acls, "get", f"{V1}/vcluster/acl1/acls", None, ADMIN),
        (acls, "get", f"{V1}/vcluster/no/acls", None, ADMIN),
        (f"{V1}/audit", "get", f"{V1}/audit", None, ADMIN),
        (f"{V1}/audit", "get", f"{V1}/audit?from=2026-02-30", None, ADMIN),
        (RES, "get", RES, None, ADMIN),
        (RES, "get", f"{RES}?vcluster=no", None, ADMIN),
        (RES, "get", f"{RES}?vcluster=bad.name", None, ADMIN),
        (f"{RES}/apply", "post", f"{RES}/apply",
         {"resources": [{"kind": "VirtualCluster", "name": "dapply"}]}, ADMIN),
        (f"{RES}/apply", "post", f"{RES}/apply", {"resources": "x"}, ADMIN),
        (f"{RES}/apply", "post", f"{RES}/apply", {"resources": []}, VIEWER),
        (f"{RES}/apply", "post", f"{RES}/apply", {"resources": [
            {"kind": "ServiceAccount", "vcluster": "nope", "name": "a"}]}, ADMIN),
        (f"{RES}/apply", "post", f"{RES}/apply", {"resources": [
            {"kind": "VirtualCluster", "name": "dapply", "spec": {"prefix": "dd"}}]},
         ADMIN),
        (rvc, "put", f"{RES}/vclusters/decl2", {}, ADMIN),
        (rvc, "put", f"{RES}/vclusters/decl2", {"prefix": "_bad"}, ADMIN),
        (rvc, "put", f"{RES}/vclusters/decl2", {}, VIEWER),
        (rvc, "put", f"{RES}/vclusters/decl2", {"prefix": "zz"}, ADMIN),
        (rvc, "get", f"{RES}/vclusters/decl2", None, ADMIN),
        (rvc, "get", f"{RES}/vclusters/none", None, ADMIN),
    ]
    for method, path, ok, bad, kind_url in (
            ("put", rsa, {}, {"x": 1}, "serviceaccounts/sa"),
            ("put", rtm, {"physicalTopicName": "p"}, {}, "topicmappings/t"),
            ("put", racl, {"acls": [ACL]}, {"acls": [BAD_ACL]}, "aclset"),
            ("put", rlim, {"capacity": {"topics": 1}}, {"capacity": {"topics": -1}},
             "limits")):
        url = f"{RES}/vclusters/decl2/{kind_url}"
        out += [(path, method, url, ok, ADMIN), (path, method, url, ok, ADMIN),
                (path, method, url, bad, ADMIN), (path, method, url, ok, VIEWER),
                (path, method, f"{RES}/vclusters/none/{kind_url}", ok, ADMIN),
                (path, "get", url, None, ADMIN),
                (path, "get", f"{RES}/vclusters/none/{kind_url}", None, ADMIN),
                (path, "delete", url, None, VIEWER), (path, "delete", url, None, ADMIN),
                (path, "delete", f"{RES}/vclusters/bad.name/{kind_url}", None, ADMIN)]
    for method in ("put", "post"):
        out += [(acls, method, f"{V1}/vcluster/acl1/acls", {"acls": [ACL]}, ADMIN),
                (acls, method, f"{V1}/vcluster/acl1/acls", {"acls": [BAD_ACL]}, ADMIN),
                (acls, method, f"{V1}/vcluster/acl1/acls", {"acls": [ACL]}, VIEWER),
                (acls, method, f"{V1}/vcluster/no/acls", {"acls": [ACL]}, ADMIN)]
    return out + [
        (rtm, "put", f"{RES}/vclusters/decl2/topicmappings/u",
         {"physicalTopicName": "acl1x"}, ADMIN),
        (acls, "delete", f"{V1}/vcluster/acl1/acls?operation=READ", None, ADMIN),
        (acls, "delete", f"{V1}/vcluster/acl1/acls?operation=NOPE", None, ADMIN),
        (acls, "delete", f"{V1}/vcluster/acl1/acls", None, VIEWER),
        (acls, "delete", f"{V1}/vcluster/no/acls", None, ADMIN),
        (rvc, "delete", f"{RES}/vclusters/decl2", None, VIEWER),
        (rvc, "delete", f"{RES}/vclusters/bad.name", None, ADMIN),
        (rvc, "delete", f"{RES}/vclusters/decl2", None, ADMIN),
    ]


@defer.inlineCallbacks
def unavailable_rights_scenarios(state, store, http, seen):
    """503 of every write of rights_scenarios: the store takes no write."""
    from vkafka.auth.acls import Acl
    V1 = V1_PATH
    yield state.ensure_vcluster("down2")
    yield state.ensure_account("down2", "sa")
    yield state.put_mapping("down2", "t", {"physicalTopicName": "p9"})
    yield state.add_acls("down2", [Acl.from_json(ACL)])
    yield state.put_limits("down2", {"capacity": {"topics": 3}})
    other = {**ACL, "name": "other"}
    rvc = f"{RES}/vclusters/{{vcluster}}"
    acls = f"{V1}/vcluster/{{vcluster}}/acls"
    store.available = False
    for path, method, url, body in [
            (f"{V1}/vcluster/{{vcluster}}/username/{{username}}", "delete",
             f"{V1}/vcluster/down2/username/sa", None),
            (f"{V1}/vcluster/{{vcluster}}/rights", "put",
             f"{V1}/vcluster/down2/rights", {"acls": True}),
            (acls, "put", f"{V1}/vcluster/down2/acls", {"acls": [other]}),
            (acls, "post", f"{V1}/vcluster/down2/acls", {"acls": [other]}),
            (acls, "delete", f"{V1}/vcluster/down2/acls", None),
            (f"{RES}/apply", "post", f"{RES}/apply",
             {"resources": [{"kind": "VirtualCluster", "name": "fresh3"}]}),
            (rvc, "put", f"{RES}/vclusters/fresh3", {}),
            (rvc, "delete", f"{RES}/vclusters/down2", None),
            (f"{rvc}/serviceaccounts/{{username}}", "put",
             f"{RES}/vclusters/down2/serviceaccounts/sb", {}),
            (f"{rvc}/serviceaccounts/{{username}}", "delete",
             f"{RES}/vclusters/down2/serviceaccounts/sa", None),
            (f"{rvc}/topicmappings/{{topic}}", "put",
             f"{RES}/vclusters/down2/topicmappings/u", {"physicalTopicName": "p8"}),
            (f"{rvc}/topicmappings/{{topic}}", "delete",
             f"{RES}/vclusters/down2/topicmappings/t", None),
            (f"{rvc}/aclset", "put", f"{RES}/vclusters/down2/aclset",
             {"acls": [other]}),
            (f"{rvc}/aclset", "delete", f"{RES}/vclusters/down2/aclset", None),
            (f"{rvc}/limits", "put", f"{RES}/vclusters/down2/limits",
             {"capacity": {"topics": 2}}),
            (f"{rvc}/limits", "delete", f"{RES}/vclusters/down2/limits", None)]:
        response = yield http.request(method.upper(), "http://gw" + url, auth=ADMIN,
                                      data=None if body is None else json.dumps(body))
        yield response.content()
        seen.add((path, method, str(response.code)))
    store.available = True


def body_operations(doc):
    """(path, method) of every operation of *doc* with a JSON request body."""
    return [(path, method) for path, item in doc["paths"].items()
            for method, op in item.items() if method != "parameters"
            and "application/json" in op.get("requestBody", {}).get("content", {})]


def body_schema(doc, path, method):
    return doc["paths"][path][method]["requestBody"]["content"]["application/json"][
        "schema"]


def request_url(path):
    """The URL of the document's *path* with valid names in its parameters."""
    return "http://gw" + path.replace("{vcluster}", "lon").replace(
        "{username}", "sa").replace("{topic}", "t").replace("{rule}", "r")


def keywords(doc, schema):
    """Every keyword *schema* and its subschemas use ($refs into *doc* followed)."""
    ref = schema.get("$ref", "")
    if ref.startswith("#/"):
        for part in ref[2:].split("/"):
            doc = doc[part.replace("~1", "/").replace("~0", "~")]
        return keywords(doc, doc)
    found = set(schema)
    subs = [*schema.get("properties", {}).values(),
            *schema.get("patternProperties", {}).values(),
            *(schema[k] for k in ("items", "additionalProperties", "not")
              if isinstance(schema.get(k), dict)),
            *(s for k in ("allOf", "anyOf", "oneOf") for s in schema.get(k, ()))]
    for sub in subs:
        found |= keywords(doc, sub)
    return found


class ContractTests(unittest.TestCase):
    """Requests are validated by the served document itself (openapi.Contract),
    so there is no second, hand-written validator to drift from it: changing
    the document changes what the API accepts, with app.py untouched."""

    def setUp(self):
        self.http, self.state, _, self.authority = make_api()

    def use(self, doc):
        """Serve, and validate requests by, *doc* instead of the shipped one."""
        self.patch(AdminApp, "contract", Contract(doc))

    @defer.inlineCallbacks
    def post(self, path, body, raw=None, method="POST"):
        response = yield self.http.request(
            method.upper(), request_url(path) if path.startswith("/") else path,
            auth=ADMIN, data=raw if raw is not None else json.dumps(body))
        return response.code, json.loads((yield response.content()))

    def test_every_route_has_its_operation(self):
        """Each Klein route is checked by the document's operation for it."""
        for rule in AdminApp.app.url_map.iter_rules():
            for method in rule.methods - {"OPTIONS"}:
                self.assertIsNotNone(AdminApp.contract.operation(
                    document_path(rule.endpoint), method), rule)

    def test_request_schemas_are_json_schema(self):
        """Every schema the contract checks is valid draft 4 (OpenAPI 3.0's
        dialect) and uses none of OpenAPI's own keywords, which jsonschema
        would ignore; an operation taking a body documents its 400."""
        doc = document()
        checked = [body_schema(doc, path, method) for path, method in
                   body_operations(doc)]
        for (path, method), operation in AdminApp.contract.operations.items():
            item = doc["paths"][path]
            for param in [*item.get("parameters", ()),
                          *item[method].get("parameters", ())]:
                if param["name"] in operation.params:
                    checked.append(param["schema"])
            if operation.body is not None:
                self.assertIn("400", item[method]["responses"], (path, method))
        self.assertGreaterEqual(len(checked), 10)
        for schema in checked:
            SchemaValidator.check_schema(schema)
            self.assertEqual(keywords(doc, schema) & {
                "nullable", "discriminator", "readOnly", "writeOnly"}, set(), schema)

    @defer.inlineCallbacks
    def test_every_request_body_is_validated_by_its_schema(self):
        """A field the document makes required is required by every operation
        with a body: each one is checked against its own schema."""
        doc = copy.deepcopy(document())
        operations = body_operations(doc)
        self.assertEqual(len(operations), 15)
        for path, method in operations:
            schema = body_schema(doc, path, method)
            schema["properties"]["mustHave"] = {"type": "string"}
            schema["required"] = ["mustHave", *schema.get("required", ())]
        self.use(doc)
        for path, method in operations:
            code, answer = yield self.post(path, {}, method=method)
            self.assertEqual((code, answer["error"], answer.get("field")),
                             (400, "missing_field", "mustHave"), path)

    @defer.inlineCallbacks
    def test_every_checked_path_parameter_is_validated_by_its_schema(self):
        """A path parameter's schema in the document is what the writes check."""
        doc = copy.deepcopy(document())
        for path, method in body_operations(doc):
            doc["paths"][path][method]["requestBody"]["content"]["application/json"][
                "schema"] = {"type": "object"}
            for param in doc["paths"][path].get("parameters", ()):
                param["schema"] = {"type": "string", "pattern": "^only$"}
        self.use(doc)
        for path, method in body_operations(doc):
            if "{vcluster}" not in path:
                continue
            code, answer = yield self.post(path, {}, method=method)
            self.assertEqual((code, answer["error"], answer.get("field")),
                             (400, "invalid_name", "vcluster"), path)
            self.assertIn("^only$", answer["message"])

    @defer.inlineCallbacks
    def test_a_field_added_to_the_document_is_accepted(self):
        """Add a field to the document's schemas: it is accepted, with its own
        rules, and the document served is the one that validates."""
        account = f"{BASE}/vcluster/lon/username/sa"
        code, answer = yield self.post(account, {"comment": "hi"})
        self.assertEqual((code, answer["error"]), (400, "unknown_field"))
        doc = copy.deepcopy(document())
        for path, method in body_operations(doc):
            body_schema(doc, path, method)["properties"]["comment"] = {
                "type": "string", "maxLength": 10}
        self.use(doc)
        code, answer = yield self.post(account, {"lifeTimeSeconds": 60, "comment": "hi"})
        self.assertEqual(code, 200)
        self.authority.verify("sa", answer["token"])
        code, answer = yield self.post(f"{BASE}/vcluster/lon/topics/t",
                                       {"physicalTopicName": "p", "comment": "hi"})
        self.assertEqual((code, answer["physicalTopicName"]), (200, "p"))
        code, answer = yield self.post(account, {"comment": "x" * 11})
        self.assertEqual((code, answer["error"], answer["field"]),
                         (400, "bad_field", "comment"))
        for path, method in body_operations(doc):
            code, answer = yield self.post(path, {"comment": "hi"})
            self.assertNotEqual(answer.get("error"), "unknown_field", path)
        response = yield self.http.get("http://gw/admin/openapi.json", auth=ADMIN)
        self.assertEqual(json.loads((yield response.content())), doc)

    @defer.inlineCallbacks
    def test_a_rule_changed_in_the_document_is_enforced(self):
        """Tighten a limit in the document: the API refuses what it now excludes."""
        doc = copy.deepcopy(document())
        body_schema(doc, f"{V1_PATH}/vcluster/{{vcluster}}/username/{{username}}",
                    "post")["properties"]["lifeTimeSeconds"]["maximum"] = 60
        self.use(doc)
        code, answer = yield self.post(f"{BASE}/vcluster/lon/username/sa",
                                       {"lifeTimeSeconds": 7776000})
        self.assertEqual((code, answer["error"], answer["field"]),
                         (400, "bad_field", "lifeTimeSeconds"))
        self.assertIn("maximum of 60", answer["message"])

    @defer.inlineCallbacks
    def test_demo_calls_and_defaults(self):
        """The demo's calls as before; no body, or {}, is the default lifetime."""
        for raw in (b"", b"{}", b" \n"):
            code, answer = yield self.post(f"{BASE}/vcluster/london/username/sa",
                                           None, raw=raw)
            self.assertEqual(code, 200, raw)
            claims = self.authority.verify("sa", answer["token"])
            self.assertEqual(claims.expires_at - claims.issued_at, DEFAULT_LIFETIME)
        code, answer = yield self.post(
            f"{BASE}/vcluster/london/topics/existingLondonTopic",
            {"physicalTopicName": "existingLondonTopic", "readOnly": True,
             "concentrated": False, "partitions": 3})  # ignored: not concentrated
        self.assertEqual((code, answer), (200, {
            "logicalTopicName": "existingLondonTopic",
            "physicalTopicName": "existingLondonTopic",
            "readOnly": True, "concentrated": False}))

    def test_patterns_are_ecma_262(self):
        """The document's patterns mean what OpenAPI says (ECMA-262): ``$`` is
        the end of the text, not also before a final newline as in Python."""
        self.assertIsNone(python_regex("^a$").search("a\n"))
        self.assertIsNotNone(python_regex("^a$").search("a"))
        self.assertIsNone(python_regex(r"^(?!\.$)[.a]+$").search(".\n"))
        self.assertIsNotNone(python_regex(r"^[$]\$$").search("$$"))
        self.assertIsNone(python_regex(r"^\d$").search("\u0663"))  # ASCII digits

    @defer.inlineCallbacks
    def test_names_ending_in_a_newline_are_refused(self):
        """``london\\n`` is not a virtual cluster name (the old check took it,
        and the cluster it made then held ``london``'s namespace: 409)."""
        code, answer = yield self.post(f"{BASE}/vcluster/london%0A/username/sa", {})
        self.assertEqual((code, answer["error"], answer["field"]),
                         (400, "invalid_name", "vcluster"))
        code, answer = yield self.post(f"{BASE}/vcluster/london/topics/t",
                                       {"physicalTopicName": "p\n"})
        self.assertEqual((code, answer["field"]), (400, "physicalTopicName"))
        code, _ = yield self.post(f"{BASE}/vcluster/london/username/sa", {})
        self.assertEqual(code, 200)
        self.assertEqual(sorted(self.state.clusters), ["london"])

    @defer.inlineCallbacks
    def test_revoking_account_star_is_refused(self):
        """``*`` is no username (the document's pattern): revoking it is a 400,
        where the old code passed it on and revoked every account's tokens."""
        code, answer = yield self.post(f"{BASE}/vcluster/london/username/sa", {})
        token = answer["token"]
        code, answer = yield self.post(f"{BASE}/vcluster/london/username/*/revoke",
                                       None, raw=b"")
        self.assertEqual((code, answer["error"], answer["field"]),
                         (400, "invalid_name", "username"))
        self.authority.verify("sa", token)


class LoginThrottleTests(unittest.TestCase):
    """Repeated wrong admin passwords slow their source down (injected clock)."""

    def setUp(self):
        self.clock = Clock()
        self.clock.now = 1000.0  # an instance attribute: other tests keep theirs
        self.throttle = LoginThrottle(self.clock, free=3, base=1.0, cap=8.0,
                                      forget_after=900.0, max_sources=4)

    def test_backoff_doubles_up_to_the_cap(self):
        """Two failures are free; then 1, 2, 4, 8, 8 s."""
        delays = [self.throttle.failed("10.0.0.1") for _ in range(7)]
        self.assertEqual(delays, [0, 0, 1, 2, 4, 8, 8])
        self.assertEqual(self.throttle.wait("10.0.0.1"), 8)
        self.clock.now += 5
        self.assertEqual(self.throttle.wait("10.0.0.1"), 3)
        self.clock.now += 3
        self.assertEqual(self.throttle.wait("10.0.0.1"), 0)

    def test_success_resets(self):
        """A successful login forgets the source's failures."""
        for _ in range(4):
            self.throttle.failed("10.0.0.1")
        self.throttle.succeeded("10.0.0.1")
        self.assertEqual(self.throttle.wait("10.0.0.1"), 0)
        self.assertEqual(self.throttle.failed("10.0.0.1"), 0)

    def test_sources_are_separate(self):
        """One address's failures do not slow another down."""
        for _ in range(5):
            self.throttle.failed("10.0.0.1")
        self.assertEqual(self.throttle.wait("10.0.0.2"), 0)
        self.assertEqual(self.throttle.failed("10.0.0.2"), 0)

    def test_quiet_period_forgets(self):
        """After forget_after seconds without a failure, the count starts over."""
        for _ in range(5):
            self.throttle.failed("10.0.0.1")
        self.clock.now += 901
        self.assertEqual(self.throttle.failed("10.0.0.1"), 0)

    def test_table_is_bounded(self):
        """A flood of addresses keeps at most max_sources entries (oldest go first)."""
        for i in range(100):
            self.throttle.failed(f"10.0.1.{i}")
        self.assertEqual(len(self.throttle), 4)
        self.assertEqual(self.throttle.failed("10.0.1.99"), 0)  # still known: 2nd
        self.assertEqual(self.throttle.failed("10.0.1.0"), 0)  # evicted: 1st again


class CountingChecker:
    """Wraps a checker to count the password checks that actually ran."""

    def __init__(self, checker):
        self.checker, self.checks = checker, 0
        self.credentialInterfaces = checker.credentialInterfaces

    def requestAvatarId(self, creds):
        self.checks += 1
        return self.checker.requestAvatarId(creds)


class ThrottledApiTests(unittest.TestCase):
    """The admin API answers 429 with Retry-After to an address that must wait."""

    def setUp(self):
        from zope.interface import directlyProvides
        from twisted.cred.checkers import ICredentialsChecker
        self.clock = Clock()
        self.clock.now = 5000.0
        self.throttle = LoginThrottle(self.clock)
        users = parse_users("admin:conduktor", allow_plain=True)
        self.checker = CountingChecker(UserChecker(users))
        directlyProvides(self.checker, ICredentialsChecker)
        state = GatewayState(MemoryStore(), TokenAuthority("z" * 32, self.clock),
                             VirtualClusters(), self.clock)
        self.http = StubTreq(admin_root(state, self.checker, lambda: (None, {}),
                                        throttle=self.throttle))

    @defer.inlineCallbacks
    def get(self, auth):
        response = yield self.http.get(BASE, auth=auth)
        content = yield response.content()
        return response, content

    @defer.inlineCallbacks
    def test_wrong_passwords_then_429(self):
        """Three wrong passwords: 401s, then 429 JSON with Retry-After; no check runs."""
        for _ in range(3):
            response, _ = yield self.get(("admin", "guess"))
            self.assertEqual(response.code, 401)
        checks = self.checker.checks
        for auth in (("admin", "guess"), ADMIN, None):
            response, content = yield self.get(auth)
            self.assertEqual(response.code, 429)
            self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])
            self.assertEqual(json.loads(content)["error"], "too_many_attempts")
        self.assertEqual(self.checker.checks, checks)  # refused before any check

    @defer.inlineCallbacks
    def test_wait_then_success_resets(self):
        """After Retry-After seconds the right password works and clears the count."""
        for _ in range(4):
            self.clock.now += 10
            yield self.get(("admin", "guess"))
        response, _ = yield self.get(ADMIN)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"2"])
        self.clock.now += 2
        response, _ = yield self.get(ADMIN)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.throttle.wait("127.0.0.1"), 0)
        response, _ = yield self.get(("admin", "guess"))
        self.assertEqual(response.code, 401)  # a fresh start: free again

    @defer.inlineCallbacks
    def test_no_credentials_is_not_a_failure(self):
        """Requests without credentials (the browser's first try) count nothing."""
        for _ in range(10):
            response, _ = yield self.get(None)
            self.assertEqual(response.code, 401)
        self.assertEqual(len(self.throttle), 0)


class AuditTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_writes_are_audited_as_json(self):
        """Each admin write is an audit event, serialisable as a JSON line."""
        import io
        from twisted.logger import globalLogPublisher, jsonFileLogObserver
        events, buffer = [], io.StringIO()
        observer = jsonFileLogObserver(buffer, recordSeparator="")

        def capture(event):
            if event.get("audit"):
                events.append(event)
                observer(event)
        globalLogPublisher.addObserver(capture)
        self.addCleanup(globalLogPublisher.removeObserver, capture)
        http = make_api()[0]
        response = yield http.request("POST", f"{BASE}/vcluster/london/username/sa",
                                      data=b"{}", auth=ADMIN)
        yield response.content()
        self.assertEqual([(e["user"], e["method"], e["status"]) for e in events],
                         [("admin", "POST", 200)])
        line = json.loads(buffer.getvalue().splitlines()[0])
        self.assertEqual(line["path"], "/admin/vclusters/v1/vcluster/london/username/sa")


class ReferenceDocTests(unittest.TestCase):
    def test_reference_matches_document(self):
        """docs/admin-api-reference.md is what the OpenAPI document generates."""
        from pathlib import Path
        from vkafka.admin.openapi import markdown_reference
        path = Path(__file__).resolve().parent.parent / "docs" / "admin-api-reference.md"
        self.assertEqual(path.read_text(), markdown_reference(),
                         "regenerate: python -m vkafka.admin.openapi > "
                         "docs/admin-api-reference.md")


class AdminSiteTests(unittest.TestCase):
    """What reaches the admin port before any handler: request bodies bounded,
    cross-site writes refused, odd paths answered in JSON."""

    def connection(self):
        from twisted.internet.testing import MemoryReactorClock, StringTransport
        from twisted.web.resource import Resource

        from vkafka.admin.app import AdminSite
        site = AdminSite(Resource(), reactor=MemoryReactorClock())
        channel = site.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def test_large_body_refused_before_it_is_read(self):
        """A 3 GB Content-Length, unauthenticated: 413 at once, connection
        closing; a chunked body past the limit likewise."""
        from vkafka.admin.app import MAX_BODY
        channel, transport = self.connection()
        channel.dataReceived(b"POST /admin/x HTTP/1.1\r\nHost: h\r\n"
                             b"Content-Length: 3000000000\r\n\r\n" + b"x" * 1000)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413"))
        self.assertIn(b'"too_large"', transport.value())
        self.assertTrue(transport.disconnecting)
        channel, transport = self.connection()
        channel.dataReceived(b"POST /admin/x HTTP/1.1\r\nHost: h\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"y" * (1 << 20)
        for _ in range(MAX_BODY // len(chunk) + 1):
            channel.dataReceived(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413"))
        self.assertTrue(transport.disconnecting)


class CrossSiteTests(unittest.TestCase):
    def setUp(self):
        self.http, self.state, self.store, self.authority = make_api()

    call = AdminApiTests.call

    @defer.inlineCallbacks
    def test_write_with_a_foreign_origin_refused(self):
        """A browser sending a write for another site's page (Origin not this
        host) is refused; the same write without Origin (curl, the CLI) or
        from the dashboard's own origin goes through."""
        url = f"{BASE}/vcluster/london/username/sa"
        for origin, expected in ((b"https://evil.example", 403),
                                 (None, 200), (b"http://gw", 200)):
            headers = {} if origin is None else {b"Origin": [origin]}
            response = yield self.http.request(
                "POST", url, data=json.dumps({}), auth=ADMIN, headers=headers)
            self.assertEqual(response.code, expected, origin)

    @defer.inlineCallbacks
    def test_double_slash_is_a_json_404(self):
        code, body = yield self.call("GET", f"{BASE}//vcluster/london")
        self.assertEqual((code, body["error"]), (404, "not_found"))
