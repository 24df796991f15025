"""The codec thread (proxy/offload.py): work runs off the reactor thread and
its result, with the CPU seconds it took, comes back on the reactor's."""

import queue
import threading
import time

from twisted.trial import unittest

from vkafka.proxy.offload import CodecThread


class FakeReactor:
    """What CodecThread asks of a reactor; calls from the thread are queued
    for the test to run, as the reactor thread would."""

    def __init__(self):
        self.when_running, self.triggers = [], []
        self.calls = queue.Queue()

    def callWhenRunning(self, f, *args):
        self.when_running.append((f, args))

    def addSystemEventTrigger(self, phase, event, f, *args):
        self.triggers.append((phase, event, f))

    def callFromThread(self, f, *args, **kwargs):
        self.calls.put((f, args, kwargs))


class CodecThreadTests(unittest.TestCase):
    def setUp(self):
        self.reactor = FakeReactor()
        self.codec = CodecThread(self.reactor)
        for f, args in self.reactor.when_running:
            f(*args)  # the reactor started: so does the thread
        [(phase, event, stop)] = self.reactor.triggers
        self.assertEqual((phase, event), ("during", "shutdown"))
        self.addCleanup(stop)

    def run_from_thread(self, d):
        """Deliver the thread's answer as the reactor would; *d*'s result."""
        f, args, kwargs = self.reactor.calls.get(timeout=30)
        f(*args, **kwargs)
        return self.successResultOf(d)

    def test_runs_in_its_own_thread_and_times_itself(self):
        def work(n):
            deadline = time.thread_time() + 0.02
            while time.thread_time() < deadline:
                pass
            return n * 2, threading.current_thread().name
        (doubled, name), seconds = self.run_from_thread(self.codec(work, 21))
        self.assertEqual(doubled, 42)
        self.assertNotEqual(name, threading.current_thread().name)
        self.assertIn("vkafka-codec", name)
        self.assertGreaterEqual(seconds, 0.02)

    def test_errors_come_back_as_failures(self):
        d = self.codec(int, "not a number")
        f, args, kwargs = self.reactor.calls.get(timeout=30)
        f(*args, **kwargs)
        self.failureResultOf(d, ValueError)

    def test_tenants_take_turns(self):
        """Work queued by one key does not make another's wait behind all
        of it: the thread serves one piece per key in turn."""
        gate, started = threading.Event(), threading.Event()
        order = []

        def work(name):
            started.set()
            gate.wait(30)
            order.append(name)
            return name
        done = [self.codec(work, "a0", key="a")]
        self.assertTrue(started.wait(30))  # a0 runs: the thread is held
        done += [self.codec(work, f"a{n}", key="a") for n in range(1, 4)]
        done += [self.codec(work, "b0", key="b")]
        gate.set()
        for d in done:
            f, args, kwargs = self.reactor.calls.get(timeout=30)
            f(*args, **kwargs)
        self.assertEqual(order, ["a0", "a1", "b0", "a2", "a3"])
