# -*- test-case-name: tests.test_tenant_splice -*-
"""What a rule may use besides its request: the narrow services.

A rule sees the message, its request context and this, never the client
connection or the gateway: what it can change is listed here, so a reader
knows every side effect a rewrite can have.
"""

import time
from dataclasses import dataclass
from typing import Callable


SMALL_WORK = 0.0005
"""Seconds of the loop below which a sliced request or answer (Produce, Fetch)
is not charged to the tenant's share: nearly all take ~10 us, and charging
each would cost more than it measures.  Every one is timed, though, whatever
its size: 54 KB naming 5,500 topics took 20 ms.  (A Produce in the produce
lane, filters/lane.py, is bounded instead: at most ~50 us.)"""

OFF_LOOP_FROM = 64 * 1024
"""Bytes from which a request or answer the rules decode is decoded and encoded
with ``Services.offload`` (smaller ones cost less than the hand-over)."""


@dataclass(slots=True)
class Services:
    topology: object
    """The brokers, their gateway addresses and the topic names and ids the
    gateway has seen (proxy/topology.py)."""
    clock: object
    """``seconds()``: the reactor's clock."""
    rules: dict
    """The rule table this connection is served by (ApiVersions is cut to it)."""
    refresher: object = None
    """Fetches a new topic listing in the background (None under some tests)."""
    metadata_answers: object = None
    """Recent all-topics Metadata answers, per tenant (metadata_cache.py)."""
    regex_subscriptions: object = None
    """KIP-848 members' regex subscriptions (patterns.py)."""
    state: object = None
    """The shared gateway state: creates concentrated topics' mappings."""
    concentration_gaps: dict | None = None
    """(virtual topic, partition) -> offsets known to hold none of its records."""
    forget_alias: Callable | None = None
    """``(namespace, logical)``: a tenant deleted an aliased topic."""
    limits_of: Callable | None = None
    """``(virtual cluster) -> state.limits.Limits`` (None: no limits anywhere)."""
    group_ids: object = None
    """The consumer group ids on the cluster as the last usage inventory found
    them, and those made through this process since (usage.inventory.IdsSeen;
    None: no inventory)."""
    transactional_ids: object = None
    """The same for transactional ids (capacity.transactionalIds)."""
    clear_group_configs: Callable | None = None
    """``([physical group])``: set a deleted group's configs back to their
    defaults (usage.inventory.Inventory.clear_group_configs)."""
    producer_ids: object = None
    """New producer ids each virtual cluster may bring (producers.ProducerIds,
    the gateway process's; None: not counted)."""
    producer: int = -1
    """The producer id this connection's last Produce was let write with."""
    transactions: object = None
    """The partitions each transaction wrote to, as this process saw them
    (producers.TransactionPartitions; None: not counted)."""
    members: object = None
    """Classic group member state each virtual cluster keeps on the brokers
    (members.Members, the gateway process's; None: not counted)."""
    loop_share: object = None
    """Each virtual cluster's share of the event loop (filters/throttle.py
    LoopShare; None: no limit): broker work a request asks for is charged
    to it too (rules/common.py, broker_work)."""
    authorizer: Callable | None = None
    """``(virtual cluster) -> auth.acls.Authorizer`` (None: no ACLs anywhere)."""
    peer_host: str | None = None
    """The client's address: ACLs may name hosts."""
    audit: object = None
    """Where sampled refused authorizations go (``refused(...)``), or None."""
    fetch_sessions: object = None
    """This connection's fetch sessions (sessions.py), made at its first Fetch."""
    fetch_session_pool: object = None
    """Where they hold room: its virtual cluster's pool for its broker on this
    gateway process (sessions.SessionPool; None: a pool of its own)."""
    concentrated_fetches: dict | None = None
    """This connection's fetch session's concentrated topics: physical topic
    (name or id) -> (virtual name, alias) (concentration/)."""
    membership: object = None
    """The gateway cluster (state/membership.py): which live gateway each
    broker is advertised at for this client (None: this gateway's own)."""
    client_key: str = ""
    """Who the client is, the same on each of its connections (its host and
    client id): its broker mapping over the gateway cluster is kept stable."""
    work_clock: Callable = time.perf_counter
    """Measures a decoded request's work on the loop (filters/throttle.LoopShare)."""
    acl_writes: object = None
    """The ACLs each virtual cluster may still create through this gateway
    process (rules/common.StateWrites; None: no budget)."""
    rule_writes: object = None
    """The concentrated topics each virtual cluster may still make by a rule
    (CreateTopics) through this gateway process (a StateWrites; None: no
    budget)."""
    offload: Callable | None = None
    """``(f, *args) -> Deferred of (f(*args), CPU seconds it took)``, run in the
    gateway's codec thread: large requests and answers are decoded and encoded
    there, so the loop serves everyone else meanwhile (None: on the loop)."""
