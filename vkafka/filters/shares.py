"""A virtual cluster's rate, split between the gateways that serve it.

Every second each gateway publishes what its clients of each rate-limited
tenant wanted (what it served, and what it still owes beyond its share) as a
``rate/<gateway>/<vc>`` record of the state topic, which every gateway
follows; it also says it is alive (``gateway/<id>``, every second through
the gateway cluster's membership, state/membership.py).
Each then takes a share of every limit in proportion to its demand, with a
small floor so a gateway whose clients just arrived is not starved:

    share = (own demand + f) / (every gateway's demand + n f),  f = 5 % of the limit

over the n gateways that reported in the last 3 seconds.  A gateway's own
demand in that sum is the least of what it wants now and what it said in
its last two reports, the values the others may be holding for it: each
then counts itself at no more than the others count it, so the shares add
up to at most 1 even while demands rise between reports (and to 1 when they
hold still), and the tenant's total stays within its limit, two or three
seconds behind a change in where its clients are.  In its first seconds
with a tenant (before the others' reports can have arrived) a gateway
takes an equal share among the live gateways.  An idle gateway stops reporting, so it
keeps no part of the limit.  A gateway that cannot publish (the state topic
is unreachable) cannot know the others' demand: it takes an equal share
among the gateways it last saw alive, and says so in its metrics.
"""

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .throttle import TenantRates

INTERVAL = 1.0
FRESH = 3.0
"""Seconds a gateway's report counts in the split; also a new tenant's warm-up."""
ALIVE_EVERY = 5.0
ALIVE = 15.0
"""Seconds a gateway counts as live after it last said so."""
FLOOR = 0.05


class RateShares:
    """The TenantRates of every virtual cluster on this gateway, and the split."""

    log = Logger()

    def __init__(self, gateway_id, state, clock, metrics=None,
                 connections=lambda vc: 0, membership=None):
        self.gateway_id = gateway_id
        self.state = state
        self.clock = clock
        self.metrics = metrics
        self.connections = connections
        """``vc -> its client connections on this gateway``."""
        self.membership = membership
        """Who is alive (state/membership.py), which then says so for this
        gateway every second; None: this says it every five seconds."""
        self.tenants = {}
        self.fallback = False
        """Publishing failed last time: shares are the fallback's."""
        self._loop = None
        self._alive_at = float("-inf")
        self._reported = {}
        """vc -> whether its last report said it wanted something."""
        self._said = {}
        """vc -> [(at, demand)] of its last two reports, newest last."""

    def tenant(self, vc):
        """The TenantRates of *vc* (made with its current limits)."""
        rates = self.tenants.get(vc)
        if rates is None:
            rates = self.tenants[vc] = TenantRates(self.clock)
            self._apply(vc, rates, {})  # the warm-up's equal share
        return rates

    def start(self, reactor):
        self._loop = LoopingCall(self.tick)
        self._loop.clock = reactor
        self._loop.start(INTERVAL, now=False)

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def tick(self):
        """Publish what each limited tenant wanted; take new shares."""
        now = self.clock()
        if self.membership is None and now - self._alive_at >= ALIVE_EVERY:
            self._alive_at = now
            self._publish(f"gateway/{self.gateway_id}", {"at": now})
        for vc, rates in list(self.tenants.items()):
            limits = self.state.limits_of(vc)
            if not any(getattr(limits.rates, d) for d in TenantRates.DIMENSIONS):
                rates.set(limits.rates, {})
                demand = {}
            else:
                demand = self._smoothed(vc, rates.demand(INTERVAL))
                self._apply(vc, rates, demand)
            if limits.capacity.connections is not None:
                demand["connections"] = self.connections(vc)
            wants = any(demand.values())
            if wants or self._reported.get(vc):
                self._reported[vc] = wants  # one zero, then quiet
                self._said[vc] = self._said.get(vc, [])[-1:] + [(now, demand)]
                self._publish(f"rate/{self.gateway_id}/{vc}", {**demand, "at": now})

    def _smoothed(self, vc, demand):
        """*demand* averaged with the last report's, so that one large request
        landing on either side of a tick does not swing the split (the least
        of three raw seconds would undercount); nothing wanted is nothing."""
        said = self._said.get(vc)
        last = said[-1][1] if said else {}
        return {d: (wanted + last[d]) / 2 if wanted and last.get(d) else wanted
                for d, wanted in demand.items()}

    def others_connections(self, vc):
        """The virtual cluster's client connections on the other live gateways,
        as they last reported them (capacity.connections is their sum)."""
        now = self.clock()
        return sum(r.get("connections", 0) for (gw, v), r in
                   self.state.rate_reports.items()
                   if v == vc and gw != self.gateway_id and now - r.get("at", 0) < ALIVE)

    def _publish(self, key, value):
        d = self.state.store.put(key, value)
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
        limits = self.state.limits_of(vc).rates
        shares = self.shares(vc, demand, rates.since)
        rates.set(limits, shares)
        if self.metrics is not None:
            for dimension, share in shares.items():
                if getattr(limits, dimension) is not None:
                    self.metrics.rate_share.labels(vc, dimension).set(share)

    def live_gateways(self):
        """The gateways that said they are alive lately, this one included."""
        if self.membership is not None:
            return len(self.membership.alive())
        now = self.clock()
        others = {gw for gw, r in self.state.gateways.items()
                  if gw != self.gateway_id and now - r.get("at", 0) < ALIVE}
        return 1 + len(others)

    def shares(self, vc, demand, since=None):
        """Dimension -> this gateway's share (0..1] of *vc*'s limit."""
        now = self.clock()
        if self.fallback or (since is not None and now - since < FRESH):
            return dict.fromkeys(TenantRates.DIMENSIONS, 1.0 / self.live_gateways())
        fresh = [r for (gw, v), r in self.state.rate_reports.items()
                 if v == vc and gw != self.gateway_id and now - r.get("at", 0) < FRESH]
        limits = self.state.limits_of(vc).rates
        shares = {}
        for d in TenantRates.DIMENSIONS:
            limit = getattr(limits, d)
            if limit is None or not fresh:
                shares[d] = 1.0
                continue
            floor = FLOOR * limit
            own = min([demand.get(d, 0)] + [said.get(d, 0) for at, said
                                            in self._said.get(vc, ()) if now - at < FRESH])
            total = own + sum(r.get(d, 0) for r in fresh)
            shares[d] = (own + floor) / (total + (1 + len(fresh)) * floor)
        return shares
