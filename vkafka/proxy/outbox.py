# -*- test-case-name: tests.test_streaming -*-
"""What the gateway sends on a connection: in order, in as few sends as it can.

A frame is sent as its size prefix and its bytes, never joined; what one read
of the other side produced leaves in one ``sendmsg`` (``Outbox``); a write goes
to the socket at once when nothing is queued ahead of it in Twisted
(``write_now``), else to Twisted's queue, which keeps the order.
"""

import socket

from ..protocol.framing import frame_parts, framed
from ..tuning import READ_SIZE, sendable

try:
    from ._send import send_parts
except ImportError:  # pragma: no cover - tests/test_streaming.py fails, saying so
    send_parts = None


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
    if sendable(transport):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(bytes(data))  # a memoryview's bytes are copied only here


def write_all(transport, parts):
    """``write_now`` for several pieces (bytes or memoryviews, in a list or
    tuple), in one ``sendmsg`` per IOV_BATCH of them; the rest, from the
    first piece the socket did not take whole, is left to Twisted's queue in
    order."""
    if sendable(transport):
        sock = transport.socket
        parts = (send_parts if type(sock) is socket.socket else sent_in_python)(
            sock, parts)
        if parts is None:  # all of it, as nearly always
            return
    if parts:
        transport.writeSequence([bytes(part) for part in parts])


def sent_in_python(sock, parts):
    """``_send.send_parts`` in Python, for sockets that are not plain ones
    (tests count their calls) and where it is not built: None when *sock*
    took all of *parts*, else what it did not take, in order."""
    while parts:
        batch = parts[:IOV_BATCH]
        try:
            sent = sock.sendmsg(batch)
        except OSError:
            sent = 0
        if sent == sum(map(len, batch)):
            parts = parts[IOV_BATCH:]
            continue
        taken = 0
        for part in batch:
            if sent < len(part):
                break
            sent -= len(part)
            taken += 1
        parts = list(parts[taken:])
        if sent:
            parts[0] = memoryview(parts[0])[sent:]
        return parts
    return None


if send_parts is None:  # pragma: no cover - tests/test_streaming.py fails, saying so
    send_parts = sent_in_python

IOV_BATCH = 256
"""Pieces per sendmsg, well under the kernel's IOV_MAX (1024) (as _send.c's)."""


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

    def write_parts(self, parts):
        """A frame as pieces, its size prefix first (``ClientIds.parts``)."""
        if self.held:
            self.parts.extend(parts)
        else:
            write_all(self.transport, parts)

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


def tune_socket(transport):
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
