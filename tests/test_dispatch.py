"""The lean per-event dispatch (vkafka/tuning.py), compiled and in Python,
on a private epoll reactor instance (never the global one) over loopback
sockets."""

import socket
import threading
import time

from twisted.internet import protocol, tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from vkafka import tuning
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
    """A test case with its own epoll reactor, closed with its ports after;
    ``lean()`` gives it the compiled loop, or the Python one in the
    ``Python...`` subclasses."""

    compiled = True

    def lean(self):
        return lean_dispatch(self.reactor, compiled=self.compiled)

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
        self.assertTrue(self.lean())
        self.assertIs(self.reactor.doIteration, self.reactor.doPoll)

    def test_connections_are_served(self):
        """Accept, read, write and close all go through the lean loop."""
        self.assertTrue(self.lean())
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
        self.assertTrue(self.lean())
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
        self.assertTrue(self.lean())
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


class Pong(protocol.Protocol):
    """Sends each read straight back on its socket, as the gateway's outbox
    sends (no Twisted write queue, so no write events)."""

    def dataReceived(self, data):
        self.transport.socket.send(data)


class Ping(Pong):
    """The other end: counts the exchanges, calls ``factory.each(count)``
    after each, and stops at ``factory.limit`` (the reactor stopped)."""

    count = 0

    def connectionMade(self):
        self.factory.pinger = self
        self.transport.socket.send(b"p" * 100)

    def dataReceived(self, data):
        self.count += 1
        self.factory.each(self.count)
        if self.count == self.factory.limit:
            self.factory.reactor.stop()
        elif self.count < self.factory.limit:
            super().dataReceived(data)


class WaitAgainTests(PrivateReactorCase):
    """While a ping-pong keeps the reactor busy, whatever needs Twisted's
    mainLoop (a new or due timed call, a call from a thread, a stop, the
    caller's timeout) still gets it at once: the compiled loop, which
    serves wake-ups without going back to mainLoop, must not starve it."""

    LIMIT = 300_000
    """Exchanges at most (seconds of traffic): a starved call runs only after."""

    def setUp(self):
        super().setUp()
        self.assertTrue(self.lean())
        self.fired = []
        self.turns = 0
        turn = self.reactor.runUntilCurrent

        def counted():
            self.turns += 1
            turn()
        self.reactor.runUntilCurrent = counted
        self.guard = self.reactor.callLater(60, self.reactor.crash)  # no hang, ever

    def tearDown(self):
        if self.guard.active():
            self.guard.cancel()

    def ping_pong(self, each=lambda count: None, limit=LIMIT, run=True):
        """Start the exchanges (and run the reactor until they stop); the pinger."""
        self.listen_port = self.listen(protocol.ServerFactory.forProtocol(Pong))
        factory = protocol.ClientFactory.forProtocol(Ping)
        factory.reactor, factory.each, factory.limit = self.reactor, each, limit
        self.factory = factory
        self.reactor.connectTCP("127.0.0.1", self.listen_port, factory)
        if run:
            self.reactor.run(installSignalHandlers=False)
            self.assertTrue(self.guard.active(), "the reactor ran until the guard")
        return factory

    def mark(self):
        self.fired.append(self.pinger_count())
        if self.reactor.running:
            self.reactor.stop()

    def assert_fired_while_traffic_flowed(self):
        self.assertEqual(len(self.fired), 1)
        self.assertLess(self.fired[0], self.LIMIT, "ran only after the traffic")

    def pinger_count(self):
        return self.factory.pinger.count

    def test_a_timed_call_made_in_a_read_runs_at_once(self):
        def each(count):
            if count == 100:
                self.reactor.callLater(0, self.mark)
        self.ping_pong(each)
        self.assertEqual(len(self.fired), 1)
        self.assertLessEqual(self.fired[0], 102)

    def test_a_due_timed_call_runs_while_traffic_flows(self):
        self.ping_pong(lambda count: count == 1 and self.reactor.callLater(
            0.05, self.mark))
        self.assert_fired_while_traffic_flowed()

    def test_a_timed_call_moved_sooner_runs_at_once(self):
        """``DelayedCall.reset`` to an earlier time moves it in Twisted's heap
        (not through its new calls): the loop reads the heap's head."""
        calls = []

        def each(count):
            if count == 1:
                calls.append(self.reactor.callLater(30, self.mark))
            elif count == 100:
                calls[0].reset(0)
        self.ping_pong(each)
        self.assert_fired_while_traffic_flowed()

    def test_a_call_from_a_thread_runs_while_traffic_flows(self):
        def each(count):
            if count == 100:
                threading.Thread(target=self.reactor.callFromThread,
                                 args=(self.mark,)).start()
        self.ping_pong(each)
        self.assert_fired_while_traffic_flowed()

    def test_a_stop_is_seen_at_once(self):
        def each(count):
            if count == 50:
                self.reactor.stop()
        self.ping_pong(each)
        self.assertLessEqual(self.factory.pinger.count, 52)

    def test_iterate_returns_under_traffic(self):
        """``iterate`` (the reactor not running) serves and comes back."""
        factory = self.ping_pong(run=False)
        self.spin(lambda: getattr(factory, "pinger", None) and factory.pinger.count > 10)
        before = factory.pinger.count
        self.reactor.iterate(0.02)
        self.reactor.iterate(0.02)
        self.assertGreater(factory.pinger.count, before)
        self.assertLess(factory.pinger.count, self.LIMIT)

    def test_wake_ups_are_served_in_one_turn_of_mainLoop(self):
        """What the compiled loop is for: thousands of reads, few turns."""
        self.ping_pong(limit=2000)
        self.assertEqual(self.factory.pinger.count, 2000)
        self.assertLess(self.turns, 100)


class PythonLeanDispatchTests(LeanDispatchTests):
    compiled = False


class PythonPlainReadTests(PlainReadTests):
    compiled = False


class PythonWaitAgainTests(WaitAgainTests):
    """The Python loop goes back to mainLoop after every wake-up."""

    compiled = False

    def test_wake_ups_are_served_in_one_turn_of_mainLoop(self):
        self.ping_pong(limit=2000)
        self.assertGreaterEqual(self.turns, 2000)


class CompiledTests(unittest.TestCase):
    def test_compiled_dispatch_is_built(self):
        self.assertIsNotNone(
            tuning._dispatch, "vkafka/_dispatch.c is not built (make setup, or "
            "python setup.py build_ext --inplace): the gateway runs the slower "
            "Python loop")

    def test_odd_timeouts_poll_once(self):
        """NaN, 0 and a negative zero: one poll that returns (no hang)."""
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.addCleanup(reactor.waker.connectionLost, None)
        self.assertTrue(lean_dispatch(reactor))
        for timeout in (float("nan"), 0, -0.0, 0.001):
            reactor.doIteration(timeout)

    def test_a_bad_config_is_a_type_error(self):
        for config in (None, (), (1,) * 9, (None, [], (), None, None, None, None,
                                             None, None, None)):
            self.assertRaises(TypeError, tuning._dispatch.poll, config, 0)


class SendableTests(unittest.TestCase):
    """``_dispatch.sendable`` (what proxy/_lane.c asks before it sends)
    answers as ``tuning.sendable``, attribute by attribute."""

    def transport(self, kind=tcp.Server, **changed):
        made = kind.__new__(kind)
        made.TLS = False
        made.connected, made.disconnecting, made._writeDisconnected = 1, False, False
        made._tempDataLen, made.dataBuffer, made.offset = 0, b"", 0
        for name, value in changed.items():
            setattr(made, name, value)
        return made

    def test_as_the_python(self):
        compiled, plain = tuning.compiled_sendable()
        cases = [self.transport(), self.transport(tcp.Client),
                 self.transport(TLS=True), self.transport(connected=0),
                 self.transport(disconnecting=True),
                 self.transport(_writeDisconnected=True),
                 self.transport(_tempDataLen=3), self.transport(dataBuffer=b"abc"),
                 self.transport(dataBuffer=b"abc", offset=3),
                 self.transport(offset=1), object()]
        answers = [tuning.sendable(t) for t in cases]
        self.assertEqual([compiled(t, plain) for t in cases], answers)
        self.assertEqual(answers.count(True), 3)

    def test_only_the_types_given(self):
        compiled, plain = tuning.compiled_sendable()
        self.assertFalse(compiled(self.transport(), ()))
        self.assertFalse(compiled(self.transport(), (tcp.Client,)))
        self.assertTrue(compiled(self.transport(), (tcp.Client, tcp.Server)))

    def test_errors_raised(self):
        compiled, plain = tuning.compiled_sendable()

        class Broken(tcp.Server):
            @property
            def offset(self):
                raise AttributeError("offset")
        broken = self.transport()
        del broken.offset
        broken.__class__ = Broken
        self.assertRaises(AttributeError, compiled, broken, (Broken,))
        self.patch(tuning, "_PLAIN_TCP", (Broken,))
        self.assertRaises(AttributeError, tuning.sendable, broken)
        self.assertRaises(TypeError, compiled, broken)
        self.assertRaises(TypeError, compiled, broken, [tcp.Server])
