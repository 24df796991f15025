"""The foundation: a real 3-broker Kafka, the stock CLI, and the twistd plugin."""

import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest

from . import stack


class ClusterTests(unittest.TestCase):
    def setUp(self):
        self.bootstrap = stack.ensure_cluster()

    def test_produce_consume_rf3(self):
        """A 3-partition RF3 topic takes 1,000 records that a group reads back."""
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        topic = stack.unique("foundation")
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(30)
        meta = stack.wait_until(
            lambda: (admin.list_topics(topic, timeout=10).topics[topic].partitions
                     and admin.list_topics(topic, timeout=10).topics[topic]),
            "the new topic's metadata", 30)
        self.assertEqual(len(meta.partitions), 3)
        self.assertTrue(all(len(p.replicas) == 3 for p in meta.partitions.values()))
        self.assertEqual(len(admin.list_topics(timeout=10).brokers), 3)

        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all"})
        for i in range(1000):
            producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
        self.assertEqual(producer.flush(30), 0)

        consumer = Consumer({"bootstrap.servers": self.bootstrap,
                             "group.id": stack.unique("g"),
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        seen = set()
        try:
            def drained():
                msg = consumer.poll(1.0)
                if msg is not None and msg.error() is None:
                    seen.add(msg.value())
                return len(seen) == 1000
            stack.wait_until(drained, "1,000 records", 60, interval=0)
        finally:
            consumer.close()
        self.assertEqual(seen, {f"v{i}".encode() for i in range(1000)})

    def test_kafka_topics_list_from_venv(self):
        """.venv/bin/kafka-topics --list runs and lists a topic just created."""
        topic = stack.unique("cli")
        stack.cli("kafka-topics", "--bootstrap-server", self.bootstrap, "--create",
                  "--topic", topic, "--partitions", "1", "--replication-factor", "1")
        listed = stack.cli("kafka-topics", "--bootstrap-server", self.bootstrap,
                           "--list").split()
        self.assertIn(topic, listed)


class PluginTests(unittest.TestCase):
    def test_twistd_help(self):
        """`twistd vkafka --help` finds the plugin and shows its options."""
        twistd = Path(sys.executable).parent / "twistd"
        result = subprocess.run([str(twistd), "vkafka", "--help"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in ("--bootstrap-servers", "--start-port", "--advertised-host",
                       "KAFKA_BOOTSTRAP_SERVERS", "GATEWAY_START_PORT"):
            self.assertIn(option, result.stdout)
