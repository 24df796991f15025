# -*- test-case-name: tests.test_rules -*-
"""What the rule modules share: the walker as a rule, rule composition, the
tenant's topic listing and the "learn unknown topic ids first" wrapper."""

import dataclasses
import datetime
import uuid

from kio.static.primitive import i32Timedelta

from twisted.internet import defer
from twisted.logger import Logger

from ...state.limits import Limits
from ..metadata_cache import made_of
from ...state.policy import Holdings
from ..naming import TOPIC
from ..context import ZERO_UUID
from ..walker import rewrite_request as walk_request
from ..walker import rewrite_response as walk_response

log = Logger()
NO_THROTTLE = i32Timedelta.parse(datetime.timedelta(0))


def walk_req(services, rctx, request):
    return walk_request(request, rctx)


def walk_resp(services, rctx, response):
    return walk_response(response, rctx)


def then(first, second):
    """*first*, then *second* on what it made (once made, if a Deferred)."""
    def both(services, rctx, message):
        message = first(services, rctx, message)
        if isinstance(message, defer.Deferred):
            return message.addCallback(lambda m: second(services, rctx, m))
        return second(services, rctx, message)
    return both


PARTITION_WORK = 0.004
"""Seconds of its virtual cluster's loop share (``--tenant-loop-share``,
filters/throttle.py) one partition created or deleted costs: the work is
the brokers' (the controller's records, every replica's log), which no
Kafka quota sees behind the gateway's one principal.  At the default share
(0.25) a tenant makes or deletes ~60 partitions a second on a gateway
process, after a first ~60 at once; past that its connections wait, as a
broker mutes a throttled channel.  Topics made and deleted in a loop (30
a second of 8 partitions) had taken the brokers from 32% to 114% of a
core and multiplied another tenant's produce latency by 5 (audit 23a)."""
VALIDATED_WORK = PARTITION_WORK / 100
"""A partition a validate-only CreateTopics or CreatePartitions asks the
controller to check: ~8 us of its time each (9,999 in a 100-byte request
took 80 ms; pipelined, the controller at 88% of a core and every tenant's
topic changes ~40 times slower, audit 24)."""
RECONFIGURED_WORK = PARTITION_WORK / 8
"""A topic config change, per partition of the topic: every replica
reconfigures each partition's log (a 1,000-partition topic's retention.ms
flipped 24 times a second kept a broker at 128% of a core, audit 24)."""
TXN_PARTITION_WORK = PARTITION_WORK / 4
"""A partition added to a transaction (AddPartitionsToTxn): at its end
every replica writes a marker there, work no quota sees: 500 partitions
added and aborted in a loop on 4 connections took the brokers up 30 to 40
points of a core each and another tenant's produce p99 from 10 to 268 ms
(audit 25).  A producer adding 10 partitions ten times a second spends
0.1 s a second of the share."""
DELETED_RECORDS_WORK = PARTITION_WORK / 4
"""A partition a DeleteRecords names: the leader moves its log start and
deletes segments, every replica follows (500 partitions a request took
2.7 s of broker CPU the first time, audit 25)."""
MEMBERSHIP_WORK = 0.01
"""A KIP-848 member joining, leaving or changing its subscription: the
coordinator computes the group's assignment anew, over its members and
partitions (~13 ms of its CPU each for 900 members of a 500-partition
topic; 400 joins in 4.8 s kept it at 121% of a core, audit 25)."""
PARTITIONS_PER_REQUEST = 10_000
"""Partitions one CreateTopics or CreatePartitions may add.  The controller
refuses a CreateTopics making more at once (POLICY_VIOLATION, "Excessively
large number of partitions per request.", validate-only alike) but
validates a CreatePartitions of any size: one of 10^8 partitions kept two
brokers at a core each for minutes (audit 25), so the gateway refuses it
as the controller refuses the other.  Nor is a refused request charged."""
TOO_MANY_PARTITIONS = "Excessively large number of partitions per request."


def broker_work(services, rctx, partitions, each=PARTITION_WORK):
    """*partitions* the tenant's request has the brokers work on, *each*
    seconds of its loop share apiece (its connections wait once it is spent)."""
    share = services.loop_share
    if share is not None and partitions > 0:
        share.charge_brokers(rctx.namespace.name, partitions * each)


def partitions_charged(each, field="topics"):
    """A request rule: each partition the request's *field* (topics with
    their partitions) names costs *each* seconds of the loop share."""
    def charged(services, rctx, request):
        named = sum(len(t.partitions or ()) for t in getattr(request, field) or ())
        broker_work(services, rctx, named, each)
        return request
    return charged


LISTING_MAX_AGE = 2.0
"""Seconds a full topic listing serves tenants' all-topics Metadata requests."""


def tenant_topics(topology, namespace):
    """The tenant's physical topic names, cached until the topic set changes."""
    key = made_of(topology, namespace)
    cached = getattr(namespace, "_listing", None)
    if cached is None or cached[0] != key:
        names = sorted(n for n in topology.topic_names if namespace.owns(TOPIC, n))
        names += sorted(a.physical for a in namespace.aliases.values()
                        if a.physical not in names)
        cached = namespace._listing = (key, tuple(names))
    return cached[1]


def limits_for(services, rctx):
    """The tenant's Limits (state/limits.py)."""
    if services.limits_of is None:
        return Limits.NONE
    return services.limits_of(rctx.namespace.name)


def holdings(services, namespace):
    """What the tenant holds now, for its capacity limits (policy.py): its
    topics, and the creations admitted here whose answer is still to come
    (requests checked one after another against one listing)."""
    topology = services.topology
    counts = topology.partitions
    held = {name: counts.get(name, 1)
            for name in tenant_topics(topology, namespace)}
    if topology.reserved:
        now = services.clock.seconds()
        for name, (partitions, until) in list(topology.reserved.items()):
            if until <= now:
                del topology.reserved[name]  # its answer never came
            elif namespace.owns(TOPIC, name):
                held[name] = max(held.get(name, 0), partitions)
    return Holdings(held)


RESERVED_FOR = 60.0
"""Seconds an admitted creation counts as held if its answer never comes
(the connection closed first); the next listing shows it if it was made."""


def reserve(services, rctx, held, physicals):
    """Count *physicals*, as *held* now has them, as the tenant's until the
    request's answer comes (``released``)."""
    until = services.clock.seconds() + RESERVED_FOR
    for name in physicals:
        services.topology.reserve(name, held.partitions[name], until)
    rctx.reserved = list(physicals)


def released(services, rctx):
    if rctx.reserved:
        services.topology.release(rctx.reserved)


IDS_REFRESH_INTERVAL = 1.0
"""Seconds between listings asked for because a response named unknown ids."""


def _topic_ids_in(value, found):
    """Every topic id in a decoded message (nested entities included)."""
    for f in dataclasses.fields(value):
        current = getattr(value, f.name)
        if f.name == "topic_id" and isinstance(current, uuid.UUID):
            found.add(current)
        elif dataclasses.is_dataclass(current):
            _topic_ids_in(current, found)
        elif isinstance(current, tuple) and current and dataclasses.is_dataclass(
                current[0]):
            for v in current:
                _topic_ids_in(v, found)
    return found


def ids_known_first(rewrite):
    """KIP-848 assignments name topics by id only.  An id the gateway has not
    learnt yet (a topic created through another gateway, or directly, since
    its last listing) would be dropped as not the tenant's, and the member
    would wait for the gateway's next refresh (30 s) to be assigned it: the
    gateway asks for a listing first (at most one a second), then rewrites."""
    def first(services, rctx, response):
        ids = _topic_ids_in(response, set())
        ids.discard(ZERO_UUID)
        refresher, topology = services.refresher, services.topology
        now = services.clock.seconds()
        if refresher is None or all(i in rctx.topic_ids for i in ids) or (
                topology.listing_at is not None
                and now - topology.listing_at < IDS_REFRESH_INTERVAL):
            return rewrite(services, rctx, response)
        return refresher.refresh().addCallback(
            lambda _: rewrite(services, rctx, response))
    return first


def logical_topics(topology, namespace):
    """The tenant's topics: logical name -> physical name."""
    names = {}
    for physical in tenant_topics(topology, namespace):
        logical = namespace.logical(TOPIC, physical)
        if logical is not None:
            names[logical] = physical
    return names


class StateWrites:
    """The records of the gateways' shared state each virtual cluster may add
    through one gateway by its own requests (ACLs; concentrated topics made
    by a rule): ``burst`` at once (on each worker: a request of as many must
    pass on whichever worker it lands), then ``RATE`` a second for the
    gateway, its workers each refilling an even share.  Each is a record
    every gateway keeps and reads when it starts, and each removal a tombstone
    kept a day: a tenant creating and removing ACLs in a loop (~500 records
    a second) grew it without bound.  Removals need no budget of their own:
    each removes what a creation made."""

    RATE = 1.0

    def __init__(self, clock, burst):
        self.clock = clock
        self.burst = burst
        self.processes = 1
        """The gateway's workers (set by vkafka/worker.py): each refills at an
        Nth of RATE, so more cores do not multiply the records a tenant adds."""
        self.budgets = {}  # virtual cluster -> (records it may add, when)

    def take(self, vcluster, count):
        """True, and *count* taken, if *vcluster* may add *count* records now."""
        now = self.clock()
        left, at = self.budgets.get(vcluster, (self.burst, now))
        left = min(self.burst, left + (now - at) * self.RATE / self.processes)
        allowed = count <= left
        self.budgets[vcluster] = (left - count if allowed else left, now)
        return allowed
