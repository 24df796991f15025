"""Faults around the gateway: started before its cluster is reachable."""

from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.protocols.portforward import ProxyFactory
from twisted.trial import unittest

from . import stack
from .stack import devstack


class StartBeforeClusterTests(unittest.TestCase):
    timeout = 180

    @inlineCallbacks
    def test_ready_once_cluster_reachable(self):
        """Bootstrap unreachable: the gateway starts, /health is 503 with the reason,
        then 200 once the bootstrap address answers, with no restart."""
        stack.ensure_cluster()
        port = devstack.free_ports(1)  # the "cluster": nothing listens here yet
        gateway = stack.GatewayProcess(servers=f"localhost:{port}").spawn()
        self.addCleanup(gateway.stop)

        def not_ready():
            answer = gateway.answering() and devstack.health(gateway.admin_port)
            return answer if answer and answer[0] == 503 else None
        code, body = yield threads.deferToThread(
            stack.wait_until, not_ready, "/health to answer 503", 60)
        self.assertIn("cannot reach the Kafka cluster", body["reason"])

        # the cluster "comes back": the bootstrap address now reaches broker 1
        listener = reactor.listenTCP(port, ProxyFactory("localhost", 29092),
                                     interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        answer = yield threads.deferToThread(
            stack.wait_until, gateway.ready, "/health to become ready", 60)
        self.assertTrue(answer)
        body = devstack.health(gateway.admin_port)[1]
        self.assertEqual(body["brokers"], [1, 2, 3])
