"""Process tuning in one module (vkafka/tuning.py), applied only when asked."""

import socket
import sys
from types import SimpleNamespace

from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from vkafka import tuning


class TuningTests(unittest.TestCase):
    def test_written_for_this_twisted(self):
        """The private attributes the lean dispatch and the direct writes use
        exist on the installed Twisted's EPollReactor and tcp.Connection."""
        reactor = EPollReactor()
        self.addCleanup(reactor._poller.close)
        self.addCleanup(reactor.waker.connectionLost, None)
        tuning.check(reactor=reactor, connection=tuning._sample_connection())

    def test_other_twisted_fails_clearly(self):
        """On a Twisted without them the check names each missing attribute,
        the Twisted it was written for and the way out (--tuning=false)."""
        class Reactor:
            _poller = None

        class Connection:
            dataBuffer = b""
        with self.assertRaises(tuning.TwistedMismatch) as caught:
            tuning.check(reactor=Reactor(), connection=Connection())
        message = str(caught.exception)
        for expected in ("Reactor._doReadOrWrite", "Reactor._selectables",
                         "Connection._tempDataLen", "Connection.offset",
                         tuning.WRITTEN_FOR, "--tuning=false"):
            self.assertIn(expected, message)
        self.assertNotIn("Reactor._poller", message)

    def test_service_without_tuning_changes_nothing(self):
        """``--tuning=false`` (as every test builds services): the switch
        interval is Python's, the reactor's loop its own."""
        from vkafka.tap import Options, makeService
        before = sys.getswitchinterval()
        reactor = MemoryReactorClock()
        options = Options({})
        options.parseOptions(["--tuning=false", "--port-count=1", "--workers=1"])
        makeService(options, reactor)
        self.assertEqual(sys.getswitchinterval(), before)
        self.assertNotIn("doPoll", vars(reactor))

    def test_apply_reports_what_took_effect(self):
        """On a reactor that is not an EPollReactor the dispatch is left alone;
        the switch interval and (glibc) allocator are applied and named."""
        before = sys.getswitchinterval()
        self.addCleanup(sys.setswitchinterval, before)
        applied = tuning.apply(MemoryReactorClock())
        self.assertEqual(sys.getswitchinterval(), tuning.SWITCH_INTERVAL)
        self.assertIn("switch interval", applied)
        self.assertNotIn("lean dispatch", applied)

    def test_collector_held(self):
        """The cyclic collector is off inside, as it was after."""
        import gc
        self.addCleanup(gc.enable)
        with tuning.collector_held():
            self.assertFalse(gc.isenabled())
        self.assertTrue(gc.isenabled())
        gc.disable()
        with tuning.collector_held():
            pass
        self.assertFalse(gc.isenabled())


class CalledDirectlyTests(unittest.TestCase):
    """``tuning.called_directly``: a broker connection's reads reach it, not
    the wrapper its client endpoint put around it."""

    def plain(self, protocol):
        transport = tcp.Client.__new__(tcp.Client)
        transport.socket = socket.socket()
        self.addCleanup(transport.socket.close)
        transport.protocol = protocol
        return transport

    def test_broker_connection_unwrapped_on_plain_tcp(self):
        from vkafka.proxy.broker import BrokerConnection
        client = SimpleNamespace(gateway=SimpleNamespace(max_response_size=1 << 20),
                                 upstream_ready=lambda broker: None)
        broker = BrokerConnection(client)
        wrapper = object()
        broker.makeConnection(self.plain(wrapper))
        self.assertIs(broker.transport.protocol, broker)

    def test_other_transports_keep_theirs(self):
        wrapper = object()
        transport = StringTransport()
        transport.protocol = wrapper
        tuning.called_directly(SimpleNamespace(transport=transport))
        self.assertIs(transport.protocol, wrapper)
        protocol = SimpleNamespace()
        protocol.transport = self.plain(protocol)
        tuning.called_directly(protocol)
        self.assertIs(protocol.transport.protocol, protocol)

    def test_a_transport_with_no_protocol_left_alone(self):
        """bench/hotpath.py --socket counts its in-memory transport as plain
        TCP; one that has no ``protocol`` is left as it is."""
        self.patch(tuning, "_PLAIN_TCP", tuning._PLAIN_TCP + (StringTransport,))
        transport = StringTransport()
        tuning.called_directly(SimpleNamespace(transport=transport))
        self.assertFalse(hasattr(transport, "protocol"))
