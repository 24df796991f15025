"""The operator dashboard: the snapshot in memory (StubTreq, a fake clock), then
the real page in headless Chromium against a real admin port."""

import base64
import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from tests import dashboard_server as demo
from tests import stack
from vkafka.admin.app import admin_root
from vkafka.admin.dashboard import HISTORY_FIELDS, Dashboard, History, Throughput
from vkafka.admin.users import UserChecker, parse_users
from vkafka.metrics import Metrics
from vkafka.tenancy.naming import TOPIC

ROOT = Path(__file__).resolve().parent.parent
URL = "http://gw/admin/dashboard"
AUTH = (demo.USER, demo.PASSWORD)
LONDON_LIMITS = {"connections": 4, "topics": 5, "partitions": 40,
                 "produceBytesPerSecond": 250_000, "fetchBytesPerSecond": 200_000}


def make_dashboard(tenants=2, usage=None, history=None):
    """The demo's virtual clusters behind a StubTreq admin port, on a Clock."""
    clock = task.Clock()
    clock.advance(1000)
    state, topology, metrics = demo.build(clock.seconds, tenants)
    dashboard = Dashboard(state, metrics, topology, clock, interval=1.0, window=5.0,
                          usage=usage and usage(clock.seconds), history=history)
    checker = UserChecker(parse_users(f"{demo.USER}:{demo.PASSWORD}", allow_plain=True),
                          run_blocking=lambda f, *a: f(*a))
    http = StubTreq(admin_root(state, checker, lambda: (None, {}), dashboard))
    return http, clock, dashboard, state, topology, metrics


def query(vc):
    """A request of ``/admin/dashboard.json?vc=<vc>`` as the route gets it."""
    request = DummyRequest([b"dashboard.json"])
    request.args = {b"vc": [vc.encode()]}
    return request


class ThroughputTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.metrics = Metrics()
        self.throughput = Throughput(self.metrics, self.clock.seconds, window=5.0)
        self.london = self.metrics.for_connection("london")

    def run_for(self, seconds, bytes_per_second, requests_per_second=0, throttled=0):
        for _ in range(seconds):
            self.london.bytes_in.inc(bytes_per_second)
            for _ in range(requests_per_second):
                self.london.request("Produce", 0)
            self.metrics.throttled.labels("london").inc(throttled)
            self.clock.advance(1)
            self.throughput.sample()

    def test_no_rate_before_two_samples(self):
        """One sample is not a rate."""
        self.assertEqual(self.throughput.rates(), (None, {}))
        self.throughput.sample()
        self.assertEqual(self.throughput.rates(), (None, {}))

    def test_rate_is_delta_over_time(self):
        """Bytes, requests and throttled seconds per second are counter deltas
        over the clock's time."""
        self.throughput.sample()
        self.run_for(2, 1000, 4, throttled=0.25)
        span, rates = self.throughput.rates()
        self.assertEqual(span, 2.0)
        self.assertEqual(rates["london"]["in"], 1000.0)
        self.assertEqual(rates["london"]["out"], 0.0)
        self.assertEqual(rates["london"]["requests"], {"Produce": 4.0})
        self.assertEqual(rates["london"]["throttle"], 0.25)

    def test_window_slides(self):
        """Old samples drop out: the rate covers the last window, then reaches 0."""
        self.throughput.sample()
        self.run_for(10, 1000)
        self.run_for(2, 0)
        span, rates = self.throughput.rates()
        self.assertEqual(span, 5.0)
        self.assertEqual(rates["london"]["in"], 3 * 1000 / 5)
        self.run_for(5, 0)
        self.assertEqual(self.throughput.rates()[1]["london"]["in"], 0.0)
        self.assertLessEqual(len(self.throughput.samples), 7)

    def test_series_born_in_the_window(self):
        """A vcluster first seen after the oldest sample counts from zero."""
        self.throughput.sample()
        self.clock.advance(1)
        self.throughput.sample()
        self.metrics.for_connection("paris").bytes_out.inc(400)
        self.clock.advance(1)
        self.throughput.sample()
        self.assertEqual(self.throughput.rates()[1]["paris"]["out"], 200.0)


class HistoryTests(unittest.TestCase):
    def point(self, value):
        return (value, 2 * value, None, 1, 0, None)

    def test_ring_is_bounded(self):
        """Only the last *size* points are kept, oldest first, in fixed memory."""
        history = History(size=4, every=10.0)
        for second in range(10):
            history.record(10.0 * second, {"london": self.point(second)})
        series = history.series("london")
        self.assertEqual(series["every"], 10.0)
        self.assertEqual(series["time"], [60.0, 70.0, 80.0, 90.0])
        self.assertEqual(series["bytesInPerSecond"], [6, 7, 8, 9])
        self.assertEqual(series["bytesOutPerSecond"], [12, 14, 16, 18])
        self.assertEqual(series["requestsPerSecond"], [None] * 4)
        self.assertEqual(set(series), {"every", "time", *HISTORY_FIELDS})
        self.assertEqual(len(history.times), 4)
        self.assertEqual(len(history.rings["london"]), 4 * len(HISTORY_FIELDS))
        self.assertEqual(history.bytes_per_vcluster, 4 * len(HISTORY_FIELDS) * 8)

    def test_tenants_come_and_go(self):
        """A newcomer's earlier points are unknown; a tenant left out loses its ring."""
        history = History(size=3, every=1.0)
        history.record(1.0, {"london": self.point(1)})
        history.record(2.0, {"london": self.point(2), "paris": self.point(5)})
        self.assertEqual(history.series("paris")["bytesInPerSecond"], [None, 5])
        history.record(3.0, {"paris": self.point(6)})
        self.assertNotIn("london", history.rings)
        self.assertEqual(history.series("london")["connections"], [None] * 3)
        self.assertEqual(history.series("paris")["time"], [1.0, 2.0, 3.0])

    def test_default_is_an_hour_within_bounds(self):
        """The default: an hour, a point every 10 s, under 20 KB per tenant."""
        history = History()
        self.assertEqual(history.size * history.every, 3600)
        self.assertLess(history.bytes_per_vcluster, 20_000)

    def test_points_on_the_dashboard_timer(self):
        """A point every *every* seconds: rates since the previous point (none
        for the first), the connections gauge, storage from the usage provider."""
        http, clock, dashboard, state, topology, metrics = make_dashboard(
            usage=demo.usage, history=History(size=10, every=2.0))
        dashboard.startService()
        self.addCleanup(dashboard.stopService)
        london = metrics.for_connection("london")
        for _ in range(6):
            london.request("Produce", 3000)
            london.response("Fetch", 500, 0.01)
            metrics.throttled.labels("london").inc(0.5)
            clock.advance(1)
        series = dashboard.history.series("london")
        self.assertEqual(series["time"], [1000.0, 1002.0, 1004.0, 1006.0])
        self.assertEqual(series["bytesInPerSecond"], [None, 3000, 3000, 3000])
        self.assertEqual(series["bytesOutPerSecond"], [None, 500, 500, 500])
        self.assertEqual(series["requestsPerSecond"], [None, 1, 1, 1])
        self.assertEqual(series["throttleSecondsPerSecond"], [None, 0.5, 0.5, 0.5])
        self.assertEqual(series["connections"], [3] * 4)
        self.assertEqual(series["storageBytes"],
                         [50_000_000 + 100_000 * s for s in (0, 2, 4, 6)])
        # every virtual cluster has a ring, none other
        self.assertEqual(sorted(dashboard.history.rings), ["london", "paris"])


class SnapshotTests(unittest.TestCase):
    def setUp(self):
        (self.http, self.clock, self.dashboard, self.state, self.topology,
         self.metrics) = make_dashboard()
        self.dashboard.startService()
        self.addCleanup(self.dashboard.stopService)

    @defer.inlineCallbacks
    def get(self, url=URL + ".json", auth=AUTH):
        response = yield self.http.get(url, auth=auth)
        body = yield response.content()
        return response, body

    @defer.inlineCallbacks
    def snapshot(self, url=URL + ".json"):
        response, body = yield self.get(url)
        self.assertEqual(response.code, 200)
        return json.loads(body)

    def advance(self, seconds, tick):
        """*seconds* of demo traffic, 10 ticks a second."""
        for _ in range(seconds):
            for _ in range(10):
                tick()
            self.clock.advance(1)

    @defer.inlineCallbacks
    def test_table_figures_against_limits(self):
        """Each vcluster's current figures next to its limits; no lists in the table."""
        snap = yield self.snapshot()
        by_name = {vc["name"]: vc for vc in snap["vclusters"]}
        self.assertEqual(sorted(by_name), ["london", "paris"])
        london, paris = by_name["london"], by_name["paris"]
        self.assertEqual(london["prefix"], "london")
        self.assertEqual(london["limits"], LONDON_LIMITS)
        self.assertEqual(paris["limits"], {"topics": 20, "fetchBytesPerSecond": 1_000_000})
        # london: its 3 topics, the mapped existingLondonTopic and shared
        self.assertEqual((london["topicCount"], london["partitionCount"]),
                         (5, 5 * demo.PARTITIONS))
        self.assertEqual((paris["topicCount"], paris["partitionCount"]),
                         (3, 3 * demo.PARTITIONS))
        self.assertEqual((london["connections"], paris["connections"]), (3, 2))
        self.assertEqual((london["storageBytes"], london["consumerGroups"]), (None, None))
        self.assertEqual(london["throttleSecondsPerSecond"], 0)
        for vc in snap["vclusters"]:
            self.assertFalse({"topics", "mappings", "serviceAccounts",
                              "requestsPerSecondByApi", "history"} & set(vc))
        self.assertEqual(snap["other"][0]["name"], "unauthenticated")
        self.assertEqual(snap["other"][0]["connections"], 1)
        self.assertEqual(snap["totals"]["connections"], 6)
        self.assertEqual(snap["totals"]["vclusters"], 2)
        self.assertIsNone(snap["rateSeconds"])

    @defer.inlineCallbacks
    def test_partition_counts_follow_the_topology(self):
        """A partition count learnt later counts; one never learnt counts as 1."""
        topic = self.state.vclusters.namespace("paris").physical(TOPIC, "late")
        self.topology.learn_topic(topic)
        paris = (yield self.snapshot())["vclusters"][1]
        self.assertEqual(paris["partitionCount"], 3 * demo.PARTITIONS + 1)
        self.topology.learn_topic(topic, partitions=30)
        paris = (yield self.snapshot())["vclusters"][1]
        self.assertEqual(paris["partitionCount"], 3 * demo.PARTITIONS + 30)

    def test_usage_provider(self):
        """Storage and consumer groups come from the provider; None or a
        failing provider leaves them unknown (null) without breaking the rest."""
        figures = {"london": {"storageBytes": 1234, "consumerGroups": 7}, "paris": None}
        self.dashboard.usage = figures.get
        london, paris = self.dashboard.snapshot()["vclusters"]
        self.assertEqual((london["storageBytes"], london["consumerGroups"]), (1234, 7))
        self.assertEqual((paris["storageBytes"], paris["consumerGroups"]), (None, None))
        self.dashboard.usage = lambda vc: 1 / 0
        london, paris = self.dashboard.snapshot()["vclusters"]
        self.assertEqual((london["storageBytes"], paris["consumerGroups"]), (None, None))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    @defer.inlineCallbacks
    def test_rates_from_the_sampling_timer(self):
        """The timer on the injected clock samples; the snapshot shows per-tenant rates."""
        self.advance(3, demo.traffic(self.metrics))
        snap = yield self.snapshot()
        self.assertEqual(snap["rateSeconds"], 3.0)
        london, paris = snap["vclusters"]
        # london: 3, 4 then 5 Produce of 4096 B a tick (10 ticks each), and one
        # Fetch of 90 B a tick; paris: a Metadata and 3 Fetches a tick.
        produce = 10 * (3 + 4 + 5)
        self.assertEqual(london["bytesInPerSecond"], (produce * 4096 + 30 * 90) / 3)
        self.assertEqual(london["requestsPerSecond"], produce / 3 + 10)
        self.assertEqual(london["throttleSecondsPerSecond"], 10 * demo.THROTTLED)
        self.assertEqual(paris["bytesOutPerSecond"], 10 * (400 + 3 * 16384))
        self.assertEqual(paris["requestsPerSecond"], 40.0)
        self.assertEqual(snap["totals"]["requestsPerSecond"], produce / 3 + 50)
        self.assertEqual(snap["totals"]["throttleSecondsPerSecond"], 10 * demo.THROTTLED)
        self.assertEqual(snap["other"][0]["bytesInPerSecond"], 0)
        detail = self.dashboard.snapshot("london")["vcluster"]
        self.assertEqual(detail["requestsPerSecondByApi"], {"Produce": produce / 3,
                                                            "Fetch": 10.0})

    def test_tenant_detail(self):
        """``?vc=``: one vcluster's topics, mappings, accounts, shares and history."""
        self.metrics.rate_share.labels("london", "produce_bytes_per_second").set(0.5)
        self.advance(3, demo.traffic(self.metrics))
        snap = self.dashboard.snapshot_for(query("london"))
        self.assertEqual(set(snap), {"time", "rateSeconds", "vcluster", "history"})
        london = snap["vcluster"]
        self.assertEqual(london["topics"], sorted(
            demo.TOPICS["london"] + ["existingLondonTopic", "shared"]))
        self.assertEqual(london["serviceAccounts"], ["ops", "sa"])
        self.assertEqual([(m["logicalTopicName"], m["physicalTopicName"], m["readOnly"])
                          for m in london["mappings"]], demo.MAPPINGS["london"])
        self.assertEqual(london["limits"], LONDON_LIMITS)
        self.assertEqual(london["rateShares"], {"produceBytesPerSecond": 0.5})
        self.assertEqual(london["connections"], 3)
        history = snap["history"]  # a point on start, none due since (every 10 s)
        self.assertEqual(history["time"], [1000.0])
        self.assertEqual(history["connections"], [3])
        self.assertEqual(self.dashboard.snapshot_for(DummyRequest([b""]))["totals"]
                         ["vclusters"], 2)

    @defer.inlineCallbacks
    def test_tenant_detail_over_http(self):
        """GET /admin/dashboard.json?vc=london is london's detail; an unknown
        name (any characters) a JSON 404."""
        snap = yield self.snapshot(URL + ".json?vc=london")
        self.assertIn("vcluster", snap, "/admin/dashboard.json ignores ?vc=: the route "
                      "must answer dashboard.snapshot_for(request) (vkafka/admin/app.py)")
        self.assertEqual(snap["vcluster"]["name"], "london")
        self.assertEqual(snap["history"]["connections"], [3])
        name = '<script>alert("x")</script>'
        response, body = yield self.get(
            URL + ".json?vc=" + urllib.parse.quote(name))
        self.assertEqual(response.code, 404)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"application/json"])
        self.assertEqual(json.loads(body)["error"], "not_found")

    @defer.inlineCallbacks
    def test_topics_follow_listing_and_mappings(self):
        """New topics and mappings show up; another tenant's topics never do."""
        paris_topic = self.state.vclusters.namespace("paris").physical(TOPIC, "late")
        self.topology.learn_topic(paris_topic)
        yield self.state.put_mapping("london", "audit", {
            "physicalTopicName": "auditLog", "readOnly": True, "concentrated": False})
        self.topology.learn_topic("auditLog")
        london, paris = (self.dashboard.snapshot(vc)["vcluster"]
                         for vc in ("london", "paris"))
        self.assertIn("late", paris["topics"])
        self.assertNotIn("late", london["topics"])
        self.assertIn("audit", london["topics"])
        self.assertNotIn("auditLog", london["topics"] + paris["topics"])
        for vc in (london, paris):
            self.assertFalse([t for t in vc["topics"] if t.startswith("_")])
            self.assertEqual(vc["topicCount"], len(vc["topics"]))

    @defer.inlineCallbacks
    def test_auth_required(self):
        """Page and snapshots need the admin credentials: 401 without or wrong ones."""
        for url in (URL, URL + ".json", URL + ".json?vc=london"):
            for auth in (None, (demo.USER, "wrong")):
                response, body = yield self.get(url, auth)
                self.assertEqual(response.code, 401, (url, auth))
                self.assertNotIn(b"london", body)

    @defer.inlineCallbacks
    def test_page_is_self_contained(self):
        """HTML with inline style and script only; the CSP allows exactly those."""
        response, body = yield self.get(URL)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"),
                         [b"text/html; charset=utf-8"])
        page = body.decode()
        self.assertNotRegex(page, r"<link|src=|https?://(?!www\.w3\.org/2000/svg)")
        csp = response.headers.getRawHeaders(b"content-security-policy")[0].decode()
        for tag, directive in (("script", "script-src"), ("style", "style-src")):
            inline = re.search(f"<{tag}>(.*?)</{tag}>", page, re.S).group(1)
            digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
            self.assertIn(f"{directive} 'sha256-{digest}'", csp)
        self.assertIn("dashboard.json", page)
        # tenant-provided strings only ever reach the page as text
        self.assertNotIn("innerHTML", page)
        self.assertNotIn("insertAdjacentHTML", page)

    def test_stop_cancels_the_timer(self):
        """Stopping the service leaves nothing scheduled on the reactor."""
        self.assertTrue(self.clock.getDelayedCalls())
        self.dashboard.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ManyTenantsTests(unittest.TestCase):
    TENANTS = 300

    def test_payloads_stay_small(self):
        """300 vclusters: the table's snapshot under 400 bytes a tenant (no topic
        lists, no history); one tenant's hour of history under 40 KB."""
        http, clock, dashboard, state, topology, metrics = make_dashboard(
            self.TENANTS, usage=demo.usage)
        dashboard.startService()
        self.addCleanup(dashboard.stopService)
        tick = demo.traffic(metrics, self.TENANTS)
        for _ in range(370):  # over an hour of points, one every 10 s
            tick()
            clock.advance(10)
        snap = dashboard.snapshot()
        self.assertEqual(len(snap["vclusters"]), self.TENANTS)
        size = len(json.dumps(snap))
        self.assertLess(size, 400 * self.TENANTS, size)
        name = demo.filler(42)
        detail = dashboard.snapshot(name)
        self.assertEqual(len(detail["history"]["time"]), dashboard.history.size)
        self.assertEqual(detail["history"]["bytesInPerSecond"][-1], 10 * 42 / 10)
        self.assertLess(len(json.dumps(detail)), 40_000)
        self.assertEqual(len(dashboard.history.rings), self.TENANTS)


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--remote-debugging-pipe"]
HEADER_COLOUR = (0x14, 0x21, 0x3d)  # --head in the page's style
TENANTS = 300


def chromium():
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if path is None:
        raise AssertionError(
            "Chromium is missing: the browser test needs /usr/bin/chromium (Debian "
            "package 'chromium'; `make setup` installs it with apt-get)")
    return path


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe: JSON
    messages ending in a NUL, written to its fd 3, read from its fd 4 (bash
    puts the pipes there: dash's redirections take one-digit fds only)."""

    def __init__(self, browser, profile, log):
        commands, self._to_browser = os.pipe()
        self._from_browser, answers = os.pipe()
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{commands} 4>&{answers}', browser,
             *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(commands, answers), stdin=subprocess.DEVNULL,
            stdout=log, stderr=log)
        os.close(commands)
        os.close(answers)
        self.log = log
        self.buffer = b""
        self.last_id = 0
        self.events = []
        self.session = None

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)

    def _message(self, timeout):
        while b"\0" not in self.buffer:
            if not select.select([self._from_browser], [], [], timeout)[0]:
                raise AssertionError(f"Chromium did not answer in {timeout} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                self.log.seek(0)
                raise AssertionError("Chromium quit: " + self.log.read()[-2000:])
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method, timeout=30, **params):
        """Run a DevTools command (in the page once attached); its result."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._message(timeout)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, url, headers, width=1280, height=900):
        """A new page of *width* x *height* CSS pixels, sending *headers*, at *url*."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Network", "Runtime", "Page", "Log"):
            self.send(f"{domain}.enable")
        self.send("Network.setExtraHTTPHeaders", headers=headers)
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", url=url)

    def evaluate(self, expression):
        """The value of a JavaScript *expression* in the page."""
        result = self.send("Runtime.evaluate", expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, what, timeout=20):
        """Poll *expression* until it is true (and return it), or fail at the deadline."""
        return stack.wait_until(lambda: self.evaluate(expression), what, timeout, 0.1)

    def errors(self):
        """Script exceptions and Content-Security-Policy refusals seen so far."""
        return [event for event in self.events
                if event.get("method") == "Runtime.exceptionThrown"
                or (event.get("method") == "Log.entryAdded" and "Content Security"
                    in event["params"]["entry"].get("text", ""))]


ROWS = "[...document.querySelectorAll('#rows tr')]"
UNITS = ["B", "KB", "MB", "GB", "TB"]


def size_of(text):
    """Bytes of a size as the page shows it: ``47.7 MB``."""
    number, unit = text.split()
    return float(number) * 1024 ** UNITS.index(unit)
COLUMN = ROWS + ".map(r => r.children[{index}].textContent)"


class BrowserTests(unittest.TestCase):
    """The real admin resource on a real port with 300 virtual clusters,
    rendered by headless Chromium."""

    def setUp(self):
        self.browser = chromium()
        # port 0: the server takes whatever port is free and says which
        self.server = subprocess.Popen(
            [sys.executable, "-m", "tests.dashboard_server", "0", str(TENANTS)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(self._stop_server)
        line = self.server.stdout.readline()
        self.assertRegex(line.strip(), r"^ready \d+$", f"dashboard server failed: {line}"
                         f"{self.server.stdout.read() if self.server.poll() else ''}")
        self.port = int(line.split()[1])
        self.wait_for_rates()
        profile = tempfile.mkdtemp(prefix="vkafka-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        log = tempfile.TemporaryFile("w+")
        self.addCleanup(log.close)
        self.page = DevTools(self.browser, profile, log)
        self.addCleanup(self.page.close)

    def _stop_server(self):
        self.server.terminate()
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.server.stdout.close()

    def auth(self):
        return {"Authorization": "Basic " + base64.b64encode(
            f"{demo.USER}:{demo.PASSWORD}".encode()).decode()}

    def wait_for_rates(self):
        """Until the server has sampled traffic twice (rates are not null)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/admin/dashboard.json", headers=self.auth())

        def rates():
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response)["rateSeconds"] is not None
        stack.wait_until(rates, "the dashboard server to report rates", 15)

    def open(self, fragment=""):
        """The dashboard at *fragment*, once its table (or tenant page) is filled."""
        self.page.open(f"http://127.0.0.1:{self.port}/admin/dashboard{fragment}",
                       self.auth())
        self.page.wait_for("location.pathname === '/admin/dashboard' && "
                           "document.getElementById('status')?.className === 'ok'",
                           "the page to load a snapshot")

    def open_table(self):
        self.open()
        self.page.wait_for(f"{ROWS}.length === {TENANTS}", "300 rows")

    def next_poll(self):
        """Until the page has polled again (its status line shows another time)."""
        status = "document.getElementById('status').textContent"
        self.page.wait_for(f"{status} !== {json.dumps(self.page.evaluate(status))}",
                           "another poll")

    def search(self, text):
        """Type *text* in the search box (the page hears an input event)."""
        self.page.evaluate(f"(s => {{ s.value = {json.dumps(text)}; s.dispatchEvent("
                           "new Event('input')); })(document.getElementById('search'))")

    def column(self, key):
        index = self.page.evaluate(
            f"[...document.querySelectorAll('#head th')].findIndex("
            f"th => th.dataset.key === {json.dumps(key)})")
        self.assertGreaterEqual(index, 0, key)
        return self.page.evaluate(COLUMN.format(index=index))

    def click(self, selector):
        self.assertTrue(self.page.evaluate(
            f"(n => n && (n.click(), true))(document.querySelector({json.dumps(selector)}))"),
            f"nothing to click at {selector}")

    def assertNoErrors(self):
        self.assertEqual(self.page.errors(), [])

    def test_table_of_tenants(self):
        """One row per vcluster, figures against limits (coloured when near or
        over), "-" where nothing is known, the count shown."""
        self.open_table()
        self.assertEqual(self.page.evaluate(
            "document.getElementById('count').textContent"),
            f"{TENANTS} of {TENANTS} virtual clusters")
        london = self.page.evaluate(
            "[...document.querySelector('#rows tr[data-vcluster=london]').children]"
            ".map(td => [td.textContent, td.className, !!td.querySelector('.bar')])")
        cells = dict(zip(["name", "connections", "topics", "partitions", "produce",
                          "fetch", "requests", "throttled", "storage", "groups",
                          "peak"], london))
        self.assertEqual(cells["connections"], ["3 / 4", "", True])
        self.assertEqual(cells["topics"], ["5 / 5", "over", True])
        self.assertEqual(cells["partitions"], [f"{5 * demo.PARTITIONS} / 40", "", True])
        self.assertRegex(cells["produce"][0], r"^\d+\.\d KB/s / 244\.1 KB/s$")
        self.assertIn("in", cells["produce"][1].split())
        self.assertRegex(cells["throttled"][0], r"^0\.\d\d s/s$")
        self.assertRegex(cells["storage"][0], r"^4\d\.\d MB$")
        self.assertEqual(cells["groups"][0], "3")
        self.assertRegex(cells["peak"][0], r"^1\d\d %$")  # topics 5 of 5 at least
        self.assertEqual(cells["peak"][1], "over")
        # tenant-001 has no usage figures; tenant-018 4 connections of 5
        self.assertEqual(self.page.evaluate(
            "[...document.querySelector('#rows tr[data-vcluster=tenant-001]').children]"
            ".map(td => td.textContent).slice(8, 10)"), ["-", "-"])
        self.assertEqual(self.page.evaluate(
            "document.querySelector('#rows tr[data-vcluster=tenant-018] td:nth-child(2)')"
            ".className"), "warn")
        self.assertIn("unauthenticated", self.page.evaluate(
            "document.getElementById('other').textContent"))
        self.assertNoErrors()

    def test_sort_by_column(self):
        """A header sorts by its column, descending first; again: ascending."""
        self.open_table()
        names = self.column("name")
        self.assertEqual(names, sorted(names))
        self.click("#head th[data-key=connections]")
        counts = [int(text.split(" / ")[0]) for text in self.column("connections")]
        self.assertEqual(counts, sorted(counts, reverse=True))
        self.assertEqual(counts[0], 6)
        self.assertIn("sort=connections", self.page.evaluate("location.hash"))
        self.click("#head th[data-key=connections]")
        counts = [int(text.split(" / ")[0]) for text in self.column("connections")]
        self.assertEqual(counts, sorted(counts))
        self.next_poll()  # the order holds (rows updated in place)
        counts = [int(text.split(" / ")[0]) for text in self.column("connections")]
        self.assertEqual(counts, sorted(counts))
        # storage: biggest first, unknown ("-") last
        self.click("#head th[data-key=storageBytes]")
        storage = self.column("storageBytes")
        known = [size_of(text) for text in storage if text != "-"]
        self.assertEqual(known, sorted(known, reverse=True))
        self.assertEqual(storage[len(known):], ["-"] * (len(storage) - len(known)))
        self.assertGreater(len(storage) - len(known), 90)
        self.assertNoErrors()

    def test_polls_touch_only_what_changed(self):
        """A poll rewrites only the cells whose text changed and moves no row
        while the order holds: the figures that do not move (connections,
        topics, partitions, groups) are left alone in all 300 rows."""
        self.open_table()
        self.page.evaluate("""(() => {
            window.changed = {rows: 0, cells: new Set()};
            new MutationObserver(records => {
              for (const r of records)
                if (r.target.id === "rows") window.changed.rows++;
                else window.changed.cells.add(r.target.closest("td"));
            }).observe(document.getElementById("rows"), {childList: true, subtree: true});
        })()""")
        self.next_poll()
        rows, columns = self.page.evaluate(
            "[changed.rows, [...changed.cells].map(td => td.cellIndex)]")
        self.assertEqual(rows, 0)
        steady = [index for index in columns if index in (0, 1, 2, 3, 9)]
        self.assertEqual(steady, [], "unchanged figures were rewritten")
        self.assertLess(len(columns), TENANTS * 11 // 2)
        self.assertNoErrors()

    def test_search_filters_rows(self):
        """The search box keeps the names containing it, whatever the case."""
        self.open_table()
        self.search("LON")
        self.assertEqual(self.column("name"), ["london"])
        self.assertEqual(self.page.evaluate(
            "document.getElementById('count').textContent"),
            f"1 of {TENANTS} virtual clusters")
        self.search("t-01")
        self.assertEqual(self.column("name"), [demo.filler(i) for i in range(10, 20)])
        self.search("nobody")
        self.assertEqual(self.column("name"), [])
        self.assertFalse(self.page.evaluate("document.getElementById('empty').hidden"))
        self.assertNoErrors()

    def test_tenant_page_plots(self):
        """A name links to its page: plots of its history with points, limits
        drawn on the throughput plots, its topics and mappings."""
        self.open_table()
        self.click("#rows tr[data-vcluster=london] td.name a")
        self.assertEqual(self.page.evaluate("location.hash"), "#vc=london")
        points = ("Object.fromEntries([...document.querySelectorAll('#tenant "
                  "figure.plot')].map(f => [f.dataset.series, [...f.querySelectorAll("
                  "'polyline')].reduce((n, p) => n + p.points.numberOfItems, 0)]))")
        plotted = self.page.wait_for(
            f"(p => p.bytesInPerSecond >= 4 && p)({points})", "plots with points")
        self.assertEqual(set(plotted), {"bytesInPerSecond", "bytesOutPerSecond",
                                        "connections", "throttleSecondsPerSecond",
                                        "requestsPerSecond", "storageBytes"})
        self.assertTrue(all(count >= 3 for count in plotted.values()), plotted)
        limits = self.page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#tenant figure.plot')]"
            ".map(f => [f.dataset.series, (t => t && t.textContent)("
            "f.querySelector('text.limit'))]))")
        self.assertEqual(limits["bytesInPerSecond"], "limit 244.1 KB/s")
        self.assertEqual(limits["bytesOutPerSecond"], "limit 195.3 KB/s")
        self.assertEqual(limits["connections"], "limit 4")
        self.assertIsNone(limits["throttleSecondsPerSecond"])
        text = self.page.evaluate("document.getElementById('tenant').textContent")
        for topic in demo.TOPICS["london"]:
            self.assertIn(topic, text)
        self.assertIn("existingLondonTopic", text)
        self.assertIn("read-only", text)
        self.assertRegex(text, r"Fetch [\d.]+/s")
        self.assertTrue(self.page.evaluate("document.getElementById('list').hidden"))
        # back to the table
        self.click("#tenant a.back")
        self.page.wait_for("!document.getElementById('list').hidden", "the table again")
        self.assertNoErrors()

    def test_storage_not_reported(self):
        """A tenant without usage figures: its storage plot says so, the rest plot."""
        self.open("#vc=" + demo.filler(1))
        self.page.wait_for("!!document.querySelector('#tenant figure.plot')", "the plots")
        self.assertEqual(self.page.evaluate(
            "document.querySelector('#tenant figure[data-series=storageBytes] .none')"
            ".textContent"), "storage is not reported for this virtual cluster")
        self.assertNoErrors()

    def test_names_are_text(self):
        """Whatever the fragment names, it is shown as text, never markup."""
        name = "<img src=x onerror=\"document.title='owned'\">"
        self.open("#vc=" + urllib.parse.quote(name))
        self.page.wait_for("!!document.querySelector('#tenant h2')", "the tenant page")
        self.assertEqual(self.page.evaluate(
            "document.querySelector('#tenant h2').textContent"), name)
        self.assertEqual(self.page.evaluate("document.querySelectorAll('img').length"), 0)
        self.assertIn("no virtual cluster of that name", self.page.evaluate(
            "document.getElementById('tenant').textContent"))
        self.assertNotEqual(self.page.evaluate("document.title"), "owned")
        self.assertNoErrors()

    def screenshot(self, name):
        """A PNG of the page as shown, kept as $VKAFKA_DASHBOARD_SCREENSHOT
        (the table) and its -tenant twin when that is set; the RGB image."""
        from PIL import Image

        path = Path(tempfile.mkdtemp(prefix="vkafka-shot-")) / f"{name}.png"
        self.addCleanup(shutil.rmtree, path.parent, True)
        path.write_bytes(base64.b64decode(
            self.page.send("Page.captureScreenshot", format="png")["data"]))
        keep = os.environ.get("VKAFKA_DASHBOARD_SCREENSHOT")
        if keep:  # to look: VKAFKA_DASHBOARD_SCREENSHOT=/tmp/d.png pytest ...
            keep = Path(keep)
            shutil.copy(path, keep if name == "dashboard" else
                        keep.with_name(f"{keep.stem}-{name}{keep.suffix}"))
        with Image.open(path) as image:
            self.assertEqual(image.size, (1280, 900))
            return image.convert("RGB")

    def assertLooksLikeTheDashboard(self, rgb):
        colours = rgb.getcolors(maxcolors=1280 * 900)
        self.assertGreater(len(colours), 200, "the screenshot looks blank")
        counts = {colour: count for count, colour in colours}
        self.assertEqual(rgb.getpixel((5, 5)), HEADER_COLOUR)
        self.assertGreater(counts.get(HEADER_COLOUR, 0), 1280 * 40,
                           "the header bar is missing")
        self.assertGreater(counts.get((255, 255, 255), 0), 100_000)
        for colour in ((0x2a, 0x9d, 0x8f), (0xe7, 0x6f, 0x51)):  # produce, fetch
            self.assertGreater(counts.get(colour, 0), 50, f"no pixels of {colour}")
        return counts

    def test_screenshots(self):
        """1280x900 screenshots of the table and of london's page, not blank."""
        self.open_table()
        counts = self.assertLooksLikeTheDashboard(self.screenshot("dashboard"))
        self.assertGreater(counts.get((0xc8, 0x1e, 0x1e), 0), 20, "nothing over a limit")
        self.click("#rows tr[data-vcluster=london] td.name a")
        self.page.wait_for("document.querySelectorAll('#tenant polyline').length >= 6",
                           "london's plots")
        self.assertLooksLikeTheDashboard(self.screenshot("tenant"))
        self.assertNoErrors()
