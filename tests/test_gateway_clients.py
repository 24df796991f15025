"""Every stock client works through the gateway exactly as against the brokers.

Each client creates a 3-partition, replication-factor-3 topic through the
gateway, produces 10,000 records, consumes them all in a consumer group,
commits, and reads the committed offsets back.
"""

import asyncio
import re

from twisted.trial import unittest

from . import stack

RECORDS = 10_000
PARTITIONS = 3


class GatewayTestCase(unittest.TestCase):
    """Starts one gateway subprocess for the class, on free ports, in front of
    the shared test cluster, or of a cluster of the class's own when
    *private_cluster* (tests that stop or add brokers)."""

    private_cluster = False
    extra_node_ids = ()

    @classmethod
    def setUpClass(cls):
        if cls.private_cluster:
            cls.cluster = stack.private_cluster(cls.extra_node_ids)
        else:
            stack.ensure_cluster()
            cls.cluster = stack.devstack.DEFAULT
        try:
            cls.gateway = stack.GatewayProcess(cluster=cls.cluster).start()
        except BaseException:
            cls.discard_cluster()
            raise
        cls.start_port, cls.admin_port = cls.gateway.start_port, cls.gateway.admin_port
        cls.bootstrap = cls.gateway.bootstrap

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()
        cls.discard_cluster()

    @classmethod
    def discard_cluster(cls):
        if cls.private_cluster:
            stack.discard(cls.cluster)

    def assertNoBrokerAddress(self, text):
        """Nothing a client printed names a real broker port."""
        ports = "|".join(str(p) for p in self.cluster.nodes.values())
        self.assertIsNone(re.search(rf":({ports})\b", text), text[:2000])


class ConfluentKafkaTests(GatewayTestCase):
    def test_produce_consume_commit(self):
        """confluent-kafka: create, produce 10,000, consume in a group, commit, read offsets."""
        from confluent_kafka import Consumer, Producer, TopicPartition
        from confluent_kafka.admin import AdminClient, NewTopic

        topic, group = stack.unique("ck"), stack.unique("ck-g")
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(30)
        metadata = admin.list_topics(timeout=10)
        self.assertEqual(sorted((b.host, b.port) for b in metadata.brokers.values()),
                         [("localhost", self.start_port + i) for i in range(3)])

        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all",
                             "linger.ms": 5})
        for i in range(RECORDS):
            producer.produce(topic, key=str(i).encode(), value=f"r{i}".encode())
            if i % 1000 == 0:
                producer.poll(0)
        self.assertEqual(producer.flush(60), 0)

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group,
                             "auto.offset.reset": "earliest",
                             "enable.auto.commit": False})
        consumer.subscribe([topic])
        values = []
        try:
            def drained():
                for msg in consumer.consume(1000, 1.0):
                    if msg.error() is None:
                        values.append(msg.value())
                return len(values) >= RECORDS
            stack.wait_until(drained, f"{RECORDS} records", 120, interval=0)
            consumer.commit(asynchronous=False)
            committed = consumer.committed(
                [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
        finally:
            consumer.close()
        self.assertEqual(sorted(values), sorted(f"r{i}".encode() for i in range(RECORDS)))
        self.assertEqual(sum(tp.offset for tp in committed), RECORDS)


class KafkaPythonTests(GatewayTestCase):
    def test_produce_consume_commit(self):
        """kafka-python: create, produce 10,000, consume in a group, commit, read offsets."""
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition
        from kafka.admin import KafkaAdminClient, NewTopic

        topic, group = stack.unique("kp"), stack.unique("kp-g")
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(topic, PARTITIONS, 3)])
        finally:
            admin.close()
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                 linger_ms=5)
        futures = [producer.send(topic, key=str(i).encode(), value=f"r{i}".encode())
                   for i in range(RECORDS)]
        producer.flush(60)
        for f in futures:
            f.get(30)
        producer.close()

        consumer = KafkaConsumer(topic, bootstrap_servers=self.bootstrap,
                                 group_id=group, auto_offset_reset="earliest",
                                 enable_auto_commit=False)
        values = []
        try:
            def drained():
                for records in consumer.poll(1000, max_records=2000).values():
                    values.extend(r.value for r in records)
                return len(values) >= RECORDS
            stack.wait_until(drained, f"{RECORDS} records", 120, interval=0)
            consumer.commit()
            committed = [consumer.committed(TopicPartition(topic, p))
                         for p in range(PARTITIONS)]
        finally:
            consumer.close()
        self.assertEqual(sorted(values), sorted(f"r{i}".encode() for i in range(RECORDS)))
        self.assertEqual(sum(committed), RECORDS)


class AiokafkaTests(GatewayTestCase):
    def test_produce_consume_commit(self):
        """aiokafka: create, produce 10,000, consume in a group, commit, read offsets."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        topic, group = stack.unique("aio"), stack.unique("aio-g")

        async def scenario():
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(topic, PARTITIONS, 3)])
            finally:
                await admin.close()
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                        linger_ms=5)
            await producer.start()
            try:
                batch = [await producer.send(topic, key=str(i).encode(),
                                             value=f"r{i}".encode())
                         for i in range(RECORDS)]
                await asyncio.gather(*batch)
            finally:
                await producer.stop()
            consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap,
                                        group_id=group, auto_offset_reset="earliest",
                                        enable_auto_commit=False)
            await consumer.start()
            values = []
            try:
                async def drain():
                    while len(values) < RECORDS:
                        for records in (await consumer.getmany(timeout_ms=1000)).values():
                            values.extend(r.value for r in records)
                await asyncio.wait_for(drain(), 120)
                await consumer.commit()
                committed = [await consumer.committed(TopicPartition(topic, p))
                             for p in range(PARTITIONS)]
            finally:
                await consumer.stop()
            return values, committed

        values, committed = asyncio.run(scenario())
        self.assertEqual(sorted(values), sorted(f"r{i}".encode() for i in range(RECORDS)))
        self.assertEqual(sum(committed), RECORDS)


class JavaCliTests(GatewayTestCase):
    def test_topics_console_and_groups(self):
        """The Java CLI: kafka-topics, console producer/consumer, kafka-consumer-groups."""
        topic, group = stack.unique("java"), stack.unique("java-g")
        b = ["--bootstrap-server", self.bootstrap]
        out = stack.cli("kafka-topics", *b, "--create", "--topic", topic,
                        "--partitions", str(PARTITIONS), "--replication-factor", "3")
        self.assertIn(f"Created topic {topic}.", out)
        self.assertIn(topic, stack.cli("kafka-topics", *b, "--list").split())
        described = stack.cli("kafka-topics", *b, "--describe", "--topic", topic)
        self.assertIn(f"PartitionCount: {PARTITIONS}", described)
        self.assertIn("ReplicationFactor: 3", described)

        lines = "".join(f"line-{i}\n" for i in range(RECORDS))
        stack.cli("kafka-console-producer", *b, "--topic", topic,
                  "--producer-property", "acks=all", input=lines)
        consumed = stack.cli("kafka-console-consumer", *b, "--topic", topic,
                             "--group", group, "--from-beginning",
                             "--max-messages", str(RECORDS), "--timeout-ms", "60000")
        self.assertEqual(sorted(consumed.split()), sorted(lines.split()))

        groups = stack.cli("kafka-consumer-groups", *b, "--describe", "--group", group)
        self.assertNoBrokerAddress(groups)
        rows = [line.split() for line in groups.splitlines() if line.startswith(group)]
        self.assertEqual(len(rows), PARTITIONS)
        self.assertEqual(sum(int(row[3]) for row in rows), RECORDS)  # CURRENT-OFFSET
        self.assertEqual(sum(int(row[5]) for row in rows), 0)  # LAG

    def test_idempotent_and_transactional(self):
        """The Java producer: idempotent, then transactional; read_committed sees all."""
        topic = stack.unique("txn")
        b = ["--bootstrap-server", self.bootstrap]
        stack.cli("kafka-topics", *b, "--create", "--topic", topic,
                  "--partitions", str(PARTITIONS), "--replication-factor", "3")
        perf = ["kafka-producer-perf-test", "--topic", topic, "--num-records", "5000",
                "--record-size", "100", "--throughput", "-1"]
        stack.cli(*perf, "--producer-props", f"bootstrap.servers={self.bootstrap}",
                  "enable.idempotence=true", "acks=all")
        out = stack.cli(*perf, "--producer-props", f"bootstrap.servers={self.bootstrap}",
                        "acks=all", "--transactional-id", stack.unique("tid"),
                        "--transaction-duration-ms", "200")
        self.assertIn("5000 records sent", out)
        consumed = stack.cli("kafka-console-consumer", *b, "--topic", topic,
                             "--from-beginning", "--isolation-level", "read_committed",
                             "--max-messages", "10000", "--timeout-ms", "60000")
        self.assertEqual(len(consumed.splitlines()), 10000)


class TwoGatewaysTests(GatewayTestCase):
    def test_side_by_side(self):
        """Two gateways on different ports serve the same cluster at once."""
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        other = stack.GatewayProcess().start()
        self.addCleanup(other.stop)
        topic = stack.unique("two")
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(30)
        producer = Producer({"bootstrap.servers": self.bootstrap})
        for i in range(100):
            producer.produce(topic, value=b"x%d" % i)
        self.assertEqual(producer.flush(30), 0)
        consumer = Consumer({"bootstrap.servers": other.bootstrap,
                             "group.id": stack.unique("g"),
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        try:
            got = stack.drain(consumer, 100, "100 records through the second gateway")
        finally:
            consumer.close()
        self.assertEqual(len(got), 100)
