"""The gateway's own cost per tenant Produce, in one process, no network.

A tenant connection on in-memory transports (as the unit tests build it)
sends a Produce of one 16 KB batch and gets the broker's answer; this
prints the microseconds per round trip, best of several runs, for Produce
v9 (names: rewritten by slicing) and v13 (topic ids: checked in place),
with the virtual cluster's ACLs off and on.  The gateway has what ``twistd
vkafka`` gives a tenant-mode gateway by default (metrics, buffer budgets,
the loop share).  It isolates the per-request Python work that ``make
bench`` measures end to end as CPU seconds per GB:

    .venv/bin/python bench/hotpath.py [--rounds 20000] [--profile]
        [--socket] [--shape one|three|cut] [--fetch]

``--fetch`` measures a consumer's long poll instead: a Fetch v17 of one
topic's two partitions, no session, and its answer without records (a
Fetch's request side; a large answer's reads are the network's and the
scan's, which ``make bench`` measures).

``--profile`` prints the functions where the time goes (cProfile).
``--socket`` gives both connections a plain socket (one end of a
socketpair, emptied after every read) that takes every send, so the
gateway writes as it does live (``outbox.write_all``, not Twisted's
queue); ``--shape`` then says how the requests and answers come: one a
read, three a read, or the stream cut into 55 KB reads (frames over
reads).  The valgrind count of instructions per request and answer (the
machine's steal does not move it) is ``callgrind`` of ``--rounds 2001``
less that of ``--rounds 1``, divided by 2,000, each with ``--runs 1
--version 9 --acls off`` (docs/performance.md).
"""

import argparse
import datetime
import io
import socket
import struct
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kio.records.schema import NewRecordBatch, Record  # noqa: E402
from kio.records.writers import write_batch  # noqa: E402
from kio.schema.errors import ErrorCode  # noqa: E402
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64  # noqa: E402
from twisted.internet import defer  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import MemoryReactorClock, StringTransport  # noqa: E402

from vkafka.auth.acls import Acl  # noqa: E402
from vkafka.auth.tokens import TokenAuthority  # noqa: E402
from vkafka.filters.throttle import LoopShare  # noqa: E402
from vkafka.metrics import Metrics  # noqa: E402
from vkafka.protocol.codec import encode_body, encode_request  # noqa: E402
from vkafka.protocol.framing import frame  # noqa: E402
from vkafka.proxy.buffers import Buffers  # noqa: E402
from vkafka.proxy.gateway import Gateway  # noqa: E402
from vkafka.proxy.topology import Topology  # noqa: E402
from vkafka.state.model import GatewayState  # noqa: E402
from vkafka.state.store import MemoryStore  # noqa: E402
from vkafka.tap import SETTINGS  # noqa: E402
from vkafka.tenancy.mode import Tenancy  # noqa: E402
from vkafka.tenancy.rules import tenant_rules  # noqa: E402

SECRET = "h" * 32
OPTIONS = {name: default for name, _, default, *_ in SETTINGS}
TOPIC = "orders"


def socket_pair():
    """A plain socket both connections send on (the gateway's compiled
    sendmsg takes only those) and its peer, emptied after every read
    (``drain``) so that it takes every send whole."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    return ours, theirs


SENT_ON, DRAINED = socket_pair()


def drain():
    try:
        while DRAINED.recv(1 << 22):
            pass
    except BlockingIOError:
        pass


class SocketTransport(StringTransport):
    """An in-memory transport the gateway takes for plain TCP with nothing
    queued (``tuning.sendable``): it writes to its socket directly."""

    TLS = False
    connected = True
    _writeDisconnected = False
    _tempDataLen = 0
    offset = 0
    dataBuffer = b""
    socket = SENT_ON


def plain_sockets():
    """Transports made from now on are SocketTransports, taken for plain TCP."""
    from vkafka import tuning
    global StringTransport
    tuning._PLAIN_TCP = tuning._PLAIN_TCP + (SocketTransport,)
    StringTransport = SocketTransport


def shaped(frames, shape):
    """*frames* as the reads of *shape*: one a read, three a read, or the
    stream cut into 55 KB reads."""
    if shape == "one":
        return list(frames)
    if shape == "three":
        return [b"".join(frames[i:i + 3]) for i in range(0, len(frames), 3)]
    data = b"".join(frames)
    return [data[i:i + 55000] for i in range(0, len(data), 55000)]


class Endpoint:
    """Connects at once to an in-memory broker."""

    def __init__(self, world):
        self.world = world

    def connect(self, factory):
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        self.world.append((proto, transport))
        proto.makeConnection(transport)
        return defer.succeed(proto)


def batch(size=16 * 1024, record=1024):
    now = datetime.datetime.now(datetime.timezone.utc)
    records = tuple(Record(attributes=i8(0), timestamp=now, offset=i64(i), key=None,
                           value=b"v" * record, headers=()) for i in range(size // record))
    out = io.BytesIO()
    write_batch(out, NewRecordBatch(producer_id=i64(-1), producer_epoch=i16(-1),
                                    base_sequence=i32(-1), attributes=i16(0),
                                    records=records))
    return out.getvalue()


def produce(version, key, records, correlation_id):
    import importlib
    m = importlib.import_module(f"kio.schema.produce.v{version}.request")
    where = {"topic_id": key} if version >= 13 else {"name": key}
    body = m.ProduceRequest(
        transactional_id=None, acks=i16(-1),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
        topic_data=(m.TopicProduceData(partition_data=(m.PartitionProduceData(
            index=i32(0), records=records),), **where),))
    return frame(encode_request(body, version, correlation_id, "bench"))


def answer(version, key, correlation_id):
    import importlib
    m = importlib.import_module(f"kio.schema.produce.v{version}.response")
    where = {"topic_id": key} if version >= 13 else {"name": key}
    part = m.PartitionProduceResponse(
        index=i32(0), error_code=ErrorCode.none, base_offset=i64(42),
        log_append_time=None, log_start_offset=i64(0), record_errors=(),
        error_message=None, **({"current_leader": m.LeaderIdAndEpoch(
            leader_id=i32(-1), leader_epoch=i32(-1))} if version >= 10 else {}))
    body = m.ProduceResponse(throttle_time=i32Timedelta.parse(datetime.timedelta(0)),
                             responses=(m.TopicProduceResponse(
                                 partition_responses=(part,), **where),),
                             **({"node_endpoints": ()} if version >= 10 else {}))
    return frame(struct.pack(">i", correlation_id) + b"\x00" + encode_body(body))


def connection(acls):
    """A logged-in tenant connection of "shop" and its broker side."""
    reactor = MemoryReactorClock()
    reactor.advance(1_000_000)
    authority = TokenAuthority(SECRET, reactor.seconds)
    topology = Topology([("kafka1", 9092)], "gw", 6969, 3, 1)
    topology.learn([(1, "kafka1", 9092)])
    brokers = []
    tenancy = Tenancy(authority)
    gateway = Gateway(reactor, topology, tenant_rules(), metrics=Metrics(),
                      endpoint_factory=lambda r, h, p: Endpoint(brokers), tenancy=tenancy)
    # as tap.makeService sets them up with the default options
    gateway.buffers = Buffers(OPTIONS["tenant-request-buffer"],
                              OPTIONS["tenant-answer-buffer"])
    gateway.loop_share = LoopShare(OPTIONS["tenant-loop-share"], reactor.seconds,
                                   reactor.callLater)
    state = GatewayState(MemoryStore(), authority, tenancy.vclusters, reactor.seconds)
    gateway.state = state
    state.ensure_vcluster("shop")
    if acls:
        state.put_rights("shop", True)
        state.add_acls("shop", [Acl.checked("TOPIC", "LITERAL", TOPIC, "User:sa", "*",
                                            "WRITE", "ALLOW")])
    client = gateway.factory_for_port(6970).buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 5))
    client.makeConnection(transport)
    from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
    from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
    client.dataReceived(frame(encode_request(SaslHandshakeRequest(mechanism="PLAIN"),
                                             1, 1, "bench")))
    token = authority.issue("shop", "sa", 3600)
    client.dataReceived(frame(encode_request(SaslAuthenticateRequest(
        auth_bytes=b"\x00sa\x00" + token.encode()), 2, 2, "bench")))
    transport.clear()
    topic_id = uuid.uuid4()
    topology.topic_ids[topic_id] = "shop" + TOPIC
    topology.learn_topic("shop" + TOPIC, partitions=1)
    return client, transport, brokers, topic_id


def fetch(topic_id, correlation_id):
    """A consumer's Fetch v17: one topic, two partitions, no session."""
    from kio.schema.fetch.v17 import request as m
    body = m.FetchRequest(
        max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=500)),
        min_bytes=i32(1), max_bytes=i32(50 << 20), isolation_level=i8(0),
        session_id=i32(0), session_epoch=i32(-1), rack_id="", forgotten_topics_data=(),
        topics=(m.FetchTopic(topic_id=topic_id, partitions=tuple(m.FetchPartition(
            partition=i32(p), fetch_offset=i64(0), partition_max_bytes=i32(1 << 20))
            for p in range(2))),))
    return frame(encode_request(body, 17, correlation_id, "bench"))


def fetched(topic_id, correlation_id):
    """Its answer: both partitions, nothing new in them."""
    from kio.schema.fetch.v17 import response as m
    body = m.FetchResponse(
        throttle_time=i32Timedelta.parse(datetime.timedelta(0)), error_code=ErrorCode.none,
        session_id=i32(0), node_endpoints=(), responses=(m.FetchableTopicResponse(
            topic_id=topic_id, partitions=tuple(m.PartitionData(
                partition_index=i32(p), error_code=ErrorCode.none, high_watermark=i64(0),
                last_stable_offset=i64(0), log_start_offset=i64(0),
                aborted_transactions=(), preferred_read_replica=i32(-1), records=None)
                for p in range(2))),))
    return frame(struct.pack(">i", correlation_id) + b"\x00" + encode_body(body))


def run(version, acls, rounds, records, profiler=None, shape="one"):
    """Microseconds per Produce *version* and answer (*version* "fetch": per
    consumer's Fetch and answer)."""
    client, transport, brokers, topic_id = connection(acls)
    if version == "fetch":
        first, template = (fetch(topic_id, n) for n in (10, 11))
        reply = fetched(topic_id, 10)
    else:
        key = topic_id if version >= 13 else TOPIC
        broker_key = topic_id if version >= 13 else "shop" + TOPIC
        first, template = (produce(version, key, records, n) for n in (10, 11))
        reply = answer(version, broker_key, 10)
    # the rest by their correlation ids (after the size, api key and version)
    requests = [template[:8] + struct.pack(">i", 10 + i) + template[12:]
                for i in range(1, rounds)]
    answers = [reply[:4] + struct.pack(">i", 10 + i) + reply[8:] for i in range(1, rounds)]
    client.dataReceived(first)  # opens the broker connection
    proto, upstream = brokers[0]
    proto.dataReceived(reply)
    transport.clear()
    upstream.clear()
    reads = shaped(requests, shape)
    owed = iter(answers)
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    for read in reads:
        client.dataReceived(read)
        drain()
        proto.dataReceived(b"".join(next(owed) for _ in range(len(
            client.sequencer.pending))))
        drain()
        if len(upstream.io.getvalue()) > 1 << 24:
            upstream.clear()
            transport.clear()
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.disable()
    if client.closed or client.sequencer.pending or rounds > 1 and not (
            transport.value() or isinstance(transport, SocketTransport)):
        raise SystemExit("not every request was answered: the bench is broken")
    return elapsed / max(rounds - 1, 1) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--socket", action="store_true")
    parser.add_argument("--shape", choices=("one", "three", "cut"), default="one")
    parser.add_argument("--version", type=int, choices=(9, 13), action="append",
                        help="Produce version (default: 9 and 13)")
    parser.add_argument("--acls", choices=("off", "on"), action="append",
                        help="the virtual cluster's ACLs (default: off and on)")
    parser.add_argument("--fetch", action="store_true",
                        help="a consumer's Fetch v17 and its answer (no records) "
                             "instead of Produce")
    args = parser.parse_args()
    versions = ("fetch",) if args.fetch else args.version or (9, 13)
    if args.socket:
        plain_sockets()
    records = batch()
    if args.profile:
        import cProfile
        import pstats
        for version in versions:
            profiler = cProfile.Profile()
            run(version, False, args.rounds, records, profiler, args.shape)
            stats = pstats.Stats(profiler)
            print(f"{name(version)}: {stats.total_calls / (args.rounds - 1):.0f} "
                  "Python calls per request and answer")
            stats.sort_stats("tottime").print_stats(40)
        return
    print("| request | ACLs | µs per request and answer (best of "
          f"{args.runs} x {args.rounds}) |\n|---|---|---:|")
    for version in versions:
        for acls in [a == "on" for a in args.acls or ("off", "on")]:
            best = min(run(version, acls, args.rounds, records, shape=args.shape)
                       for _ in range(args.runs))
            print(f"| {name(version)} | {'on' if acls else 'off'} | {best:.1f} |")


def name(version):
    return "Fetch v17" if version == "fetch" else f"Produce v{version}"


if __name__ == "__main__":
    main()
