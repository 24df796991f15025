# -*- test-case-name: tests.test_splice -*-
"""The gateway's connection to a broker, the other half of the splice.

It only frames what the broker sends and hands each response to its client
connection (splice.py); a large Fetch response that may pass as bytes is
forwarded while it arrives (streaming.py).
"""

from twisted.internet import protocol
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger

from ..protocol.framing import FrameDecoder, FrameError
from ..tuning import called_directly
from .outbox import tune_socket
from .streaming import STREAM_FROM, stream_for
from .valve import Valve


class BrokerConnection(protocol.Protocol):
    """The gateway's connection to one broker, on behalf of one client."""

    log = Logger()

    streamed = None
    """The large response being forwarded as it arrives (Streamed), if any."""
    budget = None
    """The tenant's answer TenantBuffer (buffers.py), in tenant mode: the
    answer being received whole is ``reserved`` there (or ``waiting``), the
    answers written to the client and not sent are ``queued``."""
    reserved = waiting = queued = parked = 0
    address = None
    """(host, port) connected to: its client's broker, or one standing in."""

    def __init__(self, client):
        self.client = client
        self.decoder = FrameDecoder(client.gateway.max_response_size)

    def connectionMade(self):
        tune_socket(self.transport)
        called_directly(self)
        self.valve = Valve(self.transport)
        self.client.upstream_ready(self)

    def dataReceived(self, data):
        streamed = self.streamed
        if streamed is None:
            if self.client.lane_open and self.client.lane_answer(self, data):
                self.client.answered_unsent()
                return
        elif streamed.passes(data):  # the middle of a large Fetch response
            self.client.answered_unsent()
            return
        outbox = self.client.outbox
        outbox.hold()  # the responses in this read: one send to the client
        try:
            self.received(data)
        finally:
            outbox.release()
            self.client.answered_unsent()
        client = self.client
        if client.gateway.draining or client.retiring:  # close once nothing is owed
            client.close_if_idle()

    def received(self, data):
        """The general path: *data* cut into answers, each rewritten and sent
        in turn (``ClientConnection.response_received``)."""
        if self.streamed is not None:
            data = self.streamed.feed(data)
            if data is None:
                return
            self.streamed = None
        try:
            frames = self.decoder.feed(data)
        except FrameError as e:
            return self.client.fail(f"broker framing: {e}")
        client = self.client
        for frame in frames:
            if client.closed:
                return
            client.response_received(frame)
        size = self.decoder.partial_size
        if size is not None:
            if client.closed or size > client.gateway.max_decoded_response \
                    and client.oversized(size):
                return
            if size >= STREAM_FROM:
                self.streamed = stream_for(client, self.decoder)
                if self.streamed is not None or self.decoder.buffered < 8:
                    size = None  # forwarded as it comes (or not known yet)
        if self.budget is not None and size != (self.reserved or self.waiting or None):
            self.budget.receiving(self, size)

    def connectionLost(self, reason):
        client = self.client
        if not client.closed:
            if not reason.check(ConnectionDone):
                self.log.info("client {peer}: broker connection lost: {why}",
                              peer=client.peer, why=reason.getErrorMessage())
            client.transport.unregisterProducer()
            client.closed = True
            client.transport.loseConnection()
