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

import ctypes
import ctypes.util
import struct
from collections import deque
from dataclasses import dataclass

from kio.static.constants import EntityType
from twisted.internet import defer, protocol, tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from zope.interface import implementer

from ..auth import sasl
from ..protocol.codec import CodecError, decode_request, decode_response, encode_body
from ..protocol.errors import first_error
from ..protocol.fastpath import FetchStream, Scan, neutral_tags
from ..protocol.framing import FrameDecoder, FrameError, frame_parts, framed
from ..protocol.headers import (
    API_VERSIONS, HeaderError, is_flexible, parse_request_header, peek_request,
    request_body_offset, response_header_length)
from ..protocol.produce import scan_produce
from ..tenancy import concentration
from ..tenancy.rules import local_api_versions
from ..tenancy.walker import Foreign, RequestContext
from .security import server_name

PRODUCE = 0
FETCH = 1
METADATA = 3
UNSUPPORTED_VERSION = 35
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_REWRITE_ERRORS = (CodecError, HeaderError, struct.error, Foreign, ValueError,
                   TypeError)


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
        self.claims = None
        self.namespace = None
        self.handshake_version = None
        self.raw_sasl = False
        self._expiry = None
        self.metrics = None

    def connectionMade(self):
        _tune(self.transport)
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
        if self.raw_sasl:
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
            else:
                if self.gateway.reactor.seconds() >= self.claims.expires_at:
                    return self.fail("token expired; the client did not "
                                     "re-authenticate")
                context = RequestContext(self.namespace, self.topology.topic_ids,
                                         rule.write)
                rewritten = None
                if rule.rewrite_frame is not None:
                    try:
                        body_offset = request_body_offset(frame)
                        rewritten = rule.rewrite_frame(self, context, frame,
                                                       body_offset, api_version)
                    except _REWRITE_ERRORS as e:
                        return self.fail(f"cannot rewrite API {api_key} "
                                         f"v{api_version}: {e}")
                if context.answer is not None:  # e.g. a fetch session not its own
                    return self.answer_kept(correlation_id, api_key, api_version,
                                            rule, context.answer, len(frame) + 4)
                if rewritten is not None:
                    frame = rewritten
                elif rule.rewrite_request is not None:
                    body_offset = None
                    limit = self.gateway.max_decoded_request
                    if api_key == METADATA:
                        limit //= 4  # names only: ~10,000 topics in 256 KiB
                    if len(frame) > limit:
                        return self.fail(
                            f"API {api_key} v{api_version} request of {len(frame)} "
                            f"bytes: over the {limit} bytes the gateway decodes "
                            "(--max-decoded-request)")
                    try:
                        header, request = decode_request(frame)
                        request = rule.rewrite_request(self, context, request)
                        if context.answer is not None:
                            return self.answer_kept(correlation_id, api_key,
                                                    api_version, rule, context.answer,
                                                    len(frame) + 4)
                        frame = bytes(frame[:header.body_offset]) + encode_body(request)
                    except _REWRITE_ERRORS as e:
                        return self.fail(f"cannot rewrite API {api_key} "
                                         f"v{api_version}: {e}")
                if context.concentrated:
                    try:
                        frame = self.concentrate(context, frame)
                        body_offset = None
                    except _REWRITE_ERRORS as e:  # Refused, BatchError: ValueErrors
                        return self.fail(f"concentrated topics, API {api_key} "
                                         f"v{api_version}: {e}")
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

    def concentrate(self, context, frame):
        """The request with concentrated topics swapped for their physical one."""
        header, request = decode_request(frame)
        request = concentration.rewrite_request(self, context, header.api_key, request)
        return bytes(frame[:header.body_offset]) + encode_body(request)

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
        try:
            header = parse_request_header(frame)
            if api_key == sasl.SASL_HANDSHAKE:
                request = sasl.decode_handshake(frame, header.body_offset, api_version)
                body, ok = sasl.handshake_response(api_version, request.mechanism)
                self.handshake_version = api_version if ok else None
                self.answer(correlation_id, api_key, api_version, rule, body,
                            close_after=not ok)
                self.raw_sasl = ok and api_version == 0
                return
            request = sasl.decode_authenticate(frame, header.body_offset, api_version)
        except (CodecError, HeaderError) as e:
            return self.fail(f"malformed SASL request: {e}")
        if self.handshake_version is None:
            body = sasl.authenticate_response(api_version, "SaslHandshake first")
            return self.answer(correlation_id, api_key, api_version, rule, body,
                               close_after=True)
        self.handshake_version = None
        try:
            lifetime = self.authenticated(request.auth_bytes)
        except sasl.SaslFailure as e:
            self.log.info("client {peer}: {why}", peer=self.peer, why=e)
            self.gateway.count_auth_failure()
            body = sasl.authenticate_response(api_version, str(e))
            return self.answer(correlation_id, api_key, api_version, rule, body,
                               close_after=True)
        body = sasl.authenticate_response(api_version, None, lifetime * 1000)
        self.answer(correlation_id, api_key, api_version, rule, body)

    def raw_sasl_token(self, frame):
        """SaslHandshake v0 is followed by the bare PLAIN token, answered bare."""
        self.raw_sasl = False
        self.handshake_version = None
        try:
            self.authenticated(frame)
        except sasl.SaslFailure as e:
            self.log.info("client {peer}: {why}", peer=self.peer, why=e)
            self.gateway.count_auth_failure()
            return self.fail(str(e))
        self.pending.append(Pending(-1, -1, 0, None, local=b""))
        self.flush_local()

    def authenticated(self, auth_bytes):
        """Check the token; set this connection's tenant; return seconds left."""
        claims = sasl.authenticate(self.tenancy.authority, auth_bytes)
        if self.claims is not None and (claims.vcluster, claims.username) != (
                self.claims.vcluster, self.claims.username):
            raise sasl.SaslFailure("re-authentication must keep the same account")
        if self.claims is None:
            if not self.gateway.admit_tenant(claims.vcluster):
                raise sasl.SaslFailure(
                    f"too many connections for this virtual cluster (limit "
                    f"{self.gateway.max_connections_per_vcluster} per gateway)")
            self.counted_as = claims.vcluster
            self._set_metrics_label(claims.vcluster)
        self.claims = claims
        self.namespace = self.tenancy.namespace(claims.vcluster)
        self.decoder.max_frame_size = self.gateway.max_frame_size
        if self._auth_deadline is not None and self._auth_deadline.active():
            self._auth_deadline.cancel()
        self._auth_deadline = None
        now = self.gateway.reactor.seconds()
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = self.gateway.reactor.callLater(
            max(0, claims.expires_at - now), self.expired)
        return max(0, claims.expires_at - now)

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
            result = self.rewrite_response(pending, frame)
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
        if self.concentrated(head):
            return None
        rule = head.rule
        if rule.scan_response is None or rule.passes_as_bytes is None or \
                not rule.passes_as_bytes(_PASSES, head.api_version, head.context):
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

    def rewrite_response(self, pending, frame):
        """(frame for the client, its first error code or None if not read,
        records in it)."""
        (correlation_id,) = _INT32.unpack_from(frame, 0)
        if correlation_id != pending.correlation_id:
            raise CodecError(
                f"correlation id {correlation_id}, expected {pending.correlation_id}")
        rule = pending.rule
        version = pending.api_version
        if self.concentrated(pending):
            return self.deconcentrate(pending, frame)
        scan = offset = None
        if rule.scan_response is not None:
            offset = response_header_length(frame, pending.api_key, version)
            scan = rule.scan_response(frame, offset, version)
            if rule.observe is not None:
                rule.observe(pending.context, scan)
        if not rule.needs_response_rewrite(version) or (
                rule.passes_as_bytes is not None
                and rule.passes_as_bytes(scan, version, pending.context)):
            return (frame, None, 0) if scan is None else (frame, scan.error, scan.records)
        if rule.rename_response is not None and pending.context is not None:
            renamed = rule.rename_response(frame, offset, version, scan, pending.context)
            if renamed is not None:
                return renamed, scan.error, scan.records
        if api_versions_downgraded(pending.api_key, frame):
            version = 0
        header, response = decode_response(frame, pending.api_key, version)
        response = rule.rewrite_response(self, pending.context, response)
        records = 0 if scan is None else scan.records
        if isinstance(response, defer.Deferred):
            return response.addCallback(
                lambda r: (header + encode_body(r), first_error(r), records))
        error = first_error(response) if self.metrics is not None else None
        return header + self._encoded(pending.context, response), error, records

    @staticmethod
    def _encoded(context, response):
        """The rewritten response's body, offered for reuse when the rule asked."""
        body = encode_body(response)
        if context is not None and context.on_answer is not None:
            context.on_answer(body)
        return body

    def concentrated(self, pending):
        """Whether the response to *pending* goes through the concentration
        layer (it named concentrated topics, or is a Fetch of a session that
        reads some): such a response is never forwarded as bytes."""
        context = pending.context
        return context is not None and (
            context.concentration is not None
            or (pending.api_key == FETCH and bool(self.concentrated_fetches)))

    def deconcentrate(self, pending, frame):
        """A response to a request that named concentrated topics: the layer's
        reverse, then the tenant's rewrite (never forwarded as bytes)."""
        header, response = decode_response(frame, pending.api_key, pending.api_version)
        response = concentration.rewrite_response(self, pending.context, pending.api_key,
                                                  response)
        if pending.rule.needs_response_rewrite(pending.api_version):
            response = pending.rule.rewrite_response(self, pending.context, response)
        return header + self._encoded(pending.context, response), first_error(response), 0

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


READ_SIZE = 1 << 20
"""Bytes asked for per socket read (Twisted's default is 64 KiB)."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def tune_allocator():
    """Keep read buffers on glibc's heap; True if it applied (glibc only).

    Each read allocates a READ_SIZE buffer and shrinks it to what arrived.  At
    that size glibc maps fresh pages for it and unmaps them after: an mmap,
    page faults, an mremap and a munmap per read, about 20 us, most of the
    gateway's system time on the Produce path.  Raising the mmap threshold
    above READ_SIZE, and the trim threshold with it so freed heap is not given
    back after every read, makes a read cost what a 64 KiB one does.  The price:
    up to 32 MiB of freed heap kept for reuse."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 4 * READ_SIZE)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, 32 * READ_SIZE))


STREAM_FROM = 256 * 1024
"""Responses this big that pass as bytes are forwarded as they arrive
(cut-through) rather than once whole: store-and-forward of multi-MiB Fetch
responses doubled their transfer time and halved consumer throughput."""

HOLD_BACK = 64 * 1024
"""The last bytes of a streamed response, kept until it is whole: its top-level
tagged fields (KIP-951 node_endpoints, broker addresses) are in them."""

_PASSES = Scan(0, 0, True)
"""What a response's scan says when nothing in it needs rewriting."""


class Streamed:
    """A large Fetch response forwarded to the client while it arrives.

    Its bytes go out as received, except the last HOLD_BACK, and are scanned as
    they pass (fastpath.FetchStream: records and error for the metrics;
    malformed framing closes the connection), so the response is never copied
    or held whole.  If it carries node_endpoints, they are replaced in the
    held-back tail by an unused tag of the same length (fastpath.neutral_tags),
    so the client refreshes metadata instead of learning broker addresses.
    """

    def __init__(self, client, pending, chunks, total):
        self.client = client
        self.pending = pending
        self.total = total  # prefix included
        self.limit = total - HOLD_BACK
        context = pending.context
        self.scan = FetchStream(pending.api_version, None if context is None
                                else context.check_streamed_id)
        self.chunks = []    # received, not wholly written yet
        self.received = 0
        self.sent = 0
        self._offset = 0    # bytes of chunks[0] already written
        for chunk in chunks:
            if not self._add(chunk):
                return
        self._forward()

    def _add(self, chunk):
        try:
            self.scan.feed(chunk)
        except _REWRITE_ERRORS as e:
            self.client.fail(f"malformed Fetch response (partly forwarded): {e}")
            return False
        self.received += len(chunk)
        self.chunks.append(chunk)
        return True

    def feed(self, data):
        """Take *data*: the bytes after this response once it is whole (maybe
        b""), None while it is not."""
        if self.client.closed:
            return None
        room = self.total - self.received
        rest = b""
        if len(data) > room:
            data, rest = data[:room], data[room:]
        if not self._add(data):
            return None
        self._forward()
        if self.received < self.total:
            return None
        self.client.stream_finished(self)
        return None if self.client.closed else rest

    def tail(self):
        """The bytes received and not sent yet."""
        if not self.chunks:
            return b""
        return b"".join([memoryview(self.chunks[0])[self._offset:], *self.chunks[1:]])

    def _forward(self):
        outbox = self.client.outbox
        while self.chunks and self.sent < self.limit:
            chunk = self.chunks[0]
            end = min(len(chunk), self._offset + self.limit - self.sent)
            whole = self._offset == 0 and end == len(chunk)
            outbox.write(chunk if whole else memoryview(chunk)[self._offset:end])
            self.sent += end - self._offset
            if end == len(chunk):
                self.chunks.pop(0)
                self._offset = 0
            else:
                self._offset = end


def write_now(transport, data):
    """Write *data* (bytes or a memoryview of bytes); on a plain TCP connection
    with nothing queued, try the socket at once.

    Twisted's ``write`` only queues: the send waits for the next reactor turn,
    and registering and unregistering the socket for writability costs two
    epoll_ctl calls per write.  A request or response usually fits the socket
    buffer whole, so sending it here saves that turn and those calls; what the
    socket does not take (or any error) is left to Twisted's queue, which keeps
    the order and reports the error.  TLS and wrapped transports always queue.
    """
    if _sendable(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(bytes(data))  # a memoryview's bytes are copied only here


def write_all(transport, parts):
    """``write_now`` for several pieces (bytes or memoryviews), in one
    ``sendmsg`` per IOV_BATCH of them; the rest, from the first piece the
    socket did not take whole, is left to Twisted's queue in order."""
    if _sendable(transport):
        while parts:
            batch = parts[:IOV_BATCH]
            try:
                sent = transport.socket.sendmsg(batch)
            except OSError:
                sent = 0
            taken = 0
            for part in batch:
                if sent < len(part):
                    break
                sent -= len(part)
                taken += 1
            parts = parts[taken:]
            if taken < len(batch):
                if sent:
                    parts[0] = memoryview(parts[0])[sent:]
                break
    if parts:
        transport.writeSequence([bytes(part) for part in parts])


IOV_BATCH = 256
"""Pieces per sendmsg, well under the kernel's IOV_MAX (1024)."""


def _sendable(transport):
    """A plain TCP socket, open, with nothing queued in Twisted ahead of us."""
    return type(transport) in _PLAIN_TCP and not transport.TLS \
        and transport.connected and not transport.disconnecting \
        and not transport._writeDisconnected and not transport._tempDataLen \
        and transport.offset == len(transport.dataBuffer)


class Outbox:
    """Everything the gateway sends on one connection, gathered while one read
    is handled and then sent in one call.

    A read often carries several frames: a producer's pipelined requests, or a
    burst of responses when a partition's high watermark moves.  Sent one by
    one, each cost a send and a wake-up of the peer (a third of a producer
    run's sends).  Between ``hold`` and ``release`` writes are kept in order;
    ``release`` sends them with one ``sendmsg``.  Frames are kept as their
    prefix and payload, so a rewritten or sliced frame is not joined either.
    Every write to the connection goes through its Outbox, which keeps the
    order; whoever closes the connection releases it first.
    """

    __slots__ = ("transport", "parts", "held")

    def __init__(self, transport):
        self.transport = transport
        self.parts = []
        self.held = False

    def write(self, data):
        if self.held:
            self.parts.append(data)
        else:
            write_now(self.transport, data)

    def write_frame(self, payload):
        """*payload* with its size prefix."""
        if self.held:
            self.parts.extend(frame_parts(payload))
        else:
            write_now(self.transport, framed(payload))

    def hold(self):
        self.held = True

    def release(self):
        """Stop holding; send what was held."""
        self.held = False
        parts = self.parts
        if parts:
            self.parts = []
            if len(parts) == 1:
                write_now(self.transport, parts[0])
            else:
                write_all(self.transport, parts)


_PLAIN_TCP = (tcp.Server, tcp.Client)


def _tune(transport):
    """TCP_NODELAY, as Kafka's clients and brokers set it: with Nagle's algorithm
    the last segment of every request and response waited for the peer's
    delayed ACK.  And reads of up to 1 MiB per call instead of Twisted's 64 KiB:
    a Fetch response of several MiB then costs a few reads, not dozens."""
    if hasattr(transport, "bufferSize"):
        transport.bufferSize = READ_SIZE
    for handle in (transport, getattr(transport, "transport", None)):  # TLS wraps TCP
        if hasattr(handle, "setTcpNoDelay"):
            handle.setTcpNoDelay(True)
            break


def api_versions_downgraded(api_key, frame):
    """An ApiVersions answer to a too-new request comes back at v0 (KIP-511)."""
    if api_key != API_VERSIONS or len(frame) < 6:
        return False
    return _INT16.unpack_from(frame, 4)[0] == UNSUPPORTED_VERSION


class BrokerConnection(protocol.Protocol):
    """The gateway's connection to one broker, on behalf of one client."""

    log = Logger()

    streamed = None
    """The large response being forwarded as it arrives (Streamed), if any."""

    def __init__(self, client):
        self.client = client
        self.decoder = FrameDecoder(client.gateway.max_response_size)

    def connectionMade(self):
        _tune(self.transport)
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
