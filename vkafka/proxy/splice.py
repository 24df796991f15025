# -*- test-case-name: tests.test_splice -*-
"""The splice: one client connection, one broker connection, frames in between.

Shaped like ``twisted.protocols.portforward``: the client is paused until the
broker connection is up, then each transport is registered as the other's
streaming producer, so a slow reader on either side pauses the other side's
reads instead of making the gateway buffer without bound.

Every request's header is read and looked up in the rule table; in tenant
mode the request is rewritten before it is forwarded and its response after.
SASL is answered here.  Responses go back in request order, whether they
come from the broker or from the gateway itself.
"""

import struct
from collections import deque
from dataclasses import dataclass

from kio.static.constants import EntityType
from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from zope.interface import implementer

from ..auth.sasl import (
    SASL_HANDSHAKE, SaslFailure, decode_authenticate, decode_handshake)
from ..filters.responses import goes_through_concentration, rewrite_response
from ..filters.sasl import SaslTerminator
from ..filters.tenant import REWRITE_ERRORS, rewrite_request
from ..protocol.codec import CodecError
from ..protocol.fastpath import neutral_tags
from ..protocol.framing import FrameDecoder, FrameError
from ..protocol.headers import (
    API_VERSIONS, HeaderError, is_flexible, parse_request_header, peek_request,
    request_body_offset)
from ..protocol.produce import scan_produce
from ..tenancy.rules import local_api_versions
from .outbox import Outbox, tune_socket
from .security import server_name
from .streaming import HOLD_BACK, PASSES, STREAM_FROM, Streamed

PRODUCE = 0
FETCH = 1
METADATA = 3
_INT32 = struct.Struct(">i")
_REWRITE_ERRORS = REWRITE_ERRORS


@dataclass(slots=True)
class Pending:
    """A request awaiting its response, with what is needed to rewrite it."""
    correlation_id: int
    api_key: int
    api_version: int
    rule: object
    context: object = None
    local: bytes | None = None
    """A response the gateway made itself, sent when its turn comes."""
    close_after: bool = False
    sent: float = 0.0
    waiting: bool = False
    """Its response is being rewritten asynchronously (responses behind it wait)."""


@implementer(IHandshakeListener)
class ClientConnection(protocol.Protocol):
    """The gateway's side of a Kafka client's connection."""

    log = Logger()
    broker = None
    closed = False
    peer = None
    admitted_host = None
    server_name = None
    """The TLS SNI host name the client asked for (SNI routing only)."""
    concentrated_fetches = None
    """Physical topic (name or id) -> (virtual name, alias) of the concentrated
    topics this connection's fetch session reads (tenancy/concentration.py)."""
    fetch_sessions = None
    """The fetch sessions the broker made for this connection (tenant mode)."""
    counted_as = None
    """The virtual cluster whose connection count this connection is in."""
    _connecting = None
    _early = None
    outbox = None
    """Outbox: what goes to the client."""
    upstream = None
    """Outbox: what goes to the broker, once connected."""

    def __init__(self, gateway, node_id):
        self.gateway = gateway
        self.node_id = node_id
        self.pending = deque()
        self.decoder = FrameDecoder(gateway.max_frame_size)
        self.rules = gateway.rules
        self.topology = gateway.topology
        self.tenancy = gateway.tenancy
        self.sasl = None if self.tenancy is None else SaslTerminator(
            self.tenancy, gateway.admit_tenant,
            f"limit {gateway.max_connections_per_vcluster} per gateway",
            gateway.reactor.seconds)
        self._expiry = None
        self.metrics = None

    @property
    def claims(self):
        """The token's claims once authenticated (tenant mode), else None."""
        return None if self.sasl is None else self.sasl.claims

    @property
    def namespace(self):
        return None if self.sasl is None else self.sasl.namespace

    def connectionMade(self):
        tune_socket(self.transport)
        self.outbox = Outbox(self.transport)
        self.peer = self.transport.getPeer()
        self.gateway.connections.add(self)
        self._set_metrics_label(None if self.tenancy is not None else "-")
        if self.tenancy is not None:
            # Until authenticated: small frames only, and a deadline (slow-loris).
            self.decoder.max_frame_size = min(self.gateway.max_frame_size,
                                              self.gateway.unauthenticated_frame_size)
            self._auth_deadline = self.gateway.reactor.callLater(
                self.gateway.authentication_timeout, self.authentication_timed_out)
        if self.topology.sni is None and self.tenancy is None:
            self._connect()
        # else handshakeCompleted connects, once the SNI name says which broker;
        # in tenant mode the first request after authentication does (no
        # broker connection for a client that never authenticates).

    def _connect(self):
        self.transport.pauseProducing()
        self._connecting = self.gateway.connect_upstream(self)

    def handshakeCompleted(self):
        """TLS is up; with SNI routing the host name picks the broker."""
        if self.topology.sni is not None and self._connecting is None \
                and not self.closed:
            self.server_name = server_name(self.transport)
            if self.tenancy is None:
                self._connect()

    _held = None
    """Tenant mode: requests that came after authentication, while the broker
    connection they need was being opened, in order."""

    def _hold_until_connected(self, frame):
        if self._held is None:
            self._held = [frame]
            if self._connecting is None:
                self._connect()  # upstream_ready sends what is held
        else:
            self._held.append(frame)

    _auth_deadline = None

    def _set_metrics_label(self, vcluster):
        """Count this connection under *vcluster* (None: not authenticated yet)."""
        metrics = self.gateway.metrics
        if metrics is None:
            return
        if self.metrics is not None:
            metrics.connections.labels(self.metrics.vcluster).dec()
        label = vcluster or "unauthenticated"
        self.metrics = metrics.for_connection(label)
        metrics.connections.labels(label).inc()

    def authentication_timed_out(self):
        self._auth_deadline = None
        if self.claims is None:
            self.fail(f"not authenticated within "
                      f"{self.gateway.authentication_timeout:g}s")

    # called by the gateway once the broker connection is up or has failed

    def upstream_ready(self, broker):
        if self.closed:
            broker.transport.loseConnection()
            return
        self.broker = broker
        self.upstream = Outbox(broker.transport)
        self.transport.registerProducer(broker.transport, True)
        broker.transport.registerProducer(self.transport, True)
        self.transport.resumeProducing()
        early, self._early = self._early, None
        for data in early or ():
            self.dataReceived(data)
        held, self._held = self._held, None
        if held:
            self.outbox.hold()
            self.upstream.hold()
            try:
                for frame in held:
                    if self.closed:
                        return
                    self.request_received(frame)
            finally:
                self.flush()

    def upstream_failed(self, reason):
        self.log.warn("client {peer}: no broker reachable for node {node}: {why}",
                      peer=self.peer, node=self.node_id,
                      why=reason.getErrorMessage())
        self.transport.loseConnection()

    # client -> broker

    def dataReceived(self, data):
        if self.broker is None and self.tenancy is None:
            # Only with TLS: bytes decrypted in the read that finished the
            # handshake, before the pause took effect.  At most one read.
            self._early = (self._early or []) + [data]
            return
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            return self.fail(f"bad framing: {e}")
        self.outbox.hold()  # one send per socket for this read's frames
        if self.upstream is not None:
            self.upstream.hold()
        try:
            for frame in frames:
                if self.closed:
                    return
                if self._held is not None:  # behind a request waiting to connect
                    self._held.append(frame)
                    continue
                self.request_received(frame)
        finally:
            self.flush()

    def flush(self):
        """Send what this read's frames left in the outboxes."""
        self.outbox.release()
        if self.upstream is not None:
            self.upstream.release()

    def request_received(self, frame):
        if self.sasl is not None and self.sasl.raw_token_next:
            return self.raw_sasl_token(frame)
        try:
            api_key, api_version, correlation_id = peek_request(frame)
        except HeaderError as e:
            return self.fail(str(e))
        rule = self.rules.get(api_key)
        if rule is None or not rule.min_version <= api_version <= rule.max_version:
            # Fail closed: the client was never offered this API/version.
            return self.fail(f"API {api_key} v{api_version} is not offered")
        context = body_offset = None
        if self.tenancy is not None:
            if rule.local:
                return self.answer_sasl(frame, rule, api_key, api_version,
                                        correlation_id)
            if api_key == API_VERSIONS:
                return self.answer_api_versions(frame, rule, api_version,
                                                correlation_id)
            if self.claims is None:
                return self.fail(f"API {api_key} sent before authentication")
            elif self.upstream is None:  # the first request after authentication
                return self._hold_until_connected(frame)
            outcome = rewrite_request(self, rule, frame, api_key, api_version)
            if outcome.refused is not None:
                return self.fail(outcome.refused)
            if outcome.answer is not None:
                return self.answer_kept(correlation_id, api_key, api_version, rule,
                                        outcome.answer, len(frame) + 4)
            frame, context, body_offset = (outcome.frame, outcome.context,
                                           outcome.body_offset)
        acks = records = 0
        if api_key == PRODUCE:
            try:
                if context is not None and context.produced is not None:
                    acks, records = context.produced  # read by the rewrite
                else:
                    if body_offset is None:
                        body_offset = request_body_offset(frame)
                    acks, records = scan_produce(frame, body_offset, api_version)
            except (HeaderError, struct.error) as e:
                return self.fail(f"malformed produce request: {e}")
        if self.metrics is not None:
            self.metrics.request(rule.name, len(frame) + 4, records)
        if api_key != PRODUCE or acks != 0:  # acks=0: the broker never answers
            self.pending.append(Pending(correlation_id, api_key, api_version, rule,
                                        context, sent=self.gateway.reactor.seconds()))
        self.upstream.write_frame(frame)

    def answer_api_versions(self, frame, rule, api_version, correlation_id):
        """Tenant mode: ApiVersions is answered by the gateway, from the brokers'
        answer its refresh learnt, cut to the rule table."""
        body = local_api_versions(self, api_version)
        if body is None:
            return self.fail("the brokers' API versions are not known yet "
                             "(the gateway has not reached the cluster)")
        if self.metrics is not None:
            self.metrics.request(rule.name, len(frame) + 4, 0)
        self.answer(correlation_id, API_VERSIONS, api_version, rule, body)

    # SASL, answered locally

    def answer_sasl(self, frame, rule, api_key, api_version, correlation_id):
        """SaslHandshake and SaslAuthenticate, answered by the gateway
        (filters/sasl.py holds the state)."""
        try:
            header = parse_request_header(frame)
            if api_key == SASL_HANDSHAKE:
                request = decode_handshake(frame, header.body_offset, api_version)
                body, ok = self.sasl.handshake(api_version, request.mechanism)
                return self.answer(correlation_id, api_key, api_version, rule, body,
                                   close_after=not ok)
            request = decode_authenticate(frame, header.body_offset, api_version)
        except (CodecError, HeaderError) as e:
            return self.fail(f"malformed SASL request: {e}")
        first = self.sasl.claims is None
        body, failure = self.sasl.authenticate(api_version, request.auth_bytes)
        if failure is not None:
            self.log.info("client {peer}: {why}", peer=self.peer, why=failure)
            self.gateway.count_auth_failure()
            return self.answer(correlation_id, api_key, api_version, rule, body,
                               close_after=True)
        self.authenticated(first)
        self.answer(correlation_id, api_key, api_version, rule, body)

    def raw_sasl_token(self, frame):
        """SaslHandshake v0 is followed by the bare PLAIN token, answered bare."""
        first = self.sasl.claims is None
        try:
            self.sasl.accept(bytes(frame))
        except SaslFailure as e:
            self.log.info("client {peer}: {why}", peer=self.peer, why=e)
            self.gateway.count_auth_failure()
            return self.fail(str(e))
        self.authenticated(first)
        self.pending.append(Pending(-1, -1, 0, None, local=b""))
        self.flush_local()

    def authenticated(self, first):
        """A login (or re-login) succeeded: full frames, no login deadline, a
        timer for the token's expiry; the first counts under its tenant."""
        claims = self.sasl.claims
        if first:
            self.counted_as = self.sasl.admitted
            self._set_metrics_label(claims.vcluster)
        self.decoder.max_frame_size = self.gateway.max_frame_size
        for timer in (self._auth_deadline, self._expiry):
            if timer is not None and timer.active():
                timer.cancel()
        self._auth_deadline = None
        self._expiry = self.gateway.reactor.callLater(
            max(0, claims.expires_at - self.gateway.reactor.seconds()), self.expired)

    def expired(self):
        self._expiry = None
        self.fail("token expired; the client did not re-authenticate")

    def answer(self, correlation_id, api_key, api_version, rule, body,
               close_after=False):
        header = _INT32.pack(correlation_id)
        # ApiVersions answers keep header v0 at every version (KIP-511)
        if api_key != API_VERSIONS and is_flexible(api_key, api_version,
                                                   EntityType.response):
            header += b"\x00"
        self.pending.append(Pending(correlation_id, api_key, api_version, rule,
                                    local=header + body, close_after=close_after))
        self.flush_local()

    def answer_kept(self, correlation_id, api_key, api_version, rule, body, size):
        """Answer with a body the gateway kept from an earlier response."""
        if self.metrics is not None:
            self.metrics.request(rule.name, size, 0)
            self.metrics.response(rule.name, len(body) + 8, 0.0, None, 0)
        self.answer(correlation_id, api_key, api_version, rule, body)

    def flush_local(self):
        """Send gateway-made responses that are next in line."""
        while self.pending and self.pending[0].local is not None:
            item = self.pending.popleft()
            self.outbox.write_frame(item.local)
            if item.close_after:
                self.closed = True
                self.flush()
                self.transport.loseConnection()
                if self.broker is not None:
                    self.broker.transport.loseConnection()
                return

    # broker -> client

    def response_received(self, frame):
        pending = self.pending[0] if self.pending else None
        if pending is None or pending.local is not None or pending.waiting:
            # the head is answered by the gateway (maybe asynchronously): this
            # response is for the first request still waiting for the broker
            pending = next((p for p in self.pending
                            if p.local is None and not p.waiting), None)
            if pending is None:
                return self.fail("broker sent a response nobody asked for")
        try:
            result = rewrite_response(self, pending, frame)
        except _REWRITE_ERRORS as e:
            return self.fail(
                f"cannot rewrite response to API {pending.api_key} "
                f"v{pending.api_version}: {e!r}")
        if isinstance(result, defer.Deferred):  # e.g. CreateTopics by a rule
            pending.waiting = True
            result.addCallbacks(
                lambda r: self.response_ready(pending, r),
                lambda f: self.fail(f"cannot rewrite response to API "
                                    f"{pending.api_key}: {f.getErrorMessage()}"))
            return
        self.response_ready(pending, result)

    def response_ready(self, pending, result):
        """Send a rewritten response now if it is next in line, else in turn."""
        if self.closed:
            return
        frame, error, records = result
        pending.waiting = False
        if self.metrics is not None:
            self.metrics.response(pending.rule.name, len(frame) + 4,
                                  self.gateway.reactor.seconds() - pending.sent,
                                  error, records)
        if self.pending[0] is pending:
            self.pending.popleft()
            self.outbox.write_frame(frame)
        else:
            pending.local = bytes(frame)
        self.flush_local()

    def stream_response(self, decoder):
        """A Streamed for the large response *decoder* has begun, or None when it
        must be whole before it is forwarded (a rewrite may change it)."""
        head = self.pending[0] if self.pending else None
        if head is None or head.api_key != FETCH or head.local is not None \
                or head.waiting or decoder.buffered < 8:
            return None
        if goes_through_concentration(self, head):
            return None
        rule = head.rule
        if rule.scan_response is None or rule.passes_as_bytes is None or \
                not rule.passes_as_bytes(PASSES, head.api_version, head.context):
            return None
        chunks = decoder.take()
        first = chunks[0] if len(chunks[0]) >= 8 else b"".join(chunks)
        (correlation_id,) = _INT32.unpack_from(first, 4)
        if correlation_id != head.correlation_id:
            self.fail(f"broker answered correlation id {correlation_id}, expected "
                      f"{head.correlation_id}")
            return None
        (size,) = _INT32.unpack_from(first, 0)
        return Streamed(self, head, chunks, size + 4)

    def stream_finished(self, streamed):
        """The streamed response is whole: check it, send its tail, go on."""
        pending = streamed.pending
        try:
            scan = streamed.scan.finish()
        except _REWRITE_ERRORS as e:
            return self.fail(f"malformed Fetch response (partly forwarded): {e}")
        if pending.rule.observe is not None:
            pending.rule.observe(pending.context, scan)
        tail = streamed.tail()
        if not scan.tags_empty:
            at = scan.tags_at
            if at < streamed.sent:
                return self.fail("Fetch response tagged fields larger than "
                                 f"{HOLD_BACK} bytes; cannot rewrite them")
            tail = tail[:at - streamed.sent] + neutral_tags(streamed.total - at)
        self.outbox.write(tail)
        self.pending.popleft()
        if self.metrics is not None:
            self.metrics.streamed.inc()
            self.metrics.response(pending.rule.name, streamed.total,
                                  self.gateway.reactor.seconds() - pending.sent,
                                  scan.error, scan.records)
        self.flush_local()

    # lifecycle

    def fail(self, why):
        """Close this client's connection with one log line; others go on."""
        self.log.warn("client {peer}: closing: {why}", peer=self.peer, why=why)
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.flush()  # earlier frames of this read go first, as they came
        self.transport.abortConnection()
        if self.broker is not None:
            self.broker.transport.loseConnection()

    def connectionLost(self, reason):
        self.closed = True
        self.gateway.connections.discard(self)
        self.gateway.connection_closed(self)
        if self.counted_as is not None:
            self.gateway.tenant_closed(self.counted_as)
            self.counted_as = None
        if self.metrics is not None:
            self.gateway.metrics.connections.labels(self.metrics.vcluster).dec()
            self.metrics = None
        for timer in (self._expiry, self._auth_deadline):
            if timer is not None and timer.active():
                timer.cancel()
        if self.broker is not None:
            self.broker.transport.unregisterProducer()
            self.broker.transport.loseConnection()
        elif self._connecting is not None:
            self._connecting.cancel()


class BrokerConnection(protocol.Protocol):
    """The gateway's connection to one broker, on behalf of one client."""

    log = Logger()

    streamed = None
    """The large response being forwarded as it arrives (Streamed), if any."""

    def __init__(self, client):
        self.client = client
        self.decoder = FrameDecoder(client.gateway.max_response_size)

    def connectionMade(self):
        tune_socket(self.transport)
        self.client.upstream_ready(self)

    def dataReceived(self, data):
        outbox = self.client.outbox
        outbox.hold()  # the responses in this read: one send to the client
        try:
            self._received(data)
        finally:
            outbox.release()

    def _received(self, data):
        if self.streamed is not None:
            data = self.streamed.feed(data)
            if data is None:
                return
            self.streamed = None
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            return self.client.fail(f"broker framing: {e}")
        for frame in frames:
            if self.client.closed:
                return
            self.client.response_received(frame)
        size = self.decoder.partial_size
        if size is not None and size >= STREAM_FROM and not self.client.closed:
            self.streamed = self.client.stream_response(self.decoder)

    def connectionLost(self, reason):
        client = self.client
        if not client.closed:
            if not reason.check(ConnectionDone):
                self.log.info("client {peer}: broker connection lost: {why}",
                              peer=client.peer, why=reason.getErrorMessage())
            client.transport.unregisterProducer()
            client.closed = True
            client.transport.loseConnection()
