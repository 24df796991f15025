# -*- test-case-name: tests.test_dashboard -*-
"""The operator dashboard: ``/admin/dashboard`` (HTML) and ``/admin/dashboard.json``.

The page is one self-contained HTML document (inline CSS and script, no
external assets) that polls the JSON snapshot every two seconds; both sit
behind the admin API's basic auth.  It has two views, chosen by the URL's
fragment: a table of every virtual cluster (``#``, sortable and searchable,
``#sort=connections&desc=1&q=lon``) with its usage against its limits, and a
page per virtual cluster (``#vc=<name>``) with plots over time.

The table's snapshot (``/admin/dashboard.json``) holds only current figures,
so it stays small with hundreds of virtual clusters; one virtual cluster's
(``/admin/dashboard.json?vc=<name>``) adds its topics, mappings and history.

Throughput comes from the Prometheus counters of ``vkafka.metrics``: they only
grow, so a rate is the difference of two samples over the time between them.
Samples are taken on a timer (the injected reactor), not per request, so the
rates are the same however many dashboards are open.  Records per second are
not shown: record batches pass through as bytes (never decoded), so the
gateway counts requests, not records.
"""

import base64
import hashlib
import math
from array import array
from collections import deque

from twisted.application import service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..tenancy.naming import TOPIC

log = Logger()


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

    *kind* is ``bytes`` (key ``in``/``out``), ``requests`` (key: API name) or
    ``throttle`` (key ``seconds``: seconds clients were held by rate limits).
    """
    values = {}
    for metric, kind, key in ((metrics.bytes, "bytes", "direction"),
                              (metrics.requests, "requests", "api"),
                              (metrics.throttled, "throttle", None)):
        for labels, value in _counter_values(metric).items():
            labels = dict(labels)
            values[(labels["vcluster"], kind,
                    labels[key] if key else "seconds")] = value
    return values


def _gauge_values(gauge):
    """``{labels tuple in label order: value}`` of a gauge."""
    return {tuple(sample.labels.values()): sample.value
            for family in gauge.collect() for sample in family.samples}


def read_connections(metrics):
    """Open connections by ``vcluster`` label, from the gauge."""
    return {labels[0]: int(value)
            for labels, value in _gauge_values(metrics.connections).items()}


def rates_between(old, new, span):
    """``{vcluster: {"in", "out", "throttle", "requests": {api: rate}}}``: the
    counter readings *old* and *new*, *span* seconds apart, as rates."""
    out = {}
    for (vcluster, kind, key), value in new.items():
        # A series missing from the older sample started at 0 since then.
        rate = max(0.0, value - old.get((vcluster, kind, key), 0.0)) / span
        entry = out.setdefault(vcluster, {"in": 0.0, "out": 0.0, "throttle": 0.0,
                                          "requests": {}})
        if kind == "requests":
            entry["requests"][key] = rate
        else:
            entry["throttle" if kind == "throttle" else key] = rate
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
        """Read the counters (None without metrics) and keep the reading."""
        if self.metrics is None:
            return None
        now = self.clock()
        counters = read_counters(self.metrics)
        self.samples.append((now, counters))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        return counters

    def rates(self):
        """``(seconds covered, {vcluster: {"in", "out", "throttle", "requests": {api: rate}}})``.

        The seconds are None (and the rates empty) until two samples exist.
        """
        if len(self.samples) < 2:
            return None, {}
        (t0, old), (t1, new) = self.samples[0], self.samples[-1]
        span = t1 - t0
        if span <= 0:
            return None, {}
        return span, rates_between(old, new, span)


HISTORY_FIELDS = ("bytesInPerSecond", "bytesOutPerSecond", "requestsPerSecond",
                  "connections", "throttleSecondsPerSecond", "storageBytes")
"""What each point of a virtual cluster's history holds, in this order."""


class History:
    """The last *size* points of every virtual cluster, one every *every* seconds.

    One ring of times for all, and per virtual cluster a flat ``array`` of
    doubles (``HISTORY_FIELDS`` per point, NaN: unknown): memory is bounded by
    ``size * len(HISTORY_FIELDS) * 8`` bytes per virtual cluster (the default
    hour at 10 s: 360 points, 17 KB; 300 virtual clusters: 5 MB).  A virtual
    cluster missing from a point (deleted) loses its ring.
    """

    def __init__(self, size=360, every=10.0):
        self.size = size
        self.every = every
        self.times = array("d", [math.nan]) * size
        self.head = 0  # the slot the next point goes to
        self.count = 0
        self.rings = {}

    @property
    def bytes_per_vcluster(self):
        return self.size * len(HISTORY_FIELDS) * array("d").itemsize

    def record(self, now, rows):
        """One point: *rows* is ``{vcluster: values in HISTORY_FIELDS order}``
        (None: unknown)."""
        width, slot = len(HISTORY_FIELDS), self.head
        self.times[slot] = now
        for name in [name for name in self.rings if name not in rows]:
            del self.rings[name]
        for name, values in rows.items():
            ring = self.rings.get(name)
            if ring is None:
                ring = self.rings[name] = array("d", [math.nan]) * (self.size * width)
            ring[slot * width:(slot + 1) * width] = array(
                "d", (math.nan if v is None else v for v in values))
        self.head = (slot + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def series(self, name):
        """*name*'s points, oldest first, as columns: ``{"every", "time",
        <field>: [value or None]}`` (every column None for an unknown name)."""
        width = len(HISTORY_FIELDS)
        slots = [(self.head - self.count + i) % self.size for i in range(self.count)]
        ring = self.rings.get(name)
        out = {"every": self.every, "time": [round(self.times[s], 3) for s in slots]}
        for index, field in enumerate(HISTORY_FIELDS):
            column = [ring[s * width + index] for s in slots] if ring else \
                [math.nan] * len(slots)
            out[field] = [None if math.isnan(v) else round(v, 3) for v in column]
        return out


def _traffic(connections, rates):
    return {
        "connections": connections,
        "bytesInPerSecond": round(rates.get("in", 0.0), 3),
        "bytesOutPerSecond": round(rates.get("out", 0.0), 3),
        "requestsPerSecond": round(sum(rates.get("requests", {}).values()), 3),
        "throttleSecondsPerSecond": round(rates.get("throttle", 0.0), 3),
    }


TRAFFIC = ("bytesInPerSecond", "bytesOutPerSecond", "requestsPerSecond",
           "throttleSecondsPerSecond")


def limits_shown(limits):
    """The limits a row is measured against, flat: capacity and rates (their
    JSON names do not clash), only those set."""
    shown = limits.to_json()
    return {**shown.get("capacity", {}), **shown.get("rates", {})}


class Dashboard(service.Service):
    """What the dashboard shows, and the sampling timer behind its rates.

    *state* is the GatewayState; *metrics* and *topology* may be None (then
    no traffic or topics are shown); *reactor* provides ``seconds`` and
    ``callLater`` for the sampling timer (a ``task.Clock`` in tests).
    *usage*, if given, is called with a virtual cluster's name and returns
    figures the gateway does not measure itself, or None: ``{"storageBytes":
    int, "consumerGroups": int}`` (either may be left out; shown as "-").
    *history* keeps the points of the per-tenant plots (a ``History``).
    """

    def __init__(self, state, metrics=None, topology=None, reactor=None,
                 interval=1.0, window=5.0, usage=None, history=None):
        self.state = state
        self.metrics = metrics
        self.topology = topology
        self.reactor = reactor
        self.interval = interval
        clock = state.clock if reactor is None else reactor.seconds
        self.throughput = Throughput(metrics, clock, window)
        self.usage = usage
        self.history = History() if history is None else history
        self._point = None  # (time, counters) of the last point of history
        self._loop = None
        self._topics_key = None
        self._topics = {}

    def startService(self):
        super().startService()
        self._loop = LoopingCall(self.tick)
        if self.reactor is not None:
            self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def tick(self):
        """Sample the counters; add a point of history when one is due (its
        rates are averages since the previous point, unknown for the first)."""
        counters = self.throughput.sample()
        now = self.throughput.clock()
        last = self._point
        if last is not None and now - last[0] < self.history.every - self.interval / 2:
            return
        self._point = (now, counters)
        known = last is not None and counters is not None and now > last[0]
        rates = rates_between(last[1] or {}, counters, now - last[0]) if known else {}
        connections = read_connections(self.metrics) if self.metrics else {}
        rows = {}
        for name in self.state.clusters:
            traffic = _traffic(connections.get(name, 0), rates.get(name, {}))
            rows[name] = tuple(traffic[field] if known or field == "connections"
                               else None for field in HISTORY_FIELDS[:-1]) + (
                self._usage(name).get("storageBytes"),)
        self.history.record(now, rows)

    def _usage(self, name):
        if self.usage is None:
            return {}
        try:
            return self.usage(name) or {}
        except Exception:
            log.failure("dashboard: the usage of {vcluster} is unknown", vcluster=name)
            return {}

    def topics(self):
        """Each virtual cluster's topics, ``[(logical, physical)]`` sorted, via
        its Namespace.

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
                name: sorted((logical, p) for p in physical
                             if (logical := ns.logical(TOPIC, p)))
                for name, ns in zip(names, namespaces)}
            self._topics_key = key
        return self._topics

    def _row(self, name, connections, rates, topics):
        """One virtual cluster's current figures and the limits they go against."""
        usage = self._usage(name)
        held = topics.get(name, ())
        counts = self.topology.partitions if self.topology is not None else None
        return {"name": name, "prefix": self.state.clusters[name]["prefix"],
                **_traffic(connections.get(name, 0), rates.get(name, {})),
                # a partition count the gateway has not learnt counts as 1, as
                # the capacity limits count it (state/policy.py)
                "topicCount": None if counts is None else len(held),
                "partitionCount": None if counts is None else
                sum(counts.get(physical, 1) for _, physical in held),
                "storageBytes": usage.get("storageBytes"),
                "consumerGroups": usage.get("consumerGroups"),
                "limits": limits_shown(self.state.limits_of(name))}

    def snapshot(self, vc=None):
        """The JSON document of ``GET /admin/dashboard.json``: every virtual
        cluster's current figures, or with *vc* that one's detail and history
        (StateError 404 if there is no such virtual cluster)."""
        connections = read_connections(self.metrics) if self.metrics else {}
        span, rates = self.throughput.rates()
        topics = self.topics()
        head = {"time": self.throughput.clock(), "rateSeconds": span}
        if vc is not None:
            return {**head, **self._detail(vc, connections, rates, topics)}
        vclusters = [self._row(name, connections, rates, topics)
                     for name in sorted(self.state.clusters)]
        # Connections not (yet) in a virtual cluster: unauthenticated ones, or
        # traffic of a virtual cluster deleted since.
        other = []
        for label in sorted((set(connections) | set(rates)) - set(self.state.clusters)):
            entry = {"name": label, **_traffic(connections.get(label, 0),
                                               rates.get(label, {}))}
            if entry["connections"] or any(entry[field] for field in TRAFFIC):
                other.append(entry)
        everything = vclusters + other
        return {
            **head,
            "historySeconds": self.history.every,
            "totals": {
                "vclusters": len(vclusters),
                "connections": sum(connections.values()),
                **{field: round(sum(e[field] for e in everything), 3)
                   for field in TRAFFIC}},
            "vclusters": vclusters,
            "other": other,
        }

    def _detail(self, vc, connections, rates, topics):
        info = self.state.describe(vc)  # StateError 404 if there is no such vc
        requests = rates.get(vc, {}).get("requests", {})
        shares = {}
        if self.metrics is not None:
            for (label, rate), share in _gauge_values(self.metrics.rate_share).items():
                if label == vc:
                    first, *rest = rate.split("_")
                    shares[first + "".join(w.capitalize() for w in rest)] = share
        return {"vcluster": {
                    **self._row(vc, connections, rates, topics),
                    "serviceAccounts": info["serviceAccounts"],
                    "topics": [logical for logical, _ in topics.get(vc, ())],
                    "mappings": [{"logicalTopicName": m["logicalTopicName"],
                                  "physicalTopicName": m["physicalTopicName"],
                                  "readOnly": bool(m.get("readOnly")),
                                  "concentrated": bool(m.get("concentrated"))}
                                 for m in info["topicMappings"]],
                    "requestsPerSecondByApi": {
                        api: round(rate, 3) for api, rate in sorted(requests.items())
                        if rate > 0},
                    "rateShares": shares},
                "history": self.history.series(vc)}

    def snapshot_for(self, request):
        """``snapshot`` for a request of ``/admin/dashboard.json``: the
        virtual cluster is its ``vc`` query parameter, if any."""
        values = request.args.get(b"vc")
        return self.snapshot(values[0].decode("utf-8", "replace") if values else None)


_STYLE = """
:root { --head: #14213d; --accent: #fca311; --bg: #eef1f6; --card: #ffffff;
        --ink: #1d2433; --muted: #667085; --line: #d9dee8; --in: #2a9d8f;
        --out: #e76f51; --warn: #b45309; --over: #c81e1e; --bar: #8da2c8; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
       font: 14px/1.4 "Liberation Sans", "DejaVu Sans", Arial, sans-serif; }
header { background: var(--head); color: #fff; padding: 14px 24px;
         display: flex; align-items: center; justify-content: space-between; }
header h1 { margin: 0; font-size: 20px; font-weight: 600; letter-spacing: .3px; }
header h1 span { color: var(--accent); }
header a { color: inherit; text-decoration: none; }
#status { font-size: 13px; padding: 4px 10px; border-radius: 12px;
          background: #2b3a5c; }
#status.ok::before { content: "\\25CF  "; color: #55d68b; }
#status.error { background: #8a1c1c; }
main { padding: 18px 24px; }
[hidden] { display: none !important; }
.tiles { display: grid; grid-template-columns: repeat(6, 1fr); gap: 12px;
         margin-bottom: 16px; }
.tile { background: var(--card); border-radius: 8px; padding: 10px 14px;
        border-top: 4px solid var(--accent); box-shadow: 0 1px 2px #0001; }
.tile.in { border-top-color: var(--in); }
.tile.out { border-top-color: var(--out); }
.tile.warn { border-top-color: var(--warn); }
.tile.over { border-top-color: var(--over); }
.label { color: var(--muted); font-size: 12px; text-transform: uppercase;
         letter-spacing: .5px; }
.tile .value { font-size: 21px; font-weight: 600; margin-top: 2px; }
.tile .limit { color: var(--muted); font-size: 12px; }
.toolbar { display: flex; align-items: center; gap: 14px; margin-bottom: 10px; }
#search { font: inherit; padding: 6px 10px; width: 320px; border-radius: 6px;
          border: 1px solid var(--line); background: var(--card); }
#count { color: var(--muted); }
.panel { background: var(--card); border-radius: 8px; box-shadow: 0 1px 2px #0001; }
table { width: 100%; border-collapse: collapse; font-size: 12px; }
td, th { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th { color: var(--muted); font-weight: 500; white-space: nowrap; }
table.vcs th { position: sticky; top: 0; background: var(--card); cursor: pointer;
               user-select: none; box-shadow: 0 1px 0 var(--line); }
table.vcs th:hover { color: var(--ink); }
table.vcs th.sorted { color: var(--ink); font-weight: 600; }
table.vcs th.sorted::after { content: " \\25B2"; font-size: 10px; }
table.vcs th.sorted.desc::after { content: " \\25BC"; }
table.vcs td { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.vcs tbody tr:hover { background: #f4f7fd; }
td.name a { color: #203a72; font-weight: 600; text-decoration: none; }
td.name a:hover { text-decoration: underline; }
td.in { color: var(--in); }
td.out { color: var(--out); }
.warn { color: var(--warn); }
.over { color: var(--over); font-weight: 600; }
.bar { height: 4px; background: #edf0f5; border-radius: 2px; margin-top: 2px;
       overflow: hidden; }
.bar div { height: 100%; background: var(--bar); }
.warn .bar div { background: #f59e0b; }
.over .bar div { background: var(--over); }
h2 { margin: 0 0 10px; font-size: 20px; display: flex; align-items: center;
     gap: 8px; flex-wrap: wrap; }
h3 { font-size: 12px; text-transform: uppercase; color: var(--muted);
     letter-spacing: .5px; margin: 16px 0 6px; }
.back { display: inline-block; margin-bottom: 8px; color: #203a72; }
.badge { font-size: 11px; font-weight: 500; color: var(--muted); white-space: nowrap;
         border: 1px solid var(--line); border-radius: 10px; padding: 1px 8px; }
.badge.ro { color: #9a3412; border-color: #fdba74; background: #fff7ed; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr));
         gap: 14px; }
figure.plot { margin: 0; padding: 10px 12px; }
figure.plot figcaption { display: flex; justify-content: space-between;
                         font-size: 13px; margin-bottom: 4px; }
figure.plot figcaption b { font-weight: 600; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart text { font-size: 10px; fill: var(--muted); }
svg.chart text.limit { fill: var(--over); }
.chips { display: flex; flex-wrap: wrap; gap: 6px; }
.chip { background: #e8eefb; color: #203a72; border-radius: 4px;
        padding: 2px 8px; font-family: "Liberation Mono", monospace; font-size: 12px; }
.none { color: var(--muted); font-style: italic; font-size: 12px; padding: 8px; }
table.mappings { table-layout: fixed; }
table.mappings th:nth-child(-n+2) { width: 40%; }
td.mono { font-family: "Liberation Mono", monospace; overflow-wrap: anywhere; }
.apis { color: var(--muted); font-size: 12px; }
footer { color: var(--muted); font-size: 12px; padding: 0 24px 18px; }
"""

_SCRIPT = """
"use strict";
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function scaled(v, units) {
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : String(Math.round(v))) + " " + units[i];
}
function rate(v) { return scaled(v, ["B/s", "KB/s", "MB/s", "GB/s"]); }
function size(v) { return scaled(v, ["B", "KB", "MB", "GB", "TB", "PB"]); }
function count(v) { return String(Math.round(v)); }
function perSecond(v) { return (v >= 100 ? Math.round(v) : v.toFixed(1)) + "/s"; }
function held(v) { return (v >= 10 ? Math.round(v) : v.toFixed(2)) + " s/s"; }
function percent(v) { return Math.round(100 * v) + " %"; }
function duration(s) {
  return s >= 120 ? Math.round(s / 60) + " min" :
    (s >= 10 || s === Math.round(s) ? Math.round(s) : s.toFixed(1)) + " s";
}

// key, heading, the limit it goes against, format, class
const COLUMNS = [
  ["name", "virtual cluster"],
  ["connections", "connections", "connections", count],
  ["topicCount", "topics", "topics", count],
  ["partitionCount", "partitions", "partitions", count],
  ["bytesInPerSecond", "produce", "produceBytesPerSecond", rate, "in"],
  ["bytesOutPerSecond", "fetch", "fetchBytesPerSecond", rate, "out"],
  ["requestsPerSecond", "requests", "requestsPerSecond", perSecond],
  ["throttleSecondsPerSecond", "throttled", null, held],
  ["storageBytes", "storage", null, size],
  ["consumerGroups", "groups", "consumerGroups", count],
  ["peak", "of limits", null, percent],
].map(([key, label, limit, format, cls]) => ({key, label, limit, format, cls}));

// One virtual cluster's figure in a column: text, fraction of its limit, sort key.
function figure(vc, column) {
  const used = column.key === "peak" ? peak(vc) : vc[column.key];
  if (column.key === "name") return {text: used, sort: used, ratio: null};
  if (used === null || used === undefined) return {text: "-", sort: null, ratio: null};
  const limit = column.limit ? vc.limits[column.limit] : undefined;
  if (limit === undefined)
    return {text: column.format(used), sort: used, ratio: column.key === "peak" ? used : null};
  return {text: column.format(used) + " / " + column.format(limit), sort: used,
          ratio: used / Math.max(limit, 1)};
}

// The highest fraction of any of its limits a virtual cluster uses (null: none set).
function peak(vc) {
  let top = null;
  for (const column of COLUMNS) {
    const used = vc[column.key], limit = column.limit && vc.limits[column.limit];
    if (limit !== undefined && limit !== null && used !== null && used !== undefined)
      top = Math.max(top === null ? 0 : top, used / Math.max(limit, 1));
  }
  return top;
}

function level(ratio) {
  return ratio === null ? "" : ratio >= 1 ? "over" : ratio >= 0.8 ? "warn" : "";
}

// Fills a cell with a figure; a fraction of a limit gets a bar.
function fill(cell, fig, cls) {
  cell.className = [cls, level(fig.ratio)].filter(Boolean).join(" ");
  cell.replaceChildren(el("div", null, fig.text));
  if (fig.ratio !== null) {
    const bar = el("div", "bar"), inner = el("div");
    inner.style.width = Math.min(100, 100 * fig.ratio).toFixed(1) + "%";
    bar.append(inner);
    cell.append(bar);
  }
}

// --- the view: the URL's fragment, #sort=...&desc=1&q=... or #vc=<name>
const view = {vc: null, sort: "name", desc: false, q: ""};
let listHash = "";

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  view.vc = params.get("vc");
  if (view.vc === null) {
    const sort = params.get("sort");
    view.sort = COLUMNS.some(c => c.key === sort) ? sort : "name";
    view.desc = params.get("desc") === "1";
    view.q = params.get("q") || "";
    listHash = location.hash;
  }
}

function writeHash() {
  const params = new URLSearchParams();
  if (view.sort !== "name") params.set("sort", view.sort);
  if (view.desc) params.set("desc", "1");
  if (view.q) params.set("q", view.q);
  listHash = params.toString() ? "#" + params : "";
  history.replaceState(null, "", listHash || location.pathname + location.search);
}

// --- the table: rows kept by name, a cell touched only when its text changes
const rows = new Map();

function buildHead() {
  const head = document.getElementById("head");
  for (const column of COLUMNS) {
    const th = el("th", null, column.label);
    th.dataset.key = column.key;
    th.addEventListener("click", () => {
      if (view.sort === column.key) view.desc = !view.desc;
      else { view.sort = column.key; view.desc = column.key !== "name"; }
      writeHash();
      arrange();
    });
    head.append(th);
  }
  const search = document.getElementById("search");
  search.value = view.q;
  search.addEventListener("input", () => { view.q = search.value; writeHash(); arrange(); });
}

function updateRow(vc) {
  let row = rows.get(vc.name);
  if (!row) {
    const tr = el("tr");
    tr.dataset.vcluster = vc.name;
    const cells = COLUMNS.map(() => el("td"));
    const link = el("a", null, vc.name);
    link.href = "#vc=" + encodeURIComponent(vc.name);
    cells[0].className = "name";
    cells[0].append(link);
    tr.append(...cells);
    row = {name: vc.name, lower: vc.name.toLowerCase(), tr, cells,
           shown: COLUMNS.map(() => null), sort: []};
    rows.set(vc.name, row);
  }
  COLUMNS.forEach((column, i) => {
    const fig = figure(vc, column);
    row.sort[i] = fig.sort;
    if (i === 0) return;
    const key = fig.text + "|" + level(fig.ratio) + "|" + fig.ratio;
    if (row.shown[i] !== key) { row.shown[i] = key; fill(row.cells[i], fig, column.cls); }
  });
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  return typeof a === "string" ? a.localeCompare(b) : a - b;
}

// Filter by the search, sort by the column, and move rows only if the order changed.
function arrange() {
  const index = Math.max(0, COLUMNS.findIndex(c => c.key === view.sort));
  const q = view.q.toLowerCase(), sign = view.desc ? -1 : 1;
  const shown = [...rows.values()].filter(r => r.lower.includes(q)).sort(
    (a, b) => sign * compare(a.sort[index], b.sort[index]) || compare(a.name, b.name));
  const body = document.getElementById("rows");
  const current = body.children;
  if (current.length !== shown.length || shown.some((r, i) => current[i] !== r.tr))
    body.replaceChildren(...shown.map(r => r.tr));
  document.getElementById("count").textContent =
    shown.length + " of " + rows.size + " virtual clusters";
  document.getElementById("empty").hidden = shown.length > 0;
  for (const th of document.getElementById("head").children) {
    const sorted = th.dataset.key === view.sort;
    th.classList.toggle("sorted", sorted);
    th.classList.toggle("desc", sorted && view.desc);
  }
}

function tile(label, value, limitText, cls) {
  const box = el("div", "tile" + (cls ? " " + cls : ""));
  box.append(el("div", "label", label), el("div", "value", value));
  if (limitText) box.append(el("div", "limit", limitText));
  return box;
}

function renderList(snap) {
  const t = snap.totals;
  document.getElementById("tiles").replaceChildren(
    tile("virtual clusters", t.vclusters), tile("open connections", t.connections),
    tile("produce", rate(t.bytesInPerSecond), null, "in"),
    tile("fetch", rate(t.bytesOutPerSecond), null, "out"),
    tile("requests", perSecond(t.requestsPerSecond)),
    tile("throttled", held(t.throttleSecondsPerSecond)));
  const seen = new Set();
  for (const vc of snap.vclusters) { seen.add(vc.name); updateRow(vc); }
  for (const name of [...rows.keys()]) if (!seen.has(name)) rows.delete(name);
  arrange();
  const other = document.getElementById("other");
  other.hidden = !snap.other.length;
  document.getElementById("other-rows").replaceChildren(...snap.other.map(entry => {
    const tr = el("tr");
    tr.append(el("td", null, entry.name), el("td", null, entry.connections),
              el("td", "in", rate(entry.bytesInPerSecond)),
              el("td", "out", rate(entry.bytesOutPerSecond)),
              el("td", null, perSecond(entry.requestsPerSecond)));
    return tr;
  }));
}

// --- one virtual cluster's page: its figures, plots over time, topics, mappings

// key in the history, title, the limit drawn, format, colour
const PLOTS = [
  ["bytesInPerSecond", "produce", "produceBytesPerSecond", rate, "#2a9d8f"],
  ["bytesOutPerSecond", "fetch", "fetchBytesPerSecond", rate, "#e76f51"],
  ["connections", "connections", "connections", count, "#3559a8"],
  ["throttleSecondsPerSecond", "throttled", null, held, "#c81e1e"],
  ["requestsPerSecond", "requests", "requestsPerSecond", perSecond, "#7c5cc4"],
  ["storageBytes", "storage", null, size, "#8a6d3b"],
].map(([key, label, limit, format, colour]) => ({key, label, limit, format, colour}));

function chart(times, values, limit, format, colour) {
  const W = 560, H = 170, L = 70, R = 12, T = 10, B = 20;
  const box = svg("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`});
  const known = values.filter(v => v !== null);
  let top = known.reduce((a, b) => Math.max(a, b), limit === undefined ? 0 : limit);
  top = top > 0 ? top * 1.1 : 1;
  const t0 = times[0], t1 = times[times.length - 1];
  const x = t => L + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - L - R);
  const y = v => T + (1 - v / top) * (H - T - B);
  for (const f of [0, 0.5, 1]) {
    box.append(svg("line", {x1: L, x2: W - R, y1: y(top * f), y2: y(top * f),
                            stroke: "#e3e7ef"}),
               svg("text", {x: L - 6, y: y(top * f) + 3, "text-anchor": "end"},
                   format(top * f)));
  }
  box.append(svg("text", {x: L, y: H - 4}, "-" + duration(t1 - t0)),
             svg("text", {x: W - R, y: H - 4, "text-anchor": "end"}, "now"));
  let segment = [];
  const flush = () => {
    if (segment.length)
      box.append(svg("polyline", {points: segment.join(" "), fill: "none",
                                  stroke: colour, "stroke-width": 2,
                                  "stroke-linejoin": "round"}));
    if (segment.length === 1) {
      const [cx, cy] = segment[0].split(",");
      box.append(svg("circle", {cx, cy, r: 2.5, fill: colour}));
    }
    segment = [];
  };
  values.forEach((v, i) => {
    if (v === null) flush();
    else segment.push(x(times[i]).toFixed(1) + "," + y(v).toFixed(1));
  });
  flush();
  if (limit !== undefined) {
    box.append(svg("line", {class: "limit", x1: L, x2: W - R, y1: y(limit), y2: y(limit),
                            stroke: "#c81e1e", "stroke-dasharray": "6 4"}),
               svg("text", {class: "limit", x: W - R, y: y(limit) - 4,
                            "text-anchor": "end"}, "limit " + format(limit)));
  }
  return box;
}

function plots(vc, history) {
  const grid = el("div", "plots");
  for (const p of PLOTS) {
    const values = history[p.key];
    const fig = el("figure", "plot panel");
    fig.dataset.series = p.key;
    const caption = el("figcaption");
    const now = vc[p.key];
    caption.append(el("b", null, p.label),
                   el("span", null, now === null || now === undefined ? "-" : p.format(now)));
    fig.append(caption);
    const limit = p.limit ? vc.limits[p.limit] : undefined;
    if (values.some(v => v !== null)) fig.append(chart(history.time, values, limit,
                                                       p.format, p.colour));
    else fig.append(el("div", "none", p.key === "storageBytes" ?
                       "storage is not reported for this virtual cluster" :
                       "no points yet"));
    grid.append(fig);
  }
  return grid;
}

function renderTenant(snap) {
  const page = document.getElementById("tenant");
  const vc = snap.vcluster, history = snap.history;
  const title = el("h2", null, vc.name);
  title.append(el("span", "badge", "prefix " + vc.prefix),
               el("span", "badge", vc.serviceAccounts.length +
                  (vc.serviceAccounts.length === 1 ? " account" : " accounts")));
  const shares = Object.entries(vc.rateShares).map(
    ([k, share]) => k.replace("PerSecond", "") + " " + percent(share));
  if (shares.length)
    title.append(el("span", "badge", "this gateway's share: " + shares.join(", ")));
  const tiles = el("div", "tiles");
  for (const column of COLUMNS.slice(1)) {
    const fig = figure(vc, column);
    const [used, limit] = fig.text.split(" / ");
    tiles.append(tile(column.label, used, limit && "limit " + limit, level(fig.ratio)));
  }
  const apis = Object.entries(vc.requestsPerSecondByApi).sort((a, b) => b[1] - a[1])
    .map(([api, r]) => api + " " + perSecond(r)).join("  \\u00b7  ");
  const topics = el("div", "chips topics");
  for (const t of vc.topics) topics.append(el("span", "chip", t));
  const mappings = el("table", "mappings");
  const head = el("tr");
  head.append(el("th", null, "logical"), el("th", null, "physical"), el("th"));
  mappings.append(head);
  for (const m of vc.mappings) {
    const row = el("tr"), flags = el("td");
    if (m.readOnly) flags.append(el("span", "badge ro", "read-only"));
    if (m.concentrated) flags.append(el("span", "badge", "concentrated"));
    row.append(el("td", "mono", m.logicalTopicName), el("td", "mono", m.physicalTopicName),
               flags);
    mappings.append(row);
  }
  page.replaceChildren(
    backLink(), title, tiles,
    el("h3", null, "over the last " + duration(history.time.length > 1 ?
       history.time[history.time.length - 1] - history.time[0] : 0) +
       " (a point every " + duration(history.every) + ")"),
    plots(vc, history),
    el("h3", null, "requests by API"), el("div", "apis", apis || "no requests"),
    el("h3", null, "topics (" + vc.topics.length + ")"),
    vc.topics.length ? topics : el("div", "none", "no topics"),
    el("h3", null, "mappings (" + vc.mappings.length + ")"),
    vc.mappings.length ? mappings : el("div", "none", "no mappings"));
}

function backLink() {
  const back = el("a", "back", "\\u2190 all virtual clusters");
  back.href = listHash || "#";
  return back;
}

function renderMissing(name, text) {
  document.getElementById("tenant").replaceChildren(
    backLink(), el("h2", null, name), el("div", "none", text));
}

function show() {
  document.getElementById("list").hidden = view.vc !== null;
  document.getElementById("tenant").hidden = view.vc === null;
  document.title = view.vc === null ? "vkafka dashboard" : view.vc + " \\u00b7 vkafka";
}

function status(text, ok) {
  const node = document.getElementById("status");
  node.textContent = text;
  node.className = ok ? "ok" : "error";
}

// --- polling: the table's snapshot, or one virtual cluster's (?vc=)
let timer = null, generation = 0;

async function poll() {
  clearTimeout(timer);
  const mine = ++generation, vc = view.vc;
  try {
    // Relative to this page; credentials stay in the browser's auth cache.
    const url = new URL("dashboard.json", location.href);
    url.username = url.password = url.hash = "";
    if (vc !== null) url.searchParams.set("vc", vc);
    const response = await fetch(url, {cache: "no-store", credentials: "same-origin"});
    if (mine !== generation) return;
    if (vc !== null && response.status === 404)
      renderMissing(vc, "no virtual cluster of that name");
    else {
      if (!response.ok) throw new Error("HTTP " + response.status);
      const snap = await response.json();
      if (mine !== generation) return;
      if (vc === null) renderList(snap);
      else if (snap.vcluster) renderTenant(snap);
      else renderMissing(vc, "this gateway serves no per-tenant history");
      document.getElementById("window").textContent = snap.rateSeconds === null ?
        "rates: waiting for a second sample" :
        "rates over the last " + snap.rateSeconds.toFixed(1) + " s";
    }
    status("updated " + new Date().toLocaleTimeString(), true);
  } catch (e) {
    if (mine === generation) status("cannot load the snapshot: " + e.message, false);
  } finally {
    if (mine === generation) timer = setTimeout(poll, POLL_MS);
  }
}

window.addEventListener("hashchange", () => {
  const before = view.vc;
  readHash();
  if (view.vc === null) {
    document.getElementById("search").value = view.q;
    arrange();
  } else if (view.vc !== before) {
    document.getElementById("tenant").replaceChildren(el("div", "none", "loading\\u2026"));
  }
  show();
  if (view.vc !== before) poll();
});

readHash();
buildHead();
show();
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
<header><h1><a href="#">vkafka <span>&middot;</span> operator dashboard</a></h1>
<div id="status">loading&hellip;</div></header>
<main>
<section id="list">
<div class="tiles" id="tiles"></div>
<div class="toolbar"><input id="search" type="search" autocomplete="off"
 placeholder="search virtual clusters by name" aria-label="search by name">
<span id="count"></span></div>
<div class="panel"><table class="vcs"><thead><tr id="head"></tr></thead>
<tbody id="rows"></tbody></table>
<div class="none" id="empty" hidden>no virtual cluster matches</div></div>
<div id="other" hidden><h3>outside virtual clusters</h3>
<div class="panel"><table><thead><tr><th>connection label</th><th>connections</th>
<th>produce</th><th>fetch</th><th>requests</th></tr></thead>
<tbody id="other-rows"></tbody></table></div></div>
</section>
<section id="tenant" hidden></section>
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
