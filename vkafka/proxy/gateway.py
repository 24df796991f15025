# -*- test-case-name: tests.test_splice -*-
"""The gateway: the port-per-broker listeners and the upstream connector."""

import heapq

from twisted.internet import defer, protocol
from twisted.logger import Logger

from ..auth.acls import MAX_ACLS
from ..client import Unreachable, connect, tcp_endpoint, try_each
from ..protocol.framing import DEFAULT_MAX_FRAME_SIZE
from ..tenancy.members import Members
from ..tenancy.metadata_cache import MetadataAnswers
from ..tenancy.patterns import RegexSubscriptions
from ..tenancy.producers import ProducerIds, TransactionPartitions
from ..tenancy.rules.addresses import offered_rules
from ..tenancy.rules.common import StateWrites
from ..tenancy.rules.topics import RULE_TOPICS_AT_ONCE
from ..tenancy.services import Services
from ..tenancy.sessions import SessionPool
from .broker import BrokerConnection
from .splice import ClientConnection


class Gateway:
    """Shared state of every connection: topology, rules, limits, connector."""

    log = Logger()

    def __init__(self, reactor, topology, rules, *,
                 max_frame_size=DEFAULT_MAX_FRAME_SIZE,
                 max_response_size=None, endpoint_factory=tcp_endpoint,
                 refresher=None, tenancy=None, authentication_timeout=10.0,
                 unauthenticated_frame_size=16 * 1024, max_connections_per_ip=1000,
                 metrics=None, metadata_cache_seconds=1.0,
                 max_connections_per_vcluster=1000, max_decoded_request=1024 * 1024,
                 max_decoded_response=8 * 1024 * 1024, max_fetch_sessions=250):
        self.reactor = reactor
        self.topology = topology
        self.rules = rules
        self.offered = dict(rules)
        """The table narrowed to what the brokers offer, once learnt (tenant
        mode): the one dict every connection checks its requests against."""
        topology.api_versions_learnt.append(self._narrow)
        self.max_frame_size = max_frame_size
        self.max_response_size = max_response_size or max(
            max_frame_size, 1024 * 1024 * 1024)
        self.endpoint_factory = endpoint_factory
        self.refresher = refresher
        self.tenancy = tenancy
        self.state = None
        self.state_loaded = None
        """A Deferred that fires once the shared state is read to its end
        (tenant mode with a state store): logins wait for it."""
        self.group_ids = self.transactional_ids = self.clear_group_configs = None
        """The consumer group and transactional ids the last usage inventory
        listed (usage.inventory.IdsSeen, set by the service maker; capacity),
        and how a deleted group's configs are cleared."""
        self.producer_ids = ProducerIds(reactor.seconds)
        """New producer ids each virtual cluster may bring (tenancy/producers.py)."""
        self.transactions = TransactionPartitions()
        """The partitions each transaction wrote to (tenancy/producers.py)."""
        self.members = Members(reactor.seconds)
        """Classic group member state each virtual cluster keeps (tenancy/members.py)."""
        self.audit = None
        """Sampled refused authorizations go here (``refused(...)``), if set."""
        self.rate_shares = None
        self.loop_share = None
        """Each tenant's share of the loop for decoded requests
        (filters/throttle.LoopShare; ``--tenant-loop-share``), tenant mode."""
        self.buffers = None
        """buffers.Buffers: the bytes tenants' connections hold (tenant mode)."""
        self.membership = None
        """The gateway cluster (state/membership.py), when there is a state store."""
        self.draining = False
        """Leaving the cluster (proxy/leave.py): connections close once idle."""
        """Tenants' rate limits on this gateway (filters/shares.py), tenant mode."""
        """The shared gateway state (tenant mode), set by the service maker."""
        """None in passthrough mode; else a Tenancy (token authority, namespaces)."""
        self.connections = set()
        self.auth_failures = 0
        self.authentication_timeout = authentication_timeout
        self.unauthenticated_frame_size = unauthenticated_frame_size
        self.max_connections_per_ip = max_connections_per_ip
        self.per_ip = {}
        self.max_connections_per_vcluster = max_connections_per_vcluster
        self.per_vcluster = {}
        """Authenticated connections per virtual cluster (tenant mode)."""
        self.max_decoded_request = max_decoded_request
        """Largest tenant request decoded on the reactor (Metadata: a quarter)."""
        self.max_decoded_response = max_decoded_response
        """Largest broker answer to a tenant decoded on the reactor (not Fetch)."""
        self.acl_writes = StateWrites(reactor.seconds, MAX_ACLS)
        self.rule_writes = StateWrites(reactor.seconds, RULE_TOPICS_AT_ONCE)
        """The ACLs each virtual cluster may still create here (CreateAcls)."""
        self.offload = None
        """Runs large decodes and encodes in a codec thread (``Services.offload``;
        set by the service maker, None: on the reactor)."""
        self.max_fetch_sessions = max_fetch_sessions
        self.session_pools = {}
        """(virtual cluster, node id) -> the broker fetch sessions its
        connections hold (tenancy/sessions.SessionPool)."""
        self.workers = 1
        """Workers of this gateway (``--workers``; set by vkafka/worker.py):
        above 1 the two caps above hold for them all (SharedCap), and the
        fetch session pools are split over them (``session_pool``)."""
        self.shared_ip = SharedCap()
        self.shared_vcluster = SharedCap()
        self.refused_connections = 0
        self.metrics = metrics
        self.metadata_answers = MetadataAnswers(metadata_cache_seconds)
        self.regex_subscriptions = RegexSubscriptions()
        """KIP-848 members' regex subscriptions (tenancy/patterns.py)."""
        self.concentration_gaps = {}
        """(virtual topic, partition) -> offsets known to hold none of its
        records (tenancy/concentration/)."""

    def services(self):
        """What the rules of one new client connection may use (not the gateway)."""
        return Services(self.topology, self.reactor, self.rules, self.refresher,
                        self.metadata_answers, self.regex_subscriptions, self.state,
                        self.concentration_gaps, self.forget_alias,
                        None if self.state is None else self.state.limits_of,
                        self.group_ids, membership=self.membership,
                        transactional_ids=self.transactional_ids,
                        producer_ids=self.producer_ids, members=self.members,
                        transactions=self.transactions,
                        loop_share=self.loop_share,
                        clear_group_configs=self.clear_group_configs,
                        authorizer=None if self.state is None else self.state.authorizer,
                        audit=self.audit, offload=self.offload,
                        acl_writes=self.acl_writes, rule_writes=self.rule_writes)

    def _narrow(self, api_versions):
        """The brokers' versions are learnt (again): narrow ``offered`` in place,
        so that connections already open check against them too."""
        narrowed = offered_rules(self.rules, api_versions)
        self.offered.clear()
        self.offered.update(narrowed)

    def session_pool(self, vcluster, node_id):
        """Where *vcluster*'s connections to broker *node_id* hold their fetch
        sessions: ``--max-fetch-sessions`` for the whole gateway, so each of
        its workers holds an even share (the kernel spreads connections
        evenly), at least one; N per-worker pools of the whole setting let a
        tenant fill N times its room in the broker's session cache."""
        pool = self.session_pools.get((vcluster, node_id))
        if pool is None:
            pool = self.session_pools[vcluster, node_id] = SessionPool(
                max(1, self.max_fetch_sessions // self.workers))
        return pool

    def close_revoked(self, vcluster, username):
        """Close open connections whose token a revocation now refuses."""
        for conn in list(self.connections):
            claims = conn.claims
            if claims is not None and claims.vcluster == vcluster and \
                    self.tenancy.authority.revocations.is_revoked(claims):
                conn.fail(f"token of {claims.username!r} in {vcluster!r} revoked")

    def close_unavailable(self, vcluster, reason):
        """Close open connections of a virtual cluster the gateway stopped
        serving (its names overlap another's): they would reconnect, and be
        refused at login with *reason*."""
        for conn in list(self.connections):
            claims = conn.claims
            if claims is not None and claims.vcluster == vcluster:
                conn.fail(reason)

    def forget_alias(self, namespace, logical):
        """A tenant deleted an aliased topic: remove the mapping, keep the topic."""
        namespace.remove_alias(logical)
        if self.state is not None:
            d = self.state.delete_mapping(namespace.name, logical)
            d.addErrback(lambda f: self.log.error(
                "could not remove mapping {vc}/{topic}: {why}", vc=namespace.name,
                topic=logical, why=f.getErrorMessage()))

    def count_auth_failure(self):
        self.auth_failures += 1
        if self.metrics is not None:
            self.metrics.auth_failures.inc()

    def admit(self, addr):
        """Count a new connection from *addr*; False if its host is over the limit."""
        host = getattr(addr, "host", None)
        count = self.per_ip.get(host, 0)
        if self.workers > 1:  # the other workers' too
            admitted = self.shared_ip.allows(host, count, self.max_connections_per_ip,
                                             self.workers)
            count += self.shared_ip.siblings.get(host, 0)
        else:
            admitted = count < self.max_connections_per_ip
        if not admitted:
            self.refused_connections += 1
            if self.metrics is not None:
                self.metrics.refused.inc()
            if self.refused_connections % 1000 == 1:  # one line per burst, not a flood
                self.log.warn("refusing connections from {host}: {n} open (limit "
                              "{limit}); {total} refused so far", host=host, n=count,
                              limit=self.max_connections_per_ip,
                              total=self.refused_connections)
            return False
        if self.workers > 1:
            self.shared_ip.count(host)
        self.per_ip[host] = self.per_ip.get(host, 0) + 1
        return True

    def admit_tenant(self, vcluster):
        """Count one more authenticated connection of *vcluster*; False when
        it is at its limit (one tenant cannot take every connection)."""
        count = self.per_vcluster.get(vcluster, 0)
        if self.workers > 1:  # the other workers' too
            if not self.shared_vcluster.allows(
                    vcluster, count, self.max_connections_per_vcluster, self.workers):
                return False
        elif count >= self.max_connections_per_vcluster:
            return False
        limit = None if self.state is None else \
            self.state.limits_of(vcluster).capacity.connections
        if limit is not None:  # for the virtual cluster over every gateway
            others = 0 if self.rate_shares is None else \
                self.rate_shares.others_connections(vcluster)
            if count + others >= limit:
                return False
        if self.workers > 1:
            self.shared_vcluster.count(vcluster)
        self.per_vcluster[vcluster] = count + 1
        return True

    def siblings(self, ips, vclusters):
        """A reading of the other workers (``--workers``): the connections
        they hold per client address and per virtual cluster."""
        self.shared_ip.reading(ips, self.per_ip)
        self.shared_vcluster.reading(vclusters, self.per_vcluster)

    def reported_ips(self):
        """``{host: connections}`` for the supervisor's reading: the hosts
        with at least ``report_threshold`` connections here, at most
        REPORT_MOST of them, the largest (a worker with 100,000 addresses
        sends a short line)."""
        cap = self.max_connections_per_ip
        least = report_threshold(cap, self.workers)
        held = [(n, host) for host, n in self.per_ip.items()
                if n >= least and host is not None]
        if len(held) > REPORT_MOST:
            held = heapq.nlargest(REPORT_MOST, held)
        return {host: n for n, host in held}

    def tenant_closed(self, vcluster):
        _one_less(self.per_vcluster, vcluster)

    def connection_closed(self, client):
        _one_less(self.per_ip, client.admitted_host)

    def factory_for_port(self, port):
        return ListenerFactory(self, port)

    @defer.inlineCallbacks
    def _connect(self, client):
        node_id = self.topology.node_for(client.port, client.server_name)
        if node_id is None or node_id not in self.topology.brokers:
            if self.refresher is not None:
                yield self.refresher.refresh()
            node_id = self.topology.node_for(client.port, client.server_name)
        client.node_id = node_id

        def attempt(host, port):
            broker = BrokerConnection(client)
            broker.address = (host, port)
            return connect(self.endpoint_factory(self.reactor, host, port), broker)
        try:
            broker = yield try_each(self.topology.upstream_candidates(node_id), attempt)
        except Unreachable as e:
            raise e.last or e
        own = self.topology.brokers.get(node_id)
        if own is not None and broker.address != own:
            client.stand_in(STAND_IN_LIFE)
        return broker

    def connect_upstream(self, client):
        """Connect *client* to its broker; returns a cancellable Deferred."""
        d = self._connect(client)
        d.addErrback(lambda f: None if f.check(defer.CancelledError)
                     else client.upstream_failed(f))
        return d


STAND_IN_LIFE = 10.0
"""Seconds a client connection served by another broker than its port's
(that one down, or not listed by the cluster) lives: then it is closed once
no answer is owed (``Splice.stand_in``).  Kept, it would stay on the other
broker after its own came back, and a client sending there the partitions
its port's broker leads again would be told NOT_LEADER_OR_FOLLOWER for
ever: the metadata it refreshes names the same port (a first tenant's
consumers never assigned, its producer's records timed out, after a broker
restart, until session 27)."""


REPORT_MOST = 1000
"""Most client addresses a worker reports in one reading."""


def report_threshold(cap, workers):
    """Connections from one address a worker must hold to report it: a
    1/(2N) share of the cap (1 with small caps)."""
    return max(1, cap // (2 * workers))


class SharedCap:
    """One connection cap over the N workers of a gateway, for one kind of
    key (client address, virtual cluster).  The supervisor reads every
    worker once a second and tells each what the others hold
    (``siblings``); a worker admits a key's connection while its own plus
    the others' last known count is below the cap and, since that reading,
    it admitted fewer than its share of the room the reading left,
    ``ceil((cap - own - siblings) / N)``: between two readings the N workers
    admit at most that room + N - 1 (docs/operations.md, Workers)."""

    def __init__(self):
        self.siblings = {}
        """key -> connections the other workers held at the last reading."""
        self.base = {}
        """key -> this worker's connections at the last reading."""
        self.admitted = {}
        """key -> connections this worker admitted since."""

    def reading(self, siblings, own):
        self.siblings = {k: n for k, n in siblings.items() if n > 0}
        self.base = dict(own)
        self.admitted = {}

    def allows(self, key, count, cap, workers):
        """*count*: this worker's connections of *key*; True when one more
        may be admitted (then call ``count``)."""
        others = self.siblings.get(key, 0)
        if count + others >= cap:
            return False
        room = cap - self.base.get(key, 0) - others
        admitted = self.admitted.get(key, 0)
        return room > 0 and admitted < -(-room // workers)

    def count(self, key):
        self.admitted[key] = self.admitted.get(key, 0) + 1


def _one_less(counts, key):
    """Count one less for *key*; at zero it is forgotten (no unbounded map)."""
    count = counts.get(key, 0) - 1
    if count > 0:
        counts[key] = count
    else:
        counts.pop(key, None)


class ListenerFactory(protocol.Factory):
    """Accepts clients on the port that stands for one broker."""

    noisy = False

    def __init__(self, gateway, port):
        self.gateway = gateway
        self.port = port

    def buildProtocol(self, addr):
        if not self.gateway.admit(addr):
            return None  # Twisted closes the connection at once
        client = ClientConnection(self.gateway, None)
        client.admitted_host = getattr(addr, "host", None)
        client.port = self.port
        client.factory = self
        return client
