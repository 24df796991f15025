# -*- test-case-name: tests.test_usage -*-
"""The usage figures the admin API answers, and the service that measures them.

``Usage.of(vc, from, to)``: a virtual cluster's holdings now (a fresh
inventory) and its traffic over a period; ``Usage.export(from, to)``: every
virtual cluster's traffic over a period (the chargeback export, JSON or CSV).
Periods are whole UTC hours, ``from`` included and ``to`` excluded; by
default the current month so far (its current hour included), and no
further back than the retention (35 days).
"""

import csv
import datetime
import io

from twisted.application import service
from twisted.internet.task import LoopingCall

from ..state.model import StateError
from .inventory import Figures, InventoryError
from .ledger import FIELDS, HOUR, RETENTION_DAYS, RETENTION_HOURS, hour_of, iso

INVENTORY_EVERY = 60.0
NOW_MAX_AGE = 5.0
"""An inventory younger than this answers "now" (concurrent calls share one)."""
CSV_COLUMNS = ("vcluster", "from", "to", *FIELDS)


class BadPeriod(ValueError):
    """A ``from`` or ``to`` the API refuses (400); ``field`` names it."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


def parse_hour(text, field):
    """Hours since the epoch of an ISO 8601 instant on a whole hour (no zone:
    UTC); BadPeriod otherwise."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadPeriod(field, f"{field}: {text!r} is not an ISO 8601 date and "
                               "time (2026-11-01T00:00Z)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    seconds = moment.timestamp()
    if seconds % HOUR:
        raise BadPeriod(field, f"{field}: {text!r} is not on a whole hour "
                               "(usage is kept by the hour)")
    return hour_of(seconds)


def month_start(now):
    """The hour the current UTC month started."""
    moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return hour_of(moment.replace(day=1, hour=0, minute=0, second=0,
                                  microsecond=0).timestamp())


def period(now, start_text=None, end_text=None):
    """(first hour, hour after the last) of the period asked for."""
    current = hour_of(now)
    start = month_start(now) if start_text is None else parse_hour(start_text, "from")
    end = current + 1 if end_text is None else parse_hour(end_text, "to")
    if end <= start:
        raise BadPeriod("to", f"to ({iso(end)}) must be after from ({iso(start)})")
    earliest = current - RETENTION_HOURS
    if start < earliest:
        raise BadPeriod("from", f"from ({iso(start)}) is further back than usage is "
                                f"kept ({RETENTION_DAYS} days: {iso(earliest)})")
    return start, end


class Usage:
    """The figures of the admin API: the book of every gateway's records, this
    gateway's ledger and inventory."""

    def __init__(self, state, book, ledger, inventory, clock):
        self.state = state
        self.book = book
        self.ledger = ledger
        self.inventory = inventory
        self.clock = clock
        self._loop = None

    def bounds(self, start_text, end_text):
        try:
            return period(self.clock(), start_text, end_text)
        except BadPeriod as e:
            raise StateError(400, "bad_field", str(e), {"field": e.field})

    def traffic(self, vc, start, end):
        return {"from": iso(start), "to": iso(end), **self.book.period(vc, start, end)}

    def of(self, vc, start_text=None, end_text=None):
        """Deferred: *vc*'s ``{"vcluster", "now", "period"}``."""
        self.state.vcluster(vc)
        start, end = self.bounds(start_text, end_text)

        def now(snapshot):
            held = snapshot.figures.get(vc, Figures())  # Figures(): created since
            return {"vcluster": vc,
                    "now": {"at": _iso_seconds(snapshot.at), **held.to_json(),
                            "connections": self.book.connections(vc, self.clock())},
                    "period": self.traffic(vc, start, end)}

        def failed(failure):
            failure.trap(InventoryError)
            if self.inventory.latest is not None:  # the last one, older
                return self.inventory.latest
            raise StateError(503, "unavailable", f"cannot measure what the cluster "
                             f"holds: {failure.getErrorMessage()}")
        return self.inventory.current(NOW_MAX_AGE).addErrback(failed).addCallback(now)

    def export(self, start_text=None, end_text=None):
        """Every virtual cluster's traffic over the period (those of the state,
        and those deleted since that have records in it), by name."""
        start, end = self.bounds(start_text, end_text)
        names = set(self.state.clusters) | self.book.vclusters(start, end)
        return {"from": iso(start), "to": iso(end), "vclusters": [
            {"vcluster": vc, **self.book.period(vc, start, end)} for vc in sorted(names)]}

    @staticmethod
    def csv(export):
        """The export as CSV: a header row, then one row per virtual cluster."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in export["vclusters"]:
            writer.writerow([row["vcluster"], export["from"], export["to"],
                             *(row[name] for name in FIELDS)])
        return out.getvalue()

    def start(self, reactor):
        self.ledger.start(reactor)
        self._loop = LoopingCall(self.inventory.run)
        self._loop.clock = reactor
        self._loop.start(INVENTORY_EVERY, now=False)

    def stop(self):
        """A Deferred: this gateway's last figures written."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self.ledger.stop()


def _iso_seconds(seconds):
    return datetime.datetime.fromtimestamp(
        seconds, datetime.timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


class UsageService(service.Service):
    """Measures usage while the gateway runs, on the usage topic's *store*;
    when the gateway stops, its last figures are written (for up to
    ``FLUSH_SECONDS``) before the store closes."""

    FLUSH_SECONDS = 3.0

    def __init__(self, usage, store, reactor):
        self.usage = usage
        self.store = store
        self.reactor = reactor

    def startService(self):
        super().startService()
        self.store.start()
        self.usage.start(self.reactor)

    def stopService(self):
        super().stopService()
        flushed = self.usage.stop().addTimeout(self.FLUSH_SECONDS, self.reactor)
        return flushed.addBoth(lambda _: self.store.stop())
