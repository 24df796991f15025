# -*- test-case-name: tests.test_discovery -*-
"""The gateway's own Metadata requests, to learn broker addresses.

Clients' Metadata answers also teach the topology as they pass; this is for
start-up, for a port whose broker is not yet known, and for /health.
"""

import gc
import time

from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from twisted.internet import defer, protocol
from twisted.logger import Logger

from .. import __version__
from ..protocol.codec import decode_response, encode_request
from ..protocol.framing import FrameDecoder, FrameError, frame
from .gateway import connect

METADATA = 3
METADATA_VERSION = 12
API_VERSIONS = 18
API_VERSIONS_VERSION = 3

BROKERS_ONLY = MetadataRequest(
    topics=(), allow_auto_topic_creation=False,
    include_topic_authorized_operations=False,
)
ALL_TOPICS = MetadataRequest(
    topics=None, allow_auto_topic_creation=False,
    include_topic_authorized_operations=False,
)


def metadata_request(correlation_id=1, all_topics=False):
    """A framed Metadata v12 request for the brokers (and every topic, if asked)."""
    request = ALL_TOPICS if all_topics else BROKERS_ONLY
    return frame(encode_request(request, METADATA_VERSION, correlation_id,
                                "vkafka-discovery"))


def parse_metadata(payload):
    """(broker triples, {topic id: name}) from a Metadata v12 response payload."""
    _, response = decode_response(payload, METADATA, METADATA_VERSION)
    brokers = [(b.node_id, b.host, b.port) for b in response.brokers]
    ids = {t.topic_id: t.name for t in response.topics if t.name and t.topic_id}
    return brokers, ids


def parse_listing(payload):
    """``parse_metadata`` for the all-topics listing, with Python's cyclic GC held
    off while it runs.  kio builds some ten objects per topic, nearly all freed
    (by reference counting) as soon as the names and ids are read; but at 10,000
    topics that burst used to trigger a full collection of the whole heap,
    28-47 ms during which the decode thread held the GIL and every connection
    waited.  Held off, the burst is gone before the collector looks."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return parse_metadata(payload)
    finally:
        if enabled:
            gc.enable()


def parse_brokers(payload):
    """``(node_id, host, port)`` triples from a Metadata v12 response payload."""
    return parse_metadata(payload)[0]


def api_versions_request(correlation_id=1):
    """A framed ApiVersions request: what the brokers offer, for the answer the
    gateway gives tenants before they authenticate (no broker connection
    is opened for a client until then)."""
    return frame(encode_request(ApiVersionsRequest(
        client_software_name="vkafka", client_software_version=__version__),
        API_VERSIONS_VERSION, correlation_id, "vkafka-discovery"))


def parse_api_versions(payload):
    _, response = decode_response(payload, API_VERSIONS, API_VERSIONS_VERSION)
    if response.error_code != 0:
        raise ValueError(f"ApiVersions: error {response.error_code}")
    return response


class _MetadataClient(protocol.Protocol):
    """Sends one request, takes its one response (``done``), hangs up."""

    def __init__(self, all_topics, request=None):
        self.done = defer.Deferred()
        self.decoder = FrameDecoder()
        self.request = request or metadata_request(all_topics=all_topics)

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        try:
            frames = self.decoder.feed(data)
            if frames:
                self.transport.loseConnection()
                if not self.done.called:
                    self.done.callback(bytes(frames[0]))
        except (FrameError, ValueError) as e:
            self.transport.abortConnection()
            if not self.done.called:
                self.done.errback(e)

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.errback(reason)


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

    def _finished(self, result):
        self._inflight = None
        return result

    @defer.inlineCallbacks
    def _ask(self, request, version, what):
        """The answer of the first broker that answers *request*."""
        from ..state.kafka import KafkaConnection
        from ..state.store import StoreUnavailable

        for host, port in self.topology.upstream_candidates(None):
            conn = KafkaConnection("vkafka-admin")
            try:
                yield connect(self.endpoint_factory(self.reactor, host, port), conn)
                response = yield conn.request(request, version)
            except Exception:
                continue
            finally:
                if conn.connected:
                    conn.transport.loseConnection()
            return response
        raise StoreUnavailable(f"cannot reach the cluster to {what}")

    @defer.inlineCallbacks
    def topic_exists(self, name):
        """How many partitions topic *name* has (0: it does not exist); asks a
        broker now."""
        response = yield self._ask(MetadataRequest(
            topics=(MetadataRequestTopic(topic_id=None, name=name),),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False), METADATA_VERSION,
            "check the topic")
        [topic] = response.topics
        if topic.error_code == 0 and topic.topic_id:
            self.topology.topic_ids[topic.topic_id] = name
        return len(topic.partitions) if topic.error_code == 0 else 0

    @defer.inlineCallbacks
    def create_topic(self, name, partitions, replication=None, configs=None):
        """Create topic *name* (replication: at most 3, at most the brokers).
        Fires with None, or the broker's refusal as text."""
        import datetime

        from kio.schema.create_topics.v7.request import (
            CreatableTopic, CreatableTopicConfig, CreateTopicsRequest)
        from kio.static.primitive import i16, i32, i32Timedelta

        replication = replication or max(1, min(3, len(self.topology.brokers)))
        response = yield self._ask(CreateTopicsRequest(topics=(CreatableTopic(
            name=name, num_partitions=i32(partitions), replication_factor=i16(replication),
            assignments=(), configs=tuple(
                CreatableTopicConfig(name=k, value=v)
                for k, v in sorted((configs or {}).items()))),),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=10)),
            validate_only=False), 7, "create the topic")
        [result] = response.topics
        if result.error_code != 0:
            return f"{result.error_code.name.upper()} {result.error_message or ''}".strip()
        self.topology.learn_topic(name)
        return None

    @defer.inlineCallbacks
    def _refresh(self):
        for host, port in self.topology.upstream_candidates(None):
            client = _MetadataClient(self.all_topics)
            try:
                yield connect(self.endpoint_factory(self.reactor, host, port), client)
                payload = yield client.done
                brokers, ids = yield (self.run_blocking(parse_listing, payload)
                                      if self.all_topics else parse_metadata(payload))
            except Exception as e:
                self.last_error = f"{host}:{port}: {e}"
                continue
            self.topology.learn(brokers)
            self.topology.topic_ids.update(ids)
            if self.all_topics:
                self.topology.learn_listing(ids.values(), self.reactor.seconds())
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
        client = _MetadataClient(False, api_versions_request())

        def learnt(payload):
            self.topology.api_versions = parse_api_versions(payload)

        def failed(failure):
            self.log.warn("ApiVersions from {host}:{port}: {why}", host=host,
                          port=port, why=failure.getErrorMessage())
        connect(self.endpoint_factory(self.reactor, host, port), client).addCallback(
            lambda _: client.done).addCallback(learnt).addErrback(failed)

    def stop(self):
        if self._retry is not None and self._retry.active():
            self._retry.cancel()


def fetch_brokers_blocking(servers, timeout=5.0):
    """Synchronous variant for scripts: the broker list, or None if unreachable."""
    import socket

    deadline = time.monotonic() + timeout
    for host, port in servers:
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.sendall(metadata_request())
                decoder = FrameDecoder()
                while time.monotonic() < deadline:
                    data = s.recv(65536)
                    if not data:
                        break
                    frames = decoder.feed(data)
                    if frames:
                        return parse_brokers(frames[0])
        except (OSError, ValueError):
            continue
    return None
