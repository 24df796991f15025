"""A bare TCP forwarder: the bench's reference for what any proxy costs here.

``python bench/forwarder.py LISTEN:UPSTREAM ...`` accepts on each LISTEN port
of localhost and copies bytes both ways to UPSTREAM, a thread per direction,
with no Kafka logic at all: no framing, no rewriting, no reactor.  The dev
brokers advertise these ports on their HOP listener (devstack.FORWARDED), so
the perf tools bootstrapped here stay behind the forwarder.  Whatever a proxy
process must pay on this machine (two more copies of every byte through
loopback, a process more competing for the cores) this pays too, and nothing
else: its ratio to direct, in the same run, is the ceiling for the gateway.
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


def main(argv):
    pairs = [tuple(int(p) for p in arg.split(":")) for arg in argv]
    if not pairs:
        sys.exit("usage: forwarder.py LISTEN:UPSTREAM ...")
    for listen_port, upstream_port in pairs[1:]:
        threading.Thread(target=serve, args=(listen_port, upstream_port),
                         daemon=True).start()
    serve(*pairs[0])


if __name__ == "__main__":
    main(sys.argv[1:])
