# -*- test-case-name: tests.test_metrics -*-
"""Prometheus metrics (prometheus_client), served as text at ``/metrics``.

One registry per gateway (not the library's global one), so tests and several
gateways in one process never mix series.  The series updated per request and
response are plain numbers (``Tally``, ``Timings``) that Prometheus reads when
scraped: a prometheus_client update takes a lock and checks its arguments, ~2 us,
four times per request and response.  Everything runs on the reactor thread,
scrapes included, so no lock is needed.  Connections cache their labelled
children.  What each series counts, precisely, is in docs/operations.md.
"""

import json
from bisect import bisect_left

from kio.schema.errors import ErrorCode
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString
from twisted.web.resource import Resource

PASSTHROUGH = "-"
"""The ``vcluster`` label of connections outside any virtual cluster."""

LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)


class Count:
    """One labelled counter's value; the hot path adds to ``value`` directly."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0

    def inc(self, amount=1):
        self.value += amount


class Tally:
    """A labelled counter family in plain numbers, collected on scrape."""

    child = Count

    def __init__(self, name, documentation, labelnames, registry):
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._children = {}
        registry.register(self)

    def labels(self, *values):
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.child()
        return child

    def totals(self, *positions):
        """The children's values summed by their labels at *positions*:
        ``{(label, ...): sum}`` (the usage ledger reads them, vkafka/usage/)."""
        out = {}
        for values, child in list(self._children.items()):
            key = tuple(values[i] for i in positions)
            out[key] = out.get(key, 0) + child.value
        return out

    def describe(self):
        return [CounterMetricFamily(self.name, self.documentation,
                                    labels=self.labelnames)]

    def collect(self):
        family = self.describe()[0]
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        return [family]


class Timing:
    """One labelled histogram's bucket counts (not cumulative) and sum."""

    __slots__ = ("counts", "sum")

    def __init__(self):
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds):
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: bound included
        self.sum += seconds


class Timings(Tally):
    """A labelled histogram family (LATENCY_BUCKETS) in plain numbers."""

    child = Timing

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation,
                                      labels=self.labelnames)]

    def collect(self):
        family = self.describe()[0]
        bounds = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]
        for values, child in list(self._children.items()):
            total, buckets = 0, []
            for bound, count in zip(bounds, child.counts):
                total += count
                buckets.append((bound, total))
            family.add_metric(values, buckets, child.sum)
        return [family]


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Tally("vkafka_requests", "Requests forwarded to brokers",
                              ["vcluster", "api"], r)
        self.bytes = Tally("vkafka_bytes", "Kafka frame bytes through the gateway "
                           "(in: from clients, out: to clients)",
                           ["vcluster", "direction"], r)
        self.records = Tally("vkafka_records", "Records in the record batches of "
                             "Produce requests (in) and Fetch responses (out)",
                             ["vcluster", "direction"], r)
        self.responses = Tally("vkafka_responses", "Broker responses sent to "
                               "clients, by the first error code in them",
                               ["vcluster", "api", "error"], r)
        self.streamed = Tally("vkafka_streamed_responses", "Large responses "
                              "forwarded while they arrived (cut-through Fetch)",
                              ["vcluster"], r)
        self.latency = Timings("vkafka_request_latency_seconds",
                               "Time from forwarding a request to its response "
                               "reaching the client", ["api"], r)
        self.connections = Gauge("vkafka_connections", "Open client connections",
                                 ["vcluster"], registry=r)
        self.auth_failures = Counter("vkafka_authentication_failures",
                                     "Refused SASL authentications", registry=r)
        self.refused = Counter("vkafka_connections_refused",
                               "Connections refused by the per-address limit",
                               registry=r)
        self.state_entries = Gauge("vkafka_state_entries",
                                   "Entries in the shared gateway state", registry=r)
        self.state_lag = Gauge("vkafka_state_lag_records",
                               "Records of the state topic not yet applied here",
                               registry=r)
        self.cluster_nodes = Gauge("vkafka_gateway_cluster_nodes",
                                   "Live gateways of this gateway's cluster, itself "
                                   "included (0: not in a cluster)", registry=r)
        self.throttled = Tally("vkafka_throttle_seconds", "Seconds clients were "
                               "throttled by their virtual cluster's rates or "
                               "loop share",
                               ["vcluster"], r)
        self.rate_share = Gauge("vkafka_rate_share", "This gateway's share of a "
                                "virtual cluster's rate limit", ["vcluster", "rate"],
                                registry=r)
        self.usage_topics = Gauge("vkafka_usage_topics", "Topics of the virtual "
                                  "cluster (cluster-wide, this gateway's last "
                                  "inventory)", ["vcluster"], registry=r)
        self.usage_partitions = Gauge("vkafka_usage_partitions", "Partitions of the "
                                      "virtual cluster's topics", ["vcluster"],
                                      registry=r)
        self.usage_groups = Gauge("vkafka_usage_consumer_groups", "Consumer groups "
                                  "of the virtual cluster", ["vcluster"], registry=r)
        self.usage_transactions = Gauge(
            "vkafka_usage_transactional_ids", "Transactional ids of the virtual "
            "cluster", ["vcluster"], registry=r)
        self.usage_storage = Gauge("vkafka_usage_storage_bytes", "Bytes the brokers "
                                   "store for the virtual cluster's topics (replicas: "
                                   "all, or once: the largest replica of each "
                                   "partition)", ["vcluster", "replicas"], registry=r)
        self.rate_fallback = Gauge("vkafka_rate_share_fallback", "1 when this gateway "
                                   "cannot publish its rates and takes an equal "
                                   "share of each limit", registry=r)

    def for_connection(self, vcluster):
        return ConnectionMetrics(self, vcluster)

    def text(self):
        return generate_latest(self.registry)


class ConnectionMetrics:
    """The labelled children one connection uses, looked up once."""

    __slots__ = ("metrics", "vcluster", "bytes_in", "bytes_out", "records_in",
                 "records_out", "streamed", "_requests", "_latency", "_responses")

    def __init__(self, metrics, vcluster):
        self.metrics = metrics
        self.vcluster = vcluster
        self.bytes_in = metrics.bytes.labels(vcluster, "in")
        self.bytes_out = metrics.bytes.labels(vcluster, "out")
        self.records_in = metrics.records.labels(vcluster, "in")
        self.records_out = metrics.records.labels(vcluster, "out")
        self.streamed = metrics.streamed.labels(vcluster)
        self._requests = {}
        self._latency = {}
        self._responses = {}

    def request(self, api_name, size, records=0):
        (self._requests.get(api_name) or self._request_child(api_name)).value += 1
        self.bytes_in.value += size
        if records:
            self.records_in.value += records

    def lane_counters(self, api_name):
        """The children the compiled lane (proxy/_lane.c) counts *api_name*'s
        requests and answers in, as ``request`` and ``lane_responses`` do:
        (requests, bytes in, records in, latency, bytes out, answers without
        an error)."""
        return (self._requests.get(api_name) or self._request_child(api_name),
                self.bytes_in, self.records_in,
                self._latency.get(api_name) or self._latency_child(api_name),
                self.bytes_out, self.responses_for(api_name, 0))

    def responses_for(self, api_name, error):
        """The answers counter's child for *api_name* and *error*."""
        return self._responses.get((api_name, error)) or \
            self._response_child(api_name, error)

    def lane_responses(self, owed, answers, now):
        """``response`` for each answer the produce lane took (filters/lane.py)
        to the requests *owed* (Pendings of one rule, in turn), at *now*: one
        call a read, its loop inlined (three calls an answer were ~4% of a
        lane request's instructions); tests/test_lane.py holds the counts
        equal to ``response``'s."""
        api_name = owed[0].rule.name
        latency = self._latency.get(api_name) or self._latency_child(api_name)
        counts, size, counted = latency.counts, 0, self._responses
        for pending, (frame, error, _) in zip(owed, answers):
            size += len(frame) + 4
            seconds = now - pending.sent
            counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            latency.sum += seconds
            (counted.get((api_name, error)) or
             self._response_child(api_name, error)).value += 1
        self.bytes_out.value += size

    def response(self, api_name, size, seconds, error=None, records=0):
        """*error*: the response's first error code (0: none), or None when the
        gateway forwarded it without reading it (then it is not counted)."""
        self.bytes_out.value += size
        (self._latency.get(api_name) or self._latency_child(api_name)).observe(seconds)
        if records:
            self.records_out.value += records
        if error is not None:
            (self._responses.get((api_name, error)) or
             self._response_child(api_name, error)).value += 1

    def _request_child(self, api_name):
        """The requests counter's child for *api_name*, looked up once."""
        child = self._requests[api_name] = self.metrics.requests.labels(
            self.vcluster, api_name)
        return child

    def _latency_child(self, api_name):
        """The latency histogram's child for *api_name*, looked up once."""
        child = self._latency[api_name] = self.metrics.latency.labels(api_name)
        return child

    def _response_child(self, api_name, error):
        """The answers counter's child for *api_name* and *error*, looked up once."""
        child = self._responses[(api_name, error)] = self.metrics.responses.labels(
            self.vcluster, api_name, error_name(error))
        return child

def error_name(code):
    """kio's name of a Kafka error code (``none``, ``not_leader_or_follower``...);
    codes this Kafka version does not define are ``unknown``, so the label's
    values stay a fixed, small set."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return "unknown"


TEXT_FORMAT = b"text/plain; version=0.0.4; charset=utf-8"


def by_worker(request):
    """Whether ``/metrics`` was asked ``?by=worker`` (a ``worker`` label on
    every series: the index of the worker that counted it, ``gone`` for what
    workers that died left, ``supervisor`` for the supervisor's own); None
    when the query names anything else (answer ``refused``)."""
    asked = request.args.get(b"by")
    if asked is None:
        return False
    return True if asked == [b"worker"] else None


def refused(request):
    """The 400 for a ``by`` other than ``worker``, with a JSON body."""
    request.setResponseCode(400)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps({
        "error": "bad_request",
        "message": "by: only 'worker' (a worker label on every series); without "
                   "it, every series is the gateway's total"}).encode()


class Labelled:
    """A collector's families with one more label on every sample."""

    def __init__(self, collector, name, value):
        self.collector, self.name, self.value = collector, name, value

    def collect(self):
        from prometheus_client.metrics_core import Metric
        for family in self.collector.collect():
            out = Metric(family.name, family.documentation, family.type)
            for s in family.samples:
                out.add_sample(s.name, {**s.labels, self.name: self.value}, s.value,
                               s.timestamp, s.exemplar)
            yield out


class MetricsResource(Resource):
    """``/metrics`` of a gateway of one process (``--workers 1``); asked
    ``?by=worker``, its series say ``worker="0"``, as a supervisor's say
    which worker counted them (vkafka/workers.py)."""

    isLeaf = True

    def __init__(self, metrics, refresh=None):
        super().__init__()
        self.metrics = metrics
        self.refresh = refresh

    def render_GET(self, request):
        labelled = by_worker(request)
        if labelled is None:
            return refused(request)
        if self.refresh is not None:
            self.refresh()
        request.setHeader(b"Content-Type", TEXT_FORMAT)
        if labelled:
            return generate_latest(Labelled(self.metrics.registry, "worker", "0"))
        return self.metrics.text()
