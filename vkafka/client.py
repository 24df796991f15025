# -*- test-case-name: tests.test_client -*-
"""The gateway's own Kafka client: every connection the gateway opens for itself.

The metadata refresh, the state store and the backend SASL/PLAIN login all
speak Kafka through ``KafkaClientProtocol``; trying the servers of a list in
turn is ``try_each``.  This module sits just above ``vkafka.protocol`` (the
codec) and imports nothing else of vkafka, so the proxy and the state store can
both use it (docs/architecture.md, "Layers").
"""

import datetime
import socket
import time

from kio.schema.create_topics.v7.request import (
    CreatableTopic, CreatableTopicConfig, CreateTopicsRequest)
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
from kio.static.primitive import i16, i32, i32Timedelta
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionLost

from .protocol.codec import CodecError, decode_response, encode_request
from .protocol.framing import FrameDecoder, FrameError, frame

CREATE_TOPICS_VERSION = 7

REQUEST_TIMEOUT = 30.0
"""Seconds a broker has to answer one of the gateway's own requests.  A broker
that takes connections but answers nothing (stopped, wedged, a half-open
connection) must not hold a topic listing, an inventory or a state read for
ever: past it the connection is dropped and each request on it fails with
``RequestTimedOut``.  Well above any wait the gateway asks of a broker
(a state read's 5 s, a CreateTopics' 10 s)."""


class ProtocolError(ConnectionError):
    """The broker sent bytes that answer nothing we asked (a bad frame, an
    unknown correlation id): the stream cannot be trusted, so it is dropped."""


class RequestTimedOut(ConnectionError):
    """A broker did not answer within REQUEST_TIMEOUT."""


class Unreachable(ConnectionError):
    """No server of a list could be used; ``errors`` holds each try's
    ``(host, port, exception)``, ``last`` the last exception (None: no server)."""

    def __init__(self, errors):
        self.errors = list(errors)
        self.last = self.errors[-1][2] if self.errors else None
        if self.errors:
            host, port, error = self.errors[-1]
            super().__init__(f"{host}:{port}: {error}")
        else:
            super().__init__("no broker address known")


class SaslError(ConnectionError):
    """The broker refused the gateway's own SASL authentication."""


def request_bytes(body, version, correlation_id, client_id):
    """A framed request, ready to write (the blocking and Twisted paths share it)."""
    return frame(encode_request(body, version, correlation_id, client_id))


def response_correlation_id(payload):
    if len(payload) < 4:
        raise ProtocolError(f"a {len(payload)}-byte response has no correlation id")
    return int.from_bytes(payload[:4], "big", signed=True)


class KafkaClientProtocol(protocol.Protocol):
    """Requests out, responses back: each request's Deferred fires with its answer.

    Requests are written at once (pipelined); responses are matched by
    correlation id.  An answer to nothing pending, or bad framing, drops the
    connection and fails every pending request: a client that skipped it
    could pair later answers with the wrong requests.
    """

    def __init__(self, client_id="vkafka", max_frame_size=None, clock=None,
                 timeout=REQUEST_TIMEOUT):
        self.client_id = client_id
        self.decoder = (FrameDecoder() if max_frame_size is None
                        else FrameDecoder(max_frame_size))
        self.clock = clock
        """An IReactorTime for the requests' deadlines (None: none)."""
        self.timeout = timeout
        self.pending = {}
        """correlation id -> (Deferred, api key, version, raw, deadline timer)."""
        self.correlation_id = 0
        self.connected = False
        self._unread = 0
        """Frames of the current read still to be matched (``release`` checks)."""

    def connectionMade(self):
        self.connected = True

    def request(self, body, version, raw=False):
        """Send *body* at *version*; fires with the decoded response, or with
        the response payload (header included) if *raw*, for decoding elsewhere."""
        if not self.connected:
            return defer.fail(ConnectionLost("not connected"))
        self.correlation_id += 1
        d = defer.Deferred()
        timer = None if self.clock is None else self.clock.callLater(
            self.timeout, self._timed_out, self.correlation_id, body.__api_key__)
        self.pending[self.correlation_id] = (d, body.__api_key__, version, raw, timer)
        self.transport.write(request_bytes(body, version, self.correlation_id,
                                           self.client_id))
        return d

    def dataReceived(self, data):
        if not self.connected:
            return
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            return self._drop(ProtocolError(f"bad framing from the broker: {e}"))
        for i, payload in enumerate(frames):
            self._unread = len(frames) - i - 1
            try:
                entry = self.pending.pop(response_correlation_id(payload), None)
                if entry is None:
                    raise ProtocolError(
                        f"answer to correlation id {response_correlation_id(payload)}"
                        f", which is not pending")
            except ProtocolError as e:
                return self._drop(e)
            d, api_key, version, raw, timer = entry
            if timer is not None:
                timer.cancel()
            if raw:
                d.callback(bytes(payload))
            else:
                try:
                    _, response = decode_response(payload, api_key, version)
                except CodecError as e:
                    d.errback(e)
                else:
                    d.callback(response)
            if not self.connected:
                return  # a callback closed the connection

    def _timed_out(self, correlation_id, api_key):
        self.pending[correlation_id] = self.pending[correlation_id][:4] + (None,)
        self._drop(RequestTimedOut(f"no answer to request {correlation_id} (API "
                                   f"{api_key}) within {self.timeout:g} s"))

    def _drop(self, error):
        self.connected = False
        self.transport.abortConnection()
        self._fail_pending(error)

    def _fail_pending(self, error):
        pending, self.pending = self.pending, {}
        for d, _, _, _, timer in pending.values():
            if timer is not None:
                timer.cancel()
            d.errback(error)

    def release(self):
        """Stop using the connection so another protocol can take it over.

        :raises ProtocolError: if a request is pending or bytes are buffered,
            which the next protocol would otherwise never see.
        """
        if (not self.connected or self.pending or self.decoder.buffered
                or self._unread):
            raise ProtocolError("the connection is not idle: requests pending or "
                                "bytes after the last answer")
        self.connected = False

    def close(self):
        if self.connected:
            self.connected = False
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.connected = False
        self._fail_pending(ConnectionLost(reason.getErrorMessage()))


def tcp_endpoint(reactor, host, port, timeout=10):
    return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)


class _OneShot(protocol.Factory):
    """Hands out one prepared protocol; quiet, unlike endpoints.connectProtocol's."""

    noisy = False

    def __init__(self, proto):
        self.proto = proto

    def buildProtocol(self, addr):
        return self.proto


def connect(endpoint, proto):
    """Connect *proto* through *endpoint*; fires with *proto* once connected."""
    return endpoint.connect(_OneShot(proto))


@defer.inlineCallbacks
def try_each(servers, attempt):
    """Fires with ``attempt(host, port)``'s result for the first server where it
    succeeds; else fails with ``Unreachable``.  A cancellation is not retried."""
    errors = []
    for host, port in servers:
        try:
            result = yield attempt(host, port)
        except defer.CancelledError:
            raise
        except Exception as e:
            errors.append((host, port, e))
            continue
        return result
    raise Unreachable(errors)


class Connector:
    """Opens the gateway's own client connections to brokers.

    *endpoint_factory* ``(reactor, host, port)`` is the backend's
    (``BackendSecurity.endpoint``): TLS and the SASL login happen there.
    """

    def __init__(self, reactor, endpoint_factory, client_id="vkafka",
                 timeout=REQUEST_TIMEOUT):
        self.reactor = reactor
        self.endpoint_factory = endpoint_factory
        self.client_id = client_id
        self.timeout = timeout
        """Seconds a broker has to answer each request (REQUEST_TIMEOUT)."""

    @defer.inlineCallbacks
    def open(self, host, port, client_id=None):
        """A connected ``KafkaClientProtocol`` to *host*:*port*."""
        client = KafkaClientProtocol(client_id or self.client_id, clock=self.reactor,
                                     timeout=self.timeout)
        yield connect(self.endpoint_factory(self.reactor, host, port), client)
        return client

    @defer.inlineCallbacks
    def session(self, host, port, use):
        """Fires with ``use(client)``'s result; the connection is closed after."""
        client = yield self.open(host, port)
        try:
            return (yield use(client))
        finally:
            client.close()

    def first(self, servers, use):
        """``session`` with the first of *servers* where it succeeds."""
        return try_each(servers, lambda host, port: self.session(host, port, use))

    def ask(self, host, port, body, version, raw=False):
        """One request on a connection of its own."""
        return self.session(host, port, lambda c: c.request(body, version, raw))

    def ask_first(self, servers, body, version, raw=False):
        """One request, answered by the first of *servers* that can."""
        return self.first(servers, lambda c: c.request(body, version, raw))


def default_replication(brokers):
    """Replication for a topic the gateway creates: 3, or fewer brokers."""
    return max(1, min(3, brokers))


@defer.inlineCallbacks
def create_topic(client, name, partitions, replication, configs=None, timeout_ms=10000):
    """CreateTopics for one topic; fires with the broker's result for it
    (``error_code``, ``error_message``): callers differ on which refusals matter."""
    response = yield client.request(CreateTopicsRequest(
        topics=(CreatableTopic(
            name=name, num_partitions=i32(partitions),
            replication_factor=i16(replication), assignments=(),
            configs=tuple(CreatableTopicConfig(name=k, value=v)
                          for k, v in sorted((configs or {}).items()))),),
        timeout=i32Timedelta.parse(datetime.timedelta(milliseconds=timeout_ms)),
        validate_only=False), CREATE_TOPICS_VERSION)
    [result] = response.topics
    return result


def refusal(result):
    """A broker's per-topic error as text (``TOPIC_ALREADY_EXISTS message``)."""
    return f"{result.error_code.name.upper()} {result.error_message or ''}".strip()


@defer.inlineCallbacks
def sasl_plain_login(client, username, password):
    """SaslHandshake v1 (PLAIN) then SaslAuthenticate v2 over *client*.

    :raises SaslError: if the broker refuses either step.
    """
    for body, version in (
            (SaslHandshakeRequest(mechanism="PLAIN"), 1),
            (SaslAuthenticateRequest(auth_bytes=b"\x00" + username.encode() + b"\x00"
                                     + password.encode()), 2)):
        response = yield client.request(body, version)
        if response.error_code != ErrorCode.none:
            message = getattr(response, "error_message", None) or ""
            raise SaslError(f"broker refused the gateway's SASL/PLAIN login "
                            f"({response.error_code.name.upper()}) {message}".strip())


def ask_blocking(servers, body, version, timeout=5.0, client_id="vkafka"):
    """One request, answered by the first of *servers* that can, over a plain
    blocking socket (for scripts without a reactor); the decoded response, or None.
    """
    deadline = time.monotonic() + timeout
    for host, port in servers:
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.sendall(request_bytes(body, version, 1, client_id))
                decoder = FrameDecoder()
                while time.monotonic() < deadline:
                    data = s.recv(65536)
                    if not data:
                        break
                    frames = decoder.feed(data)
                    if frames:
                        if response_correlation_id(frames[0]) != 1:
                            break
                        return decode_response(frames[0], body.__api_key__, version)[1]
        except (OSError, ValueError):
            continue
    return None
