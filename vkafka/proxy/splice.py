# -*- test-case-name: tests.test_splice -*-
"""The splice: one client connection, one broker connection, frames in between.

Shaped like ``twisted.protocols.portforward``: the client is paused until the
broker connection is up, then each transport is registered as the other's
streaming producer, so a slow reader on either side pauses the other side's
reads instead of making the gateway buffer without bound.
"""

import struct
from collections import deque
from dataclasses import dataclass

from twisted.internet import protocol
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger

from ..protocol.codec import CodecError, decode_response, encode_body
from ..protocol.framing import FrameDecoder, FrameError, size_prefix
from ..protocol.headers import API_VERSIONS, HeaderError, peek_request

PRODUCE = 0
UNSUPPORTED_VERSION = 35
_INT16 = struct.Struct(">h")


def produce_expects_response(frame, api_version):
    """False for an ``acks=0`` Produce, which the broker never answers.

    The acks field follows the transactional id (v3+), which follows the
    header; reading it needs only the header's length, not a full decode.
    """
    from ..protocol.headers import parse_request_header, read_uvarint

    header = parse_request_header(frame)
    pos = header.body_offset
    if api_version >= 9:  # flexible: compact nullable string
        length, pos = read_uvarint(frame, pos)
        pos += max(length - 1, 0)
    else:
        (length,) = _INT16.unpack_from(frame, pos)
        pos += 2 + max(length, 0)
    (acks,) = _INT16.unpack_from(frame, pos)
    return acks != 0


@dataclass(slots=True)
class Pending:
    """A request awaiting its response, with what is needed to rewrite it."""
    correlation_id: int
    api_key: int
    api_version: int
    rule: object


class ClientConnection(protocol.Protocol):
    """The gateway's side of a Kafka client's connection."""

    log = Logger()
    broker = None
    closed = False

    def __init__(self, gateway, node_id):
        self.gateway = gateway
        self.node_id = node_id
        self.pending = deque()
        self.decoder = FrameDecoder(gateway.max_frame_size)
        self.rules = gateway.rules
        self.topology = gateway.topology

    def connectionMade(self):
        self.transport.pauseProducing()
        self.peer = self.transport.getPeer()
        self._connecting = self.gateway.connect_upstream(self)

    # called by the gateway once the broker connection is up or has failed

    def upstream_ready(self, broker):
        if self.closed:
            broker.transport.loseConnection()
            return
        self.broker = broker
        self.transport.registerProducer(broker.transport, True)
        broker.transport.registerProducer(self.transport, True)
        self.transport.resumeProducing()

    def upstream_failed(self, reason):
        self.log.warn("client {peer}: no broker reachable for node {node}: {why}",
                      peer=self.peer, node=self.node_id,
                      why=reason.getErrorMessage())
        self.transport.loseConnection()

    # client -> broker

    def dataReceived(self, data):
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            return self.fail(f"bad framing: {e}")
        for frame in frames:
            if self.closed:
                return
            self.request_received(frame)

    def request_received(self, frame):
        try:
            api_key, api_version, correlation_id = peek_request(frame)
        except HeaderError as e:
            return self.fail(str(e))
        rule = self.rules.get(api_key)
        if rule is None or not rule.min_version <= api_version <= rule.max_version:
            # Fail closed: the client was never offered this API/version.
            return self.fail(f"API {api_key} v{api_version} is not offered")
        try:
            if api_key != PRODUCE or produce_expects_response(frame, api_version):
                self.pending.append(Pending(correlation_id, api_key, api_version, rule))
        except (HeaderError, struct.error) as e:
            return self.fail(f"malformed produce request: {e}")
        self.broker.transport.writeSequence([size_prefix(len(frame)), frame])

    # broker -> client

    def response_received(self, frame):
        if not self.pending:
            return self.fail("broker sent a response nobody asked for")
        pending = self.pending.popleft()
        try:
            frame = self.rewrite_response(pending, frame)
        except (CodecError, HeaderError, struct.error) as e:
            return self.fail(
                f"cannot rewrite response to API {pending.api_key} "
                f"v{pending.api_version}: {e}")
        self.transport.writeSequence([size_prefix(len(frame)), frame])

    def rewrite_response(self, pending, frame):
        (correlation_id,) = struct.unpack_from(">i", frame, 0)
        if correlation_id != pending.correlation_id:
            raise CodecError(
                f"correlation id {correlation_id}, expected {pending.correlation_id}")
        rule = pending.rule
        if not rule.needs_response_rewrite(pending.api_version):
            return frame
        version = pending.api_version
        if api_versions_downgraded(pending.api_key, frame):
            version = 0
        header, response = decode_response(frame, pending.api_key, version)
        response = rule.rewrite_response(self, response)
        return header + encode_body(response)

    # lifecycle

    def fail(self, why):
        """Close this client's connection with one log line; others go on."""
        self.log.warn("client {peer}: closing: {why}", peer=self.peer, why=why)
        self.close()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.transport.abortConnection()
        if self.broker is not None:
            self.broker.transport.loseConnection()

    def connectionLost(self, reason):
        self.closed = True
        if self.broker is not None:
            self.broker.transport.unregisterProducer()
            self.broker.transport.loseConnection()
        elif getattr(self, "_connecting", None) is not None:
            self._connecting.cancel()


def api_versions_downgraded(api_key, frame):
    """An ApiVersions answer to a too-new request comes back at v0 (KIP-511)."""
    if api_key != API_VERSIONS or len(frame) < 6:
        return False
    return _INT16.unpack_from(frame, 4)[0] == UNSUPPORTED_VERSION


class BrokerConnection(protocol.Protocol):
    """The gateway's connection to one broker, on behalf of one client."""

    log = Logger()

    def __init__(self, client):
        self.client = client
        self.decoder = FrameDecoder(client.gateway.max_response_size)

    def connectionMade(self):
        self.client.upstream_ready(self)

    def dataReceived(self, data):
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            return self.client.fail(f"broker framing: {e}")
        for frame in frames:
            if self.client.closed:
                return
            self.client.response_received(frame)

    def connectionLost(self, reason):
        client = self.client
        if not client.closed:
            if not reason.check(ConnectionDone):
                self.log.info("client {peer}: broker connection lost: {why}",
                              peer=client.peer, why=reason.getErrorMessage())
            client.transport.unregisterProducer()
            client.closed = True
            client.transport.loseConnection()
