"""The lean per-event dispatch (vkafka/tuning.py), on a private epoll
reactor instance (never the global one) over loopback sockets."""

import socket
import time

from twisted.internet import protocol
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from vkafka.tuning import lean_dispatch


class Echo(protocol.Protocol):
    def connectionMade(self):
        self.factory.connected.append(self)

    def dataReceived(self, data):
        self.transport.write(data)

    def connectionLost(self, reason):
        self.factory.lost.append(reason)


class Collect(protocol.Protocol):
    def __init__(self):
        self.received = b""

    def dataReceived(self, data):
        self.received += data


class Exploding:
    """A reader whose connectionLost raises: the one error that escapes
    _doReadOrWrite and reaches the dispatch loop itself."""

    def __init__(self, reactor, sock):
        self.reactor, self.sock = reactor, sock

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "exploding"

    def doRead(self):
        return ConnectionDone()

    def connectionLost(self, reason):
        self.reactor.removeReader(self)
        raise RuntimeError("boom in connectionLost")


class LeanDispatchTests(unittest.TestCase):
    def setUp(self):
        self.reactor = EPollReactor()
        self.addCleanup(self._close)

    def _close(self):
        self.reactor.disconnectAll()
        for port in getattr(self, "ports", []):
            port.stopListening()
        for _ in range(5):
            self.reactor.iterate(0)
        self.reactor.waker.connectionLost(None)
        self.reactor._poller.close()

    def spin(self, until, seconds=10):
        """Run the private reactor until *until()* holds; fail after *seconds*."""
        deadline = time.monotonic() + seconds
        while not until():
            self.assertLess(time.monotonic(), deadline, "condition not reached in time")
            self.reactor.iterate(0.01)

    def echo_server(self):
        factory = protocol.ServerFactory.forProtocol(Echo)
        factory.connected, factory.lost = [], []
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ports = [port]
        return factory, port.getHost().port

    def test_only_an_epoll_reactor_is_changed(self):
        self.assertFalse(lean_dispatch(Clock()))
        self.assertFalse(lean_dispatch(MemoryReactor()))
        select = SelectReactor()
        self.addCleanup(select.waker.connectionLost, None)
        before = select.doIteration
        self.assertFalse(lean_dispatch(select))
        self.assertEqual(select.doIteration, before)
        self.assertTrue(lean_dispatch(self.reactor))
        self.assertIs(self.reactor.doIteration, self.reactor.doPoll)

    def test_connections_are_served(self):
        """Accept, read, write and close all go through the lean loop."""
        self.assertTrue(lean_dispatch(self.reactor))
        factory, port = self.echo_server()
        clients = []
        for _ in range(3):
            protocol.ClientCreator(self.reactor, Collect).connectTCP(
                "127.0.0.1", port).addCallback(clients.append)
        self.spin(lambda: len(clients) == 3 and len(factory.connected) == 3)
        payloads = [bytes([65 + i]) * (100_000 * (i + 1)) for i in range(3)]
        for client, payload in zip(clients, payloads):
            client.transport.write(payload)
        self.spin(lambda: all(len(c.received) == len(p) for c, p in zip(clients, payloads)))
        self.assertEqual([c.received for c in clients], payloads)
        clients[0].transport.loseConnection()
        self.spin(lambda: len(factory.lost) == 1)
        factory.lost[0].trap(ConnectionDone)

    def test_an_escaping_error_is_logged_and_the_loop_goes_on(self):
        self.assertTrue(lean_dispatch(self.reactor))
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        bad = Exploding(self.reactor, a)
        self.reactor.addReader(bad)
        factory, port = self.echo_server()
        b.send(b"x")  # makes the exploding reader readable
        self.spin(lambda: bad not in self.reactor.getReaders())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        failures = [e for e in events if e.get("log_namespace") == "vkafka.dispatch"]
        self.assertEqual(len(failures), 1)
        self.assertIn("boom", str(failures[0]["log_failure"].value))
        # the loop still serves other connections
        clients = []
        protocol.ClientCreator(self.reactor, Collect).connectTCP(
            "127.0.0.1", port).addCallback(clients.append)
        self.spin(lambda: clients)
        clients[0].transport.write(b"still here")
        self.spin(lambda: clients[0].received == b"still here")
