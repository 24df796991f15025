# -*- test-case-name: tests.test_usage -*-
"""Traffic per virtual cluster and UTC hour, over every gateway.

Each gateway's ``Ledger`` reads its own traffic counters (the ``Tally``
series of vkafka/metrics.py that the splice feeds: nothing is added to the
data path) every ``PUBLISH_EVERY`` seconds and at the end of each UTC hour,
and keeps what this gateway counted of each virtual cluster in each hour.
It writes the figures of each virtual cluster active in the hour (traffic or
open connections) as one record of the usage topic::

    <vc>/<YYYY-MM-DDTHH>/<gateway id> -> {"bytesIn", "bytesOut", "recordsIn",
                                          "recordsOut", "requests",
                                          "connections", "at"}

The counts are cumulative for that hour on that gateway, so a later record
replaces an earlier one: compaction keeps one per key, and a lost write is
made good by the next.  A gateway that restarts within an hour takes its
own record of that hour as the base it adds to (what it counted in its last
seconds before it stopped, after its last write, is lost).

Every gateway follows the topic (``UsageBook``) and sums the gateways'
records: a period's usage is the sum of its hours over every gateway.
"""

import bisect
import datetime
import time
from array import array

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..metrics import PASSTHROUGH

FIELDS = ("bytesIn", "bytesOut", "recordsIn", "recordsOut", "requests")
WIDTH = len(FIELDS)
SOURCES = {"bytes": {"in": 0, "out": 1}, "records": {"in": 2, "out": 3}}
"""Metrics attribute -> direction label -> index in FIELDS (the two-way tallies;
``requests`` is the last field)."""
ZERO = (0,) * WIDTH

HOUR = 3600
RETENTION_DAYS = 35
RETENTION_HOURS = RETENTION_DAYS * 24
"""How far back periods reach: the usage topic's retention, and what the
gateways keep in memory."""
PUBLISH_EVERY = 10.0
FRESH = 35.0
"""Seconds a record's connection count is believed (three missed writes: the
gateway has gone)."""
TOPIC_CONFIGS = {"cleanup.policy": "compact,delete",
                 "retention.ms": str(RETENTION_HOURS * HOUR * 1000),
                 "segment.ms": str(HOUR * 1000)}
"""The usage topic's configs: one-hour segments, so that compaction leaves one
record per key within about an hour and deletion after 35 days is per hour."""

UNATTRIBUTED = frozenset({PASSTHROUGH, "unauthenticated"})
"""Metrics labels that are no virtual cluster (proxy/splice.py counts a
connection as ``unauthenticated`` until its SASL login succeeds)."""

_MAX = 2 ** 63 - 1


def hour_of(seconds):
    """Hours since the epoch of a time in seconds (UTC hours)."""
    return int(seconds // HOUR)


def hour_label(hour):
    """``2026-11-29T19``: the hour's part of a record key."""
    return time.strftime("%Y-%m-%dT%H", time.gmtime(hour * HOUR))


def iso(hour):
    """The start of *hour* in ISO 8601 (``2026-11-29T19:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour * HOUR))


def record_key(vc, hour, gateway):
    return f"{vc}/{hour_label(hour)}/{gateway}"


def parse_key(key):
    """(vc, hour, gateway id) of a record key; ValueError if it is none."""
    vc, label, gateway = key.split("/", 2)
    moment = datetime.datetime.strptime(label, "%Y-%m-%dT%H")
    if not vc or not gateway:
        raise ValueError(f"bad usage key {key!r}")
    return vc, hour_of(moment.replace(tzinfo=datetime.timezone.utc).timestamp()), \
        gateway


def parse_counts(value):
    """The FIELDS of a record's value as a list (a field it lacks is 0), or
    None if it is not a record this version can read."""
    if not isinstance(value, dict):
        return None
    counts = [value.get(name, 0) for name in FIELDS]
    if all(type(c) is int and 0 <= c <= _MAX for c in counts):
        return counts
    return None


class Series:
    """One gateway's counts of one virtual cluster by hour, in hour order: two
    arrays of 64-bit integers, 48 bytes an hour."""

    __slots__ = ("hours", "counts")

    def __init__(self):
        self.hours = array("q")
        self.counts = array("q")

    def __len__(self):
        return len(self.hours)

    def _find(self, hour):
        i = bisect.bisect_left(self.hours, hour)
        return i, i < len(self.hours) and self.hours[i] == hour

    def put(self, hour, counts):
        i, found = self._find(hour)
        if not found:
            self.hours.insert(i, hour)
        self.counts[i * WIDTH:(i + found) * WIDTH] = array("q", counts)

    def get(self, hour):
        i, found = self._find(hour)
        return list(self.counts[i * WIDTH:(i + 1) * WIDTH]) if found else None

    def remove(self, hour):
        i, found = self._find(hour)
        if found:
            del self.hours[i]
            del self.counts[i * WIDTH:(i + 1) * WIDTH]

    def drop_before(self, hour):
        i = bisect.bisect_left(self.hours, hour)
        del self.hours[:i]
        del self.counts[:i * WIDTH]

    def add_to(self, totals, start, end):
        """Add the hours in [start, end) to the list *totals*; whether any was."""
        i = bisect.bisect_left(self.hours, start)
        j = bisect.bisect_left(self.hours, end)
        for k in range(WIDTH):
            totals[k] += sum(self.counts[i * WIDTH + k:j * WIDTH:WIDTH])
        return j > i


class UsageBook:
    """Every gateway's hourly records of the usage topic, as this gateway read
    them: ``vc -> gateway -> Series``, and each gateway's latest connection
    count of each virtual cluster."""

    log = Logger()

    def __init__(self, store):
        self.series = {}
        self.live = {}
        """vc -> gateway -> (hour, at, connections) of its latest record."""
        self.ready = False
        """The topic was read up to its end once (``store.ready``)."""
        self._ready_listeners = []
        store.subscribe(self.apply)
        store.ready.addCallback(self._loaded)

    def _loaded(self, result):
        self.ready = True
        for listener in self._ready_listeners:
            listener()
        return result

    def when_ready(self, callback):
        """Call *callback* once the topic has been read to its end."""
        if self.ready:
            callback()
        else:
            self._ready_listeners.append(callback)

    def apply(self, key, value):
        """A record of the usage topic (None: deleted)."""
        try:
            vc, hour, gateway = parse_key(key)
        except ValueError:
            self.log.warn("usage record {key!r} ignored: not <vc>/<hour>/<gateway>",
                          key=key)
            return
        gateways = self.series.get(vc, {})
        if value is None:
            if gateway in gateways:
                gateways[gateway].remove(hour)
            return
        counts = parse_counts(value)
        if counts is None:
            self.log.warn("usage record {key!r} ignored: {value!r}", key=key,
                          value=value)
            return
        self.series.setdefault(vc, {}).setdefault(gateway, Series()).put(hour, counts)
        at, connections = value.get("at"), value.get("connections")
        if isinstance(at, (int, float)) and type(connections) is int:
            live = self.live.setdefault(vc, {})
            if gateway not in live or (hour, at) >= live[gateway][:2]:
                live[gateway] = (hour, at, connections)

    def counts(self, vc, hour, gateway):
        """What *gateway* counted of *vc* in *hour* (a list), or None."""
        series = self.series.get(vc, {}).get(gateway)
        return None if series is None else series.get(hour)

    def period(self, vc, start, end):
        """FIELDS -> the sum over every gateway of the hours in [start, end)."""
        totals = [0] * WIDTH
        for series in self.series.get(vc, {}).values():
            series.add_to(totals, start, end)
        return dict(zip(FIELDS, totals))

    def vclusters(self, start, end):
        """The virtual clusters with a record of an hour in [start, end)."""
        return {vc for vc, gateways in self.series.items()
                if any(s.add_to([0] * WIDTH, start, end) for s in gateways.values())}

    def connections(self, vc, now):
        """*vc*'s client connections over the gateways that wrote lately."""
        return sum(c for _, at, c in self.live.get(vc, {}).values()
                   if now - at <= FRESH)

    def prune(self, before):
        """Forget the hours before *before* (beyond the retention)."""
        for vc, gateways in list(self.series.items()):
            for gateway, series in list(gateways.items()):
                series.drop_before(before)
                if not series:
                    del gateways[gateway]
            if not gateways:
                del self.series[vc]
        for vc, live in list(self.live.items()):
            for gateway in [g for g, (hour, _, _) in live.items() if hour < before]:
                del live[gateway]
            if not live:
                del self.live[vc]

    def entries(self):
        """How many (virtual cluster, hour, gateway) figures are held."""
        return sum(len(s) for gateways in self.series.values()
                   for s in gateways.values())


class Ledger:
    """This gateway's traffic by virtual cluster and hour, written to the usage
    topic.

    *connections* ``() -> {vc: open connections on this gateway}``.
    """

    log = Logger()

    def __init__(self, gateway_id, metrics, book, store, clock,
                 connections=dict):
        self.gateway_id = gateway_id
        self.metrics = metrics
        self.book = book
        self.store = store
        self.clock = clock
        self.connections = connections
        self.hour = hour_of(clock())
        """The hour traffic is counted in now; moved on by ``hour_ended``."""
        self.buckets = {}
        """(vc, hour) -> this gateway's counts (a list in FIELDS order)."""
        self.failing = False
        self._last = {}       # vc -> the counters' totals at the last sample
        self._changed = {}    # (vc, hour) -> change number, until written
        self._sent = {}       # (vc, hour) -> connections of the last record written
        self._inflight = set()
        self._unseeded = set()
        self._changes = 0
        self._loop = self._hour_timer = None
        book.when_ready(self._seed)

    # reading the counters

    def totals(self):
        """vc -> its counters on this gateway since start, in FIELDS order."""
        by_vc = {}
        for attribute, indexes in SOURCES.items():
            for (vc, d), value in getattr(self.metrics, attribute).totals(0, 1).items():
                if d in indexes:
                    by_vc.setdefault(vc, [0] * WIDTH)[indexes[d]] += value
        for (vc,), value in self.metrics.requests.totals(0).items():
            by_vc.setdefault(vc, [0] * WIDTH)[4] += value
        return by_vc

    def sample(self):
        """Add what the counters grew by since the last sample to this hour."""
        for vc, totals in self.totals().items():
            if vc in UNATTRIBUTED:
                continue
            last = self._last.get(vc, ZERO)
            self._last[vc] = totals
            delta = [max(0, t - s) for t, s in zip(totals, last)]
            if any(delta):
                key = (vc, self.hour)
                bucket = self._bucket(key)
                for i, d in enumerate(delta):
                    bucket[i] += d
                self._changed[key] = self._changes = self._changes + 1
        for vc, count in self.connections().items():
            if count and vc not in UNATTRIBUTED:
                self._bucket((vc, self.hour))  # open connections: active this hour

    def _bucket(self, key):
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = [0] * WIDTH
            if self.book.ready:
                self._add_base(key)
            else:
                self._unseeded.add(key)
        return bucket

    def _add_base(self, key):
        """Count on from this gateway's own record of the hour, if it wrote one
        before a restart."""
        base = self.book.counts(key[0], key[1], self.gateway_id)
        if base:
            bucket = self.buckets[key]
            for i, b in enumerate(base):
                bucket[i] += b

    def _seed(self):
        for key in self._unseeded:
            if key in self.buckets:
                self._add_base(key)
        self._unseeded.clear()

    # writing

    def publish(self):
        """Write the record of each virtual cluster whose figures changed, or
        that has connections here (so other gateways see they are current);
        a Deferred that fires once every write has ended."""
        writes = []
        if not self.book.ready:
            return defer.DeferredList(writes)
        now = self.clock()
        connections = self.connections()
        for key in list(self.buckets):
            if key in self._inflight:
                continue
            vc, hour = key
            if hour < self.hour and key in self._sent and key not in self._changed:
                del self.buckets[key], self._sent[key]  # a past hour, written
                continue
            count = connections.get(vc, 0)
            if key in self._changed or self._sent.get(key) != count or count:
                writes.append(self._write(key, count, now))
        return defer.DeferredList(writes)

    def _write(self, key, connections, now):
        vc, hour = key
        value = dict(zip(FIELDS, self.buckets[key]), connections=connections, at=now)
        change = self._changed.get(key)
        self._inflight.add(key)
        d = self.store.put(record_key(vc, hour, self.gateway_id), value)
        return d.addCallbacks(self._written, self._failed, (key, change, connections),
                              errbackArgs=(key,))

    def _written(self, _, key, change, connections):
        self._inflight.discard(key)
        if key in self._changed and self._changed[key] == change:
            del self._changed[key]  # no change since this record was made
        self._sent[key] = connections
        if self.failing:
            self.failing = False
            self.log.info("usage: writing to the usage topic again")

    def _failed(self, failure, key):
        self._inflight.discard(key)
        if not self.failing:
            self.failing = True
            self.log.warn("usage: cannot write to the usage topic ({why}); the "
                          "figures are kept and written when it can",
                          why=failure.getErrorMessage())

    # timers

    def tick(self):
        self.sample()
        self.publish()

    def hour_ended(self):
        """At each hour's end: the last sample into the hour that ended, then on
        to the new one; hours beyond the retention are forgotten."""
        self.sample()
        self.hour = hour_of(self.clock())
        for key in [k for k in self.buckets if k[1] < self.hour - RETENTION_HOURS]:
            del self.buckets[key]  # never written (the topic was unreachable)
            self._changed.pop(key, None)
            self._sent.pop(key, None)
        self.book.prune(self.hour - RETENTION_HOURS)
        self.publish()
        self._schedule_hour_end()

    def _schedule_hour_end(self):
        wait = (self.hour + 1) * HOUR - self.clock()
        self._hour_timer = self._reactor.callLater(max(0.0, wait), self.hour_ended)

    def start(self, reactor):
        self._reactor = reactor
        self.hour = hour_of(self.clock())
        self._loop = LoopingCall(self.tick)
        self._loop.clock = reactor
        self._loop.start(PUBLISH_EVERY, now=False)
        self._schedule_hour_end()

    def stop(self):
        """Stop the timers; a Deferred that fires once the last figures are
        written (a gateway that stops loses nothing it counted)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._hour_timer is not None and self._hour_timer.active():
            self._hour_timer.cancel()
        self.sample()
        return self.publish()
