# -*- test-case-name: tests.test_usage -*-
"""What the cluster holds for each virtual cluster: topics, partitions,
consumer groups, transactional ids and storage.

An inventory takes the gateway's topic listing (renewed first), asks every
broker for its consumer groups and transactional ids (ListGroups,
ListTransactions: each broker lists those it coordinates) and for the size
of every partition replica in its log directories (DescribeLogDirs), and
gives each figure to the virtual cluster whose namespace holds it (the
naming rule: prefix or mapping).  A capacity check about to decide on an id
the last listing did not hold lists only the groups and transactional ids
anew (``Inventory.ids_renewed``).

- A topic in a virtual cluster's namespace is its own: its topic, its
  partitions, all its bytes.  ``storageBytes`` counts every replica,
  ``storageBytesOnce`` each partition once (its largest replica).
- A topic mapping (plain or concentrated) counts as one topic of the virtual
  cluster that maps it, with the physical topic's partitions (a concentrated
  one: its own logical partitions).  The physical topic's bytes are split
  evenly among the virtual clusters that map it (a byte left over by the
  division goes to the first names), so shared topics are counted once over
  all virtual clusters; a physical topic no virtual cluster maps counts for
  nobody.
- A consumer group or transactional id counts for the virtual cluster whose
  prefix it has.
"""

import importlib
from dataclasses import asdict, dataclass, replace

from kio.schema.errors import ErrorCode
from twisted.internet import defer
from twisted.logger import Logger

from ..protocol.codec import decode_response
from ..tenancy.naming import GROUP, TOPIC, TRANSACTION
from ..tuning import collector_held

LIST_GROUPS, DESCRIBE_LOG_DIRS, LIST_TRANSACTIONS = 16, 35, 66
VERSIONS = {LIST_GROUPS: ("list_groups", 3, 5),
            DESCRIBE_LOG_DIRS: ("describe_log_dirs", 1, 4),
            LIST_TRANSACTIONS: ("list_transactions", 0, 1)}
"""API key -> (kio module, lowest and highest version used).  Every version in
between takes the same arguments (all topics, all groups)."""


ASK_AGAIN = 5.0
"""Seconds between inventories asked for before the first one succeeded."""
ASKED_PER_SECOND = 5
"""Ids whose existence capacity checks may ask the brokers about a second,
per virtual cluster and gateway process."""
RENEW_AFTER = 10.0
"""Age in seconds past which a capacity check lists the brokers' groups and
transactional ids anew before deciding on an id the last listing did not
hold (``Inventory.ids_renewed``)."""
DECIDE_WITHIN = 3.0
"""Seconds a capacity check waits for that inventory, or for an id's
coordinator, before it decides with what it has: a join or an
InitProducerId must not wait on a broker slow to answer (the inventory goes
on, for the next check)."""


class InventoryError(Exception):
    """The cluster could not be asked (no broker known, a broker refused)."""


@dataclass
class Figures:
    """One virtual cluster's holdings (JSON names by ``to_json``)."""

    topics: int = 0
    partitions: int = 0
    consumerGroups: int = 0
    transactionalIds: int = 0
    storageBytes: int = 0
    storageBytesOnce: int = 0

    def to_json(self):
        return asdict(self)

    def held(self, kind):
        """Consumer groups (GROUP) or transactional ids (TRANSACTION)."""
        return self.consumerGroups if kind == GROUP else self.transactionalIds

    def add_storage(self, every, once):
        self.storageBytes += every
        self.storageBytesOnce += once


@dataclass(frozen=True)
class Snapshot:
    at: float
    figures: dict
    """vc -> Figures, for every virtual cluster known when it was taken."""
    group_ids: frozenset = frozenset()
    """Every consumer group id the brokers listed (capacity.consumerGroups)."""
    transactional_ids: frozenset = frozenset()
    """Every transactional id the brokers listed (capacity.transactionalIds)."""
    ids_at: float = None
    """When the ids were listed, if later than the rest (``with_ids``)."""

    def ids(self, kind):
        return self.group_ids if kind == GROUP else self.transactional_ids

    @property
    def ids_listed(self):
        """When its group and transactional ids were listed."""
        return self.at if self.ids_at is None else self.ids_at

    def with_ids(self, vclusters, groups, transactional_ids, at):
        """This Snapshot with the ids the brokers listed at *at*, and the
        figures that count them; its topics and storage as they were."""
        figures = {vc: replace(f, consumerGroups=0, transactionalIds=0)
                   for vc, f in self.figures.items()}
        count_ids(Owners(vclusters), figures, groups, transactional_ids)
        return replace(self, figures=figures, group_ids=frozenset(groups),
                       transactional_ids=frozenset(transactional_ids), ids_at=at)


class IdsSeen:
    """The consumer groups (*kind* GROUP) or transactional ids (TRANSACTION)
    on the cluster: those of the last inventory, and those this process let
    tenants make since (``made``).  Between two inventories (a minute) a
    capacity limit counts both, so a burst of new ids through one gateway
    stops at the limit.  Each question costs a lookup, not a count: a
    tenant making ids at its limit must not make every request slow."""

    def __init__(self, latest, kind, renew=None, exists=None, clock=None):
        self.latest = latest
        """() -> the last Snapshot, or None before the first
        (``Inventory.latest_or_ask``)."""
        self.renew = renew
        """() -> None if the last Snapshot is recent, else a Deferred that
        fires once the ids are listed anew (``Inventory.ids_renewed``)."""
        self.exists = exists
        """(physical, vc) -> Deferred: whether the cluster holds it now, asked
        of its coordinator (``Inventory.exists``)."""
        self.kind = kind
        self.clock = clock or (lambda: 0.0)
        self._since = None
        self._made = {}
        """id -> (its virtual cluster, when), let in and not listed yet."""
        self._made_by = {}
        """virtual cluster -> how many of those."""
        self._counted = {}
        """virtual cluster -> what it held, for those the inventory did not know."""

    def _snapshot(self):
        snapshot = self.latest()
        if snapshot is not None and snapshot is not self._since:
            self._since, self._counted = snapshot, {}
            self._forget_listed(snapshot)
        return snapshot

    def _forget_listed(self, snapshot):
        """A new inventory lists the ids let in before it; those let in while
        it was taken (or whose answer it did not wait for) it may not:
        they are kept MADE_KEPT seconds, each counted once."""
        listed = snapshot.ids(self.kind)
        self._made = {i: made for i, made in self._made.items()
                      if i not in listed and made[1] >= snapshot.ids_listed - MADE_KEPT}
        self._made_by = {}
        for vc, _ in self._made.values():
            self._made_by[vc] = self._made_by.get(vc, 0) + 1

    def holds(self, physical):
        """Whether the cluster holds *physical*; None before the first inventory."""
        snapshot = self._snapshot()
        if snapshot is None:
            return None
        return physical in snapshot.ids(self.kind) or physical in self._made

    def listed(self, physical):
        """Whether the last inventory listed *physical* (None before the first)."""
        snapshot = self._snapshot()
        return None if snapshot is None else physical in snapshot.ids(self.kind)

    def held(self, namespace):
        """How many the virtual cluster of *namespace* holds (those let in
        only, before the first inventory).  A virtual cluster the inventory
        did not know (made since) is counted by its naming rule, once per
        inventory."""
        snapshot = self._snapshot()
        vc = namespace.name
        if snapshot is None:
            return self._made_by.get(vc, 0)
        figures = snapshot.figures.get(vc)
        if figures is not None:
            found = figures.held(self.kind)
        else:
            found = self._counted.get(vc)
            if found is None:
                found = self._counted[vc] = sum(
                    1 for i in snapshot.ids(self.kind) if namespace.owns(self.kind, i))
        return found + self._made_by.get(vc, 0)

    def made(self, vc, physical):
        """*physical* let in for *vc*: counted from now, not the next inventory."""
        snapshot = self._snapshot()
        if physical not in self._made and (
                snapshot is None or physical not in snapshot.ids(self.kind)):
            self._made[physical] = (vc, self.clock())
            self._made_by[vc] = self._made_by.get(vc, 0) + 1


MADE_KEPT = 30.0
"""Seconds an id let in stays counted when a newer inventory does not list
it (taken while the id was being made)."""


def request(api_key, version):
    name, _, _ = VERSIONS[api_key]
    module = importlib.import_module(f"kio.schema.{name}.v{version}.request")
    cls = next(getattr(module, n) for n in dir(module) if n.endswith("Request"))
    return cls(topics=None) if api_key == DESCRIBE_LOG_DIRS else cls()


def version_for(api_key, offered):
    """The highest version of *api_key* that both we and the brokers (their
    ApiVersions answer, None if unknown) speak."""
    _, low, high = VERSIONS[api_key]
    if offered is not None:
        for key in offered.api_keys:
            if key.api_key == api_key:
                return max(low, min(high, key.max_version))
    return high


class Owners:
    """Which virtual cluster's namespace holds a physical name: the known
    prefixes by length, longest first, then the namespace's own rule."""

    def __init__(self, vclusters):
        self.namespaces = {}
        self.by_prefix = {}
        for vc in vclusters.names():
            namespace = vclusters.namespace(vc)
            self.namespaces[vc] = namespace
            if namespace.prefix and namespace.unavailable is None:
                self.by_prefix.setdefault(namespace.prefix, []).append(vc)
        self.lengths = sorted({len(p) for p in self.by_prefix}, reverse=True)

    def owner(self, kind, physical):
        for length in self.lengths:
            for vc in self.by_prefix.get(physical[:length], ()):
                if self.namespaces[vc].owns(kind, physical):
                    return vc
        return None

    def owned(self, kind, names):
        """(vc, name) of each of *names* in a namespace."""
        for name in names:
            vc = self.owner(kind, name)
            if vc is not None:
                yield vc, name


def _split(total, names):
    """*total* split evenly among *names* (sorted); the rest, one each, first."""
    share, rest = divmod(total, len(names))
    return {name: share + (i < rest) for i, name in enumerate(sorted(names))}


def attribute(vclusters, topics, partitions, groups, sizes, transactional_ids=()):
    """vc -> Figures.

    *topics*: physical topic names; *partitions*: name -> partition count
    (else the partitions seen in *sizes*); *groups*: group ids; *sizes*:
    (topic, partition) -> the sizes of its replicas.
    """
    owners = Owners(vclusters)
    figures = {vc: Figures() for vc in owners.namespaces}
    stored = {}  # topic -> [all replicas, largest replica of each partition]
    seen = {}    # topic -> partitions seen in sizes
    for (topic, _), replicas in sizes.items():
        entry = stored.setdefault(topic, [0, 0])
        entry[0] += sum(replicas)
        entry[1] += max(replicas, default=0)
        seen[topic] = seen.get(topic, 0) + 1

    def count_of(topic):
        return partitions.get(topic) or seen.get(topic, 0)

    for vc, topic in owners.owned(TOPIC, topics):
        figures[vc].topics += 1
        figures[vc].partitions += count_of(topic)
        figures[vc].add_storage(*stored.get(topic, (0, 0)))
    mapped = {}  # physical topic -> the virtual clusters that map it
    for vc, namespace in owners.namespaces.items():
        if namespace.unavailable is not None:
            continue
        for alias in namespace.aliases.values():
            physical = alias.target or alias.physical
            figures[vc].topics += 1
            figures[vc].partitions += (alias.partitions or count_of(physical)) \
                if alias.concentrated else count_of(physical)
            mapped.setdefault(physical, set()).add(vc)
    for physical, names in mapped.items():
        every, once = stored.get(physical, (0, 0))
        for (vc, a), b in zip(_split(every, names).items(),
                              _split(once, names).values()):
            figures[vc].add_storage(a, b)
    count_ids(owners, figures, groups, transactional_ids)
    return figures


def count_ids(owners, figures, groups, transactional_ids):
    """Each of *groups* and *transactional_ids* counted in the Figures of the
    virtual cluster whose namespace holds it (one *figures* knows)."""
    for kind, ids in ((GROUP, groups), (TRANSACTION, transactional_ids)):
        for vc, _ in owners.owned(kind, ids):
            held = figures.get(vc)
            if held is None:
                continue
            if kind == GROUP:
                held.consumerGroups += 1
            else:
                held.transactionalIds += 1


class Inventory:
    """Takes inventories on demand; one at a time (callers share it).

    *ask* ``(host, port, [(request, version), ...]) -> Deferred([responses])``
    asks one broker; *refresh* ``() -> Deferred`` renews the topology's topic
    listing (the refresher's).
    """

    log = Logger()

    def __init__(self, clock, topology, vclusters, ask, refresh=None, metrics=None,
                 call_later=None):
        self.clock = clock
        self.call_later = call_later
        """``(seconds, f, *args)``: bounds the waits of capacity checks
        (DECIDE_WITHIN; None: unbounded)."""
        self.topology = topology
        self.vclusters = vclusters
        self.ask = ask
        self.refresh = refresh
        self.metrics = metrics
        self.latest = None
        """The last Snapshot taken, or None."""
        self.last_error = None
        self._taking = Shared(self._take)
        """The inventory being taken, its callers'."""
        self._listing = Shared(self._list_ids)
        """The listing of ids being taken (``ids_renewed``), its callers'."""
        self._exported = set()
        self._asked = None
        self._asking = {}
        """vc -> [the second begun, the ids asked about in it] (``exists``)."""

    def take(self):
        """A Deferred Snapshot, taken now (or the one being taken)."""
        return self._taking()

    def renewed(self, max_age=RENEW_AFTER):
        """None if the last Snapshot is younger than *max_age* seconds; else a
        Deferred that fires (with None) once a new one is taken or failed: a
        capacity check about to decide on a new id looks again first, so
        ids made through other gateways since count, and are not refused
        as new (one inventory at a time, shared)."""
        if self.latest is not None and self.clock() - self.latest.at < max_age:
            return None
        return self._within(self.take().addErrback(lambda _: None)
                            .addCallback(lambda _: None), None)

    def ids_renewed(self, max_age=RENEW_AFTER):
        """``renewed`` for the group and transactional ids alone: None if they
        were listed less than *max_age* seconds ago; else a Deferred that
        fires (with None) once every broker has listed them anew (ListGroups
        and ListTransactions; one listing at a time, shared) or failed, or
        DECIDE_WITHIN seconds have passed.  A whole inventory also renews the
        topic listing and sizes every partition replica: at 10,000 topics
        ~0.2 s, which each new consumer group's first join waited for when
        the last inventory was older than RENEW_AFTER.  Before the first
        inventory: a whole one."""
        if self.latest is None:
            return self.renewed(max_age)
        if self.clock() - self.latest.ids_listed < max_age:
            return None
        return self._within(self._listing().addErrback(lambda _: None)
                            .addCallback(lambda _: None), None)

    def _within(self, d, otherwise):
        """*d*'s result (it must not fail), or *otherwise* if *d* has not fired
        DECIDE_WITHIN seconds from now; *d* goes on either way."""
        if self.call_later is None or d.called:
            return d
        decided = defer.Deferred()

        def decide(result):
            if not decided.called:
                decided.callback(result)
        timer = self.call_later(DECIDE_WITHIN, decide, otherwise)

        def fired(result):
            if timer.active():
                timer.cancel()
            decide(result)
        d.addCallback(fired)
        return decided

    def exists(self, kind, physical, vc=None):
        """A Deferred: whether the cluster holds the group or transactional id
        (*kind*) *physical* now, asked of its coordinator.  A capacity check
        asks before it refuses an id as new: one made through another
        gateway (or worker) a moment ago is the tenant's own.  At most
        ASKED_PER_SECOND a second for each virtual cluster *vc* (then: not
        known to exist): one flooding new ids spends its own questions."""
        now = self.clock()
        asking = self._asking.get(vc)
        if asking is None or now - asking[0] >= 1.0:
            if len(self._asking) > 10_000:  # those of seconds past
                self._asking = {v: a for v, a in self._asking.items()
                                if now - a[0] < 1.0}
            asking = self._asking[vc] = [now, 0]
        asking[1] += 1
        if asking[1] > ASKED_PER_SECOND or not self.topology.brokers:
            return defer.succeed(False)
        return self._within(self._exists(kind, physical).addErrback(
            self._not_known, kind, physical), False)

    def _not_known(self, failure, kind, physical):
        self.log.warn("cannot ask whether {kind} {id!r} exists: {why}", kind=kind,
                      id=physical, why=failure.getErrorMessage())
        return False

    @defer.inlineCallbacks
    def _exists(self, kind, physical):
        from kio.schema.describe_groups.v5.request import DescribeGroupsRequest
        from kio.schema.describe_transactions.v0.request import (
            DescribeTransactionsRequest)
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        from kio.static.primitive import i8
        host, port = self.topology.upstream_candidates(None)[0]
        [found] = yield self.ask(host, port, [(FindCoordinatorRequest(
            key_type=i8(0 if kind == GROUP else 1), coordinator_keys=(physical,)), 4)])
        [coordinator] = found.coordinators
        address = self.topology.brokers.get(coordinator.node_id)
        if coordinator.error_code != ErrorCode.none or address is None:
            return False
        if kind == GROUP:
            [answer] = yield self.ask(*address, [(DescribeGroupsRequest(
                groups=(physical,), include_authorized_operations=False), 5)])
            [group] = answer.groups
            return group.error_code == ErrorCode.none and \
                group.group_state not in ("Dead", "")
        [answer] = yield self.ask(*address, [(DescribeTransactionsRequest(
            transactional_ids=(physical,)), 0)])
        [state] = answer.transaction_states
        return state.error_code == ErrorCode.none

    def clear_group_configs(self, physical_groups):
        """Set every config of *physical_groups* back to its default (a legacy
        AlterConfigs with none): a deleted group's configs stay in the
        cluster's metadata otherwise, and a tenant making, configuring and
        deleting groups would add records without end.  Asked of any broker;
        a failure is logged, nothing else."""
        from kio.schema.alter_configs.v2 import request as ac
        from kio.static.primitive import i8
        if not physical_groups or not self.topology.brokers:
            return defer.succeed(None)
        host, port = self.topology.upstream_candidates(None)[0]
        request = ac.AlterConfigsRequest(validate_only=False, resources=tuple(
            ac.AlterConfigsResource(resource_type=i8(32), resource_name=g, configs=())
            for g in physical_groups))

        def done(answers):
            for r in answers[0].responses:
                if r.error_code != ErrorCode.none:
                    self.log.warn("cannot clear the configs of deleted group {group!r}: "
                                  "{error}", group=r.resource_name, error=r.error_code.name)

        def failed(failure):
            self.log.warn("cannot clear the configs of deleted groups {groups}: {why}",
                          groups=list(physical_groups), why=failure.getErrorMessage())
        return self.ask(host, port, [(request, 2)]).addCallbacks(done, failed)

    def latest_or_ask(self):
        """The last Snapshot; before the first, None, and one is taken now
        (at most one try every ASK_AGAIN seconds): the capacity checks must
        not wait for the periodic one, a minute after the gateway started."""
        if self.latest is None and not self._taking.busy and (
                self._asked is None or self.clock() - self._asked >= ASK_AGAIN):
            self._asked = self.clock()
            self.run()
        return self.latest

    def current(self, max_age):
        """The latest Snapshot if younger than *max_age* seconds, else a new one."""
        if self.latest is not None and self.clock() - self.latest.at < max_age:
            return defer.succeed(self.latest)
        return self.take()

    @defer.inlineCallbacks
    def _ask_every_broker(self, keys):
        """[(node, its answers to the requests of API *keys*)] of every live
        broker (not the fenced), asked at once; InventoryError if one cannot
        be asked or answers an error."""
        brokers = sorted(self.topology.live_brokers().items())
        if not brokers:
            raise InventoryError("no broker known yet")
        asks = []
        for key in keys:
            version = version_for(key, self.topology.api_versions)
            asks.append((request(key, version), version))
        try:
            answers = yield defer.gatherResults(
                [self.ask(host, port, asks) for _, (host, port) in brokers],
                consumeErrors=True)
        except defer.FirstError as e:
            raise InventoryError(f"cannot ask the brokers: "
                                 f"{e.subFailure.getErrorMessage()}")
        for (node, _), answered in zip(brokers, answers):
            for answer in answered:
                if answer.error_code != ErrorCode.none:
                    raise InventoryError(f"broker {node}: {answer.error_code.name}")
        return [(node, answered) for (node, _), answered in zip(brokers, answers)]

    @defer.inlineCallbacks
    def _list_ids(self):
        """The latest Snapshot with the ids every broker lists now."""
        asked = self.clock()
        answers = yield self._ask_every_broker((LIST_GROUPS, LIST_TRANSACTIONS))
        groups, transactions = listed_ids(answered for _, answered in answers)
        latest = self.latest  # the newest, a whole inventory ended meanwhile or not
        if latest.ids_listed > asked:  # a whole inventory ended meanwhile: as new
            return latest
        self.latest = latest.with_ids(self.vclusters, groups, transactions, asked)
        self._export(self.latest)
        return self.latest

    @defer.inlineCallbacks
    def _take(self):
        if self.refresh is not None:
            yield self.refresh()
        answers = yield self._ask_every_broker(
            (LIST_GROUPS, DESCRIBE_LOG_DIRS, LIST_TRANSACTIONS))
        groups, transactions = listed_ids((listed, txns)
                                          for _, (listed, _, txns) in answers)
        sizes = {}
        for node, (_, dirs, _) in answers:
            for result in dirs.results:
                if result.error_code != ErrorCode.none:  # an offline log directory
                    raise InventoryError(f"broker {node}, {result.log_dir}: "
                                         f"{result.error_code.name}")
                for topic in result.topics:
                    for p in topic.partitions:
                        if not p.is_future_key:
                            sizes.setdefault((topic.name, p.partition_index),
                                             []).append(p.partition_size)
        snapshot = Snapshot(self.clock(), attribute(
            self.vclusters, self.topology.topic_names, self.topology.partitions,
            groups, sizes, transactions), frozenset(groups), frozenset(transactions))
        self.latest, self.last_error = snapshot, None
        self._export(snapshot)
        return snapshot

    def run(self):
        """The periodic inventory: a failure is logged, the last one stays."""
        def failed(failure):
            self.last_error = failure.getErrorMessage()
            self.log.warn("usage inventory failed: {why}", why=self.last_error)
        return self.take().addErrback(failed)

    def _export(self, snapshot):
        """The Prometheus gauges (vkafka_usage_*), one set per virtual cluster."""
        if self.metrics is None:
            return
        m = self.metrics
        for vc in self._exported - set(snapshot.figures):
            for gauge in (m.usage_topics, m.usage_partitions, m.usage_groups,
                          m.usage_transactions):
                gauge.remove(vc)
            for replicas in ("all", "once"):
                m.usage_storage.remove(vc, replicas)
        for vc, f in snapshot.figures.items():
            m.usage_topics.labels(vc).set(f.topics)
            m.usage_partitions.labels(vc).set(f.partitions)
            m.usage_groups.labels(vc).set(f.consumerGroups)
            m.usage_transactions.labels(vc).set(f.transactionalIds)
            m.usage_storage.labels(vc, "all").set(f.storageBytes)
            m.usage_storage.labels(vc, "once").set(f.storageBytesOnce)
        self._exported = set(snapshot.figures)


def listed_ids(answers):
    """(group ids, transactional ids) of (ListGroups, ListTransactions)
    answers, pair by pair."""
    groups, transactions = set(), set()
    for listed, txns in answers:
        groups.update(g.group_id for g in listed.groups)
        transactions.update(t.transactional_id for t in txns.transaction_states)
    return groups, transactions


class Shared:
    """``f() -> Deferred``, run once at a time: calls while it runs share its
    result, each through a Deferred of its own (a Failure fails each)."""

    def __init__(self, f):
        self.f = f
        self.waiting = None

    @property
    def busy(self):
        return self.waiting is not None

    def __call__(self):
        d = defer.Deferred()
        if self.waiting is None:
            self.waiting = [d]
            self.f().addBoth(self._finished)
        else:
            self.waiting.append(d)
        return d

    def _finished(self, result):
        waiting, self.waiting = self.waiting, None
        for d in waiting:
            d.callback(result)


def broker_asker(connector, run_blocking=None):
    """``Inventory.ask`` over the gateway's own client: one connection per
    broker and inventory, the requests pipelined on it.  The answers are
    decoded by *run_blocking* (a thread: a DescribeLogDirs answer names every
    partition replica on the broker, as long to decode as a topic listing;
    proxy/discovery.py says why not on the reactor)."""
    if run_blocking is None:
        from twisted.internet.threads import deferToThread as run_blocking

    def first_error(failure):
        return failure.value.subFailure if failure.check(defer.FirstError) \
            else failure

    def decode(payloads, asks):
        with collector_held():
            return [decode_response(payload, body.__api_key__, version)[1]
                    for payload, (body, version) in zip(payloads, asks)]

    def ask(host, port, asks):
        d = connector.session(host, port, lambda client: defer.gatherResults(
            [client.request(body, version, raw=True) for body, version in asks],
            consumeErrors=True))
        return d.addCallbacks(lambda payloads: run_blocking(decode, payloads, asks),
                              first_error)
    return ask
