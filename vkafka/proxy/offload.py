# -*- test-case-name: tests.test_offload -*-
"""Large decodes and encodes off the event loop, in one codec thread.

kio decodes and, above all, encodes a message entity by entity in Python: a
DescribeConfigs of 50,000 resources took the loop ~0.8 s, during which no
other tenant was served.  Requests and answers of
``tenancy.services.OFF_LOOP_FROM`` bytes or more are decoded and encoded in
this thread instead (filters/tenant.py, filters/responses.py); their
rewrite, which reads the gateway's state, stays on the loop.  The codec functions are pure (bytes in, frozen objects out,
and back), so nothing is shared but their arguments.  One thread: while it
works, the loop still gets the interpreter every switch interval (1 ms,
tuning.py), and two tenants' large messages wait for each other rather than
for the loop.  The thread's CPU time is charged to the tenant's loop share
like the loop's own.  Work waiting for the thread is taken one piece per
virtual cluster in turn (``key``), so a tenant with many connections
queueing large work (a compressed Produce counted inflated takes up to
~0.2 s) delays another's next piece by one of its own, not by all of them.
"""

import threading
import time
from collections import deque

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool


def _timed(f, *args):
    start = time.thread_time()
    result = f(*args)
    return result, time.thread_time() - start


class CodecThread:
    """``(f, *args, key=...) -> Deferred of (f(*args), CPU seconds)`` in one
    thread, started and stopped with the reactor; waiting work is taken a
    piece per *key* (a virtual cluster) in turn."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="vkafka-codec")
        reactor.callWhenRunning(self.pool.start)
        reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)
        self._lock = threading.Lock()
        self._waiting = {}
        """key -> deque of (f, args, Deferred), for keys with work waiting."""
        self._turns = deque()
        """The keys with work waiting, in the order they are served."""

    def __call__(self, f, *args, key=None):
        d = Deferred()
        with self._lock:
            if key not in self._waiting:
                self._waiting[key] = deque()
                self._turns.append(key)
            self._waiting[key].append((f, args, d))
        self.pool.callInThread(self._next)  # one run a piece: the counts agree
        return d

    def _next(self):
        """In the thread: the next key's oldest piece of work."""
        with self._lock:
            key = self._turns.popleft()
            waiting = self._waiting[key]
            f, args, d = waiting.popleft()
            if waiting:
                self._turns.append(key)
            else:
                del self._waiting[key]
        try:
            result = _timed(f, *args)
        except BaseException:
            self.reactor.callFromThread(d.errback, Failure())
        else:
            self.reactor.callFromThread(d.callback, result)
