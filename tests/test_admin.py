"""The admin API with treq's StubTreq: no sockets, every documented status."""

import json

import bcrypt
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.trial import unittest

from vkafka.admin.app import AdminApp, admin_root
from vkafka.admin.openapi import document
from vkafka.admin.users import LoginThrottle, UserChecker, parse_users
from vkafka.auth.tokens import TokenAuthority
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore
from vkafka.tenancy.vclusters import VirtualClusters

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


def make_api(ready=True, throttle=None):
    clock = Clock()
    store = MemoryStore()
    authority = TokenAuthority("z" * 32, clock)
    state = GatewayState(store, authority, VirtualClusters(), clock)
    checker = make_checker()
    health = (lambda: (None, {"brokers": [1]})) if ready else (
        lambda: ("cannot reach the Kafka cluster: refused", {"brokers": []}))
    root = admin_root(state, checker, health,
                      throttle=LoginThrottle(clock) if throttle is None else throttle)
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
        """Bad JSON, unknown fields, bad types, invalid names, bad lifetimes: 400 JSON."""
        cases = [
            (f"{BASE}/vcluster/london/username/sa", None, b"{nope", "bad_json"),
            (f"{BASE}/vcluster/london/username/sa", None, b"[1]", "bad_json"),
            (f"{BASE}/vcluster/london/username/sa", {"lifetime": 5}, None,
             "unknown_field"),
            (f"{BASE}/vcluster/london/username/sa", {"lifeTimeSeconds": "5"}, None,
             "bad_field"),
            (f"{BASE}/vcluster/london/username/sa", {"lifeTimeSeconds": 0}, None,
             "bad_field"),
            (f"{BASE}/vcluster/london/username/sa", {"lifeTimeSeconds": 10 ** 12},
             None, "bad_field"),
            (f"{BASE}/vcluster/bad.name/username/sa", {}, None, "invalid_name"),
            (f"{BASE}/vcluster/london/topics/t", {}, None, "missing_field"),
            (f"{BASE}/vcluster/london/topics/t", {"physicalTopicName": "a b"}, None,
             "invalid_name"),
            (f"{BASE}/vcluster/london/topics/t", {"physicalTopicName": "p",
                                                  "readOnly": "yes"}, None,
             "bad_field"),
        ]
        for url, body, raw, error in cases:
            code, answer = yield self.call("POST", url, body, raw=raw)
            self.assertEqual((code, answer["error"]), (400, error), url)
            self.assertTrue(answer["message"])

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
        http, state, store, _ = make_api()
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
            scenarios = [
                ("/health", "get", "/health", None, None),
                ("/admin/openapi.json", "get", "/admin/openapi.json", None, ADMIN),
                ("/admin/dashboard", "get", "/admin/dashboard", None, ADMIN),
                ("/admin/dashboard.json", "get", "/admin/dashboard.json", None, ADMIN),
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
                (vc, "delete", f"{V1}/vcluster/lon", None, VIEWER),
                (vc, "delete", f"{V1}/vcluster/lon", None, ADMIN),
                (vc, "delete", f"{V1}/vcluster/lon", None, ADMIN),
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
                                       f"{V1}/vcluster/gone/concentration-rules/r")]:
                response = yield http.request(method.upper(), "http://gw" + url,
                                              auth=ADMIN)
                seen.add((path, method, str(response.code)))
            seen.add(("/health", "get", "503"))  # covered by AdminApiTests.test_health
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

        run()
        self.assertEqual(documented - seen, set())


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
