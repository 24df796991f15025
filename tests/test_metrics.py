"""Prometheus metrics: per-tenant series after traffic, parsed as Prometheus does."""

from prometheus_client.parser import text_string_to_metric_families

from vkafka.metrics import Metrics

from .kafka_messages import metadata_response, response_frame
from .test_splice import BROKERS
from .test_tenant_splice import TenantSpliceBase, metadata_for


def samples(metrics):
    out = {}
    for family in text_string_to_metric_families(metrics.text().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class MetricsTests(TenantSpliceBase):
    def setUp(self):
        self.metrics = Metrics()
        super().setUp()

    def test_per_tenant_series(self):
        """Requests, bytes, latency and connections are labelled by virtual cluster."""
        self.gateway.metrics = self.metrics
        # reconnect so the connection picks up the metrics
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport
        self.client = self.gateway.factory_for_port(6969).buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 5))
        self.client.makeConnection(self.transport)
        _, self.broker, self.broker_transport = self.brokers[-1]
        self.assertEqual(samples(self.metrics)[
            ("vkafka_connections", (("vcluster", "unauthenticated"),))], 1)
        self.login("london")
        self.client.dataReceived(metadata_for(["t"], 3))
        self.broker.dataReceived(response_frame(3, metadata_response(BROKERS)))
        found = samples(self.metrics)
        self.assertEqual(found[("vkafka_requests_total",
                                (("api", "Metadata"), ("vcluster", "london")))], 1)
        self.assertGreater(found[("vkafka_bytes_total",
                                  (("direction", "in"), ("vcluster", "london")))], 0)
        self.assertGreater(found[("vkafka_bytes_total",
                                  (("direction", "out"), ("vcluster", "london")))], 0)
        self.assertEqual(found[("vkafka_request_latency_seconds_count",
                                (("api", "Metadata"),))], 1)
        self.assertEqual(found[("vkafka_connections", (("vcluster", "london"),))], 1)
        self.assertEqual(found[("vkafka_connections",
                                (("vcluster", "unauthenticated"),))], 0)

    def test_auth_failures_counted(self):
        """A refused token increments the authentication failure counter."""
        from .test_tenant_splice import authenticate, handshake
        self.gateway.metrics = self.metrics
        self.client.dataReceived(handshake())
        self.client.dataReceived(authenticate("sa", "garbage"))
        self.assertEqual(samples(self.metrics)[
            ("vkafka_authentication_failures_total", ())], 1)
