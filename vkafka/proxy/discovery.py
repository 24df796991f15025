# -*- test-case-name: tests.test_metadata_cache,tests.test_gateway_recovery -*-
"""The gateway's own Metadata requests, to learn broker addresses.

Clients' Metadata answers also teach the topology as they pass; this is for
start-up, for a port whose broker is not yet known, and for /health.
"""


from kio.schema.api_versions.v4.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from twisted.internet import defer, task
from twisted.logger import Logger

from .. import __version__
from ..client import (
    Connector, Unreachable, ask_blocking, create_topic, default_replication, refusal,
    try_each)
from ..protocol.codec import decode_response
from ..state.store import StoreUnavailable
from ..tuning import collector_held

METADATA = 3
METADATA_VERSION = 12
API_VERSIONS_VERSION = 4
"""v4: a broker lists features of minimum version 0 (transaction.version,
group.version) only to v4 and later (KIP-1022)."""

BROKERS_ONLY = MetadataRequest(
    topics=(), allow_auto_topic_creation=False,
    include_topic_authorized_operations=False,
)
ALL_TOPICS = MetadataRequest(
    topics=None, allow_auto_topic_creation=False,
    include_topic_authorized_operations=False,
)


def parse_metadata(payload):
    """(broker triples, {topic id: name}, {name: partition count}) from a
    Metadata v12 response payload."""
    _, response = decode_response(payload, METADATA, METADATA_VERSION)
    brokers = [(b.node_id, b.host, b.port) for b in response.brokers]
    ids = {t.topic_id: t.name for t in response.topics if t.name and t.topic_id}
    counts = {t.name: len(t.partitions) for t in response.topics
              if t.name and t.error_code == 0}
    return brokers, ids, counts


def parse_listing(payload):
    """``parse_metadata`` for the all-topics listing (run off the reactor
    thread), with Python's cyclic collector held off while it runs
    (``tuning.collector_held`` says why)."""
    with collector_held():
        return parse_metadata(payload)


API_VERSIONS_REQUEST = ApiVersionsRequest(
    client_software_name="vkafka", client_software_version=__version__)
"""What the brokers offer, for the answer the gateway gives tenants before they
authenticate (no broker connection is opened for a client until then)."""


def checked_api_versions(response):
    if response.error_code != 0:
        raise ValueError(f"ApiVersions: error {response.error_code}")
    return response


NOT_YET = (ErrorCode.unknown_topic_or_partition, ErrorCode.leader_not_available)
"""What a broker answers for a topic it has not learnt yet, or whose leader is
still being elected."""


class Refresher:
    """Learns broker addresses by asking any known broker for metadata."""

    log = Logger()

    def __init__(self, reactor, topology, endpoint_factory, all_topics=False,
                 run_blocking=None):
        self.all_topics = all_topics
        """Also learn every topic id (tenant mode checks ids against names)."""
        if run_blocking is None:
            from twisted.internet.threads import deferToThread as run_blocking
        self.run_blocking = run_blocking
        """Runs the decode of an all-topics answer off the reactor thread: with
        10,000 topics kio takes ~30 ms, which stalled every connection's traffic
        (the end-to-end latency p99.9) each time the listing was renewed.  The
        decode is pure Python, so the GIL still interleaves it with the reactor,
        every ``sys.getswitchinterval()`` (the service sets 1 ms)."""
        self.reactor = reactor
        self.topology = topology
        self.endpoint_factory = endpoint_factory
        # A listing is answered in a second or two: one not answered in 15 s
        # is from a wedged broker, and the next one is tried.
        self.connector = Connector(reactor, endpoint_factory, "vkafka-discovery",
                                   timeout=15)
        self.last_error = "no metadata fetched yet"
        self.last_success = None
        self._inflight = None
        self.retry_delay = 1.0
        """After a failed refresh, retry this soon (doubling up to 30 s) rather than
        waiting for the periodic one: a gateway started before its cluster becomes
        ready as soon as the cluster is."""
        self._retry = None

    def refresh(self):
        """Fetch metadata once (concurrent callers share one fetch)."""
        if self._inflight is None:
            self._inflight = self._refresh()
            self._inflight.addBoth(self._finished)
        d = defer.Deferred()
        self._inflight.addBoth(lambda r: (d.callback(r), r)[1])
        return d

    def refresh_listing(self):
        """Fetch a new topic listing in the background, unless one is on its way."""
        if self.all_topics and self._inflight is None:
            self.refresh()

    LISTING_EVERY = 1.0
    """Seconds between listings ``next_listing`` starts (one per gateway at most)."""

    def next_listing(self, timeout=5.0):
        """A Deferred firing (with None) once a topic listing has been read
        after this call (the one on its way, or one started at most
        LISTING_EVERY seconds after the last one began), or after *timeout*
        seconds, whichever comes first; a failed listing fires it too.  A
        Produce naming a topic id this gateway cannot place waits for it
        (filters/tenant.py)."""
        d = defer.Deferred()

        def done(_=None):
            if not d.called:
                d.callback(None)

        def start():
            self._listing_started = self.reactor.seconds()
            self.refresh().addBoth(done)

        if self._inflight is not None:
            self._inflight.addBoth(lambda r: (done(), r)[1])
        else:
            wait = self._listing_started + self.LISTING_EVERY - self.reactor.seconds()
            if wait > 0:
                self.reactor.callLater(wait, start)
            else:
                start()
        timer = self.reactor.callLater(timeout, done)
        d.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        return d

    _listing_started = float("-inf")

    def _finished(self, result):
        self._inflight = None
        return result

    @defer.inlineCallbacks
    def _on_any(self, use, what):
        """``use(client)`` on a connection to the first broker that lets it."""
        try:
            return (yield self.connector.first(
                self.topology.upstream_candidates(None), use))
        except Unreachable as e:
            raise StoreUnavailable(f"cannot reach the cluster to {what}: {e}")

    CONFIRM_MISSING = (0.1, 0.2, 0.3, 0.4)
    """Seconds to wait before asking again when a broker does not know a topic
    (or its leader) yet: a topic created a moment ago reaches each broker's
    metadata a little later (KRaft), and an operator who creates a topic and
    maps it at once must not be told it does not exist.  A missing topic is
    answered as missing after one second."""

    @defer.inlineCallbacks
    def topic_exists(self, name):
        """How many partitions topic *name* has (0: it does not exist); asks a
        broker now (and again, CONFIRM_MISSING, before saying it is missing)."""
        request = MetadataRequest(
            topics=(MetadataRequestTopic(topic_id=None, name=name),),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False)
        for wait in (*self.CONFIRM_MISSING, None):
            response = yield self._on_any(
                lambda client: client.request(request, METADATA_VERSION),
                "check the topic")
            [topic] = response.topics
            if topic.error_code not in NOT_YET or wait is None:
                break
            yield task.deferLater(self.reactor, wait, lambda: None)
        if topic.error_code == 0 and topic.topic_id:
            self.topology.topic_ids[topic.topic_id] = name
        return len(topic.partitions) if topic.error_code == 0 else 0

    @defer.inlineCallbacks
    def create_topic(self, name, partitions, replication=None, configs=None):
        """Create topic *name* (replication: at most 3, at most the brokers).
        Fires with None, or the broker's refusal as text."""
        replication = replication or default_replication(len(self.topology.brokers))
        result = yield self._on_any(lambda client: create_topic(
            client, name, partitions, replication, configs), "create the topic")
        if result.error_code != 0:
            return refusal(result)
        self.topology.learn_topic(name)
        return None

    @defer.inlineCallbacks
    def _fetch(self, host, port):
        """(host, port, brokers, topic ids) from *host*; an all-topics answer is
        fetched as bytes and decoded by ``run_blocking``."""
        request = ALL_TOPICS if self.all_topics else BROKERS_ONLY
        payload = yield self.connector.ask(host, port, request, METADATA_VERSION,
                                           raw=True)
        if not self.all_topics:
            return (host, port, *parse_metadata(payload))
        body = payload[4:]  # past the correlation id
        if body != self._last_listing[0]:
            self._last_listing = body, (yield self.run_blocking(parse_listing, payload))
        return (host, port, *self._last_listing[1])

    _last_listing = (None, None)
    """The last all-topics answer (less its correlation id) and what it said:
    a broker answers the same bytes while nothing in the cluster changes,
    and decoding 10,000 topics again would cost ~25 ms of CPU each time."""

    @defer.inlineCallbacks
    def _refresh(self):
        try:
            host, port, brokers, ids, counts = yield try_each(
                self.topology.upstream_candidates(None), self._fetch)
        except Unreachable as e:
            if e.errors:
                self.last_error = str(e)
        else:
            self.topology.learn(brokers)
            self.topology.learn_listed(node for node, _, _ in brokers)
            if self.all_topics:
                self.topology.learn_listed_ids(ids)
                self.topology.learn_listing(ids.values(), self.reactor.seconds(),
                                            counts)
                self._learn_api_versions(host, port)
            if self.last_success is None:
                self.log.info("cluster reached: brokers {ids}",
                              ids=sorted(b[0] for b in brokers))
            self.last_success = self.reactor.seconds()
            self.last_error = None
            self.retry_delay = 1.0
            return True
        self.log.warn("cannot reach the cluster: {why}", why=self.last_error)
        if self._retry is None or not self._retry.active():
            self._retry = self.reactor.callLater(self.retry_delay, self.refresh)
            self.retry_delay = min(self.retry_delay * 2, 30.0)
        return False

    def _learn_api_versions(self, host, port):
        """Ask the broker just reached what it offers (in the background)."""
        def learnt(response):
            self.topology.api_versions = checked_api_versions(response)

        def failed(failure):
            self.log.warn("ApiVersions from {host}:{port}: {why}", host=host,
                          port=port, why=failure.getErrorMessage())
        self.connector.ask(host, port, API_VERSIONS_REQUEST, API_VERSIONS_VERSION
                           ).addCallback(learnt).addErrback(failed)

    def stop(self):
        if self._retry is not None and self._retry.active():
            self._retry.cancel()


def fetch_brokers_blocking(servers, timeout=5.0):
    """Synchronous variant for scripts (devstack waits for brokers with it, no
    reactor running): the broker triples, or None if unreachable."""
    response = ask_blocking(servers, BROKERS_ONLY, METADATA_VERSION, timeout,
                            "vkafka-discovery")
    if response is None:
        return None
    return [(b.node_id, b.host, b.port) for b in response.brokers]
