# -*- test-case-name: tests.test_throttle -*-
"""The reads of one client connection, held for more than one reason.

Twisted pauses a transport for backpressure (the broker's socket is full)
and resumes it when that clears; the gateway also holds a client's reads
while its broker connection opens and while a rate limit throttles it.  The
valve reads again only when no reason holds, so the end of backpressure
never cuts a throttle short.
"""

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer


@implementer(IPushProducer)
class Valve:
    """Stands for the client transport as the broker transport's producer."""

    def __init__(self, transport):
        self.transport = transport
        self.reasons = set()
        self._timers = {}

    def hold(self, reason):
        if not self.reasons:
            self.transport.pauseProducing()
        self.reasons.add(reason)

    def release(self, reason):
        if reason in self.reasons:
            self.reasons.discard(reason)
            if not self.reasons:
                self.transport.resumeProducing()

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
        """The connection closed: no timer outlives it."""
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()

    # IPushProducer: backpressure from the broker's socket

    def pauseProducing(self):
        self.hold("backpressure")

    def resumeProducing(self):
        self.release("backpressure")

    def stopProducing(self):
        self.transport.stopProducing()
