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
like the loop's own.
"""

import time

from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


def _timed(f, *args):
    start = time.thread_time()
    result = f(*args)
    return result, time.thread_time() - start


class CodecThread:
    """``(f, *args) -> Deferred of (f(*args), CPU seconds)`` in one thread,
    started and stopped with the reactor."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="vkafka-codec")
        reactor.callWhenRunning(self.pool.start)
        reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)

    def __call__(self, f, *args):
        return deferToThreadPool(self.reactor, self.pool, _timed, f, *args)
