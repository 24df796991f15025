"""Usage per virtual cluster (docs/governance.md, Usage) measured by two real
gateways that share a state topic and a usage topic, in front of the Kafka 4.x
dev cluster.

A tenant produces a known number of bytes through each gateway with the raw
client (nothing else: its requests are exactly the Produce requests it sends;
SASL is the gateway's own and not counted), and the period's usage, asked of
either gateway, is their sum.  Storage is checked against the brokers' own
DescribeLogDirs, asked directly (not through a gateway).
"""

import time

from kio.schema.errors import ErrorCode
from twisted.trial import unittest

from vkafka.protocol.codec import encode_request
from vkafka.protocol.framing import frame

from . import stack
from .kafka_messages import produce_records, record_batch
from .rawclient import RawClient
from .stack import devstack
from .test_limits_integration import admin

REQUESTS = 40
"""Produce requests through each gateway."""
RECORDS = 50
"""Records in each request's batch (of 200 bytes each)."""


def log_dir_sizes(topic):
    """(every replica, each partition's largest replica) of *topic*, from
    DescribeLogDirs asked of each broker of the cluster directly."""
    from kio.schema.describe_log_dirs.v4.request import (
        DescribableLogDirTopic, DescribeLogDirsRequest)
    from kio.static.primitive import i32
    sizes = {}
    for host, port in (a.rsplit(":", 1) for a in stack.BOOTSTRAP.split(",")):
        raw = RawClient(host, int(port))
        try:
            answer = raw.request(DescribeLogDirsRequest(topics=(DescribableLogDirTopic(
                topic=topic, partitions=(i32(0),)),)), 4)
        finally:
            raw.close()
        for result in answer.results:
            for t in result.topics:
                for p in t.partitions:
                    if not p.is_future_key:
                        sizes.setdefault(p.partition_index, []).append(p.partition_size)
    return sum(map(sum, sizes.values())), sum(map(max, sizes.values())), sizes


class UsageAcrossGatewaysTests(unittest.TestCase):
    timeout = 600

    @classmethod
    def setUpClass(cls):
        stack.ensure_cluster()
        cls.state_topic = stack.unique("_vkafka_state_usage").replace("-", "_")
        cls.usage_topic = stack.unique("_vkafka_usage_test").replace("-", "_")
        options = (*devstack.TENANT_OPTIONS, f"--state-topic={cls.state_topic}",
                   f"--usage-topic={cls.usage_topic}")
        cls.gateways = [stack.GatewayProcess(options).start(),
                        stack.GatewayProcess(options).start()]

    @classmethod
    def tearDownClass(cls):
        for gateway in cls.gateways:
            gateway.stop()
        stack.delete_topics([cls.state_topic, cls.usage_topic])

    def tearDown(self):
        for gateway in self.gateways:
            self.assertNotIn("Traceback", gateway.log())

    def test_traffic_and_storage(self):
        gw1, gw2 = self.gateways
        vc = stack.unique("use").replace("-", "")
        code, body = admin(gw1, "POST", f"/vcluster/{vc}/username/sa",
                           {"lifeTimeSeconds": 3600})
        self.assertEqual(code, 200, body)
        token = body["token"]
        physical = stack.physical_topic(vc, "orders")
        stack.create_topic(physical, partitions=1, replication=3)
        self.addCleanup(stack.delete_topics, [physical])
        leader = self.leader_of(physical)

        hour = time.strftime("%Y-%m-%dT%H", time.gmtime())  # the period's start
        expected = {"bytesIn": 0, "requests": 0, "recordsIn": 0}
        clients = []
        for gateway in (gw1, gw2):
            raw = RawClient("localhost", gateway.start_port + leader - 1)
            clients.append(raw)
            self.addCleanup(raw.close)
            self.assertEqual(raw.sasl_plain("sa", token).error_code, ErrorCode.none)
            for _ in range(REQUESTS):
                body = produce_records("orders", record_batch(RECORDS, b"u" * 200))
                answer = raw.request(body, 9)
                [part] = answer.responses[0].partition_responses
                self.assertEqual(part.error_code, ErrorCode.none)
                # what the gateway forwards: the same frame, the topic named
                # physically (the prefix added; its length still one byte)
                sent = len(frame(encode_request(body, 9, raw.correlation_id,
                                                "raw-test")))
                self.assertEqual(sent, len(frame(encode_request(
                    produce_records(physical, record_batch(RECORDS, b"u" * 200)), 9,
                    raw.correlation_id, "raw-test"))) - len(vc))
                expected["bytesIn"] += sent + len(vc)
                expected["requests"] += 1
                expected["recordsIn"] += RECORDS

        def period(gateway):
            code, body = admin(gateway, "GET", f"/vcluster/{vc}/usage?from={hour}")
            self.assertEqual(code, 200, body)
            return body

        def counted():
            bodies = [period(g) for g in self.gateways]
            return all(b["period"]["requests"] >= expected["requests"]
                       for b in bodies) and bodies
        started = time.monotonic()
        bodies = stack.wait_until(counted, "both gateways' records", timeout=60,
                                  interval=1)
        waited = time.monotonic() - started
        for body in bodies:
            got = body["period"]
            print(f"usage: expected {expected}, period {got}, seen after "
                  f"{waited:.1f} s; now {body['now']}")
            # exactly: the produce lane counts a request as the rule table's path does
            self.assertEqual({name: got[name] for name in expected}, expected)
            self.assertGreater(got["bytesOut"], 0)
            self.assertEqual(body["now"]["connections"], 2)
            self.assertEqual((body["now"]["topics"], body["now"]["partitions"]), (1, 1))

        every, once, replicas = log_dir_sizes(physical)
        now = period(gw2)["now"]
        print(f"storage: usage {now['storageBytes']} / once {now['storageBytesOnce']}"
              f"; DescribeLogDirs {every} / once {once} ({replicas})")
        self.assertEqual((now["storageBytes"], now["storageBytesOnce"]), (every, once))
        self.assertEqual(len(replicas[0]), 3)
        self.assertGreater(once, expected["bytesIn"] / 2)

        from prometheus_client.parser import text_string_to_metric_families
        gauges = {(s.name, s.labels.get("replicas")): s.value for family in
                  text_string_to_metric_families(stack.scrape(
                      f"http://localhost:{gw2.admin_port}/metrics"))
                  for s in family.samples if s.labels.get("vcluster") == vc}
        self.assertEqual(gauges[("vkafka_usage_storage_bytes", "all")], every)
        self.assertEqual(gauges[("vkafka_usage_storage_bytes", "once")], once)
        self.assertEqual(gauges[("vkafka_usage_topics", None)], 1)

        text = stack.scrape(f"http://localhost:{gw1.admin_port}/admin/vclusters/v1/"
                            f"usage?from={hour}&format=csv")
        rows = [line.split(",") for line in text.splitlines()]
        self.assertEqual(rows[0], ["vcluster", "from", "to", "bytesIn", "bytesOut",
                                   "recordsIn", "recordsOut", "requests"])
        [row] = [r for r in rows if r[0] == vc]
        self.assertEqual(int(row[3]), bodies[0]["period"]["bytesIn"])

        self.commit_offsets(gw1, token)  # a consumer group "billing" (classic)
        stack.wait_until(lambda: period(gw2)["now"]["consumerGroups"] == 1,
                         "the group counted (an inventory at most 5 s old answers)",
                         timeout=30, interval=1)

        for raw in clients:
            raw.close()
        stack.wait_until(lambda: period(gw1)["now"]["connections"] == 0,
                         "the connections gone", timeout=60, interval=1)

    def commit_offsets(self, gateway, token):
        from confluent_kafka import Consumer, TopicPartition
        consumer = Consumer({
            "bootstrap.servers": gateway.bootstrap, "group.id": "billing",
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "sa", "sasl.password": token,
            "enable.auto.commit": False})
        try:
            consumer.commit(offsets=[TopicPartition("orders", 0, 10)],
                            asynchronous=False)
        finally:
            consumer.close()

    def leader_of(self, topic):
        from confluent_kafka.admin import AdminClient
        direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        metadata = direct.list_topics(topic, timeout=30)
        return metadata.topics[topic].partitions[0].leader
