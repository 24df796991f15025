"""Topology changes through the gateway: a broker leaves and comes back, a
broker joins.  Each class runs on a cluster of its own: stopping a broker of
the shared one would fail whatever else runs against it."""

import threading

from . import stack
from .test_gateway_clients import GatewayTestCase


class BrokerLossTests(GatewayTestCase):
    private_cluster = True

    def test_broker_stopped_while_producing(self):
        """Stop a broker mid-produce (acks=all): every acknowledged record is consumed once."""
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        topic = stack.unique("loss")
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(30)
        victim = 2
        # Bootstrap through the victim's own gateway port: the fallback keeps it usable.
        bootstrap = f"localhost:{self.start_port + victim - 1}"
        acked, failed = [], []

        def report(err, msg):
            (failed if err else acked).append(msg.value())

        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                             "enable.idempotence": True, "linger.ms": 5,
                             "message.timeout.ms": 120000})
        stop_producing = threading.Event()

        def produce():
            i = 0
            while not stop_producing.is_set():
                producer.produce(topic, value=b"m%06d" % i, on_delivery=report)
                producer.poll(0)
                i += 1
                stop_producing.wait(0.002)  # a steady rate, not a flood

        worker = threading.Thread(target=produce)
        worker.start()
        try:
            stack.wait_until(lambda: len(acked) > 500, "records acked before the stop")
            self.cluster.stop_broker(victim)
            count = len(acked)
            stack.wait_until(lambda: len(acked) > count + 1000,
                             "records acked with a broker down", 120)
        finally:
            stop_producing.set()
            worker.join()
            self.assertEqual(producer.flush(120), 0)
            self.cluster.start_broker(victim)
            self.cluster.wait()
        self.assertEqual(failed, [])

        consumer = Consumer({"bootstrap.servers": self.bootstrap,
                             "group.id": stack.unique("g"),
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        try:
            seen = [m.value() for m in stack.drain(
                consumer, len(acked), f"{len(acked)} acknowledged records", 120)]
        finally:
            consumer.close()
        self.assertEqual(sorted(seen), sorted(acked))
        self.assertNotIn("Traceback", self.gateway.log())


class BrokerJoinTests(GatewayTestCase):
    private_cluster = True
    extra_node_ids = (4,)

    def test_broker_joins(self):
        """A 4th broker joins: the gateway serves it on its port (start + 3) without a
        restart; a topic that lives only on it is produced and consumed."""
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient

        self.cluster.start_broker(4)
        self.addCleanup(self.remove_broker)
        stack.wait_until(lambda: 4 in self.cluster.brokers_up(), "broker 4 to join", 120)
        topic = stack.unique("joined")
        stack.cli("kafka-topics", "--bootstrap-server", self.bootstrap, "--create",
                  "--topic", topic, "--replica-assignment", "4")
        self.topic = topic
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        metadata = stack.wait_until(
            lambda: (lambda m: m if 4 in m.brokers else None)(admin.list_topics(timeout=10)),
            "broker 4 in the gateway's metadata", 60)
        self.assertEqual((metadata.brokers[4].host, metadata.brokers[4].port),
                         ("localhost", self.start_port + 3))
        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all"})
        for i in range(100):
            producer.produce(topic, value=b"j%d" % i)
        self.assertEqual(producer.flush(30), 0)
        consumer = Consumer({"bootstrap.servers": self.bootstrap,
                             "group.id": stack.unique("g"),
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        try:
            got = stack.drain(consumer, 100, "100 records from broker 4")
        finally:
            consumer.close()
        self.assertEqual(len(got), 100)

    def remove_broker(self):
        if getattr(self, "topic", None):
            stack.delete_topics([self.topic], self.cluster.bootstrap)
        self.cluster.remove_broker(4)
