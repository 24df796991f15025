"""A bare TCP forwarder: the bench's reference for what any proxy costs here.

``python bench/forwarder.py [--twisted] LISTEN:UPSTREAM ...`` accepts on each LISTEN port
of localhost and copies bytes both ways to UPSTREAM, a thread per direction,
with no Kafka logic at all: no framing, no rewriting, no reactor.  The dev
brokers advertise these ports on their HOP listener (devstack.FORWARDED), so
the perf tools bootstrapped here stay behind the forwarder.  Whatever a proxy
process must pay on this machine (two more copies of every byte through
loopback, a process more competing for the cores) this pays too, and nothing
else: its ratio to direct, in the same run, is the ceiling for the gateway.

``--twisted`` forwards the same bytes on a Twisted epoll reactor instead
(sending at once when nothing is queued, as the gateway's Outbox does):
the floor of any proxy built as vkafka is, an event loop with no Kafka
logic.  ``bench/floor.py`` sets the three side by side.
"""

import socket
import sys
import threading

CHUNK = 1024 * 1024
"""Bytes asked for per read, as the gateway asks (tuning.READ_SIZE)."""


def pump(source, sink):
    """Copy *source* to *sink* until either side closes; then close both."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        while True:
            n = source.recv_into(buffer)
            if n == 0:
                break
            sink.sendall(view[:n])
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listen_port, upstream_port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(1024)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", upstream_port))
        except OSError:
            client.close()
            continue
        for s in (client, upstream):  # as Kafka's clients and brokers set it
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(source, sink), daemon=True).start()


def serve_twisted(pairs):
    """The forwarder on Twisted: a Protocol a side, the client's reads held
    until the upstream connection is up."""
    from twisted.internet import epollreactor
    epollreactor.install()
    from twisted.internet import protocol, reactor

    def send(transport, data):
        if not transport.dataBuffer and not transport._tempDataLen:
            try:
                data = data[transport.socket.send(data):]
            except BlockingIOError:
                pass
            if not data:
                return
        transport.write(bytes(data))

    class Upstream(protocol.Protocol):
        def __init__(self, client):
            self.client = client

        def connectionMade(self):
            self.transport.setTcpNoDelay(True)
            self.client.upstream = self
            self.client.transport.resumeProducing()

        def dataReceived(self, data):
            send(self.client.transport, data)

        def connectionLost(self, reason):
            self.client.transport.loseConnection()

    class Client(protocol.Protocol):
        upstream = None

        def connectionMade(self):
            self.transport.setTcpNoDelay(True)
            self.transport.pauseProducing()
            protocol.ClientCreator(reactor, Upstream, self).connectTCP(
                "127.0.0.1", self.factory.upstream_port).addErrback(
                lambda _: self.transport.loseConnection())

        def dataReceived(self, data):
            send(self.upstream.transport, data)

        def connectionLost(self, reason):
            if self.upstream is not None:
                self.upstream.transport.loseConnection()

    for listen_port, upstream_port in pairs:
        factory = protocol.Factory.forProtocol(Client)
        factory.upstream_port = upstream_port
        reactor.listenTCP(listen_port, factory, interface="127.0.0.1")
    reactor.run()


def main(argv):
    twisted = "--twisted" in argv
    pairs = [tuple(int(p) for p in arg.split(":")) for arg in argv if arg != "--twisted"]
    if not pairs:
        sys.exit("usage: forwarder.py [--twisted] LISTEN:UPSTREAM ...")
    if twisted:
        return serve_twisted(pairs)
    for listen_port, upstream_port in pairs[1:]:
        threading.Thread(target=serve, args=(listen_port, upstream_port),
                         daemon=True).start()
    serve(*pairs[0])


if __name__ == "__main__":
    main(sys.argv[1:])
