# -*- test-case-name: tests.test_throttle -*-
"""Rate limits as brokers apply quotas (KIP-219): throttle, never refuse.

A virtual cluster's rates (state/limits.py: produce bytes/s, fetch bytes/s,
requests/s) are its total over every gateway.  Each gateway holds a share of
each rate (``Rates.share``, set every second from what every gateway
observed, rates.py in state) and meters its traffic against it with a token
bucket.  A request that takes the bucket into debt is still served: its
response says how long the client should wait (throttle_time_ms) and the
gateway stops reading that connection for as long, so a client slows down
without an error and nothing is lost.
"""

import math
from collections import deque

from ..protocol.throttle import throttled

PRODUCE = 0
FETCH = 1


class Bucket:
    """A token bucket of *rate* per second that holds one second of burst
    (empty at first: gateways starting together must not each burst);
    ``take`` answers how long the caller must wait for what it took."""

    __slots__ = ("rate", "tokens", "at", "clock")

    def __init__(self, rate, clock):
        self.rate = rate
        self.tokens = 0.0
        self.clock = clock
        self.at = clock()

    def set_rate(self, rate):
        """A new share: what is owed stays owed."""
        self._fill()
        self.rate = rate
        self.tokens = min(self.tokens, rate)

    def take(self, amount):
        self._fill()
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    @property
    def debt(self):
        """What was taken beyond the rate and is not paid back yet."""
        self._fill()
        return max(0.0, -self.tokens)

    def _fill(self):
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now


class Share(Bucket):
    """A virtual cluster's loop seconds, and its connections waiting for them,
    in the order they came.  Past the share, waiting connections are let go
    one at a time as the debt is paid: each turn handles what that connection
    holds, and whoever it puts in debt waits behind the rest.  Released all at
    once instead, the first to run spent the share again and the others were
    held anew, so some waited for ever (12 connections making topics: holds of
    28 s, each client's request timing out)."""

    __slots__ = ("waiting", "timer", "call_later")

    def __init__(self, rate, clock, call_later):
        super().__init__(rate, clock)
        self.tokens = rate  # a first burst: a client's first requests
        self.waiting = deque()
        self.timer = None
        self.call_later = call_later

    def wait(self):
        """Seconds until the debt is paid (0: none worth waiting for)."""
        debt = self.debt / self.rate
        return debt if debt >= MIN_WAIT else 0.0

    def queue(self, conn):
        """True if *conn* must wait for its turn (``conn.loop_turn`` is
        called then); False if it may go on now."""
        if not self.waiting and not self.wait():
            return False
        self.waiting.append((conn, self.clock()))
        self._next()
        return True

    def leave(self, conn):
        """*conn* closed while it waited."""
        for entry in self.waiting:
            if entry[0] is conn:
                self.waiting.remove(entry)
                return

    def _next(self):
        if self.timer is None and self.waiting:
            self.timer = self.call_later(self.wait(), self._turn)

    def _turn(self):
        """The debt is paid (or someone overspent meanwhile: wait again):
        the longest waiting connection's turn; the next one's at the
        loop's next turn, once this one has run."""
        self.timer = None
        if not self.wait() and self.waiting:
            conn, since = self.waiting.popleft()
            conn.loop_turn(self.clock() - since)
        self._next()


MIN_WAIT = 0.001
"""Less debt than this is rounding, paid by the time a hold would end."""


class LoopShare:
    """Event-loop time per virtual cluster.  A request or answer the gateway
    decodes costs about a microsecond per 3 bytes on the loop every tenant shares:
    a tenant pipelining 1 MiB OffsetCommits could keep it busy alone.  Each
    virtual cluster may spend *share* of a second of decoding per second
    (a burst of as much to start); beyond it the connection that overspent
    reads nothing more until the debt is paid, as a broker mutes a channel,
    and the virtual cluster's other connections (new ones too) wait their
    turns (``Share``) once they have a request to handle.  Produce and Fetch
    v13+ are sliced, not decoded: counted only when one takes SMALL_WORK or
    more."""

    def __init__(self, share, clock, call_later):
        self.share = share
        self.clock = clock
        self.call_later = call_later
        self.buckets = {}
        """Virtual cluster -> Share of loop seconds."""
        self.processes = 1
        """The gateway's workers (set by vkafka/worker.py): each worker has a
        loop of its own, but the brokers are the same for all of them, so
        work a tenant has the brokers do is charged N times on each
        (``charge_brokers``): more workers do not multiply it."""

    def bucket(self, vcluster):
        """*vcluster*'s Share of loop seconds: every connection of the
        virtual cluster checks it before its requests (``tokens`` below 0,
        or connections waiting: it waits its turn)."""
        bucket = self.buckets.get(vcluster)
        if bucket is None:
            bucket = self.buckets[vcluster] = Share(self.share, self.clock,
                                                    self.call_later)
        return bucket

    def charge(self, vcluster, seconds):
        """*vcluster* spent *seconds* of the loop: seconds to hold its reads."""
        return self.bucket(vcluster).take(seconds)

    def charge_brokers(self, vcluster, seconds):
        """*vcluster* had the brokers do *seconds* of its share's worth of
        work (rules/common.py ``broker_work``, a login): ``charge``, times
        the workers sharing the brokers."""
        return self.bucket(vcluster).take(seconds * self.processes)


class TenantRates:
    """One virtual cluster's buckets on this gateway, and what it observed
    (reported to the other gateways, which split the limit by it)."""

    DIMENSIONS = ("produce_bytes_per_second", "fetch_bytes_per_second",
                  "requests_per_second")

    def __init__(self, clock):
        self.clock = clock
        self.buckets = {}
        """Dimension -> Bucket, for the dimensions limited."""
        self.limited = False
        """Any rate limited (a plain attribute: read on every request)."""
        self.observed = dict.fromkeys(self.DIMENSIONS, 0)
        """Dimension -> amount since the last report."""
        self.since = clock()
        """When it was made: its first seconds are a warm-up (shares.py)."""

    def set(self, rates, shares):
        """The limit *rates* (a Rates), of which this gateway has *shares*
        (dimension -> 0..1, absent: all of it)."""
        for name in self.DIMENSIONS:
            limit = getattr(rates, name)
            if limit is None:
                self.buckets.pop(name, None)
                continue
            rate = max(limit * shares.get(name, 1.0), 1.0)
            bucket = self.buckets.get(name)
            if bucket is None:
                self.buckets[name] = Bucket(rate, self.clock)
            else:
                bucket.set_rate(rate)
        self.limited = bool(self.buckets)

    def request(self, api_key, size):
        """Seconds to throttle the client for a request of *size* bytes."""
        delay = self._take("requests_per_second", 1)
        if api_key == PRODUCE:
            delay = max(delay, self._take("produce_bytes_per_second", size))
        return delay

    def fetched(self, size):
        """Seconds to throttle the client for a Fetch response of *size* bytes."""
        return self._take("fetch_bytes_per_second", size)

    def response(self, pending, frame):
        """(*frame* saying the throttle its request earned, seconds more to
        hold the connection's reads): a Fetch response's bytes count here;
        the request's own throttle was held when it was forwarded."""
        fetched = self.fetched(len(frame) + 4) if pending.api_key == FETCH else 0.0
        delay = max(pending.throttle, fetched)
        if delay <= 0:
            return frame, 0.0
        ms = min(math.ceil(delay * 1000), 2 ** 31 - 1)
        return throttled(frame, pending.api_key, pending.api_version, ms), fetched

    def _take(self, name, amount):
        self.observed[name] += amount
        bucket = self.buckets.get(name)
        return 0.0 if bucket is None else bucket.take(amount)

    def demand(self, interval):
        """Per second, what this gateway's clients wanted since the last call:
        what was served, and what is still owed beyond the rate (so a gateway
        whose clients are held back asks for more), then starts again."""
        observed, self.observed = self.observed, dict.fromkeys(self.DIMENSIONS, 0)
        return {d: (observed[d] + (self.buckets[d].debt if d in self.buckets else 0))
                / interval for d in self.DIMENSIONS}
