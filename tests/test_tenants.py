"""Virtual clusters through the gateway with real clients (SASL/PLAIN tokens).

The demo's london and paris tenants, plus isolation of consumer groups and
transactional ids per client library, and the KIP-848 consumer protocol.
"""

import asyncio
import os
import tempfile

from twisted.trial import unittest

from vkafka.auth.tokens import TokenAuthority

from . import stack
from .stack import devstack

AUTHORITY = TokenAuthority(devstack.DEMO_SECRET)


def token(vcluster, username="sa", lifetime=3600):
    return AUTHORITY.issue(vcluster, username, lifetime)


class TenantGatewayTestCase(unittest.TestCase):
    """One SASL_PLAINTEXT multi-tenant gateway for the class, on free ports."""

    @classmethod
    def setUpClass(cls):
        stack.ensure_cluster()
        cls.gateway = stack.GatewayProcess(devstack.TENANT_OPTIONS).start()
        cls.start_port, cls.admin_port = cls.gateway.start_port, cls.gateway.admin_port
        cls.bootstrap = cls.gateway.bootstrap

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()

    def vcluster(self, name=None):
        """A fresh virtual cluster name, so test runs never meet each other."""
        return name or stack.unique("vc").replace("-", "")

    def properties(self, vcluster, username="sa"):
        """A Java client properties file for *vcluster*, as the demo writes it."""
        handle, path = tempfile.mkstemp(suffix=".properties")
        with os.fdopen(handle, "w") as f:
            f.write(f"bootstrap.servers={self.bootstrap}\n"
                    "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                    "sasl.jaas.config=org.apache.kafka.common.security.plain."
                    f"PlainLoginModule required username='{username}' "
                    f"password='{token(vcluster, username)}';\n")
        self.addCleanup(os.unlink, path)
        return path

    def confluent_config(self, vcluster, **extra):
        return {"bootstrap.servers": self.bootstrap,
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": "sa", "sasl.password": token(vcluster), **extra}

    def create_topic(self, vcluster, topic, partitions=3, replication=3):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient(self.confluent_config(vcluster))
        admin.create_topics([NewTopic(topic, partitions, replication)])[topic].result(30)

    def physical_topics(self):
        return set(stack.cli("kafka-topics", "--bootstrap-server", stack.BOOTSTRAP,
                             "--list").split())


class DemoTests(TenantGatewayTestCase):
    def test_demo_london_and_paris(self):
        """The demo's steps with the Java CLI: each tenant sees only its own topic."""
        london, paris = self.vcluster(), self.vcluster()
        lp, pp = self.properties(london), self.properties(paris)
        for props, topic in ((lp, "londonTopic"), (pp, "parisTopic")):
            out = stack.cli("kafka-topics", "--bootstrap-server", self.bootstrap,
                            "--command-config", props, "--replication-factor", "1",
                            "--partitions", "1", "--create", "--if-not-exists",
                            "--topic", topic)
            self.assertIn(f"Created topic {topic}.", out)
        listed = {}
        for name, props in ((london, lp), (paris, pp)):
            listed[name] = stack.cli("kafka-topics", "--bootstrap-server",
                                     self.bootstrap, "--command-config", props,
                                     "--list").split()
        self.assertEqual(listed, {london: ["londonTopic"], paris: ["parisTopic"]})
        physical = self.physical_topics()
        self.assertIn(f"{london}londonTopic", physical)
        self.assertIn(f"{paris}parisTopic", physical)

        for props, topic, text in ((lp, "londonTopic", "Hello from London"),
                                   (pp, "parisTopic", "Bonjour depuis Paris")):
            stack.cli("kafka-console-producer", "--bootstrap-server", self.bootstrap,
                      "--producer.config", props, "--topic", topic,
                      input=f'{{"message": "{text}"}}\n')
            out = stack.cli("kafka-console-consumer", "--bootstrap-server",
                            self.bootstrap, "--consumer.config", props, "--topic",
                            topic, "--from-beginning", "--max-messages", "1",
                            "--timeout-ms", "30000")
            self.assertEqual(out.strip(), f'{{"message": "{text}"}}')

    def test_paris_cannot_read_london_topic(self):
        """A topic named like another tenant's resolves inside the caller's own cluster."""
        london, paris = self.vcluster(), self.vcluster()
        self.create_topic(london, "secret", 1, 1)
        describe = ("kafka-topics", "--bootstrap-server", self.bootstrap, "--describe",
                    "--topic", "secret", "--command-config")
        own = stack.cli(*describe, self.properties(london))  # the owner sees it
        self.assertIn("Topic: secret", own)
        self.assertIn("PartitionCount: 1", own)
        self.assertNotIn(london, own)  # by its logical name only
        theirs = stack.run_cli(*describe, self.properties(paris))
        self.assertNotEqual(theirs.returncode, 0, theirs.stdout)
        self.assertIn("Topic 'secret' does not exist", theirs.stderr)
        self.assertNotIn(london, theirs.stdout + theirs.stderr)
        self.assertNotIn("PartitionCount", theirs.stdout)


class GroupIsolationTests(TenantGatewayTestCase):
    """The same group id in two virtual clusters: two independent groups."""

    RECORDS = {0: 300, 1: 500}

    def setUp(self):
        self.tenants = [self.vcluster(), self.vcluster()]
        from confluent_kafka import Producer
        for index, vc in enumerate(self.tenants):
            self.create_topic(vc, "orders")
            producer = Producer(self.confluent_config(vc))
            for i in range(self.RECORDS[index]):
                producer.produce("orders", value=f"{vc}-{i}".encode())
            self.assertEqual(producer.flush(30), 0)

    def assertIsolated(self, consumed, committed):
        """Each tenant read exactly its own records and committed its own offsets."""
        for index, vc in enumerate(self.tenants):
            self.assertEqual(sorted(consumed[index]),
                             sorted(f"{vc}-{i}" for i in range(self.RECORDS[index])))
            self.assertEqual(committed[index], self.RECORDS[index])

    def test_client_ids_are_per_tenant(self):
        """Both tenants' consumers call themselves "app" in group "shared"
        (classic and KIP-848): the broker holds "<vcluster>/app", so client-id
        quotas and metrics never mix them; each tenant's describe shows "app"."""
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient
        for protocol in ("classic", "consumer"):
            group = f"shared-{protocol}"
            for vc in self.tenants:
                consumer = Consumer(self.confluent_config(vc, **{
                    "group.id": group, "client.id": "app",
                    "group.protocol": protocol, "auto.offset.reset": "earliest"}))
                self.addCleanup(consumer.close)
                consumer.subscribe(["orders"])
                stack.wait_until(lambda: consumer.poll(0.5) is not None and
                                 consumer.assignment(), f"{vc}'s {protocol} member", 60,
                                 interval=0)
            direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
            for vc in self.tenants:
                admin = AdminClient(self.confluent_config(vc))  # kept: its futures
                shown = admin.describe_consumer_groups([group])[group].result(30)
                self.assertEqual([m.client_id for m in shown.members], ["app"])
                held = direct.describe_consumer_groups(
                    [vc + group])[vc + group].result(30)
                self.assertEqual([m.client_id for m in held.members], [f"{vc}/app"])

    def test_confluent_kafka(self):
        """confluent-kafka: group "shared" in two tenants."""
        from confluent_kafka import Consumer, TopicPartition
        consumed, committed = {}, {}
        for index, vc in enumerate(self.tenants):
            consumer = Consumer(self.confluent_config(
                vc, **{"group.id": "shared", "auto.offset.reset": "earliest",
                       "enable.auto.commit": False}))
            consumer.subscribe(["orders"])
            values = []
            try:
                def drained():
                    values.extend(m.value().decode() for m in consumer.consume(500, 1.0)
                                  if m.error() is None)
                    return len(values) >= self.RECORDS[index]
                stack.wait_until(drained, "records", 60, interval=0)
                consumer.commit(asynchronous=False)
                offsets = consumer.committed(
                    [TopicPartition("orders", p) for p in range(3)], timeout=30)
            finally:
                consumer.close()
            consumed[index] = values
            committed[index] = sum(max(tp.offset, 0) for tp in offsets)
        self.assertIsolated(consumed, committed)

    def test_kafka_python(self):
        """kafka-python: group "shared" in two tenants."""
        from kafka import KafkaConsumer, TopicPartition
        consumed, committed = {}, {}
        for index, vc in enumerate(self.tenants):
            consumer = KafkaConsumer(
                "orders", bootstrap_servers=self.bootstrap, group_id="shared",
                auto_offset_reset="earliest", enable_auto_commit=False,
                security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_plain_username="sa", sasl_plain_password=token(vc))
            values = []
            try:
                def drained():
                    for records in consumer.poll(1000).values():
                        values.extend(r.value.decode() for r in records)
                    return len(values) >= self.RECORDS[index]
                stack.wait_until(drained, "records", 60, interval=0)
                consumer.commit()
                offsets = [consumer.committed(TopicPartition("orders", p)) or 0
                           for p in range(3)]
            finally:
                consumer.close()
            consumed[index] = values
            committed[index] = sum(offsets)
        self.assertIsolated(consumed, committed)

    def test_aiokafka(self):
        """aiokafka: group "shared" in two tenants."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def run(index, vc):
            consumer = AIOKafkaConsumer(
                "orders", bootstrap_servers=self.bootstrap, group_id="shared",
                auto_offset_reset="earliest", enable_auto_commit=False,
                security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_plain_username="sa", sasl_plain_password=token(vc))
            await consumer.start()
            values = []
            try:
                async def drain():
                    while len(values) < self.RECORDS[index]:
                        for records in (await consumer.getmany(timeout_ms=1000)).values():
                            values.extend(r.value.decode() for r in records)
                await asyncio.wait_for(drain(), 60)
                await consumer.commit()
                offsets = [await consumer.committed(TopicPartition("orders", p)) or 0
                           for p in range(3)]
            finally:
                await consumer.stop()
            return values, sum(offsets)

        consumed, committed = {}, {}
        for index, vc in enumerate(self.tenants):
            consumed[index], committed[index] = asyncio.run(run(index, vc))
        self.assertIsolated(consumed, committed)

    def test_java_classic_and_kip848(self):
        """The Java consumer, classic and KIP-848 protocols: group "shared" per tenant."""
        for protocol, group in (("classic", "shared"), ("consumer", "shared848")):
            consumed, committed = {}, {}
            for index, vc in enumerate(self.tenants):
                props = self.properties(vc)
                out = stack.cli("kafka-console-consumer", "--bootstrap-server",
                                self.bootstrap, "--consumer.config", props,
                                "--consumer-property", f"group.protocol={protocol}",
                                "--topic", "orders", "--group", group,
                                "--from-beginning", "--max-messages",
                                str(self.RECORDS[index]), "--timeout-ms", "60000")
                consumed[index] = out.split()
                described = stack.cli("kafka-consumer-groups", "--bootstrap-server",
                                      self.bootstrap, "--command-config", props,
                                      "--describe", "--group", group)
                self.assertNotIn(vc, described)
                rows = [line.split() for line in described.splitlines()
                        if line.startswith(group + " ")]
                committed[index] = sum(int(r[3]) for r in rows)
            self.assertIsolated(consumed, committed)

    def test_confluent_kip848(self):
        """confluent-kafka with group.protocol=consumer inside a tenant."""
        from confluent_kafka import Consumer
        vc = self.tenants[1]
        consumer = Consumer(self.confluent_config(
            vc, **{"group.id": "kip848", "group.protocol": "consumer",
                   "auto.offset.reset": "earliest"}))
        consumer.subscribe(["orders"])
        values = []
        try:
            def drained():
                values.extend(m.value().decode() for m in consumer.consume(500, 1.0)
                              if m.error() is None)
                return len(values) >= self.RECORDS[1]
            stack.wait_until(drained, "records over KIP-848", 90, interval=0)
        finally:
            consumer.close()
        self.assertEqual(sorted(values),
                         sorted(f"{vc}-{i}" for i in range(self.RECORDS[1])))


class TransactionIsolationTests(TenantGatewayTestCase):
    def test_same_transactional_id_in_two_tenants(self):
        """confluent-kafka: "tx" in london never fences "tx" in paris."""
        from confluent_kafka import Producer
        tenants = [self.vcluster(), self.vcluster()]
        producers = []
        for vc in tenants:
            self.create_topic(vc, "payments", 1, 3)
            producers.append(Producer(self.confluent_config(
                vc, **{"transactional.id": "tx"})))
        for p in producers:
            p.init_transactions(30)
        for index, p in enumerate(producers):  # interleaved: a shared id would fence
            p.begin_transaction()
            for i in range(10):
                p.produce("payments", value=f"{index}-{i}".encode())
        for p in producers:
            p.commit_transaction(30)
        for index, vc in enumerate(tenants):
            self.assertEqual(self.read_committed(vc, "payments", 10),
                             sorted(f"{index}-{i}" for i in range(10)))

    def read_committed(self, vc, topic, count):
        """The values a read_committed confluent consumer sees in *topic*."""
        from confluent_kafka import Consumer
        consumer = Consumer(self.confluent_config(
            vc, **{"group.id": "reader", "auto.offset.reset": "earliest",
                   "isolation.level": "read_committed"}))
        consumer.subscribe([topic])
        try:
            return sorted(m.value().decode() for m in stack.drain(
                consumer, count, "committed records"))
        finally:
            consumer.close()

    def test_kafka_python_transactions(self):
        """kafka-python: the same transactional id in two tenants, interleaved."""
        from kafka import KafkaProducer
        tenants = [self.vcluster(), self.vcluster()]
        producers = []
        for vc in tenants:
            self.create_topic(vc, "kp-tx", 1, 3)
            producers.append(KafkaProducer(
                bootstrap_servers=self.bootstrap, transactional_id="tx",
                security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_plain_username="sa", sasl_plain_password=token(vc)))
        for p in producers:
            p.init_transactions()
        for index, p in enumerate(producers):
            p.begin_transaction()
            for i in range(10):
                p.send("kp-tx", value=f"{index}-{i}".encode())
        for p in producers:
            p.commit_transaction()
            p.close()
        for index, vc in enumerate(tenants):
            self.assertEqual(self.read_committed(vc, "kp-tx", 10),
                             sorted(f"{index}-{i}" for i in range(10)))

    def test_aiokafka_transactions(self):
        """aiokafka: the same transactional id in two tenants, interleaved."""
        from aiokafka import AIOKafkaProducer
        tenants = [self.vcluster(), self.vcluster()]
        for vc in tenants:
            self.create_topic(vc, "aio-tx", 1, 3)

        async def run():
            producers = [AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, transactional_id="tx",
                security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_plain_username="sa", sasl_plain_password=token(vc))
                for vc in tenants]
            for p in producers:
                await p.start()
            try:
                for index, p in enumerate(producers):
                    await p.begin_transaction()
                    for i in range(10):
                        await p.send("aio-tx", value=f"{index}-{i}".encode())
                for p in producers:
                    await p.commit_transaction()
            finally:
                for p in producers:
                    await p.stop()
        asyncio.run(run())
        for index, vc in enumerate(tenants):
            self.assertEqual(self.read_committed(vc, "aio-tx", 10),
                             sorted(f"{index}-{i}" for i in range(10)))

    def test_java_transactions(self):
        """Java producer: the same transactional id in two tenants, read_committed."""
        tenants = [self.vcluster(), self.vcluster()]
        for vc in tenants:
            self.create_topic(vc, "ledger", 3, 3)
            props = self.properties(vc)
            out = stack.cli("kafka-producer-perf-test", "--topic", "ledger",
                            "--num-records", "2000", "--record-size", "50",
                            "--throughput", "-1", "--producer.config", props,
                            "--transactional-id", "same-tx",
                            "--transaction-duration-ms", "200")
            self.assertIn("2000 records sent", out)
        for vc in tenants:
            out = stack.cli("kafka-console-consumer", "--bootstrap-server",
                            self.bootstrap, "--consumer.config", self.properties(vc),
                            "--topic", "ledger", "--from-beginning",
                            "--isolation-level", "read_committed",
                            "--max-messages", "2000", "--timeout-ms", "60000")
            self.assertEqual(len(out.splitlines()), 2000)


class RegexAcrossGatewaysTests(unittest.TestCase):
    """A KIP-848 consumer subscribed by regex through one gateway, its topics
    created through another.  Both gateways list topics only every hour
    (``--refresh-interval``): what the member is assigned, the gateway learnt
    because the member's heartbeats asked for it (tenancy/rules/groups.py).
    Here that takes ~5 s for a topic made before the subscription and ~15 s
    (as directly: the broker's own regex refresh) for one made after it;
    without it, ~65 and ~60 s, past the deadlines."""

    timeout = 300

    def setUp(self):
        stack.ensure_cluster()
        self.gateways = []
        for _ in range(2):
            gateway = stack.GatewayProcess((*devstack.TENANT_OPTIONS,
                                            "--refresh-interval=3600"))
            self.addCleanup(gateway.stop)
            self.gateways.append(gateway.start())

    def config(self, gateway, vcluster, **extra):
        return {"bootstrap.servers": gateway.bootstrap,
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": "sa", "sasl.password": token(vcluster), **extra}

    def test_topics_created_through_another_gateway(self):
        """Topics created through gateway A, before and after the member
        subscribed through gateway B, are both assigned and read."""
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        vc = stack.unique("rx").replace("-", "")
        one, other = self.gateways
        admin = AdminClient(self.config(one, vc))
        producer = Producer(self.config(one, vc))

        def created(topic):
            admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(30)
            producer.produce(topic, topic.encode())
            self.assertEqual(producer.flush(30), 0)
        created("orders-a")
        created("other")
        consumer = Consumer(self.config(other, vc, **{
            "group.id": "rx", "group.protocol": "consumer",
            "auto.offset.reset": "earliest"}))
        self.addCleanup(consumer.close)
        consumer.subscribe(["^orders-.*"])
        seen = set()

        def read(topics):
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                seen.add(message.value().decode())
            return topics <= seen
        stack.wait_until(lambda: read({"orders-a"}), "the first topic's record "
                         "through the other gateway", 30, interval=0)
        created("orders-b")
        stack.wait_until(lambda: read({"orders-a", "orders-b"}), "a topic created "
                         "after the subscription, through the other gateway", 45,
                         interval=0)
        self.assertEqual(seen, {"orders-a", "orders-b"})
        self.assertEqual({tp.topic for tp in consumer.assignment()},
                         {"orders-a", "orders-b"})
