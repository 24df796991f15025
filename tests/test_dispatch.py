"""The lean per-event dispatch (vkafka/tuning.py), on a private epoll
reactor instance (never the global one) over loopback sockets."""

import socket
import time

from twisted.internet import protocol, tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
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


class PrivateReactorCase(unittest.TestCase):
    """A test case with its own epoll reactor, closed with its ports after."""

    def setUp(self):
        self.reactor = EPollReactor()
        self.ports = []
        self.addCleanup(self._close)

    def _close(self):
        self.reactor.disconnectAll()
        for port in self.ports:
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

    def listen(self, factory):
        port = self.reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.ports.append(port)
        return port.getHost().port


class LeanDispatchTests(PrivateReactorCase):
    def echo_server(self):
        factory = protocol.ServerFactory.forProtocol(Echo)
        factory.connected, factory.lost = [], []
        return factory, self.listen(factory)

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


class Recorder(protocol.Protocol):
    """Records what it reads and how it was lost; raises on b"boom"."""

    def connectionMade(self):
        self.received, self.reasons = b"", []
        self.factory.connected.append(self)

    def dataReceived(self, data):
        self.received += data
        if b"boom" in data:
            raise ValueError("boom in dataReceived")

    def connectionLost(self, reason):
        self.reasons.append(reason)


class ResettingSocket:
    """A server socket whose next recv fails as a reset peer's would."""

    def __init__(self, real):
        self._real = real

    def recv(self, size):
        raise ConnectionResetError(104, "Connection reset by peer")

    def __getattr__(self, name):
        return getattr(self._real, name)


class PlainReadTests(PrivateReactorCase):
    """A plain read is done in the lean loop itself (tcp.Connection.doRead's
    work without Twisted's layers), ending connections as Twisted would."""

    def setUp(self):
        super().setUp()
        self.handled = []
        handle = self.reactor._doReadOrWrite

        def counted(selectable, fd, event):
            self.handled.append(selectable)
            return handle(selectable, fd, event)
        self.reactor._doReadOrWrite = counted
        self.assertTrue(lean_dispatch(self.reactor))
        factory = protocol.ServerFactory.forProtocol(Recorder)
        factory.connected = self.connected = []
        self.port = self.listen(factory)

    def peer(self):
        """A raw client socket and the server protocol it reached."""
        before = len(self.connected)
        sock = socket.create_connection(("127.0.0.1", self.port))
        self.addCleanup(sock.close)
        self.spin(lambda: len(self.connected) > before)
        return sock, self.connected[-1]

    def test_reads_skip_twisteds_layers(self):
        sock, server = self.peer()
        self.handled.clear()
        for n in range(20):
            sock.sendall(b"%d," % n)
            self.spin(lambda: server.received.endswith(b"%d," % n))
        self.assertEqual(server.received, b"".join(b"%d," % n for n in range(20)))
        through_twisted = [s for s in self.handled if isinstance(s, tcp.Connection)]
        self.assertEqual(through_twisted, [], "plain reads went through _doReadOrWrite")

    def test_end_of_stream_is_a_clean_close(self):
        sock, server = self.peer()
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)  # EOF with the socket still open: EPOLLIN alone
        self.spin(lambda: server.reasons)
        self.assertEqual(server.received, b"last words")
        server.reasons[0].trap(ConnectionDone)
        self.assertNotIn(server.transport, self.reactor.getReaders())

    def test_a_reset_is_a_lost_connection(self):
        sock, server = self.peer()
        server.transport.socket = ResettingSocket(server.transport.socket)
        sock.sendall(b"x")
        self.spin(lambda: server.reasons)
        server.reasons[0].trap(ConnectionLost)
        self.assertEqual(server.received, b"")
        self.assertNotIn(server.transport, self.reactor.getReaders())

    def test_an_error_in_the_protocol_is_logged_and_closes_only_its_connection(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        bad_sock, bad = self.peer()
        good_sock, good = self.peer()
        bad_sock.sendall(b"boom")
        self.spin(lambda: bad.reasons)
        bad.reasons[0].trap(ValueError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        logged = [e for e in events if e.get("log_namespace") == "vkafka.dispatch"]
        self.assertEqual(len(logged), 1)
        self.assertIn("boom", str(logged[0]["log_failure"].value))
        self.assertNotIn(bad.transport, self.reactor.getReaders())
        good_sock.sendall(b"still served")
        self.spin(lambda: good.received == b"still served")
        self.assertEqual(good.reasons, [])

    def test_a_replaced_doRead_is_called(self):
        """A transport whose doRead Twisted replaced (a client still connecting,
        an aborted connection) is read by that doRead, as Twisted would."""
        sock, server = self.peer()
        calls = []
        server.transport.doRead = lambda: calls.append("replaced")
        sock.sendall(b"x")
        self.spin(lambda: calls)
        self.assertEqual(server.received, b"")

    def test_a_refused_connection_fails_as_before(self):
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]
        closed.close()
        outcome = []
        protocol.ClientCreator(self.reactor, Collect).connectTCP(
            "127.0.0.1", refused_port).addBoth(outcome.append)
        self.spin(lambda: outcome)
        outcome[0].trap(ConnectionRefusedError)
