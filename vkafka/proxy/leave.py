# -*- test-case-name: tests.test_membership -*-
"""Leaving the gateway cluster on SIGTERM, handing clients over first.

Closing every connection at once would fail the requests in flight; so a
gateway of a cluster (state/membership.py) leaves in steps, each bounded by
the drain timeout: it says it is leaving (the other gateways stop
advertising it, and so does it in its own answers), stops accepting Kafka
connections, waits ``SETTLE`` seconds for the others to have read that,
then closes each connection as soon as no response is owed on it (the
client refreshes its metadata and reconnects to a live gateway, no request
of its own failed), and at the deadline whatever is left.  Only then do
the other services stop.
"""

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

SETTLE = 1.0
"""Seconds between saying so and closing: the others read it within 0.2 s."""
POLL = 0.05


class LeavingService(service.MultiService):
    """The gateway's service tree; in a cluster it drains before it stops."""

    log = Logger()

    def __init__(self, reactor):
        super().__init__()
        self.reactor = reactor
        self.gateway = None
        self.listeners = []
        """The Kafka ports' services: stopped first, so nobody new comes."""
        self.timeout = 0.0

    def stopService(self):
        d = defer.maybeDeferred(self.drain)
        d.addErrback(lambda f: self.log.failure("drain failed", f))
        d.addCallback(lambda _: service.MultiService.stopService(self))
        return d

    @defer.inlineCallbacks
    def drain(self):
        gateway = self.gateway
        membership = None if gateway is None else gateway.membership
        if membership is None or len(membership.nodes()) < 2 or self.timeout <= 0:
            return
        clock = self.reactor
        deadline = clock.seconds() + self.timeout
        open_at_start = len(gateway.connections)
        self.log.info("leaving the gateway cluster: {n} client connections to hand "
                      "over within {t:.0f}s", n=open_at_start, t=self.timeout)
        said = membership.leave()
        membership.stop()
        said.addErrback(lambda f: None)
        yield _within(clock, said, SETTLE)
        for listener in self.listeners:
            yield defer.maybeDeferred(listener.disownServiceParent)
        yield task.deferLater(clock, max(0.0, min(SETTLE, deadline - clock.seconds())),
                              lambda: None)
        gateway.draining = True
        while clock.seconds() < deadline:
            for conn in list(gateway.connections):
                conn.close_if_idle()
            if not gateway.connections:
                break
            yield task.deferLater(clock, POLL, lambda: None)
        left = list(gateway.connections)
        for conn in left:
            conn.close()
        self.log.info("left the gateway cluster: {n} of {total} connections closed "
                      "while busy", n=len(left), total=open_at_start)


def _within(clock, d, seconds):
    """*d*, or None after *seconds*, whichever comes first."""
    waiter = defer.Deferred()
    call = clock.callLater(seconds, lambda: waiter.called or waiter.callback(None))

    def done(result):
        if call.active():
            call.cancel()
        if not waiter.called:
            waiter.callback(result)
    d.addBoth(done)
    return waiter
