# -*- test-case-name: tests.test_splice -*-
"""The splice: one client connection, one broker connection, frames in between.

Shaped like ``twisted.protocols.portforward``: the client is paused until the
broker connection is up, then each transport is registered as the other's
streaming producer, so a slow reader on either side pauses the other side's
reads instead of making the gateway buffer without bound.

Every request's header is read and looked up in the rule table; in tenant
mode the filters run on it: SASL termination (filters/sasl.py), the tenant
rewrite (filters/tenant.py) and, on the way back, the response rewrite
(filters/responses.py).  A tenant's Produce with nothing left to decide
takes the produce lane instead (filters/lane.py), and so does its answer;
a read that starts with such requests or answers, while nothing waits,
skips the framing and outboxes too (``_lane_read``, ``lane_answer``), its
bookkeeping compiled when the lane takes it whole (``lane_books``); after
such a read the next ones go to the compiled reads installed as both
connections' ``dataReceived`` (``Books.read``, ``answers_read``), armed
while nothing they were decided from changes (``_arm``, ``_arm_answers``).
A read of one whole Fetch, while nothing waits, skips the framing and
outboxes as well (``_one_read``).
The sequencer (sequencer.py) sends responses back in request order,
whether the broker or the gateway made them.
"""

import socket
import struct
from functools import partial
from types import MethodType

from kio.schema.errors import ErrorCode
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from zope.interface import implementer

from ..filters.lane import (LaneArgs, answer_in_lane, in_lane, lane_context,
                           read_answers_in_lane, read_in_lane)
from ..filters.responses import rewrite_response
from ..filters.tenant import REWRITE_ERRORS, ClientIds, rewrite_request
from ..protocol.framing import FrameDecoder, FrameError
from ..protocol.headers import (
    API_VERSIONS, HeaderError, peek_request, response_header)
from ..protocol.produce import scan_produce
from ..tenancy.rules.addresses import local_api_versions
from ..tenancy.rules.records import session_closers
from .buffers import Queue
from .login import Login
from .outbox import Outbox, send_parts, tune_socket
from .security import server_name
from .sequencer import MAX_IN_FLIGHT, Pending, Sequencer
from .valve import Unsent, Valve

try:
    from ..metrics import LATENCY_BUCKETS
    from ..protocol._walk import produce_answer_lane_many, produce_lane_many
    from ..tuning import compiled_sendable
    from ._lane import Books
except ImportError:  # pragma: no cover - tests/test_lane.py fails, saying so
    Books = None

PRODUCE, FETCH = 0, 1

FRAMES_PER_TURN = 32
"""Requests of one connection handled in one turn of the event loop.  A read
holds up to 1 MiB: thousands of small pipelined requests, which in one go
would hold every other connection for seconds.  Past this many (or once the
client is throttled) the rest of the read waits for a later turn, its reads
held meanwhile; a client that waits for its answers never comes near it."""

REQUESTS_BEFORE_LOGIN = 8
"""Requests a connection may send before it is authenticated: clients send
ApiVersions (twice if they step down a version), SaslHandshake and
SaslAuthenticate.  One more closes it: nothing else is answered before a
login, and an endless stream of them is work for nobody's token."""

RETIRE_GRACE = 5.0
"""Seconds a retiring connection (``Splice.stand_in``) has to fall idle
before it is closed with answers owed (its client sends them again)."""


def client_key(peer, frame):
    """The client's host and the client id of its request header: the same on
    every connection of one client (its broker mapping, state/membership.py)."""
    host = str(getattr(peer, "host", ""))
    if len(frame) < 10:
        return host
    length = int.from_bytes(frame[8:10], "big", signed=True)
    if length <= 0 or len(frame) < 10 + length:
        return host
    return f"{host}/{bytes(frame[10:10 + length]).decode('utf-8', 'replace')}"


COMPILED_BOOKS = True
"""Whether the lane's bookkeeping is the compiled one (_lane.c) where it is
built; the tests turn it off to run the Python reference."""


def lane_books(sequencer):
    """The compiled bookkeeping of the produce lane (_lane.c) for a
    connection of *sequencer*, or None: the Python of ``_lane_read``,
    ``_send`` and ``lane_answer`` does it (where it is not built, and for
    reads the lane takes only part of, or a throttled tenant's)."""
    check = None if Books is None or not COMPILED_BOOKS else compiled_sendable()
    if check is None:
        return None
    return Books(sequencer.pending, Pending(0, PRODUCE, 0, None), *check, send_parts,
                 socket.socket, produce_lane_many, produce_answer_lane_many,
                 LATENCY_BUCKETS)


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
        self.sequencer = Sequencer(self._write_response, self._close_after_answer)
        self.decoder = FrameDecoder(gateway.max_frame_size)
        self.rules = gateway.offered
        self.topology = gateway.topology
        self.tenancy = gateway.tenancy
        self.services = gateway.services()
        """What the rules may use (tenancy/services.py): never this connection."""
        self.login = None if self.tenancy is None else Login(self, gateway)
        self.sasl = None if self.login is None else self.login.sasl
        self.metrics = None
        self.lane_args = LaneArgs()

    @property
    def claims(self):
        """The token's claims once authenticated (tenant mode), else None."""
        return None if self.sasl is None else self.sasl.claims

    @property
    def namespace(self):
        return None if self.sasl is None else self.sasl.namespace

    valve = None
    """Valve: the client's reads, held for backpressure, connecting or a throttle."""
    rates = None
    """The virtual cluster's TenantRates on this gateway (filters/throttle.py)."""
    loop_debt = None
    """The virtual cluster's Share of loop seconds (LoopShare), once logged in."""
    _loop_queued = _loop_turn = False
    buffers = None
    """The virtual cluster's request TenantBuffer in this process
    (buffers.py), once logged in: the frame this connection is receiving is
    ``reserved`` there, or ``waiting`` to be; what it wrote to the broker and
    is not sent is ``queued``."""
    answer_buffer = None
    """The virtual cluster's answer TenantBuffer (its broker connection's)."""
    reserved = waiting = queued = parked = 0

    def connectionMade(self):
        tune_socket(self.transport)
        self.outbox = Outbox(self.transport)
        self.valve = Valve(self.transport)
        self.unsent = Unsent(self.valve)
        self.transport.registerProducer(self.unsent, True)
        self.peer = self.transport.getPeer()
        self.services.peer_host = getattr(self.peer, "host", None)
        self.services.client_key = str(getattr(self.peer, "host", ""))
        self.gateway.connections.add(self)
        self._set_metrics_label(None if self.tenancy is not None else "-")
        if self.tenancy is not None:
            # Until authenticated: small frames only, and a deadline (slow-loris).
            self.decoder.max_frame_size = min(self.gateway.max_frame_size,
                                              self.gateway.unauthenticated_frame_size)
            self.login.start()
        if self.topology.sni is None and self.tenancy is None:
            self._connect()
        # else handshakeCompleted connects, once the SNI name says which broker;
        # in tenant mode the first request after authentication does (no
        # broker connection for a client that never authenticates).

    def _connect(self):
        self.valve.hold("connecting")
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

    def logged_in(self, claims, admitted):
        """A login (or re-login) succeeded: full frames; the first login
        (*admitted*: its virtual cluster) counts this connection under it."""
        if admitted is not None:
            self.counted_as = admitted
            self._set_metrics_label(claims.vcluster)
            if self.gateway.rate_shares is not None:
                self.rates = self.gateway.rate_shares.tenant(claims.vcluster)
            if self.gateway.loop_share is not None:
                self.loop_debt = self.gateway.loop_share.bucket(claims.vcluster)
            if self.gateway.buffers is not None:
                self.buffers, self.answer_buffer = self.gateway.buffers.tenant(
                    claims.vcluster)
        self.decoder.max_frame_size = self.gateway.max_frame_size

    # called by the gateway once the broker connection is up or has failed

    def upstream_ready(self, broker):
        if self.closed:
            broker.transport.loseConnection()
            return
        self.broker = broker
        self.upstream = Outbox(broker.transport)
        self.unsent.connected(broker.valve)
        if self.buffers is not None:
            self.valve.queue = Queue(self.buffers, self, broker.transport)
            broker.budget = self.answer_buffer
            self.sequencer.parked = partial(self.answer_buffer.parked, broker)
            self.unsent.queue = Queue(self.answer_buffer, broker, self.transport)
        broker.transport.registerProducer(self.valve, True)
        self.valve.release("connecting")
        if self.claims is not None:  # tenant mode: the broker is known now
            self.services.fetch_session_pool = self.gateway.session_pool(
                self.claims.vcluster, self.node_id)
            self.lane_open = True
            self.books = lane_books(self.sequencer)
            if self.books is not None:  # reads go to the compiled read first
                self.books.install(self, MethodType(type(self).dataReceived, self),
                                   self.gateway.reactor.seconds, self.valve.reasons,
                                   FRAMES_PER_TURN, MAX_IN_FLIGHT)
                self.dataReceived = self.books.read
                self.books.install_answers(
                    broker, MethodType(type(broker).dataReceived, broker), self.unsent)
                broker.dataReceived = self.books.answers_read
        early, self._early = self._early, None
        for data in early or ():
            self.dataReceived(data)
        held, self._held = self._held, None
        if held:
            self._replay(held)

    def _replay(self, frames):
        """Requests that waited (for the broker connection, for a rule that
        asked first, or for the state before a login), in order; any that must
        wait again are held again."""
        self._handle(frames)

    def upstream_failed(self, reason):
        self.log.warn("client {peer}: no broker reachable for node {node}: {why}",
                      peer=self.peer, node=self.node_id,
                      why=reason.getErrorMessage())
        self.transport.loseConnection()

    # client -> broker

    def dataReceived(self, data):
        if self.lane_open:
            key = data[4:6]
            if key == b"\0\0" and self._lane_read(data) or \
                    key == b"\0\1" and self._one_read(data):
                return
        self._read(data)

    def _read(self, data, taken=0):
        """The general path: *data* cut into frames, handled in order (at most
        FRAMES_PER_TURN in this turn of the event loop, *taken* of them
        already by the lane)."""
        if self.closed:
            return
        if self.broker is None and self.tenancy is None:
            # Only with TLS: bytes decrypted in the read that finished the
            # handshake, before the pause took effect.  At most one read.
            self._early = (self._early or []) + [data]
            return
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            return self.fail(f"bad framing: {e}")
        if self.buffers is not None and self.decoder.partial_size != (
                self.reserved or self.waiting or None):
            self.buffers.receiving(self, self.decoder.partial_size)
        self._handle(frames, FRAMES_PER_TURN - taken)

    lane_open = False
    """Tenant mode, logged in and the broker connection up: a read may take
    the produce lane whole (``_lane_read``)."""
    books = None
    """Its compiled bookkeeping (``lane_books``), once the lane is open."""

    def _lane_read(self, data):
        """A read that starts with a whole Produce for the produce lane, on a
        connection where nothing waits (no turn, hold, throttle, loop debt,
        answer budget or partial frame): its requests from the start, while
        the lane takes them, checked and renamed in one compiled call
        (``read_in_lane``) and sent as ``_handle`` would, without its
        framing, turns and outboxes, which cost as much as the lane's own
        walk.  The rest (a request of another kind, part of one, past
        FRAMES_PER_TURN or MAX_IN_FLIGHT, or after a request that made the
        connection wait) goes the general way, in the same send to the
        broker.  False: nothing was done (the general path takes the read)."""
        if not self._nothing_waits():
            return False
        pending = len(self.sequencer.pending)
        rule = self.rules.get(PRODUCE)
        args = self.lane_args.get(self.services, self.sasl, self.client_ids, rule)
        if args is None:
            return False
        most = min(FRAMES_PER_TURN, MAX_IN_FLIGHT - pending)
        namespace = self.sasl.namespace
        if self.books is not None and (self.rates is None or not self.rates.limited):
            walked = self.books.forward(
                data, args, self.decoder.max_frame_size, most, rule, namespace,
                self.metrics, self.upstream, self.gateway.reactor.seconds())
            if walked is None:  # the read taken whole and sent, as nearly always
                self._backpressure()
                self._arm(args, rule, namespace)
                return True
            taken, end = walked
        else:
            taken, end = read_in_lane(args, data, self.decoder.max_frame_size, most)
        if not taken:
            return False
        if end == len(data) and len(taken) == 1:  # the read one request, as often
            pieces, correlation_id, version, acks, records, counted, _ = taken[0]
            self._send(Pending(correlation_id, PRODUCE, version, rule, lane=namespace),
                       pieces, acks, records, counted)
        else:
            self._lane_several(data, taken, end, rule, namespace)
        self._backpressure()
        return True

    def _nothing_waits(self):
        """Whether a read may skip ``_handle``'s turns and outboxes: no turn,
        hold, throttle, loop debt, answer budget, partial frame, request owed
        room (MAX_IN_FLIGHT) or retirement on this connection."""
        share = self.loop_debt
        return not (self._held is not None or self.valve.reasons or self.closed
                    or self.reserved or self.waiting or self.parked or self.retiring
                    or len(self.sequencer.pending) >= MAX_IN_FLIGHT
                    or share is not None and (share.tokens < 0 or share.waiting)
                    or self.gateway.draining or self.decoder.held)

    def _one_read(self, data):
        """A read that is one whole request (a consumer's Fetch, nearly
        always), on a connection where nothing waits: handled as ``_handle``
        handles a read of one frame, without its framing, turns and outboxes
        (~20 µs of a live Fetch request's ~160, measured in session 48).
        False: nothing was done (the general path takes the read)."""
        frame = self.decoder.whole(data)
        if frame is None or not self._nothing_waits():
            return False
        self.request_received(frame)
        self._backpressure()
        if self.buffers is not None and (self._held or self.parked):
            self.buffers.parked(self, sum(map(len, self._held or ())))
        return True

    def _arm(self, args, rule, namespace):
        """After a read the lane took whole: the next reads go to the
        compiled read (``Books.read``, installed as this connection's
        ``dataReceived``) with the same args, while what they were decided
        from stays the same (``LaneArgs.watched``, the rule, this
        connection's and the gateway's state that changes without a read,
        the loop share, the token's expiry).  The rest of ``_lane_read``'s
        gate changes only on the general path, which disarms it."""
        attrs, items, calls = self.lane_args.watched(self.services, self.sasl,
                                                     self.client_ids)
        share = self.loop_debt
        attrs += ((self, "closed", False), (self, "retiring", False),
                  (self.gateway, "draining", False), (self, "rates", self.rates),
                  (self, "loop_debt", share))
        if self.rates is not None:
            attrs += ((self.rates, "limited", False),)
        self.books.arm(args, self.decoder.max_frame_size, rule, namespace, self.metrics,
                       self.upstream, share, None if share is None else share.waiting,
                       self.sasl.claims.expires_at, attrs,
                       items + ((self.rules, PRODUCE, rule),), calls)

    def _lane_several(self, data, taken, end, rule, namespace):
        """The requests *taken* from the start of the read *data*, sent in
        one send with what the general path makes of the rest of the read
        (from *end*, or from the first request after one that made the
        connection wait: a throttle)."""
        sent = start = 0
        self.upstream.hold()
        try:
            for pieces, correlation_id, version, acks, records, counted, size in taken:
                if sent and (self.valve.reasons or self.closed):
                    break
                self._send(Pending(correlation_id, PRODUCE, version, rule,
                                   lane=namespace), pieces, acks, records, counted)
                sent, start = sent + 1, start + size
            if start < len(data):
                self._read(memoryview(data)[start:], sent)
        finally:
            self.upstream.release()

    def _lane_take(self, frame):
        """Send *frame*, a Produce the general path cut, if the lane takes it
        (``in_lane``), owing its answer; False: not taken."""
        rule = self.rules.get(PRODUCE)
        args = self.lane_args.get(self.services, self.sasl, self.client_ids, rule)
        taken = None if args is None else in_lane(args, frame)
        if taken is None:
            return False
        pieces, correlation_id, version, acks, records, counted = taken
        request = Pending(correlation_id, PRODUCE, version, rule,
                          lane=self.sasl.namespace)
        self._send(request, pieces, acks, records, counted)
        return True

    def _handle(self, frames, turn=FRAMES_PER_TURN):
        """Requests in order, with one send per socket for all of them.  They
        wait (in ``_held``) behind a request that waits (to connect, for a
        rule, for the state), behind a throttle, and past *turn* of them."""
        share = self.loop_debt
        if share is not None and (share.tokens < 0 or share.waiting) \
                and frames and not self._loop_queued:  # past the share: in turn
            if self._loop_turn:
                self._loop_turn = False
            elif share.queue(self):
                self._loop_queued = True
                self.valve.hold("loop share")
        self.outbox.hold()
        if self.upstream is not None:
            self.upstream.hold()
        try:
            for n, frame in enumerate(frames):
                if self.closed:
                    return
                if self._held is None and (n >= turn or self.valve.reasons or
                                           len(self.sequencer.pending) >= MAX_IN_FLIGHT):
                    self._take_turns()
                if self._held is not None:  # this one and the rest, in one go
                    self._held.extend(frames[n:] if n else frames)
                    return
                self.request_received(frame)
        finally:
            self.flush()
            if self.buffers is not None and (self._held or self.parked):
                self.buffers.parked(self, sum(map(len, self._held or ())))

    _turn = None

    def _take_turns(self):
        """The requests from here on wait, the client's reads held: for a
        later turn of the event loop, or, while the reads are held anyway (a
        throttle, answers unsent, the broker's socket full, MAX_IN_FLIGHT
        requests owed an answer), until they are not."""
        self._held = []
        if len(self.sequencer.pending) >= MAX_IN_FLIGHT and self.sequencer.room is None:
            self.valve.hold("in flight")
            self.sequencer.room = lambda: self.valve.release("in flight")
        if self.valve.reasons:
            self.valve.when_open(self._after_hold)
        else:
            self.valve.hold("turn")
            self._turn = self.gateway.reactor.callLater(0, self._next_turn)

    def _after_hold(self):
        """Not from inside the release (a transport's resumeProducing): at the
        next turn."""
        self._turn = self.gateway.reactor.callLater(0, self._next_turn)

    def _next_turn(self):
        self._turn = None
        held, self._held = self._held, None
        self.valve.release("turn")
        if not self.closed:
            self._handle(held)

    def flush(self):
        """Send what this read's frames left in the outboxes."""
        self.outbox.release()
        if self.upstream is not None:
            self.upstream.release()
            self._backpressure()
        if self.gateway.draining or self.retiring:
            self.close_if_idle()

    def answered_unsent(self):
        """After answers were written to the client: the tenant's answer
        budget learns that its socket is full (over TLS, Twisted says so
        only once)."""
        unsent = self.unsent
        if unsent.paused and unsent.queue is not None:
            unsent.queue.full()

    def _backpressure(self):
        """After a write to the broker: the tenant's request budget learns
        that its socket is full (over TLS, Twisted says so only once)."""
        queue = self.valve.queue
        if queue is not None and "backpressure" in self.valve.reasons:
            queue.full()

    _keyed = False

    retiring = False
    """Close once no response is owed: the connection stands in for a broker
    it could not reach (``stand_in``)."""
    _retire = None

    def stand_in(self, seconds):
        """Another broker than this port's serves this connection (that one
        down, or not listed): in *seconds* it retires, closed once no answer
        is owed (or RETIRE_GRACE later regardless), and the client's next
        connection to the port tries its own broker again
        (gateway.STAND_IN_LIFE)."""
        self._retire = self.gateway.reactor.callLater(seconds, self._retire_now)

    def _retire_now(self):
        self.retiring = True
        if not self.close_if_idle():
            self._retire = self.gateway.reactor.callLater(RETIRE_GRACE, self.close)

    def close_if_idle(self):
        """The gateway is leaving its cluster (proxy/leave.py), or this
        connection is retiring: close once no response is owed, so the
        client reconnects without a request of its own failing.  True if
        closed (or already)."""
        if self.closed:
            return True
        if len(self.sequencer) or self._held is not None \
                or self.decoder.partial_size is not None or self.outbox.held:
            return False
        self.closed = True
        self._stop_timers()
        self.transport.loseConnection()
        self._close_broker()
        return True

    def request_received(self, frame):
        """One request from the client: checked against the rule table (fail
        closed), through the tenant filters in tenant mode, then forwarded;
        a tenant's Produce in the produce lane is checked and rewritten in
        one call (filters/lane.py), the rest as for any request."""
        if self.lane_open and frame[:2] == b"\0\0":  # a tenant's Produce: in the lane?
            if self._lane_take(frame):
                return
        if self.sasl is not None and self.sasl.raw_token_next:
            return self.login.raw_token(frame)
        try:
            api_key, api_version, correlation_id = peek_request(frame)
        except HeaderError as e:
            return self.fail(str(e))
        if not self._keyed:
            self._keyed = True
            self.services.client_key = client_key(self.peer, frame)
        rule = self.rules.get(api_key)
        if rule is None or not rule.min_version <= api_version <= rule.max_version:
            if api_key == API_VERSIONS and rule is not None and \
                    api_version > rule.max_version:  # the client steps down
                return self.answer_api_versions(frame, Pending(
                    correlation_id, api_key, 0, rule), ErrorCode.unsupported_version)
            # Fail closed: the client was never offered this API/version.
            return self.fail(f"API {api_key} v{api_version} is not offered")
        if self.tenancy is None:
            return self.forward(frame, Pending(correlation_id, api_key, api_version,
                                               rule))
        self.tenant_request(frame, Pending(correlation_id, api_key, api_version, rule))

    def tenant_request(self, frame, request):
        """A tenant's request: answered here (SASL, ApiVersions, what the rules
        answer), held until the broker connection is up, or rewritten."""
        if request.rule.local:
            if self._one_too_many():
                return
            return self.login.answer(frame, request)
        if request.api_key == API_VERSIONS:
            return self.answer_api_versions(frame, request)
        if self.claims is None:
            return self.fail(f"API {request.api_key} sent before authentication")
        if self.upstream is None:  # the first request after authentication
            return self._hold_until_connected(frame)
        outcome = rewrite_request(self.services, self.sasl,
                                  self.gateway.max_decoded_request, request.rule,
                                  frame, request.api_key, request.api_version)
        if outcome.later is not None:  # what it took before it waits counts too
            self.charge(outcome.work)
            return self._wait_for(outcome.later, request, len(frame) + 4)
        self.rewritten(outcome, request, len(frame) + 4)

    def charge(self, work):
        """*work* seconds of the loop spent for the tenant: past its share, its
        reads wait."""
        if work and self.gateway.loop_share is not None:
            self.hold_reads(self.gateway.loop_share.charge(self.claims.vcluster, work))

    def rewritten(self, outcome, request, size):
        """Forward the rewritten request, answer it, or close (*size*: the
        client's frame, for the metrics).  Decoding it cost the loop
        ``outcome.work`` seconds: past its share, the tenant waits."""
        if outcome.work:  # inline, not charge: nearly every request has none
            self.charge(outcome.work)
        if outcome.refused is not None:
            return self.fail(outcome.refused)
        if outcome.answer is not None:
            return self.answer_kept(request, outcome.answer, size)
        request.context = outcome.context
        self.forward(outcome.frame, request, outcome.body_offset)

    def _wait_for(self, later, request, size):
        """A rule asks before it rewrites: the requests after this one wait
        (in order) until its Outcome is known.  The client's reads are held
        meanwhile (TCP pushes back), so what waits is at most the rest of the
        read that brought this request, however fast the client sends."""
        self._held = []
        self.valve.hold("waiting")

        def ready(outcome):
            held, self._held = self._held, None
            self.valve.release("waiting")  # a request replayed may hold again
            if self.closed:
                return
            self.rewritten(outcome, request, size)
            self._replay(held)
        later.addCallbacks(ready, lambda f: self.fail(
            f"cannot rewrite API {request.api_key}: {f.getErrorMessage()}"))

    client_ids = None
    """ClientIds: a tenant's client id as brokers get it, once logged in."""

    def forward(self, frame, request, body_offset=None):
        """Send *frame* to the broker; its response is owed in turn (unless it
        is a Produce with acks=0, which the broker never answers)."""
        parts = None
        if self.tenancy is not None:
            if self.client_ids is None:
                self.client_ids = ClientIds(self.claims.vcluster)
            try:
                parts = self.client_ids.parts(frame)
            except HeaderError as e:
                return self.fail(f"request header: {e}")
        acks = records = 0
        if request.api_key == PRODUCE:
            try:
                acks, records = request.context.produced if request.context \
                    is not None and request.context.produced is not None else \
                    scan_produce(frame, body_offset, request.api_version)
            except (HeaderError, struct.error) as e:
                return self.fail(f"malformed produce request: {e}")
        self._send(request, frame if parts is None else parts, acks, records,
                   len(frame) + 4)

    def _send(self, request, parts, acks, records, size):
        """Count *request* (*size*: its bytes as forwarded, before the client
        id is shown, as governance.md's bytesIn says), owe its answer
        (none for a Produce with acks=0) and send it: a frame, or the pieces
        of one, its size prefix first."""
        if self.metrics is not None:
            self.metrics.request(request.rule.name, size, records)
        if self.rates is not None and self.rates.limited:
            request.throttle = self.rates.request(request.api_key, size)
            self.hold_reads(request.throttle)
        if request.api_key != PRODUCE or acks != 0:
            request.sent = self.gateway.reactor.seconds()
            self.sequencer.forwarded(request)
        if isinstance(parts, tuple):
            self.upstream.write_parts(parts)
        else:
            self.upstream.write_frame(parts)

    _before_login = 0

    def _one_too_many(self):
        """Tenant mode, not authenticated: one request more than
        REQUESTS_BEFORE_LOGIN closes the connection (True)."""
        if self.tenancy is None or self.claims is not None:
            return False
        self._before_login += 1
        if self._before_login <= REQUESTS_BEFORE_LOGIN:
            return False
        self.fail(f"more than {REQUESTS_BEFORE_LOGIN} requests without a login")
        return True

    def answer_api_versions(self, frame, request, error=ErrorCode.none):
        """Tenant mode: ApiVersions is answered by the gateway, from the brokers'
        answer its refresh learnt, cut to the rule table (in both modes: a
        version past the table's, with UNSUPPORTED_VERSION at v0)."""
        if self._one_too_many():
            return
        body = local_api_versions(self.services, request.api_version, error)
        if body is None:
            return self.fail("the brokers' API versions are not known yet "
                             "(the gateway has not reached the cluster)")
        if self.metrics is not None:
            self.metrics.request(request.rule.name, len(frame) + 4, 0)
        self._metered(request, len(frame) + 4)
        self.answer(request, body)

    def answer(self, request, body, close_after=False):
        """Answer *request* with *body*, made by the gateway, in its turn."""
        request.close_after = close_after
        self.sequencer.answered(request, response_header(
            request.api_key, request.api_version, request.correlation_id) + body)

    def answer_kept(self, request, body, size):
        """Answer with a body the gateway kept from an earlier response."""
        if self.metrics is not None:
            self.metrics.request(request.rule.name, size, 0)
            self.metrics.response(request.rule.name, len(body) + 8, 0.0, None, 0)
        self._metered(request, size)
        self.answer(request, body)

    def _metered(self, request, size):
        """A request the gateway answers itself counts against the tenant's
        request rate as a forwarded one does: its reads are held past it."""
        if self.rates is not None and self.rates.limited:
            self.hold_reads(self.rates.request(request.api_key, size))

    def _write_response(self, frame):
        self.outbox.write_frame(frame)

    def _close_after_answer(self):
        """A response that ends the connection (a failed login) went out."""
        self.closed = True
        self.flush()
        self.transport.loseConnection()
        self._close_broker()

    # broker -> client

    def lane_answer(self, broker, data):
        """The broker's read *data* when it starts with whole answers to
        requests that came by the lane, next in line, and goes back the
        lane's way: taken from its start in one compiled call
        (``read_answers_in_lane``), which also gives what the client is
        sent for them all (the read's own bytes from v13); they are counted
        and leave the sequencer together, without the broker connection's
        framing and a ``response_ready`` each.  The rest (an answer to a
        request that went the rule table's way, part of one) goes the
        general way (``BrokerConnection.received``), in the same send to the
        client.  A throttled request's answer, which must say so, goes the
        general way too.  False: nothing was done (the general path takes
        the read)."""
        if self.closed or broker.reserved or broker.waiting or self.retiring \
                or self.gateway.draining or broker.decoder.held:
            return False
        limit = min(broker.decoder.max_frame_size, self.gateway.max_decoded_response)
        if self.books is not None and (self.rates is None or not self.rates.limited):
            walked = self.books.answer(data, limit, FRAMES_PER_TURN, self.metrics,
                                       self.outbox, self.sequencer,
                                       self.gateway.reactor.seconds())
            if walked is None:  # every answer of the read, counted and sent
                self._arm_answers(broker, limit)
                return True
            if walked is False:
                return False
            owed, answers, end, out = walked
        else:
            owed = self.sequencer.owed_by_lane(FRAMES_PER_TURN)
            if not owed or self.rates is not None and self.rates.limited and any(
                    pending.throttle > 0 for pending in owed):
                return False
            answers, end, out = read_answers_in_lane(data, limit, owed)
            if not answers:
                return False
        if self.metrics is not None:
            self.metrics.lane_responses(owed, answers, self.gateway.reactor.seconds())
        if end == len(data):  # every answer of the read, as nearly always
            self.outbox.write_parts(out)
            self.sequencer.sent_in_turn(len(answers))
            return True
        self.outbox.hold()
        try:
            self.outbox.write_parts(out)
            self.sequencer.sent_in_turn(len(answers))
            broker.received(memoryview(data)[end:])
        finally:
            self.outbox.release()
        return True

    def _arm_answers(self, broker, limit):
        """After a read of answers the lane took whole: the next reads go to
        the compiled read of answers (``Books.answers_read``, installed as
        *broker*'s ``dataReceived``) while what ``lane_answer``'s gate and
        arguments came from stays the same (what ``Books.answer`` reads
        itself, the requests owed and the memo, it checks at every read).
        The broker connection's general path, which disarms it, is the only
        one that changes the rest."""
        gateway, rates = self.gateway, self.rates
        attrs = ((broker, "streamed", None), (self, "closed", False),
                 (self, "retiring", False), (gateway, "draining", False),
                 (self, "rates", rates), (self, "metrics", self.metrics),
                 (broker.decoder, "max_frame_size", broker.decoder.max_frame_size),
                 (gateway, "max_decoded_response", gateway.max_decoded_response))
        if rates is not None:
            attrs += ((rates, "limited", False),)
        self.books.arm_answers(limit, self.metrics, self.outbox, self.sequencer, attrs)

    def response_received(self, frame):
        pending = self.sequencer.awaiting_broker()
        if pending is None:
            return self.fail("broker sent a response nobody asked for")
        if len(frame) > self.gateway.max_decoded_response and \
                self.oversized(len(frame)):
            return
        if pending.lane:
            result = answer_in_lane(pending, frame)
            if result is not None:
                return self.response_ready(pending, result)
            pending.context = lane_context(self.services, pending)
        try:
            result = rewrite_response(self.services, pending, frame,
                                      self.metrics is not None)
        except REWRITE_ERRORS as e:
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

    def oversized(self, size):
        """Tenant mode: the broker's next answer is *size* bytes, more than the
        gateway decodes (``--max-decoded-response``): the connection is closed,
        saying why, before the answer is read whole.  Fetch answers are
        streamed or sliced, never decoded whole: not limited here."""
        limit = self.gateway.max_decoded_response
        if self.tenancy is None or size <= limit:
            return False
        pending = self.sequencer.awaiting_broker()
        if pending is None or pending.api_key == FETCH:
            return False
        self.fail(f"the answer to API {pending.api_key} v{pending.api_version} is "
                  f"{size} bytes, over the {limit} bytes the gateway decodes "
                  "(--max-decoded-response)")
        return True

    def response_ready(self, pending, result):
        """Send a rewritten response now if it is next in line, else in turn."""
        if self.closed:
            return
        frame, error, records = result
        if pending.work:
            self.charge(pending.work)
        if self.rates is not None and self.rates.limited:
            frame, delay = self.rates.response(pending, frame)
            self.hold_reads(delay)
        if self.metrics is not None:
            self.metrics.response(pending.rule.name, len(frame) + 4,
                                  self.gateway.reactor.seconds() - pending.sent,
                                  error, records)
        self.sequencer.ready(pending, frame)

    def loop_turn(self, waited):
        """This connection waited *waited* seconds for its turn under its
        virtual cluster's loop share (filters/throttle.Share): its requests
        go on, once, whatever the debt."""
        self._loop_queued = False
        self._loop_turn = True
        if self.metrics is not None:
            self.gateway.metrics.throttled.labels(self.metrics.vcluster).value += waited
        self.valve.release("loop share")

    def hold_reads(self, seconds):
        """A throttled tenant: read nothing more from this client for
        *seconds* (KIP-219: the broker mutes the channel the same way)."""
        if seconds > 0:
            added = self.valve.hold_for("throttle", seconds, self.gateway.reactor)
            if self.metrics is not None:
                self.gateway.metrics.throttled.labels(
                    self.metrics.vcluster).value += added

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
        self._stop_timers()
        self.transport.abortConnection()
        self._close_broker()

    def _stop_timers(self):
        """Closed: no turn, retirement or hold of its reads outlives it (a
        transport told to close may not be told to read again)."""
        for timer in (self._turn, self._retire):
            if timer is not None and timer.active():
                timer.cancel()
        if self.valve is not None:
            self.valve.stop()

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
        if self.login is not None:
            self.login.stop()
        if self.buffers is not None:
            self.buffers.gone(self)
            if self.broker is not None:
                self.answer_buffer.gone(self.broker)
        if self._loop_queued:
            self.loop_debt.leave(self)
            self._loop_queued = False
        self._stop_timers()
        if self.broker is not None:
            self.broker.transport.unregisterProducer()
            self._close_broker()
        elif self._connecting is not None:
            self._connecting.cancel()
        if self.services.fetch_sessions is not None:  # room held until evictable
            self.services.fetch_sessions.release(self.gateway.reactor.callLater)

    def _close_broker(self):
        """Close the broker connection, first closing the broker fetch sessions
        this connection made (rules/records.session_closers)."""
        if self.broker is None:
            return
        transport = self.broker.transport
        sessions = self.services.fetch_sessions
        # Still connected: bytes written while Twisted closes it (a closed client
        # connection stops its producer, the broker's) are sent before the FIN.
        if sessions is not None and transport.connected:
            for payload in session_closers(sessions):
                self.upstream.write_frame(payload)
            self.upstream.release()  # their room is held until evictable all the same
        transport.loseConnection()
