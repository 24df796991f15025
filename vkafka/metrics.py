# -*- test-case-name: tests.test_metrics -*-
"""Prometheus metrics (prometheus_client), served as text at ``/metrics``.

One registry per gateway (not the library's global one), so tests and several
gateways in one process never mix series.  Connections cache their labelled
children, so the hot path pays one increment per frame.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from twisted.web.resource import Resource

PASSTHROUGH = "-"
"""The ``vcluster`` label of connections outside any virtual cluster."""


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("vkafka_requests", "Requests forwarded to brokers",
                                ["vcluster", "api"], registry=r)
        self.bytes = Counter("vkafka_bytes", "Kafka frame bytes through the gateway "
                             "(in: from clients, out: to clients)",
                             ["vcluster", "direction"], registry=r)
        self.latency = Histogram("vkafka_request_latency_seconds",
                                 "Time from forwarding a request to its response "
                                 "reaching the client", ["api"], registry=r,
                                 buckets=(.0005, .001, .0025, .005, .01, .025, .05,
                                          .1, .25, .5, 1, 2.5, 5, 10))
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

    def for_connection(self, vcluster):
        return ConnectionMetrics(self, vcluster)

    def text(self):
        return generate_latest(self.registry)


class ConnectionMetrics:
    """The labelled children one connection uses, looked up once."""

    __slots__ = ("metrics", "vcluster", "bytes_in", "bytes_out", "_requests",
                 "_latency")

    def __init__(self, metrics, vcluster):
        self.metrics = metrics
        self.vcluster = vcluster
        self.bytes_in = metrics.bytes.labels(vcluster, "in")
        self.bytes_out = metrics.bytes.labels(vcluster, "out")
        self._requests = {}
        self._latency = {}

    def request(self, api_name, size):
        child = self._requests.get(api_name)
        if child is None:
            child = self._requests[api_name] = self.metrics.requests.labels(
                self.vcluster, api_name)
        child.inc()
        self.bytes_in.inc(size)

    def response(self, api_name, size, seconds):
        self.bytes_out.inc(size)
        child = self._latency.get(api_name)
        if child is None:
            child = self._latency[api_name] = self.metrics.latency.labels(api_name)
        child.observe(seconds)


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, metrics, refresh=None):
        super().__init__()
        self.metrics = metrics
        self.refresh = refresh

    def render_GET(self, request):
        if self.refresh is not None:
            self.refresh()
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        return self.metrics.text()
