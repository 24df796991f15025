# -*- test-case-name: tests.test_audit -*-
"""The audit log: admin actions and refused authorizations, on a Kafka topic.

Every gateway writes its events to the audit topic (``--audit-topic``,
``_vkafka_audit``: retained 7 days, never compacted) and follows it, so
``GET /admin/vclusters/v1/audit`` on any gateway shows every gateway's
recent events (the last ``KEEP`` in memory).

Nothing here may stop or slow the gateway: events queue in memory (at most
``QUEUE``; beyond, the oldest are dropped and counted) and one write at a
time is in flight; a topic that cannot be written is retried with backoff
while the gateway serves.  Refused authorizations, which a tenant can cause
at any rate, are sampled: at most ``refused_per_second`` events per virtual
cluster and second, and ``refused_total_per_second`` over all of them, the
next event of a virtual cluster carrying how many of its refusals were left
out.  Events are written in batches (one record holds up to ``BATCH``).

    audit = AuditLog(clock, gateway_id, store=KafkaStore(...), call_later=...)
    audit.admin(user, "PUT", path, 200, vcluster="london")
    audit.refused(vc, "User:app", "WRITE", "TOPIC", "orders", "Produce")
"""

import collections
import datetime
import itertools
import json

from twisted.internet import defer
from twisted.logger import Logger

log = Logger()

RETENTION_MS = 7 * 24 * 3600 * 1000
TOPIC_CONFIGS = {"cleanup.policy": "delete", "retention.ms": str(RETENTION_MS)}
"""The audit topic's configs: records (batches of events) are kept 7 days."""
KEEP = 10_000
QUEUE = 10_000
BATCH = 100
"""Events written in one record of the audit topic."""
LONGEST = 1000
"""Characters an event's text keeps: a refused name is the tenant's own and
may be megabytes (a Produce's topic), which the memory kept and a record of
the topic could not hold (MESSAGE_TOO_LARGE, retried for ever, and nothing
after it written)."""


def shortened(value):
    """*value*, a string cut to LONGEST characters saying how long it was
    (and to fewer if JSON spells them long: an escaped character is up to
    12 bytes, and a record of the topic holds at most 1 MB)."""
    if not isinstance(value, str) or len(value) <= LONGEST and \
            len(json.dumps(value)) <= 2 * LONGEST:
        return value
    cut = value[:LONGEST]
    while len(json.dumps(cut)) > 2 * LONGEST:
        cut = cut[:len(cut) // 2]
    return f"{cut}... ({len(value)} characters)"


def iso(seconds):
    """``2026-11-29T21:10:00.123Z``: an event's time."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text):
    """Seconds since the epoch of an ISO 8601 date or time (no zone: UTC);
    ValueError if it is none."""
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


class AuditLog:
    """Records audit events, writes them to the audit topic, answers the
    recent ones.

    *clock* gives seconds (``reactor.seconds``); *store* is a KafkaStore of
    the audit topic (None: events are kept in memory only, as in unit
    tests); *call_later* (``reactor.callLater``) schedules write retries.
    """

    def __init__(self, clock, gateway_id="gateway", store=None, call_later=None,
                 refused_per_second=5, refused_total_per_second=50, keep=KEEP,
                 queue=QUEUE):
        self.clock = clock
        self.gateway_id = gateway_id
        self.store = store
        self.call_later = call_later
        self.refused_per_second = refused_per_second
        self.refused_total_per_second = refused_total_per_second
        self._total = [None, 0]
        """[second, refusal events this second over every virtual cluster]."""
        self.events = collections.deque()
        self._ids = set()
        self.keep = keep
        self.queue = collections.deque()
        self.queue_size = queue
        self.dropped = 0
        """Events never written: the queue was full."""
        self.suppressed = 0
        """Refused authorizations counted, not recorded one by one (sampling)."""
        self._windows = {}
        """vc -> [second, events this second, left out since the last event]."""
        self._seq = itertools.count()
        self._run = f"{gateway_id}@{int(clock() * 1000)}"
        self._writing = False
        self._retry = None
        self._delay = 0.5
        if store is not None:
            store.subscribe(self._read)

    # recording

    def admin(self, user, method, path, status, vcluster=None, details=None):
        """An admin API write: who (*user*), what (*method* *path*), the result
        (HTTP *status*, and *details*: the error or what changed)."""
        self._record({"type": "admin", "user": user, "method": method, "path": path,
                      "status": status, "vcluster": vcluster,
                      **({"details": details} if details else {})})

    def refused(self, vc, principal, operation, resource_type, name, api, host=None):
        """The gateway refused *principal* of *vc* the *operation* on a resource
        (*resource_type*, logical *name*) in a request of *api*: sampled, at
        most ``refused_per_second`` events per virtual cluster and second
        (``refused_total_per_second`` in all).  Cheap: the gateway's
        authorization filter calls it on every refusal."""
        second = int(self.clock())
        window = self._windows.get(vc)
        if window is None or window[0] != second:
            if window is None and len(self._windows) >= 100_000:
                self._windows.clear()  # made-up virtual clusters cannot grow it
            window = self._windows[vc] = [second, 0, window[2] if window else 0]
        if self._total[0] != second:
            self._total = [second, 0]
        if window[1] >= self.refused_per_second or \
                self._total[1] >= self.refused_total_per_second:
            window[2] += 1
            self.suppressed += 1
            return
        window[1] += 1
        self._total[1] += 1
        left_out, window[2] = window[2], 0
        self._record({"type": "refused", "vcluster": vc, "principal": principal,
                      "operation": operation, "resourceType": resource_type,
                      "name": name, "api": api,
                      **({"host": host} if host is not None else {}),
                      **({"suppressed": left_out} if left_out else {})})

    def _record(self, event):
        now = self.clock()
        event = {"id": f"{self._run}-{next(self._seq)}", "at": iso(now), "time": now,
                 "gateway": self.gateway_id,
                 **{key: shortened(value) for key, value in event.items()}}
        self._remember(event)
        if self.store is None:
            return
        if len(self.queue) >= self.queue_size:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(event)
        self._pump()

    # writing: one at a time, retried with backoff, never raising

    def _pump(self):
        """Write what waits, up to ``BATCH`` events in one record."""
        if self._writing or self._retry is not None or not self.queue:
            return
        batch = list(itertools.islice(self.queue, BATCH))
        self._writing = True
        first = batch[0]
        key = f"{first.get('vcluster') or '-'}/{first['at']}/{first['id']}"
        try:
            d = self.store.put(key, {"events": batch})
        except Exception as e:  # a store that fails at once fails like later
            d = defer.fail(e)
        d.addCallbacks(self._written, self._failed, callbackArgs=(batch,))

    def _written(self, _, batch):
        self._writing = False
        self._delay = 0.5
        written = {event["id"] for event in batch}
        while self.queue and self.queue[0]["id"] in written:
            self.queue.popleft()
        self._pump()

    def _failed(self, failure):
        self._writing = False
        if self._delay == 0.5:  # once per outage, not once per retry
            log.warn("audit topic cannot be written ({error}); {n} event(s) wait",
                     error=failure.getErrorMessage(), n=len(self.queue))
        delay, self._delay = self._delay, min(self._delay * 2, 30.0)
        if self.call_later is None:
            return
        self._retry = self.call_later(delay, self._retried)

    def _retried(self):
        self._retry = None
        self._pump()

    def stop(self):
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    # reading

    def _read(self, key, value):
        """A record of the audit topic: a batch of events (or one event)."""
        events = value.get("events") if isinstance(value, dict) else None
        for event in events if isinstance(events, list) else [value]:
            if isinstance(event, dict) and isinstance(event.get("id"), str):
                self._remember(event)

    def _remember(self, event):
        if event["id"] in self._ids:
            return
        self._ids.add(event["id"])
        self.events.append(event)
        while len(self.events) > self.keep:
            self._ids.discard(self.events.popleft()["id"])

    def recent(self, since=None, until=None, vcluster=None, kind=None, limit=100):
        """The last *limit* events in [since, until) (seconds), of *vcluster*
        and of type *kind* if given, oldest first."""
        found = [e for e in self.events
                 if (since is None or e.get("time", 0) >= since)
                 and (until is None or e.get("time", 0) < until)
                 and (vcluster is None or e.get("vcluster") == vcluster)
                 and (kind is None or e.get("type") == kind)]
        found.sort(key=lambda e: e.get("time", 0))
        return found[-limit:] if limit else []


class NoAudit:
    """The AuditLog of a gateway without one (passthrough, unit tests)."""

    def admin(self, *args, **kwargs):
        pass

    def refused(self, *args, **kwargs):
        pass

    def recent(self, *args, **kwargs):
        return []


NO_AUDIT = NoAudit()


class AuditCollector:
    """The audit log's own figures at ``/metrics``: what it could not write or
    left out (a prometheus_client collector, read when scraped)."""

    def __init__(self, audit):
        self.audit = audit

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        yield CounterMetricFamily(
            "vkafka_audit_refusals_suppressed", "Refused authorizations counted "
            "but not recorded one by one (sampling)", value=self.audit.suppressed)
        yield CounterMetricFamily(
            "vkafka_audit_events_dropped", "Audit events never written: the queue "
            "was full while the audit topic could not be written",
            value=self.audit.dropped)
        yield GaugeMetricFamily(
            "vkafka_audit_events_queued", "Audit events waiting to be written",
            value=len(self.audit.queue))
