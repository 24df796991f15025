"""Every request the rule table takes, and its answer, cut at every byte.

A deterministic sweep beside the fuzzer (tests/fuzz_gateway.py, whose harness
and schema-shaped writer it reuses): for each API and version a tenant may
send, one request built from Kafka's schema is fed to an authenticated
tenant connection whole, then cut at each byte; the broker's answer to a
forwarded request is cut the same way; the requests are poked (a byte set
to 0x00 or 0xff) with the virtual cluster's ACLs on and concentrated topics
mapped, so the rights and concentration layers meet them too; and each is
sent whole before login.  Each must be forwarded, answered or refused with
the connection closed: never an exception out of the gateway, a traceback
in its log, or bytes after the close (the harness's invariants).  The
fuzzer's random inputs missed a Produce v13 cut inside a topic id
(ValueError from uuid.UUID escaped the tenant filter) and a null topic name
reaching the ACL check (TypeError); a sweep does not miss them.
"""

import random
import struct

from kio.static.constants import EntityType
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from vkafka.auth.acls import Acl
from vkafka.auth.tokens import TokenAuthority
from vkafka.protocol.framing import frame
from vkafka.protocol.headers import is_flexible, payload_class
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore

from . import fuzz_gateway
from .kafka_messages import metadata_response, response_frame

SEED = 14


class Choices:
    """The fuzzer's data provider, drawing from a seeded generator instead."""

    def __init__(self, seed):
        self.random = random.Random(seed)

    def ConsumeIntInRange(self, low, high):
        return self.random.randint(low, high)

    def ConsumeBool(self):
        return self.random.random() < 0.5

    def ConsumeInt(self, size):
        return self.random.getrandbits(8 * size) - (1 << (8 * size - 1))

    def ConsumeBytes(self, size):
        return self.random.randbytes(size)

    def ConsumeUnicodeNoSurrogates(self, size):
        return "".join(chr(self.random.randint(32, 0x2000)) for _ in range(size))


class Settled(Choices):
    """The harness's set-up with every choice at its top: the topic listing
    and the brokers' versions learnt."""

    def ConsumeIntInRange(self, low, high):
        return high

    def ConsumeBool(self):
        return True


def header(api_key, version, flexible):
    out = struct.pack(">hhih", api_key, version, 7, 2) + b"cl"
    return out + (b"\x00" if flexible else b"")


def cuts(payload, start):
    """Every cut in the first 160 bytes, then every 13th."""
    return [c for c in range(start, len(payload)) if c < 160 or c % 13 == 0]


class TruncationSweep(unittest.TestCase):
    def setUp(self):
        self.harness = fuzz_gateway.Harness(fuzz_gateway.Stats(None), begin_logging=False)
        globalLogPublisher.addObserver(self.harness.observe)
        self.addCleanup(globalLogPublisher.removeObserver, self.harness.observe)

    def connect(self, guarded=False):
        """A fresh tenant connection of "london", logged in, its broker open;
        *guarded*: with the virtual cluster's ACLs on (some allowed) and two
        concentrated topics, "t" and "a", so the rights and concentration
        layers see every request too."""
        h = self.harness
        h.failures[:] = []
        h.setup(Settled(0))
        if guarded:
            self.guard(h)
        auth = b"\x00sa\x00" + h.tokens["london", 600].encode()
        handshake = header(17, 1, False) + struct.pack(">h", 5) + b"PLAIN"
        login = header(36, 1, False) + struct.pack(">i", len(auth)) + auth
        metadata = header(3, 12, True) + b"\x00\x01\x00\x00"
        h.client.dataReceived(frame(handshake) + frame(login) + frame(metadata))
        self.assertIsNotNone(h.client.claims, "the login failed")
        self.assertIsNotNone(h.broker, "no broker connection after a Metadata")
        h.broker.dataReceived(response_frame(7, metadata_response(
            fuzz_gateway.BROKERS)))
        self.assertEqual(len(h.client.sequencer), 0, "the Metadata went unanswered")
        h.transport.clear()
        h.broker_transport.clear()
        return h

    def guard(self, h):
        """ACLs and concentrated topics for "london"; the client connection
        made anew, so that it sees them."""
        vclusters = h.gateway.tenancy.vclusters
        state = GatewayState(MemoryStore(), TokenAuthority(fuzz_gateway.SECRET,
                                                           h.reactor.seconds),
                             vclusters, h.reactor.seconds)
        h.gateway.state = state
        state.ensure_vcluster("london")
        state.put_rights("london", True)
        state.add_acls("london", [
            Acl.checked("TOPIC", "PREFIXED", "t", "User:sa", "*", "ALL", "ALLOW"),
            Acl.checked("GROUP", "LITERAL", "g", "User:sa", "*", "ALL", "ALLOW"),
            Acl.checked("TRANSACTIONAL_ID", "LITERAL", "tx", "User:sa", "*", "ALL",
                        "ALLOW")])
        for logical in ("t", "a"):
            vclusters.namespace("london").set_alias(logical, "physical.conc",
                                                    concentrated=True, partitions=3)
        address = IPv4Address("TCP", "192.0.2.7", 40001)
        h.client = h.gateway.factory_for_port(fuzz_gateway.PORTS[0]).buildProtocol(
            address)
        h.transport = StringTransport(peerAddress=address)
        h.client.makeConnection(h.transport)

    def feed(self, payload, what, to_broker=False):
        """Play *payload* on the harness; the invariants' failure, or None."""
        h = self.harness
        try:
            h.play(lambda _: (h.broker if to_broker else h.client).dataReceived(
                frame(payload)), None)
        except Exception as e:
            return f"{what}: {type(e).__name__}: {e}"
        return None

    def requests(self):
        """(api key, version, schema-shaped request payload) of every row."""
        for api_key, rule in sorted(self.harness.rules.items()):
            for version in range(rule.min_version, rule.max_version + 1):
                cls = payload_class(api_key, version, EntityType.request)
                if cls is None:
                    continue
                writer = fuzz_gateway.Writer(Choices(SEED * 1000 + api_key * 31 + version))
                yield api_key, version, header(api_key, version, cls.__flexible__) + \
                    writer.entity(cls)

    def test_requests_cut_at_every_byte(self):
        failures, cases = [], 0
        for api_key, version, payload in self.requests():
            for cut in cuts(payload, 8):
                self.connect()
                cases += 1
                failure = self.feed(payload[:cut], f"API {api_key} v{version} cut "
                                                   f"{cut} of {len(payload)}")
                if failure:
                    failures.append(failure)
        self.assertGreater(cases, 10000)
        self.assertEqual(failures[:5], [], f"{len(failures)} of {cases} cuts failed")

    def test_every_request_before_login(self):
        """Before SASL completes, each API and version, whole: answered by the
        gateway (ApiVersions, the SASL exchange) or refused with the
        connection closed; no broker connection is opened, so nothing
        reaches a broker (the harness's invariants check both)."""
        failures, cases = [], 0
        for api_key, version, payload in self.requests():
            h = self.harness
            h.failures[:] = []
            h.setup(Settled(0))
            cases += 1
            failure = self.feed(payload, f"API {api_key} v{version} before login")
            if failure:
                failures.append(failure)
            elif h.broker is not None:
                failures.append(f"API {api_key} v{version}: a broker connection opened")
            elif api_key not in (17, 18, 36) and not h.client.closed:
                failures.append(f"API {api_key} v{version}: not refused")
        self.assertGreater(cases, 200)
        self.assertEqual(failures[:5], [], f"{len(failures)} of {cases} failed")

    def test_requests_poked_with_acls_and_concentrated_topics(self):
        """Bytes changed (0x00 or 0xff at every other byte, every byte of a
        Produce), with the rights and
        concentration layers on: a Produce naming its topic with a null string
        reached the ACL check as None (TypeError) before."""
        failures, cases = [], 0
        for api_key, version, payload in self.requests():
            for at in cuts(payload, 8)[::1 if api_key == 0 else 2]:
                for byte in (0x00, 0xFF):
                    self.connect(guarded=True)
                    cases += 1
                    poked = payload[:at] + bytes([byte]) + payload[at + 1:]
                    failure = self.feed(poked, f"API {api_key} v{version} byte {at} "
                                               f"of {len(payload)} set to {byte}")
                    if failure:
                        failures.append(failure)
        self.assertGreater(cases, 10000)
        self.assertEqual(failures[:5], [], f"{len(failures)} of {cases} pokes failed")

    def test_answers_cut_at_every_byte(self):
        """With both layers on, so answers to refused requests are cut too
        (a longer sweep of this kind found FindCoordinator v0's answer to a
        refused group rewritten with an error message v0 does not have:
        test_rights.test_refused_coordinator_in_every_version)."""
        failures, cases = [], 0
        for api_key, version, request in self.requests():
            cls = payload_class(api_key, version, EntityType.response)
            if cls is None:
                continue
            writer = fuzz_gateway.Writer(Choices(SEED * 2000 + api_key * 31 + version))
            flexible = api_key != 18 and is_flexible(api_key, version,
                                                     EntityType.response)
            answer = struct.pack(">i", 7) + (b"\x00" if flexible else b"") + \
                writer.entity(cls)
            for cut in cuts(answer, 0):
                h = self.connect(guarded=True)
                h.client.dataReceived(frame(request))
                waiting = [p for p in h.client.sequencer.pending
                           if p.local is None and p.api_key == api_key]
                if h.client.closed or not waiting:
                    break  # refused or answered by the gateway: nothing to cut
                if fuzz_gateway.kio_would_abort(waiting[0], answer[:cut]):
                    continue  # brokers are trusted with array sizes
                cases += 1
                failure = self.feed(answer[:cut], f"answer to API {api_key} v{version} "
                                                  f"cut {cut} of {len(answer)}", True)
                if failure:
                    failures.append(failure)
        self.assertGreater(cases, 5000)
        self.assertEqual(failures[:5], [], f"{len(failures)} of {cases} cuts failed")
