# -*- test-case-name: tests.test_throttle -*-
"""A virtual cluster's rate, split between the gateways that serve it.

Every second each gateway publishes what it observed of each limited
tenant (bytes produced and fetched, requests) as a ``rate/<gateway>/<vc>``
record of the state topic, which every gateway follows.  Each then takes a
share of every limit in proportion to its demand, with a small floor so a
gateway whose clients just arrived is not starved:

    share = (own demand + f) / (every gateway's demand + n f),  f = 5 % of the limit

The shares of the n gateways that reported in the last 3 seconds add up to
1, so the tenant's total stays within its limit, one second behind a change
in where its clients are.  A gateway that cannot publish (the state topic
is unreachable) cannot know the others' demand: it falls back to an equal
share among the gateways it last saw, and says so in its metrics.
"""

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .throttle import TenantRates

INTERVAL = 1.0
FRESH = 3.0
"""Seconds a gateway's report counts in the split."""
SEEN = 60.0
"""Seconds a gateway counts as one of those sharing a fallback."""
FLOOR = 0.05


class RateShares:
    """The TenantRates of every virtual cluster on this gateway, and the split."""

    log = Logger()

    def __init__(self, gateway_id, state, clock, metrics=None):
        self.gateway_id = gateway_id
        self.state = state
        self.clock = clock
        self.metrics = metrics
        self.tenants = {}
        self.fallback = False
        """Publishing failed last time: shares are the fallback's."""
        self._loop = None

    def tenant(self, vc):
        """The TenantRates of *vc* (made with its current limits)."""
        rates = self.tenants.get(vc)
        if rates is None:
            rates = self.tenants[vc] = TenantRates(self.clock)
            self._apply(vc, rates, {})
        return rates

    def start(self, reactor):
        self._loop = LoopingCall(self.tick)
        self._loop.clock = reactor
        self._loop.start(INTERVAL, now=False)

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def tick(self):
        """Publish what each limited tenant used; take new shares."""
        now = self.clock()
        for vc, rates in list(self.tenants.items()):
            observed = rates.report()
            limited = self.state.limits_of(vc).rates
            if not any(getattr(limited, d) for d in TenantRates.DIMENSIONS):
                rates.set(limited, {})
                continue
            demand = {d: observed[d] / INTERVAL for d in TenantRates.DIMENSIONS}
            self._publish(vc, demand, now)
            self._apply(vc, rates, demand)

    def _publish(self, vc, demand, now):
        d = self.state.report_rate(self.gateway_id, vc, {**demand, "at": now})
        d.addCallbacks(lambda _: self._published(True),
                       lambda f: self._published(False, f))

    def _published(self, ok, failure=None):
        if ok == self.fallback:  # changed
            self.fallback = not ok
            if failure is not None:
                self.log.warn("rate shares: cannot publish ({why}); falling back to "
                              "equal shares", why=failure.getErrorMessage())
        if self.metrics is not None:
            self.metrics.rate_fallback.set(1 if self.fallback else 0)

    def _apply(self, vc, rates, demand):
        shares = self.shares(vc, demand)
        rates.set(self.state.limits_of(vc).rates, shares)
        if self.metrics is not None and rates.limited:
            for dimension, share in shares.items():
                self.metrics.rate_share.labels(vc, dimension).set(share)

    def shares(self, vc, demand):
        """Dimension -> this gateway's share (0..1] of *vc*'s limit."""
        now = self.clock()
        reports = {gw: r for (gw, v), r in self.state.rate_reports.items()
                   if v == vc and gw != self.gateway_id}
        if self.fallback:
            seen = sum(1 for r in reports.values() if now - r.get("at", 0) < SEEN)
            return dict.fromkeys(TenantRates.DIMENSIONS, 1.0 / (1 + seen))
        fresh = [r for r in reports.values() if now - r.get("at", 0) < FRESH]
        limits = self.state.limits_of(vc).rates
        shares = {}
        for d in TenantRates.DIMENSIONS:
            limit = getattr(limits, d)
            if limit is None or not fresh:
                shares[d] = 1.0
                continue
            floor = FLOOR * limit
            total = demand.get(d, 0) + sum(r.get(d, 0) for r in fresh)
            shares[d] = (demand.get(d, 0) + floor) / (total + (1 + len(fresh)) * floor)
        return shares
