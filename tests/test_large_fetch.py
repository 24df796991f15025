"""Large Fetch responses through a tenant gateway, with stock clients.

Responses of 256 KiB or more that pass as bytes are forwarded while they
arrive (streaming.Streamed).  16 MB of 1 KB records, produced through the gateway,
are read back by confluent-kafka (Fetch by topic id) and the Java console
consumer; every record must come back exactly, in partition order, and the
gateway's metrics must show that responses were streamed.
"""

import hashlib

from prometheus_client.parser import text_string_to_metric_families

from . import stack
from .test_tenants import TenantGatewayTestCase

RECORDS = 16_000
PARTITIONS = 3


def value(i):
    """1 KB, different for every record, so a shifted or torn byte shows."""
    return (hashlib.sha256(str(i).encode()).hexdigest() * 16).encode()


class LargeFetchTests(TenantGatewayTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from confluent_kafka import Producer
        cls.vc = stack.unique("big").replace("-", "")
        cls.topic = "bulk"
        self = cls.__new__(cls)
        self.create_topic(cls.vc, cls.topic, PARTITIONS)
        producer = Producer(self.confluent_config(cls.vc, acks="all", **{
            "linger.ms": 20, "batch.size": 262144}))
        for i in range(RECORDS):
            producer.produce(cls.topic, key=str(i).encode(), value=value(i),
                             partition=i % PARTITIONS)
            if i % 2000 == 0:
                producer.poll(0)
        assert producer.flush(60) == 0, "records not delivered"

    def streamed(self):
        text = stack.scrape(f"http://localhost:{self.admin_port}/metrics")
        return sum(s.value for f in text_string_to_metric_families(text)
                   for s in f.samples
                   if s.name == "vkafka_streamed_responses_total"
                   and s.labels.get("vcluster") == self.vc)

    def test_confluent_kafka_reads_every_record(self):
        """librdkafka: every record exactly once, each partition in order."""
        from confluent_kafka import Consumer
        before = self.streamed()
        consumer = Consumer(self.confluent_config(
            self.vc, **{"group.id": stack.unique("g"), "auto.offset.reset": "earliest",
                        "enable.auto.commit": False}))
        consumer.subscribe([self.topic])
        seen = {p: [] for p in range(PARTITIONS)}
        try:
            def drained():
                for msg in consumer.consume(1000, 1.0):
                    if msg.error() is None:
                        seen[msg.partition()].append((int(msg.key()), msg.value()))
                return sum(map(len, seen.values())) >= RECORDS
            stack.wait_until(drained, f"{RECORDS} records", 120, interval=0)
        finally:
            consumer.close()
        for partition, records in seen.items():
            keys = [k for k, _ in records]
            self.assertEqual(keys, list(range(partition, RECORDS, PARTITIONS)))
            self.assertTrue(all(v == value(k) for k, v in records), partition)
        self.assertGreater(self.streamed(), before)

    def test_java_console_consumer_reads_every_record(self):
        """The Java consumer (Fetch v17): every value, byte for byte."""
        before = self.streamed()
        out = stack.cli("kafka-console-consumer", "--bootstrap-server", self.bootstrap,
                        "--consumer.config", self.properties(self.vc),
                        "--topic", self.topic, "--from-beginning",
                        "--max-messages", str(RECORDS), "--timeout-ms", "60000",
                        timeout=180)
        values = out.split()
        self.assertEqual(len(values), RECORDS)
        self.assertEqual(sorted(values), sorted(value(i).decode() for i in range(RECORDS)))
        self.assertGreater(self.streamed(), before)
