"""Gateways as one cluster (issue 23), with real gateways, Kafka and clients.

Gateways of a cluster id of their own, on free ports, in front of the shared
cluster (only gateways are killed here, never brokers); every client
bootstraps at the first gateway.  The scenarios are reliability/cluster.py's
at a small size; their figures are printed (times are measured, not
asserted)."""

import json
import sys
import time
from collections import Counter

from twisted.trial import unittest

from . import stack

sys.path.insert(0, str(stack.ROOT))
from reliability import cluster  # noqa: E402


class GatewayClusterTests(unittest.TestCase):
    timeout = 600

    def setUp(self):
        stack.ensure_cluster()

    def start(self, count, **kwargs):
        gateways = cluster.start_cluster(count, **kwargs)
        for g in gateways:
            self.addCleanup(g.stop)
        stack.wait_until(lambda: all(len(g.members()) == count for g in gateways),
                         "every gateway seeing the others", 30)
        return gateways

    def show(self, name, figures):
        print(f"\n{name}: {json.dumps(figures)}")

    def test_spread(self):
        """Thirty clients bootstrapped at one of three gateways: no gateway
        holds more than half of their connections."""
        gateways = self.start(3)
        figures = cluster.spread(gateways, clients=30)
        self.show("spread", figures)
        self.assertLessEqual(max(figures["connections per gateway"]),
                             sum(figures["connections per gateway"]) / 2)
        self.assertTrue(all(figures["connections per gateway"]))

    def test_sigkill_under_load(self):
        """The gateway every client bootstrapped at, SIGKILLed under a group of
        idempotent acks=all producers and a 3-member consumer group: every
        client moves again through the others, every acknowledged record is
        in the topic exactly once (read from the brokers directly) and is
        consumed, no position twice.  A consumer whose fetch session named a
        topic id the gateway it moved to had not learnt yet used to stall on
        that partition for good (issue 23, tenancy/sessions.py)."""
        gateways = self.start(3)
        load = cluster.Load(gateways[0].bootstrap, producers=2, consumers=3, rate=200)
        try:
            load.wait_flowing("the load flowing before the kill")
            killed_at = int(time.time() * 1000)
            gateways[0].kill()
            load.wait_flowing("every client moving again after the kill", timeout=180)
            recovery, stalled = load.recovery(killed_at)
            figures = load.finish()
        finally:
            load.stop()
        stored = Counter(stack.read_all(f"{load.vcluster}{load.topic}"))
        acked = load.acked()
        self.show("sigkill", {**figures, "streams stalled": stalled,
                              "longest stall": load.longest_stall,
                              "seconds until all moving again": recovery})
        self.assertGreater(len(acked), 0)
        self.assertEqual(len(acked), len(set(acked)))
        self.assertEqual(set(acked) - set(stored), set(), "acknowledged, not stored")
        self.assertEqual([v for v, n in stored.items() if n > 1], [], "stored twice")
        for key in ("lost", "consumed_twice", "written_twice"):
            self.assertEqual(figures[key], 0, key)
        self.assertFalse(gateways[0].alive())

    def test_rolling_restart(self):
        """Each gateway in turn SIGTERMed and started again under load:
        nothing lost, nothing twice, no error surfaced to the clients."""
        gateways = self.start(3)
        figures = cluster.rolling_restart(gateways, producers=2, consumers=2, rate=200)
        self.show("rolling restart", figures)
        for key in ("lost", "consumed_twice", "written_twice", "send_errors",
                    "failed_commits"):
            self.assertEqual(figures[key], 0, key)
        for g in gateways:  # each said it handed over, in its log
            self.assertIn("leaving the gateway cluster", "".join(
                p.read_text() for p in g.directory.glob("gateway-1.log")))

    def test_late_join(self):
        """A gateway started later gets new clients, nobody restarted."""
        gateways = self.start(2)
        later = cluster.another(gateways[0])
        self.addCleanup(later.stop)
        figures = cluster.late_join(gateways, later, clients=9)
        self.show("late join", figures)
        self.assertGreater(figures["connections per gateway (new one last)"][-1], 0)
        for g in (*gateways, later):  # the cluster's size, as each one scrapes it
            stack.wait_until(lambda: "vkafka_gateway_cluster_nodes 3.0" in stack.scrape(
                f"http://localhost:{g.admin}/metrics"),
                f"gateway on {g.port} reporting 3 nodes", 30)

    def test_advertise_self(self):
        """--advertise self: a gateway of a cluster still names only itself."""
        gateways = self.start(2)
        alone = cluster.another(gateways[0])
        alone.options += ("--advertise=self",)
        self.addCleanup(alone.stop)
        alone.start()
        seen = self.brokers(alone.bootstrap)
        self.assertEqual({port for _, port in seen}, {alone.port, alone.port + 1,
                                                      alone.port + 2})
        # nor do the others send clients to it
        mapped = set()
        for i in range(6):
            mapped |= {port for _, port in self.brokers(gateways[0].bootstrap, i)}
        self.assertLessEqual(mapped, {g.port + i for g in gateways for i in range(3)})
        self.assertTrue(mapped - {gateways[0].port + i for i in range(3)})

    def brokers(self, bootstrap, i=0):
        from confluent_kafka.admin import AdminClient
        admin = AdminClient(cluster.rdkafka_config(bootstrap, cluster.unique("cl"),
                                                   f"probe-{i}"))
        metadata = admin.list_topics(timeout=30)
        return {(b.host, b.port) for b in metadata.brokers.values()}


class PassthroughClusterTests(unittest.TestCase):
    """Passthrough gateways (no virtual clusters) form a cluster through the
    state topic too."""

    timeout = 180

    def test_mapped_over_both(self):
        stack.ensure_cluster()
        cid = cluster.unique("pt")
        gateways = [stack.GatewayProcess((f"--gateway-cluster-id={cid}",
                                          "--port-count=3")) for _ in range(2)]
        for g in gateways:
            self.addCleanup(g.stop)
            g.start()
        from confluent_kafka.admin import AdminClient

        def ports(i):
            admin = AdminClient({"bootstrap.servers": gateways[0].bootstrap,
                                 "client.id": f"pt-{i}"})
            return {b.port for b in admin.list_topics(timeout=30).brokers.values()}
        own = {gateways[0].start_port + i for i in range(3)}
        other = {gateways[1].start_port + i for i in range(3)}
        stack.wait_until(lambda: any(ports(i) & other for i in range(6)),
                         "brokers advertised at the other gateway", 30)
        for i in range(6):
            self.assertLessEqual(ports(i), own | other)
