#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of the gateway's Kafka port.

Each input is read as a script of steps played against one tenant-mode
``ClientConnection`` on in-memory transports (a ``StringTransport``, a
``MemoryReactorClock``, a fake broker behind an injected endpoint factory):
raw chunks, frames built from Kafka's own schemas with fuzzer-chosen fields
and headers (wrong versions, bad tagged fields, lying size prefixes,
truncations), logins good and bad, pre-authentication floods, broker answers,
clock jumps.  The bytes of every step reach ``dataReceived`` cut at
fuzzer-chosen points.

A failure is any exception out of the gateway, any logged failure (a
traceback in the log), the frame decoder holding more than one frame's limit,
a request other than ApiVersions reaching the broker before authentication,
or bytes moving after the gateway closed the connection.

Usage (any libFuzzer flag is passed on; corpus directories too)::

    .venv/bin/python tests/fuzz_gateway.py -runs=5000
    .venv/bin/python tests/fuzz_gateway.py -max_total_time=600

The fuzzer runs in a child process (libFuzzer ends it with ``exit()``, which
skips Python's own exit handlers), so this process can always print the
closing line: ``fuzz: N inputs, peak decoder buffer B bytes, peak RSS M MB``.
"""

import dataclasses
import mmap
import os
import resource
import struct
import subprocess
import sys
import tempfile
import types
import typing
import uuid

STATS_ENV = "VKAFKA_FUZZ_STATS"
_STATS = struct.Struct("<qqqq")  # inputs, peak client buffer, peak broker buffer, peak pending

MAX_FRAME = 64 * 1024
"""The gateway's frame limit here: small, so the fuzzer can reach it."""
UNAUTHENTICATED_FRAME = 4 * 1024
MAX_STEPS = 40
MAX_FED = 2 * 1024 * 1024
"""Bytes one input may feed in all (floods multiply): keeps every input quick."""
SECRET = "f" * 32
START = 1_000_000.0
PORTS = (6969, 6970, 6971)
BROKERS = [(1, "kafka1", 9092), (2, "kafka2", 9093), (3, "kafka3", 9094)]

ID_LONDON = uuid.UUID(int=1)
ID_PARIS = uuid.UUID(int=2)
ID_SHARED = uuid.UUID(int=3)
UUIDS = (uuid.UUID(int=0), ID_LONDON, ID_PARIS, ID_SHARED, uuid.UUID(int=99))
WORDS = ("t", "a", "shared", "londont", "parist", "london", "paris", "physical.shared",
         "", ".", "..", "__consumer_offsets", "_vkafka_state", "bad name!", "t*",
         ".*", "london.*", "paris.*", "g", "tx", "ü", "a" * 249, "kafka1",
         "PLAIN", "SCRAM-SHA-512", "!vkafka-refused")
ERRORS = (0, 0, 0, 3, 5, 7, 15, 36, 41, 58, 100)
INTS = (0, 1, -1, 2, 3, 9092, 6969, 2**15 - 1, -(2**15), 2**31 - 1, -(2**31))


def _bootstrap():
    """Import the gateway under atheris's instrumentation (coverage feedback)."""
    import importlib

    import atheris
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with atheris.instrument_imports(include=["vkafka"]):
        for name in ("vkafka.proxy.gateway", "vkafka.tenancy.rules",
                     "vkafka.auth.tokens", "vkafka.tenancy.mode",
                     "vkafka.tenancy.vclusters"):
            importlib.import_module(name)
    return atheris


# ---- values and Kafka wire encodings, driven by the fuzzer's bytes ----------

def uvarint(value):
    # imported late: vkafka must first be imported under atheris's instrumentation
    from vkafka.protocol.headers import write_uvarint
    return write_uvarint(value)


class Writer:
    """Writes schema-shaped bytes for a kio entity class, values from the fuzzer.

    Our own walk over kio's dataclasses (not kio's writer): the fuzzer must be
    able to pick any value, including ones kio's types would refuse.
    """

    def __init__(self, fdp):
        self.fdp = fdp

    def pick(self, values):
        return values[self.fdp.ConsumeIntInRange(0, len(values) - 1)]

    def integer(self, fmt, bits):
        if self.fdp.ConsumeBool():
            value = self.pick(INTS)
        else:
            value = self.fdp.ConsumeInt(bits // 8)
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        if fmt.isupper():
            low, high = 0, 2 ** bits - 1
        return struct.pack(">" + fmt, min(max(value, low), high))

    def string(self):
        """Mostly names that mean something here; sometimes any text or bytes."""
        choice = self.fdp.ConsumeIntInRange(0, 15)
        if choice == 0:
            return self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 40))
        if choice == 1:
            return self.fdp.ConsumeUnicodeNoSurrogates(
                self.fdp.ConsumeIntInRange(0, 40)).encode()
        return self.pick(WORDS).encode()

    def length(self, n, flexible, wide):
        """A length prefix: compact varint (flexible) or int16/int32."""
        if flexible:
            return uvarint(n + 1)
        return struct.pack(">i" if wide else ">h", n)

    def primitive(self, kind, flexible, nullable):
        if kind == "bool":
            return b"\x01" if self.fdp.ConsumeBool() else b"\x00"
        if kind == "int8":
            return self.integer("b", 8)
        if kind == "error_code" and self.fdp.ConsumeIntInRange(0, 7):
            return struct.pack(">h", self.pick(ERRORS))
        if kind == "datetime_i64" and self.fdp.ConsumeIntInRange(0, 7):
            return struct.pack(">q", self.fdp.ConsumeIntInRange(0, 2**40))
        if kind in ("int16", "error_code"):
            return self.integer("h", 16)
        if kind == "uint16":
            return self.integer("H", 16)
        if kind in ("int32", "timedelta_i32"):
            return self.integer("i", 32)
        if kind in ("int64", "timedelta_i64", "datetime_i64", "float64"):
            return self.integer("q", 64)
        if kind == "uuid":
            return self.pick(UUIDS).bytes
        if kind in ("string", "bytes", "records"):
            if nullable and not self.fdp.ConsumeIntInRange(0, 7):
                return b"\x00" if flexible else struct.pack(
                    ">h" if kind == "string" else ">i", -1)
            raw = self.string() if kind == "string" else self.fdp.ConsumeBytes(
                self.fdp.ConsumeIntInRange(0, 64))
            return self.length(len(raw), flexible, kind != "string") + raw
        raise ValueError(f"no writer for kafka type {kind!r}")

    def field(self, field, flexible, depth):
        shape = field.type
        nullable = False
        if typing.get_origin(shape) in (types.UnionType, typing.Union):
            shape = next(a for a in typing.get_args(shape) if a is not type(None))
            nullable = True
        if typing.get_origin(shape) is tuple:
            inner = typing.get_args(shape)[0]
            if nullable and not self.fdp.ConsumeIntInRange(0, 7):
                return b"\x00" if flexible else struct.pack(">i", -1)
            count = self.fdp.ConsumeIntInRange(0, 3 if depth < 3 else 0)
            out = [self.length(count, flexible, True)]
            for _ in range(count):
                if dataclasses.is_dataclass(inner):
                    out.append(self.entity(inner, depth + 1))
                else:
                    out.append(self.primitive(field.metadata["kafka_type"], flexible,
                                              False))
            return b"".join(out)
        if dataclasses.is_dataclass(shape):
            if nullable:  # KIP-893 nullable struct: an int8 marker first
                if not self.fdp.ConsumeIntInRange(0, 3):
                    return b"\xff"
                return b"\x01" + self.entity(shape, depth + 1)
            return self.entity(shape, depth + 1)
        return self.primitive(field.metadata["kafka_type"], flexible, nullable)

    def entity(self, cls, depth=0):
        flexible = cls.__flexible__
        out, tagged = [], []
        for field in dataclasses.fields(cls):
            if "tag" in field.metadata:
                tagged.append(field)
            else:
                out.append(self.field(field, flexible, depth))
        if flexible:
            out.append(self.tagged_fields(
                [(f.metadata["tag"], self.field(f, True, depth)) for f in tagged
                 if self.fdp.ConsumeBool()]))
        return b"".join(out)

    def tagged_fields(self, fields=()):
        """A tagged-field section; sometimes an unknown tag, or a size that lies."""
        fields = list(fields)
        if not self.fdp.ConsumeIntInRange(0, 7):
            fields.append((self.fdp.ConsumeIntInRange(0, 2**20),
                           self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 16))))
        out = [uvarint(len(fields) + self.fdp.ConsumeIntInRange(0, 1) * (
            not self.fdp.ConsumeIntInRange(0, 15)))]
        for tag, data in fields:
            size = len(data)
            if not self.fdp.ConsumeIntInRange(0, 15):
                size = self.fdp.ConsumeIntInRange(0, 2**31)
            out += [uvarint(tag), uvarint(size), data]
        return b"".join(out)


def kio_would_abort(pending, payload):
    """True if decoding this response would hit kio's huge-array abort.

    ``vkafka.protocol.lengths`` guards what clients send; brokers are trusted
    (and their big responses are hot), so a broker's answer is not guarded:
    the harness sends no broker answer that would stop the process.
    """
    from kio.static.constants import EntityType
    from vkafka.protocol import lengths
    from vkafka.protocol.headers import HeaderError, payload_class, response_header_length

    class Huge(Exception):
        pass

    class Finder(lengths._Walk):
        def count(self, n):
            if n >= 2**32 - 1:
                raise Huge()
            return super().count(n)

    for version in {pending.api_version, 0 if pending.api_key == 18 else None} - {None}:
        cls = payload_class(pending.api_key, version, EntityType.response)
        try:
            offset = response_header_length(payload, pending.api_key, version)
            Finder(payload, offset).entity(cls)
        except Huge:
            return True
        except (HeaderError, lengths.LengthError, struct.error, TypeError):
            pass
    return False


# ---- the world one input plays in -------------------------------------------

def broker_api_versions():
    """What the gateway's refresh learns from ApiVersions: every key the codec
    has, at every version (the rule table cuts it down)."""
    import datetime

    from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
    from kio.static.primitive import i16, i32Timedelta
    from vkafka.protocol.headers import codec_versions
    from kio.schema.index import api_key_map
    keys = []
    for key in sorted(api_key_map):
        try:
            low, high = codec_versions(key)
        except Exception:
            continue
        keys.append(ApiVersion(api_key=i16(key), min_version=i16(low),
                               max_version=i16(high)))
    from kio.schema.errors import ErrorCode
    return ApiVersionsResponse(error_code=ErrorCode.none, api_keys=tuple(keys),
                               throttle_time=i32Timedelta.parse(datetime.timedelta(0)))


class FakeEndpoint:
    """Connects at once to a StringTransport: the broker side of the splice."""

    def __init__(self, world):
        self.world = world

    def connect(self, factory):
        from twisted.internet import defer
        from twisted.internet.testing import StringTransport
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        self.world.broker, self.world.broker_transport = proto, transport
        proto.makeConnection(transport)
        return defer.succeed(proto)


class Invariant(AssertionError):
    """The gateway broke a promise (not an exception it raised itself)."""


class Stats:
    """Counters shared with the parent process through a small mapped file."""

    def __init__(self, path):
        self.inputs = self.client_buffer = self.broker_buffer = self.pending = 0
        self._map = None
        if path:
            with open(path, "r+b") as f:
                self._map = mmap.mmap(f.fileno(), _STATS.size)

    def publish(self):
        if self._map is not None:
            _STATS.pack_into(self._map, 0, self.inputs, self.client_buffer,
                             self.broker_buffer, self.pending)


class Harness:
    """Builds a fresh gateway per input and plays the input's steps on it."""

    def __init__(self, stats, begin_logging=True):
        """*begin_logging* False: the caller adds ``observe`` as a log observer
        (a test in a process whose logging is already set up)."""
        from twisted.logger import globalLogBeginner
        from vkafka.auth.tokens import TokenAuthority
        from vkafka.tenancy.rules import tenant_rules
        self.stats = stats
        self.rules = tenant_rules()
        self.keys = sorted(self.rules) + [-1, 2, 4, 75, 1000]
        self.failures = []
        if begin_logging:
            globalLogBeginner.beginLoggingTo([self.observe], redirectStandardIO=False)
        issuer = TokenAuthority(SECRET, lambda: START)
        self.tokens = {}
        for vcluster in ("london", "paris"):
            for lifetime in (5, 60, 600):
                self.tokens[vcluster, lifetime] = issuer.issue(vcluster, "sa", lifetime)
        self.steps = [self.raw, self.raw_frame, self.request, self.request,
                      self.request, self.login, self.size_prefix, self.flood,
                      self.answer, self.answer, self.clock, self.disconnect]

    def observe(self, event):
        """A traceback in the log is a failure even if nothing raised."""
        if event.get("log_failure") is not None:
            self.failures.append(event)

    # one input

    def __call__(self, data):
        import atheris
        fdp = atheris.FuzzedDataProvider(data)
        self.setup(fdp)
        steps = 0
        while fdp.remaining_bytes() and steps < MAX_STEPS and self.fed < MAX_FED:
            steps += 1
            self.play(self.steps[fdp.ConsumeIntInRange(0, len(self.steps) - 1)], fdp)
        self.play(self.disconnect, fdp)
        self.stats.inputs += 1
        self.stats.publish()

    def setup(self, fdp):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import MemoryReactorClock, StringTransport
        from vkafka.auth.tokens import TokenAuthority
        from vkafka.proxy.gateway import Gateway
        from vkafka.proxy.topology import Topology
        from vkafka.tenancy.mode import Tenancy
        from vkafka.tenancy.vclusters import VirtualClusters
        self.reactor = MemoryReactorClock()
        self.reactor.advance(START)
        vclusters = VirtualClusters()
        vclusters.define("london")
        vclusters.define("paris")
        vclusters.namespace("london").set_alias(
            "shared", "physical.shared", read_only=fdp.ConsumeBool())
        topology = Topology([("kafka1", 9092)], "gw", PORTS[0], len(PORTS), 1)
        topology.learn(BROKERS)
        topology.topic_ids.update({ID_LONDON: "londont", ID_PARIS: "parist",
                                   ID_SHARED: "physical.shared"})
        if fdp.ConsumeBool():
            topology.learn_listing({"londont", "londonu", "parist", "physical.shared"},
                                   START)
        if fdp.ConsumeIntInRange(0, 7):  # else: the brokers' versions not learnt yet
            topology.api_versions = broker_api_versions()
        self.gateway = Gateway(
            self.reactor, topology, self.rules,
            endpoint_factory=lambda reactor, host, port: FakeEndpoint(self),
            tenancy=Tenancy(TokenAuthority(SECRET, self.reactor.seconds), vclusters),
            max_frame_size=MAX_FRAME, unauthenticated_frame_size=UNAUTHENTICATED_FRAME)
        self.broker = self.broker_transport = None
        self.fed = self.largest_chunk = 0
        port = PORTS[fdp.ConsumeIntInRange(0, len(PORTS) - 1)]
        address = IPv4Address("TCP", "192.0.2.7", 40000)
        self.client = self.gateway.factory_for_port(port).buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        self.client.makeConnection(self.transport)
        self.lost = False

    def play(self, step, fdp):
        """Run one step, then check every invariant."""
        from vkafka.protocol.framing import FrameDecoder
        closed_before = self.client.closed
        step(fdp)
        if self.failures:
            event, self.failures[:] = self.failures[0], []
            raise Invariant("logged failure: " + event["log_failure"].getTraceback())
        # Open, a decoder holds at most one frame in the making.  A connection
        # closed on bad framing may keep the one chunk it refused until freed.
        if self.broker is not None and self.client.claims is None:
            raise Invariant("a broker connection was opened before authentication")
        client = self.client.decoder
        broker = self.broker.decoder if self.broker is not None else None
        slack = self.largest_chunk if self.client.closed else 0
        if client.buffered > client.max_frame_size + 4 + slack:
            raise Invariant(f"client decoder holds {client.buffered} bytes "
                            f"(limit {client.max_frame_size})")
        if broker is not None and broker.buffered > broker.max_frame_size + 4 + slack:
            raise Invariant(f"broker decoder holds {broker.buffered} bytes")
        stats = self.stats
        if not self.client.closed:
            stats.client_buffer = max(stats.client_buffer, client.buffered)
            if broker is not None:
                stats.broker_buffer = max(stats.broker_buffer, broker.buffered)
        stats.pending = max(stats.pending, len(self.client.sequencer))
        sent = b""
        if self.broker_transport is not None:
            sent = self.broker_transport.value()
            self.broker_transport.clear()
        answered = self.transport.value()
        self.transport.clear()
        if closed_before and (sent or answered):
            raise Invariant(f"{len(sent)} bytes to the broker and {len(answered)} "
                            "to the client after the connection was closed")
        if sent and self.client.claims is None:
            for frame in FrameDecoder(2**31 - 1).feed(sent):
                api_key = struct.unpack_from(">h", frame)[0]
                if api_key != 18:
                    raise Invariant(f"API {api_key} reached the broker before "
                                    "authentication")

    def feed(self, fdp, data, protocol=None):
        """Deliver *data* in up to four chunks cut at fuzzer-chosen points.

        Like a reactor, stop delivering once the receiving side's transport
        is closing: Twisted stops reading a connection it is closing.
        """
        protocol = protocol or self.client
        cuts = sorted(fdp.ConsumeIntInRange(0, len(data))
                      for _ in range(fdp.ConsumeIntInRange(0, 3)))
        self.fed += len(data)
        start = 0
        for cut in cuts + [len(data)]:
            if self.lost or protocol.transport.disconnecting:
                return
            if cut > start:
                self.largest_chunk = max(self.largest_chunk, cut - start)
                protocol.dataReceived(data[start:cut])
            start = cut

    # the steps

    def raw(self, fdp):
        self.feed(fdp, fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64)))

    def raw_frame(self, fdp):
        from vkafka.protocol.framing import frame
        self.feed(fdp, frame(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))))

    def header(self, w, api_key, version, flexible):
        fdp = w.fdp
        out = struct.pack(">hhi", api_key, version, fdp.ConsumeIntInRange(-2, 2**31 - 1))
        choice = fdp.ConsumeIntInRange(0, 7)
        if choice == 0:
            out += struct.pack(">h", -1)
        elif choice == 1:  # a client id longer than the frame
            out += struct.pack(">h", fdp.ConsumeIntInRange(1, 2**15 - 1))
        else:
            client_id = w.string()
            out += struct.pack(">h", len(client_id)) + client_id
        if flexible:
            out += w.tagged_fields()
        return out

    def build_request(self, fdp):
        """A request frame: schema-shaped body for a chosen key and version."""
        from kio.static.constants import EntityType
        from vkafka.protocol.framing import frame
        from vkafka.protocol.headers import payload_class
        w = Writer(fdp)
        api_key = w.pick(self.keys)
        rule = self.rules.get(api_key)
        if rule is not None and fdp.ConsumeIntInRange(0, 7):
            version = fdp.ConsumeIntInRange(rule.min_version - 1, rule.max_version + 1)
        else:
            version = fdp.ConsumeIntInRange(-1, 20)
        cls = payload_class(api_key, version, EntityType.request)
        flexible = cls.__flexible__ if cls is not None else fdp.ConsumeBool()
        body = w.entity(cls) if cls is not None else fdp.ConsumeBytes(
            fdp.ConsumeIntInRange(0, 64))
        return frame(self.mutate(fdp, self.header(w, api_key, version, flexible) + body))

    def mutate(self, fdp, payload):
        """Mostly intact; else truncated, a byte changed, bytes added, or a lying size."""
        choice = fdp.ConsumeIntInRange(0, 11)
        at = fdp.ConsumeIntInRange(0, len(payload))
        if choice == 0:
            return payload[:at]
        if choice == 1 and at < len(payload):
            return payload[:at] + bytes([fdp.ConsumeIntInRange(0, 255)]) + payload[at + 1:]
        if choice == 2:
            return payload[:at] + fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16)) + \
                payload[at:]
        return payload

    def request(self, fdp):
        data = self.build_request(fdp)
        if not fdp.ConsumeIntInRange(0, 15):  # the size prefix lies
            data = struct.pack(">i", fdp.ConsumeIntInRange(-1, MAX_FRAME + 8)) + data[4:]
        self.feed(fdp, data)

    def login(self, fdp):
        """SaslHandshake then a token: valid, expired soon, another tenant's, or junk."""
        from vkafka.protocol.framing import frame
        w = Writer(fdp)
        version = fdp.ConsumeIntInRange(0, 1)
        mechanism = b"PLAIN" if fdp.ConsumeIntInRange(0, 7) else w.string()
        handshake = self.header(w, 17, version, False) + struct.pack(
            ">h", len(mechanism)) + mechanism
        choice = fdp.ConsumeIntInRange(0, 5)
        if choice < 4:
            token = self.tokens[("london", "paris")[choice % 2], w.pick((5, 60, 600))]
        else:
            token = w.string().decode("utf-8", "replace")
        user = w.pick(("sa", "sa", "other", ""))
        auth_bytes = b"\x00" + user.encode() + b"\x00" + token.encode()
        if version == 0:
            data = frame(handshake) + frame(auth_bytes)
        else:
            auth_version = fdp.ConsumeIntInRange(0, 2)
            flexible = auth_version == 2
            body = w.length(len(auth_bytes), flexible, True) + auth_bytes
            if flexible:
                body += w.tagged_fields()
            data = frame(handshake) + frame(
                self.header(w, 36, auth_version, flexible) + body)
        self.feed(fdp, data)

    def size_prefix(self, fdp):
        """A size prefix alone, often past the limit or negative, then a few bytes."""
        size = fdp.PickValueInList([-1, -(2**31), UNAUTHENTICATED_FRAME + 1,
                                    MAX_FRAME, MAX_FRAME + 1, 2**31 - 1, 0])
        self.feed(fdp, struct.pack(">i", size) + fdp.ConsumeBytes(
            fdp.ConsumeIntInRange(0, 8)))

    def flood(self, fdp):
        """One request repeated: a client pipelining far ahead of any answer."""
        data = self.build_request(fdp)
        count = fdp.ConsumeIntInRange(1, 500)
        count = max(1, min(count, (MAX_FED - self.fed) // max(len(data), 1)))
        self.feed(fdp, data * count)

    def answer(self, fdp):
        """The broker answers the oldest forwarded request (or something else)."""
        if self.broker is None:
            return  # none is open before the first request after authentication
        from kio.static.constants import EntityType
        from vkafka.protocol.framing import frame
        from vkafka.protocol.headers import payload_class, is_flexible
        waiting = [p for p in self.client.sequencer.pending if p.local is None]
        w = Writer(fdp)
        if waiting and fdp.ConsumeIntInRange(0, 7):
            head = waiting[0]
            api_key, version, correlation_id = (head.api_key, head.api_version,
                                                head.correlation_id)
        else:
            api_key, version = w.pick(self.keys), fdp.ConsumeIntInRange(0, 20)
            correlation_id = fdp.ConsumeIntInRange(-1, 100)
        cls = payload_class(api_key, version, EntityType.response)
        out = struct.pack(">i", correlation_id)
        if cls is None:
            body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        else:
            if api_key != 18 and is_flexible(api_key, version, EntityType.response):
                out += w.tagged_fields()
            body = w.entity(cls)
        payload = self.mutate(fdp, out + body)
        if waiting and kio_would_abort(waiting[0], payload):
            return
        self.feed(fdp, frame(payload), self.broker)

    def clock(self, fdp):
        self.reactor.advance(fdp.PickValueInList([0, 0.5, 4.9, 5.1, 9.9, 10.1, 61,
                                                  599, 601, 3600]))

    def disconnect(self, fdp):
        """The client's connection ends (always, as an input's last step)."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure
        if not self.lost:
            self.lost = True
            self.client.connectionLost(Failure(ConnectionDone()))
            if self.broker_transport is not None:
                self.broker.connectionLost(Failure(ConnectionDone()))


# ---- the two processes ------------------------------------------------------

def fuzz(argv):
    """The child: set up atheris and fuzz until libFuzzer stops (it exits)."""
    atheris = _bootstrap()
    harness = Harness(Stats(os.environ.get(STATS_ENV)))
    atheris.Setup([sys.argv[0]] + argv, harness)
    atheris.Fuzz()


def main(argv=None):
    """The parent: run the fuzzer in a child, then print the closing line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = {"-timeout": "30",  # one input that slow is a denial of service
                "-len_control": "0"}  # long inputs at once: each is a whole script
    argv += [f"{flag}={value}" for flag, value in defaults.items()
             if not any(a.startswith(flag + "=") for a in argv)]
    with tempfile.NamedTemporaryFile(prefix="vkafka-fuzz-") as f:
        f.write(b"\x00" * _STATS.size)
        f.flush()
        env = dict(os.environ, **{STATS_ENV: f.name})
        code = subprocess.call([sys.executable, os.path.abspath(__file__)] + argv,
                               env=env)
        f.seek(0)
        inputs, client_buffer, broker_buffer, pending = _STATS.unpack(
            f.read(_STATS.size))
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"fuzz: {inputs} inputs, peak decoder buffer {client_buffer} bytes "
          f"(broker side {broker_buffer}), peak pending {pending}, "
          f"peak RSS {rss:.0f} MB, exit {code}", flush=True)
    return code


if __name__ == "__main__":
    if os.environ.get(STATS_ENV):
        fuzz(sys.argv[1:])
    else:
        sys.exit(main())
