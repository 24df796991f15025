# -*- test-case-name: tests.test_dashboard -*-
"""The operator dashboard: ``/admin/dashboard`` (HTML) and ``/admin/dashboard.json``.

The page is one self-contained HTML document (inline CSS and script, no
external assets) that polls the JSON snapshot every two seconds; both sit
behind the admin API's basic auth.

Throughput comes from the Prometheus counters of ``vkafka.metrics``: they only
grow, so a rate is the difference of two samples over the time between them.
Samples are taken on a timer (the injected reactor), not per request, so the
rates are the same however many dashboards are open.  Records per second are
not shown: record batches pass through as bytes (never decoded), so the
gateway counts requests, not records.
"""

import base64
import hashlib
from collections import deque

from twisted.application import service
from twisted.internet.task import LoopingCall

from ..tenancy.naming import TOPIC


def _counter_values(metric):
    """``{labels tuple: value}`` of a counter's ``_total`` samples."""
    out = {}
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == family.name + "_total":
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def read_counters(metrics):
    """The counters the rates come from: ``{(vcluster, kind, key): value}``.

    *kind* is ``bytes`` (key ``in``/``out``) or ``requests`` (key: API name).
    """
    values = {}
    for labels, value in _counter_values(metrics.bytes).items():
        labels = dict(labels)
        values[(labels["vcluster"], "bytes", labels["direction"])] = value
    for labels, value in _counter_values(metrics.requests).items():
        labels = dict(labels)
        values[(labels["vcluster"], "requests", labels["api"])] = value
    return values


def read_connections(metrics):
    """Open connections by ``vcluster`` label, from the gauge."""
    out = {}
    for family in metrics.connections.collect():
        for sample in family.samples:
            out[sample.labels["vcluster"]] = int(sample.value)
    return out


class Throughput:
    """Rates per virtual cluster from counter deltas over a sliding window.

    ``sample()`` is called on a timer; ``rates()`` compares the newest sample
    with the newest one at least *window* seconds older (or the oldest kept,
    early on), so a rate is a short average, not one noisy interval.
    """

    def __init__(self, metrics, clock, window=5.0):
        self.metrics = metrics
        self.clock = clock
        self.window = window
        self.samples = deque()

    def sample(self):
        if self.metrics is None:
            return
        now = self.clock()
        self.samples.append((now, read_counters(self.metrics)))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def rates(self):
        """``(seconds covered, {vcluster: {"in", "out", "requests": {api: rate}}})``.

        The seconds are None (and the rates empty) until two samples exist.
        """
        if len(self.samples) < 2:
            return None, {}
        (t0, old), (t1, new) = self.samples[0], self.samples[-1]
        span = t1 - t0
        if span <= 0:
            return None, {}
        out = {}
        for (vcluster, kind, key), value in new.items():
            # A series missing from the older sample started at 0 since then.
            rate = max(0.0, value - old.get((vcluster, kind, key), 0.0)) / span
            entry = out.setdefault(vcluster, {"in": 0.0, "out": 0.0, "requests": {}})
            if kind == "bytes":
                entry[key] = rate
            else:
                entry["requests"][key] = rate
        return span, out


def _traffic(connections, rates):
    requests = rates.get("requests", {})
    return {
        "connections": connections,
        "bytesInPerSecond": round(rates.get("in", 0.0), 3),
        "bytesOutPerSecond": round(rates.get("out", 0.0), 3),
        "requestsPerSecond": round(sum(requests.values()), 3),
        "requestsPerSecondByApi": {api: round(rate, 3) for api, rate in
                                   sorted(requests.items()) if rate > 0},
    }


class Dashboard(service.Service):
    """What the dashboard shows, and the sampling timer behind its rates.

    *state* is the GatewayState; *metrics* and *topology* may be None (then
    no traffic or topics are shown); *reactor* provides ``seconds`` and
    ``callLater`` for the sampling timer (a ``task.Clock`` in tests).
    """

    def __init__(self, state, metrics=None, topology=None, reactor=None,
                 interval=1.0, window=5.0):
        self.state = state
        self.metrics = metrics
        self.topology = topology
        self.reactor = reactor
        self.interval = interval
        clock = state.clock if reactor is None else reactor.seconds
        self.throughput = Throughput(metrics, clock, window)
        self._loop = None
        self._topics_key = None
        self._topics = {}

    def startService(self):
        super().startService()
        self._loop = LoopingCall(self.throughput.sample)
        if self.reactor is not None:
            self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def topics(self):
        """Each virtual cluster's logical topic names, via its Namespace.

        Recomputed only when the topic listing or a namespace changes: it is
        every physical name times every virtual cluster.
        """
        if self.topology is None:
            return {}
        vclusters = self.state.vclusters
        names = sorted(self.state.clusters)
        namespaces = [vclusters.namespace(name) for name in names]
        key = (self.topology.names_version, len(vclusters.prefixes.known),
               tuple((name, ns.prefix, ns.unavailable,
                      frozenset(ns.aliases.values()))
                     for name, ns in zip(names, namespaces)))
        if key != self._topics_key:
            physical = list(self.topology.topic_names)
            self._topics = {
                name: sorted(filter(None, (ns.logical(TOPIC, p) for p in physical)))
                for name, ns in zip(names, namespaces)}
            self._topics_key = key
        return self._topics

    def snapshot(self):
        """The JSON document of ``GET /admin/dashboard.json``."""
        connections = read_connections(self.metrics) if self.metrics else {}
        span, rates = self.throughput.rates()
        topics = self.topics()
        vclusters = []
        for name in sorted(self.state.clusters):
            info = self.state.describe(name)
            vclusters.append({
                "name": name, "prefix": info["prefix"],
                "serviceAccounts": info["serviceAccounts"],
                "topics": topics.get(name, []),
                "mappings": [{"logicalTopicName": m["logicalTopicName"],
                              "physicalTopicName": m["physicalTopicName"],
                              "readOnly": bool(m.get("readOnly")),
                              "concentrated": bool(m.get("concentrated"))}
                             for m in info["topicMappings"]],
                **_traffic(connections.get(name, 0), rates.get(name, {}))})
        # Connections not (yet) in a virtual cluster: unauthenticated ones, or
        # traffic of a virtual cluster deleted since.
        other = []
        for label in sorted((set(connections) | set(rates)) - set(self.state.clusters)):
            entry = {"name": label, **_traffic(connections.get(label, 0),
                                               rates.get(label, {}))}
            if entry["connections"] or entry["bytesInPerSecond"] or \
                    entry["bytesOutPerSecond"] or entry["requestsPerSecond"]:
                other.append(entry)
        everything = vclusters + other
        return {
            "time": self.throughput.clock(),
            "rateSeconds": span,
            "totals": {
                "vclusters": len(vclusters),
                "connections": sum(connections.values()),
                **{field: round(sum(e[field] for e in everything), 3) for field in
                   ("bytesInPerSecond", "bytesOutPerSecond", "requestsPerSecond")}},
            "vclusters": vclusters,
            "other": other,
        }


_STYLE = """
:root { --head: #14213d; --accent: #fca311; --bg: #eef1f6; --card: #ffffff;
        --ink: #1d2433; --muted: #667085; --line: #d9dee8; --in: #2a9d8f;
        --out: #e76f51; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.4 "Liberation Sans", "DejaVu Sans", Arial, sans-serif; }
header { background: var(--head); color: #fff; padding: 14px 24px;
         display: flex; align-items: center; justify-content: space-between; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; letter-spacing: .3px; }
header h1 span { color: var(--accent); }
#status { font-size: 13px; padding: 4px 10px; border-radius: 12px;
          background: #2b3a5c; }
#status.ok::before { content: "\\25CF  "; color: #55d68b; }
#status.error { background: #8a1c1c; }
main { padding: 18px 24px; }
.tiles { display: grid; grid-template-columns: repeat(5, 1fr); gap: 12px;
         margin-bottom: 18px; }
.tile { background: var(--card); border-radius: 8px; padding: 12px 14px;
        border-top: 4px solid var(--accent); box-shadow: 0 1px 2px #0001; }
.tile .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .5px; }
.tile .value { font-size: 24px; font-weight: 600; margin-top: 2px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(390px, 1fr));
        gap: 14px; }
.card { background: var(--card); border-radius: 8px; padding: 14px 16px;
        box-shadow: 0 1px 2px #0001; }
.card h2 { margin: 0 0 8px; font-size: 17px; display: flex; align-items: center;
           gap: 8px; }
.badge { font-size: 11px; font-weight: 500; color: var(--muted); white-space: nowrap;
         border: 1px solid var(--line); border-radius: 10px; padding: 1px 8px; }
.badge.ro { color: #9a3412; border-color: #fdba74; background: #fff7ed; }
.stats { display: grid; grid-template-columns: repeat(4, 1fr); gap: 6px;
         margin-bottom: 6px; }
.stat .label { color: var(--muted); font-size: 11px; text-transform: uppercase; }
.stat .value { font-size: 16px; font-weight: 600; }
.stat.in .value { color: var(--in); }
.stat.out .value { color: var(--out); }
svg.spark { width: 100%; height: 44px; background: #f7f9fc; border-radius: 4px;
            margin-bottom: 4px; }
.apis { color: var(--muted); font-size: 12px; min-height: 17px; }
h3 { font-size: 12px; text-transform: uppercase; color: var(--muted);
     letter-spacing: .5px; margin: 12px 0 6px; }
.chips { display: flex; flex-wrap: wrap; gap: 6px; }
.chip { background: #e8eefb; color: #203a72; border-radius: 4px;
        padding: 2px 8px; font-family: "Liberation Mono", monospace; font-size: 12px; }
.none { color: var(--muted); font-style: italic; font-size: 12px; }
table { width: 100%; border-collapse: collapse; font-size: 12px; table-layout: fixed; }
td, th { text-align: left; padding: 4px; border-bottom: 1px solid var(--line); }
th:nth-child(-n+2) { width: 40%; }
th { color: var(--muted); font-weight: 500; }
td.mono { font-family: "Liberation Mono", monospace; overflow-wrap: anywhere; }
#other { margin-top: 18px; }
footer { color: var(--muted); font-size: 12px; padding: 0 24px 18px; }
"""

_SCRIPT = """
"use strict";
const POLL_MS = 2000, HISTORY = 60;
const history = new Map();

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function bytes(v) {
  const units = ["B/s", "KB/s", "MB/s", "GB/s"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : Math.round(v)) + " " + units[i];
}

function perSecond(v) { return (v >= 100 ? Math.round(v) : v.toFixed(1)) + "/s"; }

function stat(cls, label, value) {
  const box = el("div", "stat " + cls);
  box.append(el("div", "label", label), el("div", "value", value));
  return box;
}

function spark(name, rateIn, rateOut) {
  // Client-side history: the last HISTORY polls of bytes in and out.
  const points = history.get(name) || [];
  points.push([rateIn, rateOut]);
  while (points.length > HISTORY) points.shift();
  history.set(name, points);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 40");
  svg.setAttribute("preserveAspectRatio", "none");
  const top = Math.max(1, ...points.flat());
  const series = points.length > 1 ? points : [points[0], points[0]];
  const step = 100 / (series.length - 1);
  for (const [index, colour] of [[0, "#2a9d8f"], [1, "#e76f51"]]) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", series.map(
      (p, i) => (i * step).toFixed(2) + "," + (37 - 34 * p[index] / top).toFixed(2)
    ).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colour);
    line.setAttribute("stroke-width", "2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  }
  return svg;
}

function traffic(card, entry) {
  const stats = el("div", "stats");
  stats.append(stat("conn", "connections", entry.connections),
               stat("in", "in", bytes(entry.bytesInPerSecond)),
               stat("out", "out", bytes(entry.bytesOutPerSecond)),
               stat("req", "requests", perSecond(entry.requestsPerSecond)));
  card.append(stats, spark(entry.name, entry.bytesInPerSecond,
                           entry.bytesOutPerSecond));
  const apis = Object.entries(entry.requestsPerSecondByApi)
    .sort((a, b) => b[1] - a[1]).slice(0, 5)
    .map(([api, rate]) => api + " " + perSecond(rate)).join("  \\u00b7  ");
  card.append(el("div", "apis", apis || "no requests"));
}

function vclusterCard(vc) {
  const card = el("section", "card vcluster");
  card.dataset.vcluster = vc.name;
  const title = el("h2", null, vc.name);
  title.append(el("span", "badge", "prefix " + vc.prefix),
               el("span", "badge", vc.serviceAccounts.length +
                  (vc.serviceAccounts.length === 1 ? " account" : " accounts")));
  card.append(title);
  traffic(card, vc);
  card.append(el("h3", null, "topics (" + vc.topics.length + ")"));
  if (vc.topics.length) {
    const chips = el("div", "chips topics");
    for (const t of vc.topics) chips.append(el("span", "chip", t));
    card.append(chips);
  } else card.append(el("div", "none", "no topics"));
  card.append(el("h3", null, "mappings (" + vc.mappings.length + ")"));
  if (vc.mappings.length) {
    const table = el("table", "mappings");
    const head = el("tr");
    head.append(el("th", null, "logical"), el("th", null, "physical"), el("th"));
    table.append(head);
    for (const m of vc.mappings) {
      const row = el("tr");
      const flags = el("td");
      if (m.readOnly) flags.append(el("span", "badge ro", "read-only"));
      if (m.concentrated) flags.append(el("span", "badge", "concentrated"));
      row.append(el("td", "mono", m.logicalTopicName),
                 el("td", "mono", m.physicalTopicName), flags);
      table.append(row);
    }
    card.append(table);
  } else card.append(el("div", "none", "no mappings"));
  return card;
}

function render(snap) {
  const t = snap.totals;
  const tiles = document.getElementById("tiles");
  tiles.replaceChildren();
  for (const [label, value] of [
      ["virtual clusters", t.vclusters], ["open connections", t.connections],
      ["bytes in", bytes(t.bytesInPerSecond)],
      ["bytes out", bytes(t.bytesOutPerSecond)],
      ["requests", perSecond(t.requestsPerSecond)]]) {
    const tile = el("div", "tile");
    tile.append(el("div", "label", label), el("div", "value", value));
    tiles.append(tile);
  }
  const grid = document.getElementById("vclusters");
  grid.replaceChildren(...snap.vclusters.map(vclusterCard));
  if (!snap.vclusters.length)
    grid.append(el("div", "none", "no virtual clusters yet"));
  const other = document.getElementById("other");
  other.replaceChildren();
  if (snap.other.length) {
    other.append(el("h3", null, "outside virtual clusters"));
    const row = el("div", "grid");
    for (const entry of snap.other) {
      const card = el("section", "card other");
      card.append(el("h2", null, entry.name));
      traffic(card, entry);
      row.append(card);
    }
    other.append(row);
  }
  document.getElementById("window").textContent = snap.rateSeconds === null ?
    "rates: waiting for a second sample" :
    "rates over the last " + snap.rateSeconds.toFixed(1) + " s";
}

function status(text, ok) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = ok ? "ok" : "error";
}

async function poll() {
  try {
    // Relative to this page; credentials stay in the browser's auth cache.
    const url = new URL("dashboard.json", location.href);
    url.username = url.password = "";
    const response = await fetch(url, {cache: "no-store", credentials: "same-origin"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    status("updated " + new Date().toLocaleTimeString(), true);
  } catch (e) {
    status("cannot load the snapshot: " + e.message, false);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
"""


def _csp_hash(text):
    digest = hashlib.sha256(text.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vkafka dashboard</title>
<style>{_STYLE}</style></head>
<body>
<header><h1>vkafka <span>&middot;</span> operator dashboard</h1>
<div id="status">loading&hellip;</div></header>
<main>
<div class="tiles" id="tiles"></div>
<div class="grid" id="vclusters"></div>
<div id="other"></div>
</main>
<footer><span id="window"></span> &middot; refreshed every 2 s &middot;
<a href="openapi.json">admin API</a></footer>
<script>{_SCRIPT}</script>
</body></html>
""".encode()

# Only this page's own style and script may run: hashes, not 'unsafe-inline'.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_csp_hash(_SCRIPT)}; "
    f"style-src {_csp_hash(_STYLE)}; connect-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'").encode()


def render_page(request):
    """The HTML page, with headers that keep it from being framed or cached."""
    request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
    request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY)
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-store")
    return PAGE
