# -*- test-case-name: tests.test_policy -*-
"""A virtual cluster's capacity and topic policy, checked before a broker sees
a change (docs/governance.md).

Pure checks, no I/O: given the tenant's Limits (state/limits.py), what it
holds now (Holdings) and one requested change, each answers None (allowed)
or a Violation (the Kafka error code and a message naming the limit and the
figures).  The rules of CreateTopics, CreatePartitions and the config APIs
(tenancy/rules/topics.py, configs.py) refuse what they refuse per topic, as
Kafka refuses: the rest of the request goes on.  A mapping that asks the
admin API to create its topic (model.py) is held to the same policy.
"""

from dataclasses import dataclass

import re2

POLICY_VIOLATION = 44
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_CONFIG = 40

RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
_CAPPED = {RETENTION_MS: "retention_ms_max", RETENTION_BYTES: "retention_bytes_max"}
CAPPED_CONFIGS = tuple(_CAPPED)
"""The topic configs a limit caps (retention)."""


@dataclass(frozen=True, slots=True)
class Violation:
    code: int
    message: str


class Holdings:
    """What a tenant holds, as the gateway last saw it: its topics and their
    partition counts (a count the gateway has not learnt counts as 1).  A
    request's own creations are added as they are allowed, so one request
    cannot pass a limit by many small steps."""

    def __init__(self, partitions):
        self.partitions = dict(partitions)
        """Physical topic name -> partitions, for the tenant's topics."""

    @property
    def topics(self):
        return len(self.partitions)

    @property
    def total_partitions(self):
        return sum(self.partitions.values())


def explicit(limits, partitions, replication):
    """(partitions, replication factor) a new topic is checked and created
    with.  The broker's defaults (-1) are not known to the gateway: under a
    partition limit -1 partitions become 1; under a replication limit -1
    becomes the smallest factor allowed (else the largest)."""
    policy, capacity = limits.topic_policy, limits.capacity
    if partitions < 0 and (capacity.partitions is not None
                           or capacity.partitions_per_topic is not None):
        partitions = 1
    if replication < 0:
        wanted = policy.replication_factor_min or policy.replication_factor_max
        replication = replication if wanted is None else wanted
    return partitions, replication


def new_topic(limits, holdings, logical, physical, partitions, replication, configs):
    """A topic to create: *partitions* and *replication* as asked (made
    ``explicit`` first; a -1 left is the broker's default, counted as 1
    partition), *configs* {key: value}.  Adds it to *holdings* when allowed."""
    policy, capacity = limits.topic_policy, limits.capacity
    pattern = policy.name_pattern
    if pattern is not None and re2.fullmatch(pattern, logical) is None:
        return Violation(POLICY_VIOLATION, f"topic name {logical!r} does not match "
                         f"the virtual cluster's pattern {pattern!r}")
    if capacity.topics is not None and holdings.topics + 1 > capacity.topics:
        return Violation(POLICY_VIOLATION, f"the virtual cluster holds "
                         f"{holdings.topics} topics, its limit is {capacity.topics}")
    count = max(partitions, 1)
    found = _partitions(capacity, holdings, count, count) or \
        _replication(policy, replication) or configs_allowed(limits, configs)
    if found is None:
        holdings.partitions[physical] = count
    return found


def more_partitions(limits, holdings, physical, total):
    """CreatePartitions of *physical* to *total* partitions."""
    current = holdings.partitions.get(physical, 1)
    found = _partitions(limits.capacity, holdings, total, total - current)
    if found is None:
        holdings.partitions[physical] = max(total, current)
    return found


def _partitions(capacity, holdings, per_topic, added):
    if capacity.partitions_per_topic is not None and \
            per_topic > capacity.partitions_per_topic:
        return Violation(INVALID_PARTITIONS, f"{per_topic} partitions: the virtual "
                         f"cluster's limit is {capacity.partitions_per_topic} per topic")
    if capacity.partitions is not None and \
            holdings.total_partitions + added > capacity.partitions:
        return Violation(POLICY_VIOLATION, f"{added} more partitions: the virtual "
                         f"cluster holds {holdings.total_partitions}, its limit is "
                         f"{capacity.partitions} in total")
    return None


def _replication(policy, replication):
    if replication < 0:
        return None
    low, high = policy.replication_factor_min, policy.replication_factor_max
    if low is not None and replication < low:
        return Violation(INVALID_REPLICATION_FACTOR, f"replication factor "
                         f"{replication}: the virtual cluster's minimum is {low}")
    if high is not None and replication > high:
        return Violation(INVALID_REPLICATION_FACTOR, f"replication factor "
                         f"{replication}: the virtual cluster's maximum is {high}")
    return None


HELD_AT_MOST = {"consumer_groups": 10_000, "transactional_ids": 10_000,
                "member_state_bytes": 32 << 20}
"""The capacity of a virtual cluster whose limits name none: each consumer
group and transactional id is broker heap kept for days after its last use
(``offsets.retention.minutes``, ``transactional.id.expiration.ms``), and one
connection made ~450 new transactional ids a second (audit 21); group
members' state is broker heap for as long as they heartbeat
(tenancy/members.py: ~100,000 consumers of a few topics)."""


def held_at_most(limits, what):
    """The capacity *what* (``consumer_groups``, ``transactional_ids``,
    ``member_state_bytes``) of *limits*, or the gateway's default."""
    found = getattr(limits.capacity, what)
    return HELD_AT_MOST[what] if found is None else found


FLOORS = {
    "segment.ms": 600_000,
    "segment.bytes": 1024 * 1024,
    "segment.index.bytes": 1024 * 1024,
    "flush.messages": 10_000,
    "flush.ms": 1_000,
    "max.compaction.lag.ms": 60_000,
    "index.interval.bytes": 4096,
    "min.cleanable.dirty.ratio": 0.1,
}
"""Topic configs every virtual cluster is held above, whatever its limits:
below them one tenant's topic costs the shared brokers without bound.
``segment.ms=1`` rolled a segment (a file handle and a memory map) per batch
produced, 1,000 more open files on a broker in a few seconds (audit 21);
a tiny index rolls the same way; ``flush.*`` makes a broker fsync per
record; a tiny ``max.compaction.lag.ms`` or dirty ratio keeps its log
cleaner rewriting."""

CEILINGS = {
    "max.message.bytes": 8 * 1024 * 1024,
    "file.delete.delay.ms": 60_000,
    "compression.zstd.level": 9,
    "compression.lz4.level": 9,
}
"""Topic configs every virtual cluster is held below, likewise: 60 MB
batches (``max.message.bytes=200000000``) exhausted a broker's direct
memory, its replica fetcher failed for as long as the topic lived, and
every tenant's ``acks=all`` produce took seconds; ``file.delete.delay.ms``
at its maximum kept each segment the cleaner replaced open, file handles
and memory maps that outlived the topic (audit 21).  A topic's codec
recompresses every batch produced in another at its level: zstd at 22 took
a broker 0.5 s a MiB, four connections of uncompressed batches and another
tenant's produce stalled for seconds (audit 25b); 9 is the zstd and lz4
defaults' neighbourhood (3 and 9), gzip's 9 cost four times no codec."""


def configs_allowed(limits, configs):
    """Topic configs {key: value (None: reverted to the default)} set or changed."""
    policy = limits.topic_policy
    for key, value in configs.items():
        if policy.configs_forbidden is not None and key in policy.configs_forbidden:
            return Violation(POLICY_VIOLATION, f"topic config {key!r} may not be "
                             "set in this virtual cluster")
        if policy.configs_allowed is not None and key not in policy.configs_allowed:
            return Violation(POLICY_VIOLATION, f"topic config {key!r} is not among "
                             "those this virtual cluster may set")
        found = _capped(policy, key, value) or _bounded(key, value)
        if found is not None:
            return found
    return None


def out_of_bounds(configs):
    """The Violation of the first of *configs* outside FLOORS and CEILINGS,
    or None: held whatever the virtual cluster's limits."""
    for key, value in configs.items():
        found = _bounded(key, value)
        if found is not None:
            return found
    return None


def _bounded(key, value):
    """*value* of *key* within its FLOORS and CEILINGS entries, if it has any."""
    floor, ceiling = FLOORS.get(key), CEILINGS.get(key)
    if floor is None and ceiling is None or value is None:
        return None
    try:
        amount = int(value)
    except ValueError:
        try:
            amount = float(value)
        except ValueError:
            return Violation(INVALID_CONFIG, f"{key} {value!r} is not a number")
    if floor is not None and amount < floor:
        bound = f"floor is {floor}"
    elif ceiling is not None and amount > ceiling:
        bound = f"ceiling is {ceiling}"
    else:
        return None
    return Violation(POLICY_VIOLATION, f"{key} {value}: the gateway's {bound}, "
                     "to keep the shared brokers' memory, files, disks and "
                     "cleaner in bounds")


def _capped(policy, key, value):
    """retention.ms / retention.bytes within their cap; a cap also refuses
    the default (None), which may be beyond it."""
    field = _CAPPED.get(key)
    cap = None if field is None else getattr(policy, field)
    if cap is None:
        return None
    if value is None:
        return Violation(POLICY_VIOLATION, f"{key} may not revert to the cluster "
                         f"default: the virtual cluster's limit is {cap}")
    try:
        amount = int(value)
    except ValueError:
        return Violation(INVALID_CONFIG, f"{key} {value!r} is not a number")
    if amount < 0 or amount > cap:
        return Violation(POLICY_VIOLATION, f"{key} {amount}: the virtual cluster's "
                         f"limit is {cap}")
    return None


def capped_defaults(limits, configs):
    """The configs of a topic to create with its retention caps made explicit
    where it names none: the cluster default might be beyond them."""
    policy = limits.topic_policy
    added = {key: str(getattr(policy, field)) for key, field in _CAPPED.items()
             if getattr(policy, field) is not None and key not in configs}
    return {**configs, **added} if added else configs
