"""Topology changes through the gateway: a broker leaves and comes back."""

import threading
import time

from vkafka import devstack

from . import stack
from .test_gateway_clients import GatewayTestCase


class BrokerLossTests(GatewayTestCase):
    start_port = 24969
    admin_port = 28892

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
                time.sleep(0.002)

        worker = threading.Thread(target=produce)
        worker.start()
        try:
            stack.wait_until(lambda: len(acked) > 500, "records acked before the stop")
            devstack.stop(f"kafka{victim}")
            count = len(acked)
            stack.wait_until(lambda: len(acked) > count + 1000,
                             "records acked with a broker down", 120)
        finally:
            stop_producing.set()
            worker.join()
            self.assertEqual(producer.flush(120), 0)
            devstack.start_broker(victim)
            devstack.wait_cluster()
        self.assertEqual(failed, [])

        consumer = Consumer({"bootstrap.servers": self.bootstrap,
                             "group.id": stack.unique("g"),
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        seen = []
        try:
            def drained():
                seen.extend(m.value() for m in consumer.consume(1000, 1.0)
                            if m.error() is None)
                return len(seen) >= len(acked)
            stack.wait_until(drained, f"{len(acked)} acknowledged records", 120,
                             interval=0)
        finally:
            consumer.close()
        self.assertEqual(sorted(seen), sorted(acked))
        self.assertNotIn("Traceback", self.gateway.log())
