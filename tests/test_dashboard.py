"""The operator dashboard: the snapshot in memory (StubTreq, a fake clock), then
the real page in headless Chromium against a real admin port."""

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial import unittest

from tests import dashboard_server as demo
from tests import stack
from vkafka.admin.app import admin_root
from vkafka.admin.dashboard import Dashboard, Throughput
from vkafka.admin.users import UserChecker, parse_users
from vkafka.metrics import Metrics
from vkafka.tenancy.naming import TOPIC

ROOT = Path(__file__).resolve().parent.parent
URL = "http://gw/admin/dashboard"
AUTH = (demo.USER, demo.PASSWORD)


def make_dashboard():
    """The demo's two virtual clusters behind a StubTreq admin port, on a Clock."""
    clock = task.Clock()
    clock.advance(1000)
    state, topology, metrics = demo.build(clock.seconds)
    dashboard = Dashboard(state, metrics, topology, clock, interval=1.0, window=5.0)
    checker = UserChecker(parse_users(f"{demo.USER}:{demo.PASSWORD}", allow_plain=True),
                          run_blocking=lambda f, *a: f(*a))
    http = StubTreq(admin_root(state, checker, lambda: (None, {}), dashboard))
    return http, clock, dashboard, state, topology, metrics


class ThroughputTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.metrics = Metrics()
        self.throughput = Throughput(self.metrics, self.clock.seconds, window=5.0)
        self.london = self.metrics.for_connection("london")

    def run_for(self, seconds, bytes_per_second, requests_per_second=0):
        for _ in range(seconds):
            self.london.bytes_in.inc(bytes_per_second)
            for _ in range(requests_per_second):
                self.london.request("Produce", 0)
            self.clock.advance(1)
            self.throughput.sample()

    def test_no_rate_before_two_samples(self):
        """One sample is not a rate."""
        self.assertEqual(self.throughput.rates(), (None, {}))
        self.throughput.sample()
        self.assertEqual(self.throughput.rates(), (None, {}))

    def test_rate_is_delta_over_time(self):
        """Bytes and requests per second are counter deltas over the clock's time."""
        self.throughput.sample()
        self.run_for(2, 1000, 4)
        span, rates = self.throughput.rates()
        self.assertEqual(span, 2.0)
        self.assertEqual(rates["london"]["in"], 1000.0)
        self.assertEqual(rates["london"]["out"], 0.0)
        self.assertEqual(rates["london"]["requests"], {"Produce": 4.0})

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
    def snapshot(self):
        response, body = yield self.get()
        self.assertEqual(response.code, 200)
        return json.loads(body)

    @defer.inlineCallbacks
    def test_tenants_topics_mappings_connections(self):
        """Each vcluster with its own logical topics, mappings and connections."""
        snap = yield self.snapshot()
        by_name = {vc["name"]: vc for vc in snap["vclusters"]}
        self.assertEqual(sorted(by_name), ["london", "paris"])
        london, paris = by_name["london"], by_name["paris"]
        self.assertEqual(london["topics"], sorted(
            demo.TOPICS["london"] + ["existingLondonTopic", "shared"]))
        self.assertEqual(paris["topics"], sorted(demo.TOPICS["paris"] + ["shared"]))
        self.assertEqual(london["prefix"], "london")
        self.assertEqual(london["serviceAccounts"], ["ops", "sa"])
        self.assertEqual([(m["logicalTopicName"], m["physicalTopicName"], m["readOnly"])
                          for m in london["mappings"]], demo.MAPPINGS["london"])
        self.assertEqual((london["connections"], paris["connections"]), (3, 2))
        self.assertEqual(snap["other"][0]["name"], "unauthenticated")
        self.assertEqual(snap["other"][0]["connections"], 1)
        self.assertEqual(snap["totals"]["connections"], 6)
        self.assertEqual(snap["totals"]["vclusters"], 2)
        self.assertIsNone(snap["rateSeconds"])

    @defer.inlineCallbacks
    def test_rates_from_the_sampling_timer(self):
        """The timer on the injected clock samples; the snapshot shows per-tenant rates."""
        tick = demo.traffic(self.metrics)
        for _ in range(3):  # 3 s of traffic, 10 ticks a second
            for _ in range(10):
                tick()
            self.clock.advance(1)
        snap = yield self.snapshot()
        self.assertEqual(snap["rateSeconds"], 3.0)
        london, paris = snap["vclusters"]
        # london: 3, 4 then 5 Produce of 4096 B a tick (10 ticks each), and one
        # Fetch of 90 B a tick; paris: a Metadata and 3 Fetches a tick.
        produce = 10 * (3 + 4 + 5)
        self.assertEqual(london["bytesInPerSecond"], (produce * 4096 + 30 * 90) / 3)
        self.assertEqual(london["requestsPerSecondByApi"], {"Produce": produce / 3,
                                                            "Fetch": 10.0})
        self.assertEqual(london["requestsPerSecond"], produce / 3 + 10)
        self.assertEqual(paris["bytesOutPerSecond"], 10 * (400 + 3 * 16384))
        self.assertEqual(paris["requestsPerSecond"], 40.0)
        self.assertEqual(snap["totals"]["requestsPerSecond"], produce / 3 + 50)
        self.assertEqual(snap["other"][0]["bytesInPerSecond"], 0)

    @defer.inlineCallbacks
    def test_topics_follow_listing_and_mappings(self):
        """New topics and mappings show up; another tenant's topics never do."""
        paris_topic = self.state.vclusters.namespace("paris").physical(TOPIC, "late")
        self.topology.learn_topic(paris_topic)
        yield self.state.put_mapping("london", "audit", {
            "physicalTopicName": "auditLog", "readOnly": True, "concentrated": False})
        self.topology.learn_topic("auditLog")
        snap = yield self.snapshot()
        london, paris = snap["vclusters"]
        self.assertIn("late", paris["topics"])
        self.assertNotIn("late", london["topics"])
        self.assertIn("audit", london["topics"])
        self.assertNotIn("auditLog", london["topics"] + paris["topics"])
        for vc in snap["vclusters"]:
            self.assertFalse([t for t in vc["topics"] if t.startswith("_")])

    @defer.inlineCallbacks
    def test_auth_required(self):
        """Page and snapshot need the admin credentials: 401 without or wrong ones."""
        for url in (URL, URL + ".json"):
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

    def test_stop_cancels_the_timer(self):
        """Stopping the service leaves nothing scheduled on the reactor."""
        self.assertTrue(self.clock.getDelayedCalls())
        self.dashboard.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=7000"]
HEADER_COLOUR = (0x14, 0x21, 0x3d)  # --head in the page's style


def chromium():
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if path is None:
        raise AssertionError(
            "Chromium is missing: the browser test needs /usr/bin/chromium (Debian "
            "package 'chromium'; `make setup` installs it with apt-get)")
    return path


class BrowserTests(unittest.TestCase):
    """The real admin resource on a real port, rendered by headless Chromium."""

    def setUp(self):
        self.browser = chromium()
        # port 0: the server takes whatever port is free and says which
        self.server = subprocess.Popen(
            [sys.executable, "-m", "tests.dashboard_server", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(self._stop_server)
        line = self.server.stdout.readline()
        self.assertRegex(line.strip(), r"^ready \d+$", f"dashboard server failed: {line}"
                         f"{self.server.stdout.read() if self.server.poll() else ''}")
        self.port = int(line.split()[1])
        self.wait_for_rates()

    def _stop_server(self):
        self.server.terminate()
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        self.server.stdout.close()

    def wait_for_rates(self):
        """Until the server has sampled traffic twice (rates are not null)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/admin/dashboard.json", headers={
                "Authorization": "Basic " + base64.b64encode(
                    f"{demo.USER}:{demo.PASSWORD}".encode()).decode()})

        def rates():
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response)["rateSeconds"] is not None
        stack.wait_until(rates, "the dashboard server to report rates", 15)

    def run_chromium(self, *args):
        profile = tempfile.mkdtemp(prefix="vkafka-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        url = (f"http://{demo.USER}:{demo.PASSWORD}@127.0.0.1:{self.port}"
               "/admin/dashboard")
        result = subprocess.run(
            [self.browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        return result.stdout

    def test_dom_shows_tenants_and_traffic(self):
        """After the page has polled: vclusters, topics, mappings, connections, rates."""
        dom = self.run_chromium("--dump-dom").partition("<script>")[0]  # not the code
        status = re.search(r'<div id="status"[^>]*>[^<]*<', dom).group(0)
        self.assertIn('class="ok">updated', status, "the page did not load the snapshot")
        cards = dict(re.findall(
            r'<section class="card vcluster" data-vcluster="(\w+)">(.*?)</section>', dom))
        self.assertEqual(sorted(cards), ["london", "paris"])
        for vc, card in cards.items():
            for topic in demo.TOPICS[vc]:
                self.assertIn(f'<span class="chip">{topic}</span>', card)
            for logical, physical, read_only in demo.MAPPINGS[vc]:
                self.assertIn(f'<td class="mono">{physical}</td>', card)
            connections = re.search(r'connections</div><div class="value">(\d+)<', card)
            self.assertEqual(int(connections.group(1)), demo.CONNECTIONS[vc])
            rate_in = re.search(r'"stat in"><div class="label">in</div>'
                                r'<div class="value">([\d.]+) (KB|MB)/s<', card)
            self.assertIsNotNone(rate_in, f"no live byte rate in {vc}'s card")
            self.assertGreater(float(rate_in.group(1)), 0)
            self.assertRegex(card, r"Fetch [\d.]+/s")
            self.assertIn("<polyline", card)
        self.assertIn("read-only", cards["paris"])
        self.assertNotIn("orders", cards["paris"])
        self.assertIn("unauthenticated", dom)
        self.assertRegex(dom, r'open connections</div><div class="value">6<')

    def test_screenshot(self):
        """A 1280x900 screenshot, not blank: many colours, the header bar on top."""
        from PIL import Image

        path = Path(tempfile.mkdtemp(prefix="vkafka-shot-")) / "dashboard.png"
        self.addCleanup(shutil.rmtree, path.parent, True)
        self.run_chromium(f"--screenshot={path}", "--window-size=1280,900")
        self.assertTrue(path.exists(), "Chromium wrote no screenshot")
        keep = os.environ.get("VKAFKA_DASHBOARD_SCREENSHOT")
        if keep:  # to look at it: VKAFKA_DASHBOARD_SCREENSHOT=/tmp/d.png pytest ...
            shutil.copy(path, keep)
        with Image.open(path) as image:
            self.assertEqual(image.size, (1280, 900))
            rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1280 * 900)
        self.assertGreater(len(colours), 200, "the screenshot looks blank")
        counts = {colour: count for count, colour in colours}
        self.assertEqual(rgb.getpixel((5, 5)), HEADER_COLOUR)
        self.assertGreater(counts.get(HEADER_COLOUR, 0), 1280 * 40,
                           "the header bar is missing")
        # The cards (white) and the teal/orange rate colours are on the page.
        self.assertGreater(counts.get((255, 255, 255), 0), 100_000)
        for colour in ((0x2a, 0x9d, 0x8f), (0xe7, 0x6f, 0x51)):
            self.assertGreater(counts.get(colour, 0), 50, f"no pixels of {colour}")
