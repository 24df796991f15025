"""Prometheus metrics: per-tenant series after traffic, parsed as Prometheus does."""

import struct
import uuid
from dataclasses import replace

from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.response import MetadataResponseTopic
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from vkafka.metrics import Metrics, error_name
from vkafka.protocol.framing import FrameDecoder, frame
from vkafka.proxy.gateway import Gateway
from vkafka.proxy.topology import Topology
from vkafka.tenancy.rules import passthrough_rules

from .kafka_messages import (
    NO_THROTTLE, fetch_request, metadata_response, produce_records, record_batch,
    request_frame, response_frame)
from .test_fastpath import fetch_response
from .test_splice import BROKERS, FakeEndpoint
from .test_tenant_splice import TenantSpliceBase, metadata_for


def samples(metrics):
    out = {}
    for family in text_string_to_metric_families(metrics.text().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def fetch_frame(correlation_id, version, **kw):
    """A Fetch response frame (see test_fastpath.fetch_response)."""
    header = struct.pack(">i", correlation_id) + (b"\x00" if version >= 12 else b"")
    return frame(header + fetch_response(version, **kw))


def produce_response(correlation_id, topic, error):
    """A Produce v9 response: partition 0 of *topic* with *error*."""
    from kio.schema.produce.v9 import response as m
    from kio.static.primitive import i32, i64
    return response_frame(correlation_id, m.ProduceResponse(
        throttle_time=NO_THROTTLE, responses=(m.TopicProduceResponse(
            name=topic, partition_responses=(m.PartitionProduceResponse(
                index=i32(0), error_code=ErrorCode(error), base_offset=i64(-1),
                record_errors=()),)),)))


BATCHES = record_batch(3) + record_batch(4)


class MetricsTests(TenantSpliceBase):
    def setUp(self):
        self.metrics = Metrics()
        super().setUp()
        self.gateway.metrics = self.metrics
        # reconnect so the connection picks up the metrics
        self.client = self.gateway.factory_for_port(6969).buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 5))
        self.client.makeConnection(self.transport)
        self.brokers.clear()  # the broker side opens after login (base properties)

    def test_per_tenant_series(self):
        """Requests, bytes, latency and connections are labelled by virtual cluster."""
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

    def test_records_and_responses(self):
        """Records in (Produce) and out (Fetch, decoded or passed as bytes, a
        partial last batch left out), and responses by API and first error."""
        topic_id = uuid.uuid4()
        self.topology.topic_ids[topic_id] = "londont"
        self.login("london")
        self.client.dataReceived(request_frame(produce_records("t", BATCHES), 9, 3))
        self.broker.dataReceived(produce_response(3, "londont",
                                                  ErrorCode.not_leader_or_follower))
        # v12: by name, decoded and rewritten; v17: by id, passed as bytes
        self.client.dataReceived(request_frame(fetch_request("t", version=12), 12, 4))
        self.broker.dataReceived(fetch_frame(4, 12, topic="londont",
                                             records=BATCHES + record_batch(9)[:-1]))
        self.client.dataReceived(request_frame(fetch_request(topic_id, version=17),
                                               17, 5))
        self.broker.dataReceived(fetch_frame(5, 17, topic=topic_id, errors=(0, 1)))
        self.client.dataReceived(metadata_for(["t"], 6))
        self.broker.dataReceived(response_frame(6, replace(
            metadata_response(BROKERS), topics=(MetadataResponseTopic(
                error_code=ErrorCode.unknown_topic_or_partition, name="londont",
                topic_id=None, partitions=()),))))
        self.assertEqual(len(self.responses()), 4)
        found = samples(self.metrics)

        def value(name, **labels):
            return found.get((name, tuple(sorted(labels.items()))))
        # produce: 3 + 4; fetch v12: 2 topics x 2 partitions x 7; v17: the same
        self.assertEqual(value("vkafka_records_total", vcluster="london",
                               direction="in"), 7)
        self.assertEqual(value("vkafka_records_total", vcluster="london",
                               direction="out"), 2 * 28)
        responses = {(k[1][0][1], k[1][1][1]): v for k, v in found.items()
                     if k[0] == "vkafka_responses_total"}
        self.assertEqual(responses, {
            ("Produce", "not_leader_or_follower"): 1,
            ("Fetch", "none"): 1,
            ("Fetch", "offset_out_of_range"): 1,
            ("Metadata", "unknown_topic_or_partition"): 1})
        self.assertEqual(value("vkafka_responses_total", vcluster="london",
                               api="Fetch", error="offset_out_of_range"), 1)

    def test_error_names_bounded(self):
        """Error labels are kio's names; codes Kafka does not define are one label."""
        self.assertEqual([error_name(c) for c in (0, 6, -1, 9999, 1234)],
                         ["none", "not_leader_or_follower", "unknown_server_error",
                          "unknown", "unknown"])

    def test_auth_failures_counted(self):
        """A refused token increments the authentication failure counter."""
        from .test_tenant_splice import authenticate, handshake
        self.client.dataReceived(handshake())
        self.client.dataReceived(authenticate("sa", "garbage"))
        self.assertEqual(samples(self.metrics)[
            ("vkafka_authentication_failures_total", ())], 1)


class PassthroughMetricsTests(unittest.TestCase):
    def test_records_counted_in_passthrough(self):
        """Without virtual clusters records are counted too (label "-"); a
        Produce v9 response, forwarded as bytes, is counted from its scan."""
        self.attempts, self.refused, self.brokers = [], set(), []
        topology = Topology([("kafka1", 9092)], "gw", 6969, 3, 1)
        topology.learn(BROKERS)
        metrics = Metrics()
        gateway = Gateway(MemoryReactorClock(), topology, passthrough_rules(),
                          endpoint_factory=lambda r, h, p: FakeEndpoint(self, h, p),
                          metrics=metrics)
        client = gateway.factory_for_port(6969).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 5))
        client.makeConnection(transport)
        _, broker, _ = self.brokers[-1]
        client.dataReceived(request_frame(produce_records("t", BATCHES, 1), 9, 3))
        broker.dataReceived(produce_response(3, "t", ErrorCode.none))
        client.dataReceived(request_frame(fetch_request("t", version=11), 11, 4))
        broker.dataReceived(fetch_frame(4, 11, errors=(0,)))
        self.assertEqual(len(FrameDecoder().feed(transport.value())), 2)
        found = samples(metrics)
        self.assertEqual(found[("vkafka_records_total",
                                (("direction", "in"), ("vcluster", "-")))], 7)
        self.assertEqual(found[("vkafka_records_total",
                                (("direction", "out"), ("vcluster", "-")))], 14)
        self.assertEqual({k: v for k, v in found.items()
                          if k[0] == "vkafka_responses_total"},
                         {("vkafka_responses_total", (("api", api),
                                                      ("error", "none"),
                                                      ("vcluster", "-"))): 1
                          for api in ("Produce", "Fetch")})


class PlainSeriesTests(unittest.TestCase):
    """The per-request series are plain numbers (metrics.Tally, Timings) that read
    on scrape as prometheus_client's Counter and Histogram would."""

    def test_histogram_buckets_are_le(self):
        metrics = Metrics()
        timing = metrics.latency.labels("Produce")
        for seconds in (0.0005, 0.0007, 0.001, 11.0):
            timing.observe(seconds)
        found = samples(metrics)

        def bucket(le):
            return found[("vkafka_request_latency_seconds_bucket",
                          (("api", "Produce"), ("le", le)))]
        self.assertEqual(bucket("0.0005"), 1)  # a value on a bound counts in it
        self.assertEqual(bucket("0.001"), 3)
        self.assertEqual(bucket("10.0"), 3)
        self.assertEqual(bucket("+Inf"), 4)
        self.assertEqual(found[("vkafka_request_latency_seconds_count",
                                (("api", "Produce"),))], 4)
        self.assertAlmostEqual(found[("vkafka_request_latency_seconds_sum",
                                      (("api", "Produce"),))], 11.0022)

    def test_counters_add_up_per_label(self):
        metrics = Metrics()
        london = metrics.for_connection("london")
        for _ in range(3):
            london.request("Produce", 100, records=2)
        metrics.for_connection("london").response("Produce", 10, 0.001, error=6)
        found = samples(metrics)
        self.assertEqual(found[("vkafka_requests_total",
                                (("api", "Produce"), ("vcluster", "london")))], 3)
        self.assertEqual(found[("vkafka_bytes_total",
                                (("direction", "in"), ("vcluster", "london")))], 300)
        self.assertEqual(found[("vkafka_records_total",
                                (("direction", "in"), ("vcluster", "london")))], 6)
        self.assertEqual(found[("vkafka_responses_total", (
            ("api", "Produce"), ("error", "not_leader_or_follower"),
            ("vcluster", "london")))], 1)


class MetricsAccessTests(unittest.TestCase):
    """/metrics names every tenant and its traffic: admin credentials only."""

    def make(self, with_state=True):
        """The admin port of make_api's users, serving *metrics* at /metrics."""
        from treq.testing import StubTreq

        from vkafka.admin.app import admin_root
        from vkafka.admin.users import LoginThrottle
        from vkafka.metrics import MetricsResource

        from .test_admin import Clock, make_checker, make_api
        metrics = Metrics()
        metrics.for_connection("london").request("Produce", 100)
        state = make_api()[1] if with_state else None
        return StubTreq(admin_root(state, make_checker(), lambda: (None, {}),
                                   throttle=LoginThrottle(Clock()),
                                   metrics=MetricsResource(metrics)))

    def get(self, http, path, auth=None):
        response = self.successResultOf(http.get("http://gw" + path, auth=auth))
        return response.code, self.successResultOf(response.content())

    def test_credentials_needed(self):
        """Without (or with wrong) credentials /metrics is 401 and shows no
        tenant; /health stays open; admin and read-only users scrape it."""
        for with_state in (True, False):  # tenant and passthrough modes
            http = self.make(with_state)
            for auth in (None, ("admin", "wrong")):
                code, body = self.get(http, "/metrics", auth)
                self.assertEqual(code, 401)
                self.assertNotIn(b"london", body)
            self.assertEqual(self.get(http, "/health")[0], 200)
            for auth in (("admin", "conduktor"), ("viewer", "look")):
                code, body = self.get(http, "/metrics", auth)
                self.assertEqual(code, 200)
                self.assertIn(b'vkafka_requests_total{api="Produce",vcluster="london"}',
                              body)
