"""`make reliability` at a small size: the same scenarios, real gateways and Kafka.

The scenarios kill and stop brokers, so the class runs them on a cluster of
its own, never on the shared one."""

import importlib.util
from pathlib import Path

from twisted.trial import unittest

from . import stack

ROOT = Path(__file__).resolve().parent.parent


def _runner():
    spec = importlib.util.spec_from_file_location(
        "reliability_run", ROOT / "reliability" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _runner()


class ReliabilityTests(unittest.TestCase):
    """Two tenant gateways sharing a state topic, in front of a private
    cluster, for the whole class."""

    timeout = 600

    @classmethod
    def setUpClass(cls):
        cls.cluster = stack.private_cluster()
        cls.a = cls.b = None
        try:
            cls.state_topic = run.unique("_vkafka_state_rel_")
            cls.a = run.Gateway(cls.state_topic, cluster=cls.cluster)
            cls.b = run.Gateway(cls.state_topic, cluster=cls.cluster)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for gateway in (cls.a, cls.b):
            if gateway is not None:
                gateway.stop()
        stack.discard(cls.cluster)

    def test_1_leader_killed(self):
        """The partition leader's broker killed mid-produce: every acked record
        is consumed exactly once, same checksum; leadership moved meanwhile."""
        figures = run.leader_kill(self.b, records_after=300)
        # the fault took place: the partition had another leader while it was down
        self.assertIn(figures["leader"], self.cluster.nodes)
        self.assertIn(figures["leader_after"], self.cluster.nodes)
        self.assertNotEqual(figures["leader_after"], figures["leader"])

    def test_2_load_exact_and_flat(self):
        """Tenants x producers/consumers, two rounds: exact counts, nothing
        foreign, memory flat across rounds."""
        figures = run.load([self.a, self.b], vclusters=3, producers=2, consumers=2,
                           records=300, rounds=2)
        self.assertEqual(figures["records_checked"], 3 * 2 * 300 * 2)
        self.assertEqual(figures["foreign"], 0)

    def test_3_hostile_input(self):
        """Fuzzed frames and slow clients while a tenant works."""
        figures = run.hostile_input(self.a, connections=150, frames_per_connection=10,
                                    slow_loris=5)
        # the gateway closes a misbehaving connection, so some frames never go
        self.assertGreaterEqual(figures["frames"], 150)
        self.assertEqual(figures["slow_loris_cut"], 5)

    def test_4_gateway_killed(self):
        """Gateway A killed under a producer and a consumer group with both
        gateways in bootstrap: nothing acked lost, committed offsets at the end."""
        figures = run.gateway_kill(self.a, self.b, records_after=300)
        self.assertEqual(figures["committed"], figures["records"])

    def test_6_broker_back_while_unlisted(self):
        """A broker back while the gateway still holds it unlisted: a tenant
        starting then gets every record through and its group assigned
        (client connections to that broker's port were served by another
        broker for good, NOT_LEADER_OR_FOLLOWER for ever)."""
        figures = run.broker_back_unlisted(self.b)  # A was killed in test_4
        self.assertEqual(figures["records"], 2 * 300)

    def test_5_state_topic_outage(self):
        """Admin writes answer 503 with a message; known tokens keep working."""
        figures = run.state_outage(self.cluster)
        self.assertTrue(figures["admin_write"].startswith("503"))

