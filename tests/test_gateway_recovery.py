"""Faults around the gateway: started before its cluster is reachable."""

import socket

from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.protocols.portforward import ProxyFactory
from twisted.trial import unittest

from vkafka import devstack

from . import stack


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StartBeforeClusterTests(unittest.TestCase):
    timeout = 180

    @inlineCallbacks
    def test_ready_once_cluster_reachable(self):
        """Bootstrap unreachable: the gateway starts, /health is 503 with the reason,
        then 200 once the bootstrap address answers, with no restart."""
        stack.ensure_cluster()
        port = free_port()  # the "cluster": nothing listens here yet
        argv = devstack.gateway_argv(24069, 28899, None)
        argv[argv.index(f"--bootstrap-servers={devstack.BOOTSTRAP}")] = \
            f"--bootstrap-servers=localhost:{port}"
        gateway = stack.GatewayProcess(24069, 28899)
        gateway.argv = argv
        import subprocess
        gateway.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
        self.addCleanup(gateway.stop)

        def not_ready():
            answer = devstack.health(28899)
            return answer if answer and answer[0] == 503 else None
        code, body = yield threads.deferToThread(
            stack.wait_until, not_ready, "/health to answer 503", 60)
        self.assertIn("cannot reach the Kafka cluster", body["reason"])

        # the cluster "comes back": the bootstrap address now reaches broker 1
        listener = reactor.listenTCP(port, ProxyFactory("localhost", 29092),
                                     interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        answer = yield threads.deferToThread(
            stack.wait_until, lambda: (devstack.health(28899) or (0,))[0] == 200,
            "/health to become ready", 60)
        self.assertTrue(answer)
        body = devstack.health(28899)[1]
        self.assertEqual(body["brokers"], [1, 2, 3])
