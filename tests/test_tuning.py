"""Process tuning in one module (vkafka/tuning.py), applied only when asked."""

import sys

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.testing import MemoryReactorClock
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
