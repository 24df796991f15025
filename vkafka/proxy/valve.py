# -*- test-case-name: tests.test_throttle -*-
"""The reads of one connection, held for more than one reason.

Twisted pauses a transport for backpressure (the broker's socket is full)
and resumes it when that clears; the gateway also holds a client's reads
while its broker connection opens, while a rate limit throttles it and
while its tenant's buffers are full (buffers.py).  A broker connection's
reads are held while its client reads no answers and while the tenant's
answer buffer is full.  A valve reads again only when no reason holds, so
the end of backpressure never cuts a throttle short.
"""

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer


@implementer(IPushProducer)
class Valve:
    """The reasons holding one transport's reads.  A client's valve also stands
    for the client transport as the broker transport's producer."""

    def __init__(self, transport):
        self.transport = transport
        self.reasons = set()
        self._timers = {}
        self._when_open = None
        self.queue = None
        """buffers.Queue: what is written to the transport this valve is the
        producer of, and not sent, counted in the tenant's budget."""

    def hold(self, reason):
        if not self.reasons:
            self.transport.pauseProducing()
        self.reasons.add(reason)

    def release(self, reason):
        if reason in self.reasons:
            self.reasons.discard(reason)
            if not self.reasons:
                self.transport.resumeProducing()
                opened, self._when_open = self._when_open, None
                if opened is not None:
                    opened()

    def when_open(self, call):
        """*call* once no reason holds the reads any more (one at a time)."""
        self._when_open = call

    def hold_for(self, reason, seconds, reactor):
        """Hold for *seconds* from now (or longer, if already held longer);
        returns the seconds this added to the hold."""
        now = reactor.seconds()
        held_until = now
        timer = self._timers.get(reason)
        if timer is not None and timer.active():
            held_until = timer.getTime()
            if held_until >= now + seconds:
                return 0.0
            timer.cancel()
        self.hold(reason)
        self._timers[reason] = reactor.callLater(seconds, self.release, reason)
        return now + seconds - held_until

    def until(self, reason):
        """When the hold for *reason* ends (reactor seconds), or None if none
        is timed."""
        timer = self._timers.get(reason)
        return timer.getTime() if timer is not None and timer.active() else None

    def stop(self):
        """The connection closed: no timer outlives it, nothing waits to open."""
        self._when_open = None
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()

    # IPushProducer: backpressure from the broker's socket

    def pauseProducing(self):
        self.hold("backpressure")
        if self.queue is not None:
            self.queue.full()

    def resumeProducing(self):
        if self.queue is not None:
            self.queue.sent()
        self.release("backpressure")

    def stopProducing(self):
        self.transport.stopProducing()


@implementer(IPushProducer)
class Unsent:
    """The client transport's producer.  When the gateway's answers pile up
    unsent (the client reads none), the client is read no more (its
    requests would make more answers: Kafka mutes such a channel too), and
    neither is its broker (whose answers go the same way).  Without it a
    client that never reads its answers grew the gateway's memory without
    bound, its small requests answered twenty times larger."""

    def __init__(self, valve):
        self.valve = valve
        self.broker = None
        """The broker's Valve (its reads), once connected."""
        self.paused = False
        self.queue = None
        """buffers.Queue: the answers written to the client and not sent,
        counted in the tenant's budget."""

    def connected(self, broker):
        self.broker = broker
        if self.paused:
            broker.hold("unsent")

    def pauseProducing(self):
        self.paused = True
        self.valve.hold("unsent")
        if self.broker is not None:
            self.broker.hold("unsent")
        if self.queue is not None:
            self.queue.full()

    def resumeProducing(self):
        self.paused = False
        if self.queue is not None:
            self.queue.sent()
        if self.broker is not None:
            self.broker.release("unsent")
        self.valve.release("unsent")

    def stopProducing(self):
        if self.broker is not None:
            self.broker.stopProducing()
