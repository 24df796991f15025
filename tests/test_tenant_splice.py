"""Tenant mode on in-memory transports: SASL, rewriting, expiry, ordering."""

import dataclasses
import datetime
import struct
import uuid

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from vkafka.auth.tokens import TokenAuthority
from vkafka.protocol.codec import decode_request, decode_response
from vkafka.protocol.framing import FrameDecoder, frame
from vkafka.proxy.gateway import Gateway
from vkafka.proxy.topology import Topology
from vkafka.tenancy.mode import Tenancy
from vkafka.tenancy.rules import tenant_rules

from .kafka_messages import (
    find_coordinator_request, find_coordinator_response, metadata_response,
    request_frame, response_frame)
from .test_splice import BROKERS, FakeEndpoint

SECRET = "k" * 32


def broker_sees(frames, vcluster="london"):
    """Size-prefixed request *frames* as the broker gets them from a tenant:
    the client id ``<vcluster>/<the client's>``, the rest as it came."""
    out = []
    for payload in FrameDecoder().feed(frames):
        (length,) = struct.unpack_from(">h", payload, 8)
        end = 10 + max(length, 0)
        client_id = f"{vcluster}/".encode() + bytes(payload[10:end])
        out.append(frame(bytes(payload[:8]) + struct.pack(">h", len(client_id))
                         + client_id + bytes(payload[end:])))
    return b"".join(out)


def handshake(version=1):
    from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
    return request_frame(SaslHandshakeRequest(mechanism="PLAIN"), version, 1)


def authenticate(username, password, correlation_id=2):
    from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
    token = b"\x00" + username.encode() + b"\x00" + password.encode()
    return request_frame(SaslAuthenticateRequest(auth_bytes=token), 2, correlation_id)


def metadata_for(names, correlation_id):
    from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
    return request_frame(MetadataRequest(
        topics=None if names is None else tuple(
            MetadataRequestTopic(topic_id=None, name=n) for n in names),
        allow_auto_topic_creation=True, include_topic_authorized_operations=False),
        12, correlation_id)


class TenantSpliceBase(unittest.TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_000_000)
        self.attempts, self.refused, self.brokers = [], set(), []
        self.authority = TokenAuthority(SECRET, self.reactor.seconds)
        self.topology = Topology([("kafka1", 9092)], "gw", 6969, 3, 1)
        self.topology.learn(BROKERS)
        self.gateway = Gateway(
            self.reactor, self.topology, tenant_rules(),
            endpoint_factory=lambda r, h, p: FakeEndpoint(self, h, p),
            tenancy=Tenancy(self.authority))
        self.client = self.gateway.factory_for_port(6969).buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 5))
        self.client.makeConnection(self.transport)
        self._unconnected = StringTransport()

    @property
    def broker(self):
        """The broker side, once the first request after authentication
        opened it (tenant mode opens none before)."""
        return self.brokers[0][1]

    @property
    def broker_transport(self):
        """What reached the broker (nothing while no connection is open)."""
        return self.brokers[0][2] if self.brokers else self._unconnected

    def responses(self):
        return FrameDecoder().feed(self.transport.value())

    def count_decodes(self):
        """The api keys of the responses the gateway decodes from now on."""
        from vkafka.filters import responses
        seen = []

        def spy(frame, api_key, version):
            seen.append(api_key)
            return decode_response(frame, api_key, version)
        self.patch(responses, "decode_response", spy)
        return seen

    def login(self, vcluster="london", lifetime=600):
        self.client.dataReceived(handshake())
        self.client.dataReceived(authenticate(
            "sa", self.authority.issue(vcluster, "sa", lifetime)))
        _, auth = decode_response(self.responses()[1], 36, 2)
        self.transport.clear()
        return auth


class TenantSpliceTests(TenantSpliceBase):
    def test_successful_login_reports_lifetime(self):
        """SaslAuthenticate succeeds and reports the token's remaining lifetime."""
        auth = self.login(lifetime=600)
        self.assertEqual(auth.error_code, ErrorCode.none)
        self.assertEqual(auth.session_lifetime.total_seconds(), 600)
        self.assertEqual(self.broker_transport.value(), b"")  # SASL never forwarded

    def test_no_broker_connection_before_authentication(self):
        """Tenant mode opens no broker connection for a client that has not
        authenticated: ApiVersions is answered by the gateway (from the brokers'
        answer its refresh learnt, cut to the rule table), SASL too; the first
        request after login opens it and is forwarded."""
        from kio.schema.api_versions.v3.request import ApiVersionsRequest
        from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
        self.topology.api_versions = ApiVersionsResponse(
            error_code=ErrorCode.none, throttle_time=i32Timedelta.parse(
                datetime.timedelta(0)),
            api_keys=(ApiVersion(api_key=i16(3), min_version=i16(0),
                                 max_version=i16(12)),
                      ApiVersion(api_key=i16(49), min_version=i16(0),
                                 max_version=i16(1))))
        self.client.dataReceived(request_frame(ApiVersionsRequest(
            client_software_name="t", client_software_version="1"), 3, 1))
        self.assertEqual(self.attempts, [])
        answer = self.responses()[0]
        self.assertEqual(answer[4:6], b"\x00\x00")  # header v0: no tag buffer
        _, versions = decode_response(answer, 18, 3)
        offered = {a.api_key: (a.min_version, a.max_version) for a in versions.api_keys}
        self.assertEqual(offered[3], (0, 12))
        self.assertNotIn(49, offered)  # AlterClientQuotas: not in the table
        self.assertIn(36, offered)  # SASL: answered by the gateway
        self.transport.clear()
        self.login()
        self.assertEqual(self.attempts, [])
        raw = metadata_for(["t"], 3)
        self.client.dataReceived(raw)
        self.assertEqual(len(self.attempts), 1)
        _, sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertEqual([t.name for t in sent.topics], ["londont"])

    def test_versions_the_brokers_do_not_offer_refused(self):
        """A version the table knows but the brokers do not offer (a raw
        client may send one; a stock client is never offered it) closes the
        connection at the gateway, as one never offered, without reaching a
        broker; once the brokers offer it, it is forwarded."""
        known = versions_known()
        lower = tuple(dataclasses.replace(a, max_version=i16(11)) if a.api_key == 3
                      else a for a in known.api_keys)
        self.topology.api_versions = dataclasses.replace(known, api_keys=lower)
        self.login()
        self.client.dataReceived(metadata_for(["t"], 3))  # v12: past what is offered
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.attempts, [])
        self.assertEqual(self.gateway.offered[3].max_version, 11)
        self.topology.api_versions = known  # learnt again, a broker upgraded
        self.assertEqual(self.gateway.offered[3].max_version,
                         tenant_rules()[3].max_version)

    def test_api_versions_unknown_closes(self):
        """Before the gateway's refresh has learnt the brokers' versions it cannot
        answer ApiVersions truthfully: the connection is closed, not guessed at."""
        from kio.schema.api_versions.v3.request import ApiVersionsRequest
        self.client.dataReceived(request_frame(ApiVersionsRequest(
            client_software_name="t", client_software_version="1"), 3, 1))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.attempts, [])

    def test_connections_per_vcluster_capped(self):
        """Past --max-connections-per-vcluster a login is refused with a SASL
        error naming the limit; a connection that closes frees its place."""
        self.gateway.max_connections_per_vcluster = 1
        self.login()
        other = self.gateway.factory_for_port(6969).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 6))
        other.makeConnection(transport)
        other.dataReceived(handshake())
        other.dataReceived(authenticate("sa", self.authority.issue("london", "sa", 60)))
        _, auth = decode_response(FrameDecoder().feed(transport.value())[1], 36, 2)
        self.assertEqual(auth.error_code, ErrorCode.sasl_authentication_failed)
        self.assertIn("too many connections", auth.error_message)
        self.client.connectionLost(None)
        self.assertEqual(self.gateway.per_vcluster, {})

    def test_decoded_request_size_limited(self):
        """A request the gateway would decode on its event loop is refused past
        --max-decoded-request (Metadata: a quarter of it): closed, not sent."""
        self.login()
        self.gateway.max_decoded_request = 4 * 1000
        names = [f"topic{i:05d}" for i in range(200)]  # ~2.4 KB: over 1,000
        self.client.dataReceived(metadata_for(names, 3))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.broker_transport.value(), b"")

    def test_decoded_response_size_limited(self):
        """An answer the gateway would decode is refused past
        --max-decoded-response as soon as its size prefix arrives: the
        connection closes, nothing of it is buffered or sent on (a small
        DescribeConfigs naming one topic thousands of times gets a huge one).
        A Fetch answer (streamed or sliced, never decoded whole) is not."""
        import struct

        from .test_fastpath import fetch_request
        for api, request in (("metadata", metadata_for(["t"], 3)),
                             ("fetch", request_frame(fetch_request(12, ()), 12, 3))):
            self.setUp()
            self.login()
            self.gateway.max_decoded_response = 1000
            self.client.dataReceived(request)
            self.broker.dataReceived(struct.pack(">ii", 5000, 3) + b"\x00" * 92)
            closing = self.transport.disconnecting
            self.assertEqual(closing, api == "metadata", api)
            if closing:
                self.assertEqual(self.transport.value(), b"")
                self.assertTrue(self.broker_transport.disconnecting)  # read no further

    def test_request_before_authentication_closes(self):
        """Anything but ApiVersions/SASL before authentication closes the connection."""
        self.client.dataReceived(metadata_for(None, 5))
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.broker_transport.value(), b"")

    def test_bad_token_answered_then_closed(self):
        """A bad token gets SASL_AUTHENTICATION_FAILED with the reason, then close."""
        self.client.dataReceived(handshake())
        self.client.dataReceived(authenticate("sa", "garbage"))
        _, auth = decode_response(self.responses()[1], 36, 2)
        self.assertEqual(auth.error_code, ErrorCode.sasl_authentication_failed)
        self.assertIn("malformed", auth.error_message)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.gateway.auth_failures, 1)

    def test_unsupported_mechanism(self):
        """A mechanism other than PLAIN is refused with the list of mechanisms."""
        from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
        self.client.dataReceived(request_frame(
            SaslHandshakeRequest(mechanism="SCRAM-SHA-512"), 1, 1))
        _, answer = decode_response(self.responses()[0], 17, 1)
        self.assertEqual((answer.error_code, answer.mechanisms),
                         (ErrorCode.unsupported_sasl_mechanism, ("PLAIN",)))
        self.assertTrue(self.transport.disconnecting)

    def test_login_waits_for_the_state(self):
        """While the shared state is still loading (a gateway or worker
        starting), an authentication waits: a token revoked in the state must
        not get in meanwhile.  The requests behind it wait too, in order."""
        from twisted.internet import defer
        for version in (1, 0):  # SaslHandshake v1, and v0 with a bare token
            self.setUp()
            loaded = self.gateway.state_loaded = defer.Deferred()
            token = self.authority.issue("london", "sa", 600)
            self.client.dataReceived(handshake(version=version))
            self.client.dataReceived(
                authenticate("sa", token) if version else
                frame(b"\x00sa\x00" + token.encode()))
            self.client.dataReceived(metadata_for(["t"], 3))
            self.assertEqual(len(self.responses()), 1, version)  # the handshake only
            self.assertEqual(self.transport.producerState, "paused")
            self.authority.revocations.revoke("london", "sa",
                                              self.reactor.seconds())  # in the state
            loaded.callback(None)
            self.assertTrue(self.transport.disconnecting, version)  # refused
            self.assertEqual(self.broker_transport.value(), b"")

            self.setUp()
            loaded = self.gateway.state_loaded = defer.Deferred()
            self.client.dataReceived(handshake())
            self.client.dataReceived(authenticate("sa", self.authority.issue(
                "london", "sa", 600)))
            self.client.dataReceived(metadata_for(["t"], 3))
            loaded.callback(None)
            _, auth = decode_response(self.responses()[1], 36, 2)
            self.assertEqual(auth.error_code, ErrorCode.none)
            _, sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
            self.assertEqual(sent.topics[0].name, "londont")  # then the request

    def test_handshake_v0_raw_token(self):
        """SaslHandshake v0 is followed by a bare token, answered by an empty frame."""
        self.client.dataReceived(handshake(version=0))
        token = self.authority.issue("london", "sa", 60)
        self.client.dataReceived(frame(b"\x00sa\x00" + token.encode()))
        self.assertEqual(self.responses()[1], b"")
        self.client.dataReceived(metadata_for(["t"], 3))
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertEqual(request.topics[0].name, "londont")

    def test_names_rewritten_both_ways(self):
        """Metadata asks for londont; the answer says t and hides paris's topic."""
        import uuid
        from dataclasses import replace
        from kio.schema.metadata.v12.response import MetadataResponseTopic
        self.login()
        self.client.dataReceived(metadata_for(None, 3))
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertIsNone(request.topics)
        self.assertFalse(request.allow_auto_topic_creation)
        ids = [uuid.uuid4(), uuid.uuid4()]
        topics = tuple(MetadataResponseTopic(error_code=ErrorCode.none, name=n,
                                             topic_id=i, partitions=())
                       for n, i in zip(["londont", "parist"], ids))
        response = replace(metadata_response(BROKERS), topics=topics)
        self.broker.dataReceived(response_frame(3, response))
        _, answer = decode_response(self.responses()[0], 3, 12)
        self.assertEqual([(t.name, t.topic_id) for t in answer.topics], [("t", ids[0])])
        self.assertNotIn(b"paris", self.transport.value())
        self.assertEqual(self.topology.topic_ids[ids[0]], "londont")

    def test_all_topics_metadata_asks_by_name(self):
        """With a fresh listing, all-topics Metadata asks only for the tenant's topics."""
        self.topology.learn_listing({"londona", "londonb", "parisc"},
                                    self.reactor.seconds())
        self.login()
        self.client.dataReceived(metadata_for(None, 3))
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertEqual([t.name for t in request.topics], ["londona", "londonb"])

    def test_stale_listing_asks_for_all(self):
        """Without a fresh listing the request stays all-topics and refreshes it."""
        self.topology.learn_listing({"londona"}, self.reactor.seconds())
        self.reactor.advance(3)
        self.login()
        self.client.dataReceived(metadata_for(None, 3))
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertIsNone(request.topics)

    def test_invalid_name_becomes_decoy(self):
        """An unmappable name never reaches the broker as anybody's name."""
        self.login()
        self.client.dataReceived(metadata_for(["bad name!"], 3))
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertTrue(request.topics[0].name.startswith("!vkafka-refused"))

    def test_expired_token_closes_connection(self):
        """When the token expires and the client hasn't re-authenticated, close."""
        self.login(lifetime=30)
        self.reactor.advance(29)
        self.assertFalse(self.transport.disconnecting)
        self.reactor.advance(2)
        self.assertTrue(self.transport.disconnected)

    def test_reauthentication_extends_session(self):
        """Re-authenticating (KIP-368) with a fresh token keeps the connection open."""
        self.login(lifetime=30)
        self.reactor.advance(20)
        self.login(lifetime=30)
        self.reactor.advance(20)
        self.assertFalse(self.transport.disconnecting)

    def test_reauthentication_cannot_switch_tenant(self):
        """Re-authenticating into another virtual cluster is refused."""
        self.login("london")
        self.client.dataReceived(handshake())
        self.client.dataReceived(authenticate(
            "sa", self.authority.issue("paris", "sa", 60)))
        _, auth = decode_response(self.responses()[1], 36, 2)
        self.assertEqual(auth.error_code, ErrorCode.sasl_authentication_failed)
        self.assertTrue(self.transport.disconnecting)

    def test_reauthentication_frames_bounded(self):
        """A re-authentication's frames are held to --unauthenticated-frame-size
        as a first login's are (a 60 MB token, parsed and checked on the loop,
        held it for seconds): closed unread, by SaslAuthenticate or by the
        bare token after a v0 handshake; one of the usual size passes."""
        from vkafka.filters import sasl
        parsed, accept = [], sasl.SaslTerminator.accept

        def spy(terminator, raw):
            parsed.append(len(raw))
            return accept(terminator, raw)
        self.patch(sasl.SaslTerminator, "accept", spy)
        self.login()
        self.client.dataReceived(handshake())
        self.client.dataReceived(authenticate("sa", "x" * 20_000, 3))
        self.assertTrue(self.transport.disconnecting)
        self.setUp()
        self.login()
        self.client.dataReceived(handshake(0))
        self.client.dataReceived(frame(b"\x00sa\x00" + b"x" * 20_000))
        self.assertTrue(self.transport.disconnecting)
        self.assertLess(max(parsed), 1000)  # the two logins, not the tokens

    def test_local_answers_wait_their_turn(self):
        """A SASL answer made locally is sent after earlier broker responses."""
        self.login()
        self.client.dataReceived(metadata_for(["t"], 10))
        self.client.dataReceived(handshake())
        self.assertEqual(self.transport.value(), b"")  # waits behind Metadata
        self.broker.dataReceived(response_frame(10, metadata_response(BROKERS)))
        ids = [struct.unpack(">i", f[:4])[0] for f in self.responses()]
        self.assertEqual(ids, [10, 1])


class LimitTests(TenantSpliceBase):
    """Limits against hostile clients (in-memory, no sockets)."""

    def test_unauthenticated_deadline(self):
        """A client that never authenticates is dropped after the timeout."""
        self.reactor.advance(self.gateway.authentication_timeout + 0.1)
        self.assertTrue(self.transport.disconnected)

    def test_authenticated_client_has_no_deadline(self):
        """Authenticating in time cancels the deadline."""
        self.login(lifetime=3600)
        self.reactor.advance(self.gateway.authentication_timeout + 1)
        self.assertFalse(self.transport.disconnecting)

    def test_large_frame_before_authentication(self):
        """Before authentication frames over 16 KiB are refused at the size
        prefix: a thousand connections that never log in hold 16 MB at most."""
        self.client.dataReceived(struct.pack(">i", 16 * 1024 + 1))
        self.assertTrue(self.transport.disconnected)

    def test_connections_per_ip(self):
        """Past the per-address limit, new connections are refused; closing frees one."""
        from twisted.python.failure import Failure
        from twisted.internet.error import ConnectionDone
        self.gateway.max_connections_per_ip = 2
        factory = self.gateway.factory_for_port(6969)
        addr = IPv4Address("TCP", "1.2.3.4", 9)
        first = factory.buildProtocol(addr)
        self.assertIsNotNone(factory.buildProtocol(addr))
        self.assertIsNone(factory.buildProtocol(addr))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "5.6.7.8", 9)))
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(addr))


class ConcentratedDecodeLimitTests(TenantSpliceBase):
    """A Produce reaches the concentration layer by slicing, whatever its size;
    that layer decodes it record by record on the event loop, so it is held
    to --max-decoded-request (plus PRODUCE_FRAMING for the request around a
    producer's max.request.size of batches)."""

    def send_produce(self, *records):
        from kio.schema.produce.v9 import request as m

        from .kafka_messages import request_frame
        self.client.namespace.set_alias("orders", "pool", concentrated=True,
                                        partitions=3)
        self.client.dataReceived(request_frame(m.ProduceRequest(
            transactional_id=None, acks=i16(-1),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=1)),
            topic_data=tuple(m.TopicProduceData(name=name, partition_data=(
                m.PartitionProduceData(index=i32(0), records=batch),))
                for name, batch in records)), 9, 7))

    def test_produce_over_the_decode_limit_answered_too_large(self):
        """Past the limit: each partition of its concentrated topics answered
        MESSAGE_TOO_LARGE with the reason (a Java producer splits its batches
        and sends them again), its records never read, its other topics
        written; the connection stays open."""
        from vkafka.filters.tenant import PRODUCE_FRAMING

        from .kafka_messages import record_batch
        from .test_fastpath import produce_response
        self.gateway.max_decoded_request = 1000
        self.login()
        big = record_batch(2, b"v" * (PRODUCE_FRAMING // 2))
        self.send_produce(("orders", big), ("t", big))
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        decoy, plain = request.topic_data
        self.assertTrue(decoy.name.startswith("!vkafka-refused"), decoy.name)
        self.assertEqual(plain.name, "londont")
        self.assertEqual(plain.partition_data[0].records, big)
        body = produce_response(9, errors=(3,), topics=(decoy.name, "londont"))
        self.broker.dataReceived(frame(struct.pack(">i", 7) + b"\x00" + body))
        _, response = decode_response(self.responses()[0], 0, 9)
        answered = {t.name: t.partition_responses[0] for t in response.responses}
        self.assertEqual(sorted(answered), ["orders", "t"])
        self.assertEqual(answered["orders"].error_code, ErrorCode.message_too_large)
        self.assertIn("over the 66536 bytes the gateway decodes",
                      answered["orders"].error_message)
        self.assertFalse(self.transport.disconnecting)

    def test_produce_within_the_framing_margin_passes(self):
        """A request up to PRODUCE_FRAMING over the limit is rewritten: its
        records tagged for the logical topic, as any other."""
        from .kafka_messages import record_batch
        self.gateway.max_decoded_request = 1000
        self.login()
        self.send_produce(("orders", record_batch(2, b"v" * 30000)))
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertEqual(request.topic_data[0].name, "pool")
        self.assertFalse(self.transport.disconnecting)


class FuzzTests(TenantSpliceBase):
    """Property-based hostile input: arbitrary frame sequences never raise."""

    def test_random_frames_never_raise(self):
        """Any frames, before or after login, end forwarded, answered or closed."""
        from hypothesis import HealthCheck, given, settings, strategies as st

        @settings(max_examples=150, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.booleans(), st.lists(st.binary(max_size=64), max_size=6))
        def check(login, payloads):
            self.setUp()
            if login:
                self.login()
            for payload in payloads:
                self.client.dataReceived(frame(payload))
            self.assertLessEqual(self.client.decoder.buffered, 4 + 64)

        check()

    def test_valid_header_random_body(self):
        """Valid headers of every offered API with random bodies never raise."""
        import random
        rnd = random.Random(11)
        rules = tenant_rules()
        self.login()
        for key, rule in rules.items():
            for version in (rule.min_version, rule.max_version):
                for _ in range(3):
                    self.setUp()
                    self.login()
                    body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(40)))
                    header = struct.pack(">hhih", key, version, 7, 1) + b"x"
                    from vkafka.protocol.headers import is_flexible
                    if is_flexible(key, version):
                        header += b"\x00"
                    self.client.dataReceived(frame(header + body))
                    self.assertTrue(self.transport.disconnected
                                    or self.broker_transport.value()
                                    or self.transport.value())

    def test_heartbeat_v0_has_no_regex(self):
        """ConsumerGroupHeartbeat v0 (no regex field) is rewritten, not crashed on.

        Found by tests/fuzz_gateway.py: the rewrite read a v1-only field.
        """
        from kio.schema.consumer_group_heartbeat.v0.request import (
            ConsumerGroupHeartbeatRequest)
        from kio.static.primitive import i32
        self.login()
        self.client.dataReceived(request_frame(ConsumerGroupHeartbeatRequest(
            group_id="g", member_id="m", member_epoch=i32(0),
            subscribed_topic_names=("t",), topic_partitions=None), 0, 3))
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertEqual((request.group_id, request.subscribed_topic_names),
                         ("londong", ("londont",)))

    def test_heartbeat_subscription_bounded(self):
        """A KIP-848 member subscribing to more than MAX_SUBSCRIBED_NAMES names
        (each kept in the coordinator's heap, existing or not): its group sent
        as the empty id the broker refuses, creating nothing, and the answer
        says why (INVALID_REQUEST); at the bound, forwarded."""
        from kio.schema.consumer_group_heartbeat.v0 import request as rq
        from kio.schema.consumer_group_heartbeat.v0 import response as rs
        from kio.static.primitive import i32
        from vkafka.tenancy.consumer_protocol import MAX_SUBSCRIBED_NAMES
        self.login()
        for count, correlation in ((MAX_SUBSCRIBED_NAMES, 3), (MAX_SUBSCRIBED_NAMES + 1, 4)):
            self.client.dataReceived(request_frame(rq.ConsumerGroupHeartbeatRequest(
                group_id="g", member_id="m", member_epoch=i32(0),
                subscribed_topic_names=tuple(f"t{i}" for i in range(count)),
                topic_partitions=None), 0, correlation))
        first, second = FrameDecoder().feed(self.broker_transport.value())
        self.assertEqual(len(decode_request(first)[1].subscribed_topic_names),
                         MAX_SUBSCRIBED_NAMES)
        _, refused = decode_request(second)
        self.assertEqual((refused.group_id, refused.subscribed_topic_names), ("", ()))
        for correlation, code in ((3, ErrorCode.none), (4, ErrorCode.invalid_group_id)):
            self.broker.dataReceived(response_frame(correlation, rs.ConsumerGroupHeartbeatResponse(
                throttle_time=datetime.timedelta(0), error_code=code, error_message=None,
                member_id="m", member_epoch=i32(1),
                heartbeat_interval=datetime.timedelta(seconds=5), assignment=None)))
        answers = [decode_response(f, 68, 0)[1] for f in self.responses()]
        self.assertEqual([(a.error_code, a.error_message) for a in answers],
                         [(ErrorCode.none, None),
                          (ErrorCode.invalid_request,
                           f"a subscription to {MAX_SUBSCRIBED_NAMES + 1} topic names: "
                           f"at most {MAX_SUBSCRIBED_NAMES} (subscribe by pattern)")])

    def test_heartbeat_member_state_bounded(self):
        """KIP-848 members count their subscriptions as classic members do
        (tenancy/members.py): one past the virtual cluster's budget is sent
        as the empty group with nothing subscribed and answered
        POLICY_VIOLATION saying why; a member that left frees its bytes."""
        from kio.schema.consumer_group_heartbeat.v0 import request as rq
        from kio.schema.consumer_group_heartbeat.v0 import response as rs
        from kio.static.primitive import i32
        from vkafka.tenancy.members import MEMBER_OVERHEAD
        from vkafka.state import policy
        each = MEMBER_OVERHEAD + 100 * len("londont0000")  # the names the broker gets
        self.patch(policy, "HELD_AT_MOST", {**policy.HELD_AT_MOST,
                                            "member_state_bytes": 2 * each})
        self.login()
        names = tuple(f"t{i:04}" for i in range(100))

        def heartbeat(member, epoch, correlation, subscribed=names):
            self.client.dataReceived(request_frame(rq.ConsumerGroupHeartbeatRequest(
                group_id="g", member_id=member, member_epoch=i32(epoch),
                subscribed_topic_names=subscribed, topic_partitions=None), 0, correlation))
            self.broker.dataReceived(response_frame(correlation, rs.ConsumerGroupHeartbeatResponse(
                throttle_time=datetime.timedelta(0), error_code=ErrorCode.none,
                error_message=None, member_id=member, member_epoch=i32(max(epoch, 0) + 1),
                heartbeat_interval=datetime.timedelta(seconds=5), assignment=None)))
            return decode_response(self.responses()[-1], 68, 0)[1]
        for correlation, member in ((3, "m1"), (4, "m2")):
            self.assertEqual(heartbeat(member, 0, correlation).error_code, ErrorCode.none)
        self.assertEqual(self.gateway.members.held("london"), 2 * each)
        answer = heartbeat("m3", 0, 5)
        self.assertEqual(answer.error_code, ErrorCode.policy_violation)
        self.assertIn("group member state", answer.error_message)
        _, refused = decode_request(FrameDecoder().feed(self.broker_transport.value())[-1])
        self.assertEqual((refused.group_id, refused.subscribed_topic_names), ("", ()))
        heartbeat("m1", -1, 6, subscribed=None)  # leaves
        self.assertEqual(heartbeat("m3", 0, 7).error_code, ErrorCode.none)

    def test_find_coordinator_v0_is_a_group(self):
        """FindCoordinator v0 (no key type: always a group) has its key renamed.

        Found by tests/fuzz_gateway.py: the rewrite read a v1+ field.
        """
        from kio.schema.find_coordinator.v0.request import FindCoordinatorRequest
        self.login()
        self.client.dataReceived(request_frame(FindCoordinatorRequest(key="g"), 0, 3))
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertEqual(request.key, "londong")

    def test_coordinator_without_gateway_port(self):
        """A coordinator on a broker past the port range is answered as unavailable.

        Found by tests/fuzz_gateway.py: the rewrite set an int error code,
        which the encoder refused with an exception out of dataReceived.
        """
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        from kio.schema.find_coordinator.v4.response import (
            Coordinator, FindCoordinatorResponse)
        from kio.static.primitive import i8, i32
        from .kafka_messages import NO_THROTTLE
        self.login()
        self.client.dataReceived(request_frame(FindCoordinatorRequest(
            key_type=i8(0), coordinator_keys=("g",)), 4, 3))
        self.broker.dataReceived(response_frame(3, FindCoordinatorResponse(
            throttle_time=NO_THROTTLE, coordinators=(Coordinator(
                key="londong", node_id=i32(50), host="kafka50", port=i32(9092),
                error_code=ErrorCode.none, error_message=None),))))
        _, answer = decode_response(self.responses()[0], 10, 4)
        [coordinator] = answer.coordinators
        self.assertEqual((coordinator.key, coordinator.node_id, coordinator.error_code),
                         ("g", -1, ErrorCode.coordinator_not_available))

    def test_huge_compact_array_refused(self):
        """A compact array of 2**32 elements is refused before kio reads it.

        Found by tests/fuzz_gateway.py: kio's native reader then tries to
        allocate that many slots and the whole process aborts, so the decode
        runs in a subprocess here.
        """
        import subprocess
        import sys
        from kio.schema.metadata.v12.request import MetadataRequest
        from vkafka.protocol.lengths import LengthError, check
        huge = b"\x80\x80\x80\x80\x10" + b"\x00" * 8  # topics: uvarint 2**32
        self.assertRaises(LengthError, check, MetadataRequest, huge, 0)
        valid = request_frame(MetadataRequest(
            topics=(), allow_auto_topic_creation=False,
            include_topic_authorized_operations=False), 12, 3)[4:]
        crafted = valid[:-4] + huge  # the header, then the hostile body
        script = ("import sys\n"
                  "from vkafka.protocol.codec import CodecError, decode_request\n"
                  "try:\n    decode_request(sys.stdin.buffer.read())\n"
                  "except CodecError as e:\n    print('refused:', e)\n")
        run = subprocess.run([sys.executable, "-c", script], input=crafted,
                             capture_output=True, timeout=60)
        self.assertEqual(run.returncode, 0, run.stderr[-2000:])  # not an abort
        self.assertIn(b"refused:", run.stdout)


def produce_frame(version, topic, correlation_id):
    """A framed Produce request for one partition of *topic* (an id from v13)."""
    import datetime
    import importlib

    from kio.static.primitive import i16, i32, i32Timedelta

    from .kafka_messages import record_batch, request_frame
    m = importlib.import_module(f"kio.schema.produce.v{version}.request")
    key = {"topic_id": topic} if version >= 13 else {"name": topic}
    return request_frame(m.ProduceRequest(
        transactional_id=None, acks=i16(-1),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=1)),
        topic_data=(m.TopicProduceData(partition_data=(m.PartitionProduceData(
            index=i32(0), records=record_batch(2)),), **key),)),
        version, correlation_id)


def produce_answer(version, topic, correlation_id, endpoints=()):
    """The broker's framed answer to ``produce_frame``: no error."""
    from .test_fastpath import produce_response
    body = produce_response(version, errors=(0,), endpoints=endpoints, topics=(topic,))
    return frame(struct.pack(">i", correlation_id) + b"\x00" + body)


class Producing:
    """A tenant's Produce requests and the broker's answers, sent through."""

    def produce(self, version, topic, correlation_id):
        self.client.dataReceived(produce_frame(version, topic, correlation_id))

    def answer(self, version, topic, correlation_id, endpoints=()):
        raw = produce_answer(version, topic, correlation_id, endpoints)
        self.broker.dataReceived(raw)
        return raw


class CoordinatorMovedTests(TenantSpliceBase):
    """An OffsetFetch answered NOT_COORDINATOR (or the coordinator loading,
    or not available) with no partitions gets the partitions it asked for,
    each STALE_MEMBER_EPOCH, so librdkafka asks again (librdkafka #5586:
    with none, its consumer waited for them for good)."""

    def fetch_offsets(self, version, partitions, error, correlation_id=5):
        """The client's answer to an OffsetFetch of group g for topic t's
        *partitions* (None: every topic) the broker answered *error* with
        no partitions."""
        import importlib
        from .kafka_messages import NO_THROTTLE, request_frame, response_frame
        q = importlib.import_module(f"kio.schema.offset_fetch.v{version}.request")
        r = importlib.import_module(f"kio.schema.offset_fetch.v{version}.response")
        if version >= 8:
            topics = None if partitions is None else (q.OffsetFetchRequestTopics(
                name="t", partition_indexes=tuple(map(i32, partitions))),)
            extra = {"member_id": None, "member_epoch": i32(-1)} if version >= 9 else {}
            request = q.OffsetFetchRequest(groups=(q.OffsetFetchRequestGroup(
                group_id="g", topics=topics, **extra),), require_stable=True)
            answer = r.OffsetFetchResponse(throttle_time=NO_THROTTLE, groups=(
                r.OffsetFetchResponseGroup(group_id="londong", topics=(),
                                           error_code=ErrorCode(error)),))
        else:
            topics = None if partitions is None else (q.OffsetFetchRequestTopic(
                name="t", partition_indexes=tuple(map(i32, partitions))),)
            request = q.OffsetFetchRequest(group_id="g", topics=topics,
                                           require_stable=True)
            answer = r.OffsetFetchResponse(throttle_time=NO_THROTTLE, topics=(),
                                           error_code=ErrorCode(error))
        self.client.dataReceived(request_frame(request, version, correlation_id))
        self.broker.dataReceived(response_frame(correlation_id, answer,
                                                flexible=version >= 6))
        _, found = decode_response(self.responses()[-1], 9, version)
        return found.groups[0] if version >= 8 else found

    def test_partitions_asked_given_back_to_ask_again(self):
        self.login()
        for version in (7, 9):
            for error in (ErrorCode.not_coordinator, ErrorCode.coordinator_load_in_progress):
                found = self.fetch_offsets(version, [0, 2], error)
                self.assertEqual(found.error_code, error)
                [topic] = found.topics
                self.assertEqual(topic.name, "t")
                self.assertEqual(
                    [(p.partition_index, p.committed_offset, p.error_code)
                     for p in topic.partitions],
                    [(0, -1, ErrorCode.stale_member_epoch),
                     (2, -1, ErrorCode.stale_member_epoch)], (version, error))

    def test_other_answers_as_they_came(self):
        """Another error, or every topic asked (null): nothing to give back."""
        self.login()
        for version in (7, 9):
            self.assertEqual(self.fetch_offsets(
                version, [0], ErrorCode.group_authorization_failed).topics, ())
            self.assertEqual(self.fetch_offsets(
                version, None, ErrorCode.not_coordinator).topics, ())


class ChargedProduceBase(TenantSpliceBase):
    """A tenant's Produce requests with the loop share on (rules/records.py)."""

    def setUp(self):
        super().setUp()
        from vkafka.filters.throttle import LoopShare
        from vkafka.tenancy.rules import records
        self.patch(records, "INFLATED_MAX", 1 << 20)
        self.gateway.loop_share = LoopShare(0.25, self.reactor.seconds,
                                            self.reactor.callLater)
        self.login()
        self.client.services.loop_share = self.gateway.loop_share
        self.bucket = self.gateway.loop_share.bucket("london")

    def send(self, records, acks=-1, version=9, correlation_id=5, partitions=(0,)):
        from .kafka_messages import produce_records, request_frame
        self.client.dataReceived(request_frame(
            produce_records("t", records, acks, version, partitions), version,
            correlation_id))

    def sent(self):
        return FrameDecoder().feed(self.broker_transport.value())


class PartitionsProducedTests(ChargedProduceBase):
    """Each partition a Produce names is a log append on the broker, whatever
    its bytes: those beyond the first and one per APPEND_BYTES of the
    request cost APPEND_WORK of the loop share."""

    def test_partitions_beyond_their_bytes_charged(self):
        """13,000 one-record batches in 1 MB (the same partition named again
        and again, or partitions that do not exist) cost a broker 150-570 ms
        of CPU: charged; what a client sends is not."""
        from vkafka.tenancy.rules import records
        from .kafka_messages import record_batch
        self.patch(records, "APPEND_WORK", 1e-3)  # it dominates the loop's own
        self.send(record_batch(1, value=b"v"), partitions=[0] * 2000)
        self.assertEqual(len(self.sent()), 1)
        beyond = 2000 - 1 - len(self.sent()[0]) // records.APPEND_BYTES
        self.assertGreater(beyond, 1800)
        charged = 0.25 - self.bucket.tokens
        self.assertTrue(beyond * 1e-3 <= charged < beyond * 1e-3 + 0.05, charged)

    def test_batches_of_their_bytes_free(self):
        """A client's request: a batch of 1 KB and more for each partition,
        or one small batch."""
        from vkafka.tenancy.rules import records
        from .kafka_messages import record_batch
        self.patch(records, "APPEND_WORK", 1.0)
        self.send(record_batch(2, value=bytes(600)), partitions=range(6))
        self.send(record_batch(1, value=b"v"), partitions=[0], correlation_id=6)
        self.assertEqual(len(self.sent()), 2)
        self.assertGreater(self.bucket.tokens, 0.2)


class FetchedPartitionsTests(ChargedProduceBase):
    """Each partition a Fetch names is looked up and answered by the broker,
    whether it exists or not (234 ms of its CPU for 50,000 in one request):
    those beyond the first cost FETCHED_WORK of the loop share
    (rules/records.py), named by id (v13+, walked) or by name (decoded)."""

    def fetch(self, version, partitions, forgotten=0):
        from kio.static.primitive import i32
        from .kafka_messages import fetch_request
        self.topology.topic_ids[self.own] = "londont"
        request = fetch_request(self.own if version >= 13 else "t", version=version)
        [entry] = request.topics
        [first] = entry.partitions
        request = dataclasses.replace(request, topics=(dataclasses.replace(
            entry, partitions=tuple(dataclasses.replace(first, partition=i32(n))
                                    for n in range(partitions))),))
        if forgotten:
            [kind] = [f.type for f in dataclasses.fields(request)
                      if f.name == "forgotten_topics_data"]
            forgotten_topic = kind.__args__[0](
                partitions=tuple(i32(n) for n in range(forgotten)),
                **({"topic_id": self.own} if version >= 13 else {"topic": "t"}))
            request = dataclasses.replace(request, forgotten_topics_data=(
                forgotten_topic,))
        before = self.bucket.tokens
        self.client.dataReceived(request_frame(request, version, 5))
        return before - self.bucket.tokens

    def setUp(self):
        super().setUp()
        self.own = uuid.uuid4()
        self.client.services.work_clock = lambda: 0.0  # only what is charged

    def test_partitions_beyond_the_first_charged(self):
        from vkafka.tenancy.rules import records
        self.patch(records, "FETCHED_WORK", 1e-4)
        for version in (12, 13, 16):
            for forgotten in (0, 500):
                self.setUp()
                charged = self.fetch(version, 2000, forgotten)
                self.assertEqual(len(self.sent()), 1, version)  # forwarded all the same
                self.assertAlmostEqual(charged, (1999 + forgotten) * 1e-4,
                                       msg=(version, forgotten))

    def test_a_consumers_fetch_charged_its_few(self):
        """Six partitions: five times FETCHED_WORK, 25 us; one: nothing."""
        from vkafka.tenancy.rules import records
        for version in (12, 16):
            for partitions in (1, 6):
                self.setUp()
                charged = self.fetch(version, partitions)
                self.assertEqual(len(self.sent()), 1, version)
                self.assertAlmostEqual(charged,
                                       (partitions - 1) * records.FETCHED_WORK,
                                       msg=(version, partitions))


class CompressedProduceTests(ChargedProduceBase):
    """A Produce's compressed batches are counted inflated before it goes on
    (rules/records.py): past INFLATED_MAX it is answered MESSAGE_TOO_LARGE
    for each partition, never sent (a broker inflates them all, audit 25);
    past FREE_RATIO it costs the tenant's loop share; a codec Kafka has not
    or bytes not of their codec are refused as a broker refuses them."""

    def answered(self, version=9):
        _, answer = decode_response(self.responses()[-1], 0, version)
        [topic] = answer.responses
        self.assertEqual(topic.name, "t")
        [part] = topic.partition_responses
        return part.error_code, part.error_message

    def test_a_bomb_answered_too_large(self):
        from .kafka_messages import compressed, record_batch
        for codec in (1, 3, 4):
            self.broker_transport.clear()
            bomb = compressed(record_batch(1, value=bytes(1 << 20)), codec)
            self.assertLess(len(bomb), 8 * 1024)
            self.send(bomb, correlation_id=10 + codec)
            self.assertEqual(self.sent(), [])
            code, message = self.answered()
            self.assertEqual(code, ErrorCode.message_too_large)
            self.assertIn(f"records inflate past {1 << 20} bytes", message)
        self.assertFalse(self.transport.disconnecting)

    def test_modest_ratios_pass_uncharged(self):
        from .kafka_messages import compressed, record_batch
        for codec in (1, 3, 4):
            self.broker_transport.clear()
            self.send(compressed(record_batch(20, value=bytes(range(100))), codec),
                      correlation_id=10 + codec)
            self.assertEqual(len(self.sent()), 1)
        self.assertGreater(self.bucket.tokens, 0.25 - 0.01)

    def test_past_the_free_ratio_charged(self):
        from vkafka.tenancy.rules.records import INFLATED_WORK
        from .kafka_messages import compressed, record_batch
        batch = compressed(record_batch(1, value=bytes(900_000)), 1)
        self.send(batch)
        self.assertEqual(len(self.sent()), 1)
        self.assertLess(self.bucket.tokens, 0.25 - 0.8 * INFLATED_WORK)

    def test_records_beyond_their_bytes_charged(self):
        """A compressed batch of more records than its bytes would hold
        uncompressed (RECORD_BYTES each) costs RECORD_WORK for each beyond:
        a broker reads every one (900,000 empty records in 730 KB of zstd
        cost it 0.1-0.3 s, their inflated bytes past FREE_RATIO 18 ms)."""
        from vkafka.tenancy.rules.records import RECORD_BYTES, RECORD_WORK
        from .kafka_messages import compressed, record_batch
        batch = compressed(record_batch(20_000, value=b""), 4)
        self.assertLess(len(batch), 20_000 * RECORD_BYTES // 4)
        self.send(batch)
        self.assertEqual(len(self.sent()), 1)
        beyond = 20_000 - len(batch) // RECORD_BYTES
        self.assertLess(self.bucket.tokens, 0.25 - beyond * RECORD_WORK * 0.99)

    def test_counted_on_the_loop_up_to_a_bound(self):
        """Up to INFLATED_INLINE the count runs on the loop (the hand-over
        to the codec thread costs more than it), past it in the thread."""
        from vkafka.tenancy.rules import records
        from .kafka_messages import compressed, record_batch
        from twisted.internet import defer
        self.patch(records, "INFLATED_INLINE", 64 * 1024)
        handed = []

        def offload(f, *args, key):
            handed.append(key)
            return defer.succeed((f(*args), 0.0))
        self.client.services.offload = offload
        self.send(compressed(record_batch(20, value=bytes(range(100))), 1), correlation_id=7)
        self.assertEqual((handed, len(self.sent())), ([], 1))
        self.send(compressed(record_batch(1, value=bytes(100_000)), 1), correlation_id=8)
        self.assertEqual((handed, len(self.sent())), (["london"], 2))

    def test_a_refused_bomb_charged(self):
        """A request refused past the bound is charged as inflated to it:
        the codec thread inflated that much before it knew."""
        from vkafka.tenancy.rules import records
        from .kafka_messages import compressed, record_batch
        self.patch(records, "INFLATED_WORK", 1.0)  # a second a MiB: it dominates
        bomb = compressed(record_batch(1, value=bytes(4 << 20)), 1)
        self.assertLess(len(bomb), 8 * 1024)
        self.send(bomb)
        self.assertEqual(self.answered()[0], ErrorCode.message_too_large)
        # 1 MiB (the bound here) past 16 times ~5 KB: ~0.9 s charged
        self.assertLess(self.bucket.tokens, 0.25 - 0.8)

    def test_acks_0_closed(self):
        from .kafka_messages import compressed, record_batch
        self.send(compressed(record_batch(1, value=bytes(1 << 20)), 1), acks=0)
        self.assertEqual(self.sent(), [])
        self.assertTrue(self.transport.disconnecting)

    def test_codecs_and_bytes_refused_as_a_broker_does(self):
        from .kafka_messages import compressed, record_batch
        cases = ((5, b"x" * 10, ErrorCode.unsupported_compression_type,
                  "compression codec 5 does not exist"),
                 (1, b"not gzip at all", ErrorCode.corrupt_message, "bad gzip records"),
                 (3, b"not lz4 at all", ErrorCode.corrupt_message, "bad lz4 records"),
                 (4, b"not zstd at all", ErrorCode.corrupt_message, "bad zstd records"),
                 (2, b"\xff\xff\xff\xff\x0f", ErrorCode.message_too_large,
                  "snappy records inflate past"))
        for n, (codec, packed, code, message) in enumerate(cases):
            self.send(compressed(record_batch(1), codec, packed), correlation_id=10 + n)
            self.assertEqual(self.sent(), [])
            found = self.answered()
            self.assertEqual(found[0], code, found)
            self.assertIn(message, found[1])

    def test_every_version_answered(self):
        """v3 (no error message) to v13 (topic ids): the answer the client's
        version reads, naming its topics as it did."""
        from .kafka_messages import compressed, record_batch
        bomb = compressed(record_batch(1, value=bytes(1 << 20)), 1)
        for version in range(3, 13):
            self.send(bomb, version=version, correlation_id=version)
            _, answer = decode_response(self.responses()[-1], 0, version)
            self.assertEqual([t.name for t in answer.responses], ["t"])
            part = answer.responses[0].partition_responses[0]
            self.assertEqual(part.error_code, ErrorCode.message_too_large, version)
        self.assertEqual(self.sent(), [])


class ProducerIdTests(TenantSpliceBase):
    """Every producer id a tenant's batches carry is broker state for a day
    (tenancy/producers.py): new ones beyond the bucket, and batches of two
    producers in one request, close the connection with the reason; ids
    already let in pass (a producer's next requests, its other connections)."""

    def send(self, *producers, correlation_id=5):
        from .kafka_messages import produce_records, record_batch, request_frame
        records = b"".join(record_batch(1, producer=p) for p in producers)
        self.client.dataReceived(request_frame(produce_records("t", records),
                                               9, correlation_id))

    def sent(self):
        return len(FrameDecoder().feed(self.broker_transport.value()))

    def test_new_producer_ids_bounded(self):
        self.gateway.producer_ids.per_hour = 2
        self.login()
        for i, producer in enumerate((-1, 7, 7, 8, -1, 7), 1):
            self.send(producer, correlation_id=i)
        self.assertEqual(self.sent(), 6)
        self.assertFalse(self.transport.disconnecting)
        self.send(9, correlation_id=7)  # a third new one within the hour
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.sent(), 6)

    def test_two_producers_in_one_request(self):
        self.login()
        self.send(7, -1, 8)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.broker_transport.value(), b"")


class ProduceResponseTests(Producing, TenantSpliceBase):
    """Produce v13 answers name topics by id: forwarded as bytes unless a decoy
    or node_endpoints must change (fastpath.scan_produce_response)."""

    def test_v13_passes_as_bytes(self):
        """The tenant's own topic id: the broker's bytes reach the client as they are."""
        import uuid
        own = uuid.uuid4()
        self.topology.topic_ids[own] = "londont"
        self.login()
        self.produce(13, own, 5)
        raw = self.answer(13, own, 5)
        self.assertEqual(self.transport.value(), raw)

    def test_v13_with_endpoints_rewritten(self):
        """node_endpoints name brokers: decoded and rewritten to gateway ports."""
        import uuid
        own = uuid.uuid4()
        self.topology.topic_ids[own] = "londont"
        self.login()
        self.produce(13, own, 5)
        raw = self.answer(13, own, 5, endpoints=(2,))
        self.assertNotEqual(self.transport.value(), raw)
        _, response = decode_response(self.responses()[0], 0, 13)
        self.assertEqual([(e.host, e.port) for e in response.node_endpoints],
                         [("gw", 6970)])

    def test_foreign_id_still_refused(self):
        """Another tenant's topic id becomes a decoy; its answer is decoded and the
        client sees UNKNOWN_TOPIC_ID for its own id, not the broker's bytes."""
        import uuid
        foreign = uuid.uuid4()
        self.topology.topic_ids[foreign] = "parist"
        self.login()
        self.produce(13, foreign, 5)
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        decoy = request.topic_data[0].topic_id
        self.assertNotEqual(decoy, foreign)
        self.answer(13, decoy, 5)
        _, response = decode_response(self.responses()[0], 0, 13)
        self.assertEqual(response.responses[0].topic_id, foreign)

    def test_names_renamed_by_slicing(self):
        """Before v13 (librdkafka sends v10): the physical name in the answer is
        swapped by slicing, and the client gets exactly what decoding, walking
        and re-encoding would have sent."""
        from vkafka.protocol.codec import encode_body
        from vkafka.tenancy.context import RequestContext

        from .test_fastpath import produce_response
        for version in (3, 8, 9, 10, 12):
            self.setUp()
            self.login()
            self.produce(version, "t", 7)
            _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
            self.assertEqual(request.topic_data[0].name, "londont")
            body = produce_response(version, errors=(0, 6), topics=("londont",))
            raw = struct.pack(">i", 7) + (b"\x00" if version >= 9 else b"") + body
            decoded = self.count_decodes()
            self.broker.dataReceived(frame(raw))
            self.assertEqual(decoded, [], version)  # sliced, not decoded
            header, response = decode_response(raw, 0, version)
            walked = self.client.rules[0].rewrite_response(
                self.client, RequestContext(self.client.namespace, {}), response)
            self.assertEqual(walked.responses[0].name, "t")
            self.assertEqual(bytes(self.responses()[0]), header + encode_body(walked),
                             version)

    def test_slicing_gives_way_to_decoding(self):
        """A name not the tenant's, or an error message: decoded, as before (the
        foreign topic dropped, the message scrubbed of the prefix)."""
        self.login()
        self.produce(10, "t", 7)
        decoded = self.count_decodes()
        self.answer(10, "parist", 7)
        self.assertEqual(decoded, [0])
        _, response = decode_response(self.responses()[0], 0, 10)
        self.assertEqual(response.responses, ())
        self.transport.clear()
        from .test_fastpath import produce_response
        self.produce(10, "t", 8)
        body = produce_response(10, errors=(87,), message="bad in londont",
                                topics=("londont",))
        self.broker.dataReceived(frame(struct.pack(">i", 8) + b"\x00" + body))
        _, response = decode_response(self.responses()[0], 0, 10)
        self.assertEqual(response.responses[0].name, "t")
        self.assertNotIn("londont", response.responses[0].partition_responses[0]
                         .error_message)


class FetchNamesTests(TenantSpliceBase):
    """Fetch answers before v13 (kafkajs v11, kafka-python, aiokafka, Sarama)
    name topics: renamed by slicing when every name is the tenant's, as
    Produce answers are; decoded otherwise."""

    def fetch(self, version, topic, correlation_id=7):
        from .kafka_messages import fetch_request
        self.client.dataReceived(request_frame(fetch_request(topic, version=version),
                                               version, correlation_id))

    def answer(self, version, topic, correlation_id=7):
        from .test_fastpath import fetch_response
        raw = struct.pack(">i", correlation_id) + (b"\x00" if version >= 12 else b"") \
            + fetch_response(version, topic=topic)
        self.broker.dataReceived(frame(raw))
        return raw

    def test_names_renamed_by_slicing(self):
        """v4 to v12: not decoded, and the client gets exactly what decoding,
        walking and re-encoding would have sent (records untouched)."""
        from vkafka.protocol.codec import encode_body
        from vkafka.tenancy.context import RequestContext
        for version in range(4, 13):
            self.setUp()
            self.login()
            self.fetch(version, "t")
            _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
            self.assertEqual(request.topics[0].topic, "londont")
            decoded = self.count_decodes()
            raw = self.answer(version, "londont")
            self.assertEqual(decoded, [], version)
            header, response = decode_response(raw, 1, version)
            walked = self.client.rules[1].rewrite_response(
                self.client, RequestContext(self.client.namespace, {}), response)
            self.assertEqual(walked.responses[0].topic, "t")
            self.assertEqual(bytes(self.responses()[0]), header + encode_body(walked),
                             version)

    def test_slicing_gives_way_to_decoding(self):
        """Another tenant's name in the answer: decoded, and that topic
        dropped; a decoy in the request (an invalid name): decoded, and
        explained."""
        self.login()
        self.fetch(11, "t", 7)
        decoded = self.count_decodes()
        self.answer(11, "parist", 7)
        self.assertEqual(decoded, [1])
        _, response = decode_response(self.responses()[0], 1, 11)
        self.assertEqual(response.responses, ())
        self.transport.clear()
        self.fetch(11, "bad name", 8)
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[-1])
        decoy = request.topics[0].topic
        self.assertTrue(decoy.startswith("!vkafka-refused"), decoy)
        self.answer(11, decoy, 8)
        self.assertEqual(decoded, [1, 1])
        _, response = decode_response(self.responses()[0], 1, 11)
        self.assertEqual(response.responses[0].topic, "bad name")

    def test_decoded_while_acls_are_on(self):
        """With the virtual cluster's ACLs on, the answer is decoded: the walk
        drops a topic the principal may no longer see (a fetch session's)."""
        from vkafka.auth.acls import Acl
        from vkafka.state.model import GatewayState
        from vkafka.state.store import MemoryStore
        state = GatewayState(MemoryStore(), self.authority,
                             self.gateway.tenancy.vclusters, self.reactor.seconds)
        state.ensure_vcluster("london")
        state.put_rights("london", True)
        state.add_acls("london", [Acl.checked("TOPIC", "PREFIXED", "t", "User:sa",
                                              "*", "READ", "ALLOW")])
        self.client.services.authorizer = state.authorizer
        self.login()
        self.fetch(11, "t", 7)
        decoded = self.count_decodes()
        self.answer(11, "londont", 7)
        self.assertEqual(decoded, [1])
        _, response = decode_response(self.responses()[0], 1, 11)
        self.assertEqual(response.responses[0].topic, "t")


class HotNamesTests(Producing, TenantSpliceBase):
    """The produce path remembers names and topic ids it decided
    (naming.HotNames); a change of mapping, prefix or availability makes it
    decide again, so nothing stale is sent."""

    def sent(self):
        _, request = decode_request(FrameDecoder().feed(
            self.broker_transport.value())[-1])
        self.broker_transport.clear()
        return request.topic_data[0]

    def test_names_decided_again_after_a_change(self):
        self.login()
        namespace = self.client.namespace
        self.produce(10, "t", 5)
        self.assertEqual(self.sent().name, "londont")
        self.produce(10, "t", 6)
        self.assertEqual(self.sent().name, "londont")  # remembered
        self.assertIn(b"\x02t", namespace.memo().to_broker[True])
        namespace.set_alias("t", "shared-orders")
        self.produce(10, "t", 7)
        self.assertEqual(self.sent().name, "shared-orders")
        namespace.set_alias("t", "shared-orders", read_only=True)
        self.produce(10, "t", 8)
        self.assertTrue(self.sent().name.startswith("!vkafka-refused"))
        namespace.remove_alias("t")
        self.produce(10, "t", 9)
        self.assertEqual(self.sent().name, "londont")
        namespace.prefixes.add("londont")  # another cluster's longer prefix
        self.produce(10, "t", 10)
        self.assertTrue(self.sent().name.startswith("!vkafka-refused"))

    def test_ids_decided_again_after_a_change(self):
        import uuid
        own = uuid.uuid4()
        self.topology.topic_ids[own] = "londont"
        self.login()
        namespace = self.client.namespace
        for correlation_id in (5, 6):
            self.produce(13, own, correlation_id)
            self.assertEqual(self.sent().topic_id, own)
        self.assertIn(own.bytes, namespace.memo().ids)
        namespace.unavailable = "overlaps another virtual cluster"
        self.produce(13, own, 7)
        self.assertNotEqual(self.sent().topic_id, own)

    def test_refused_names_not_remembered(self):
        self.login()
        self.produce(10, "no spaces allowed", 5)
        self.assertTrue(self.sent().name.startswith("!vkafka-refused"))
        self.assertEqual(self.client.namespace.memo().to_broker[True], {})

    def test_read_buffer_never_hashed(self):
        """The remembered names and ids are looked up as bytes, never as a
        memoryview of the read: hashing a view hashes the whole buffer it
        views (CPython), a second pass over every byte produced."""
        import uuid

        class Unhashable(bytes):
            def __hash__(self):
                raise AssertionError("a read buffer was hashed")

        own = uuid.uuid4()
        self.topology.topic_ids[own] = "londont"
        self.login()
        for correlation_id in (5, 6):  # the second one from HotNames
            self.client.dataReceived(Unhashable(produce_frame(10, "t", correlation_id)))
            self.assertEqual(self.sent().name, "londont")
            self.broker.dataReceived(Unhashable(produce_answer(10, "londont",
                                                               correlation_id)))
        for correlation_id in (7, 8):
            self.client.dataReceived(Unhashable(produce_frame(13, own, correlation_id)))
            self.assertEqual(self.sent().topic_id, own)
            self.broker.dataReceived(Unhashable(produce_answer(13, own, correlation_id)))
        self.assertFalse(self.client.closed)
        answers = self.responses()
        self.assertEqual([decode_response(frame, 0, 10)[1].responses[0].name
                          for frame in answers[:2]], ["t", "t"])
        self.assertEqual(len(answers), 4)

    def test_answer_names_remembered(self):
        self.login()
        self.produce(10, "t", 5)
        self.answer(10, "londont", 5)
        _, response = decode_response(self.responses()[0], 0, 10)
        self.assertEqual(response.responses[0].name, "t")
        self.assertEqual(self.client.namespace.memo().to_client[True],
                         {b"\x08londont": b"\x02t"})


class UnplacedTopicIdTests(Producing, TenantSpliceBase):
    """A Produce naming a topic id this gateway cannot place waits for its
    next listing and is decided again (filters/tenant.py): another gateway
    or worker may have learnt the topic first."""

    class Listing:
        all_topics = True

        def __init__(self):
            self.waiting = []

        def next_listing(self):
            from twisted.internet import defer
            d = defer.Deferred()
            self.waiting.append(d)
            return d

    def setUp(self):
        super().setUp()
        self.listing = self.client.services.refresher = self.Listing()

    def sent(self):
        frames = FrameDecoder().feed(self.broker_transport.value())
        self.broker_transport.clear()
        return [decode_request(f)[1] for f in frames]

    def test_waits_for_the_listing_then_forwards_the_real_id(self):
        import uuid
        new = uuid.uuid4()
        self.login()
        self.produce(13, new, 5)
        self.assertEqual(len(self.listing.waiting), 1)
        self.produce(13, new, 6)  # behind it, in order
        self.assertEqual(self.sent(), [])
        self.topology.topic_ids[new] = "londont"  # the listing learnt it
        self.listing.waiting.pop(0).callback(None)
        sent = self.sent()
        self.assertEqual([r.topic_data[0].topic_id for r in sent], [new, new])

    def test_compressed_batches_counted_then_the_listing_awaited(self):
        """A compressed Produce is counted inflated first, then waits for the
        listing, then is decided (and counted) again: one wait after another
        ends in the request forwarded, in order."""
        import uuid
        from .kafka_messages import compressed, produce_records, record_batch, request_frame
        new = uuid.uuid4()
        self.login()
        batch = compressed(record_batch(3), 1)
        for correlation_id in (5, 6):
            self.client.dataReceived(request_frame(produce_records(new, batch,
                                                                   version=13),
                                                   13, correlation_id))
        self.assertEqual(len(self.listing.waiting), 1)
        self.assertEqual(self.sent(), [])
        self.topology.topic_ids[new] = "londont"
        self.listing.waiting.pop(0).callback(None)
        sent = self.sent()
        self.assertEqual([r.topic_data[0].topic_id for r in sent], [new, new])
        self.assertEqual(sent[0].topic_data[0].partition_data[0].records, batch)

    def test_reads_held_while_a_request_waits(self):
        """What a client sends behind a waiting request stays in its socket
        (TCP pushes back), not in the gateway's memory."""
        import uuid
        new = uuid.uuid4()
        self.login()
        self.produce(13, new, 5)
        self.assertEqual(self.transport.producerState, "paused")
        self.topology.topic_ids[new] = "londont"
        self.listing.waiting.pop(0).callback(None)
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.sent()), 1)

    def test_still_unplaced_after_the_listing_is_refused(self):
        import uuid
        for unknown in (uuid.uuid4(), "foreign"):
            self.setUp()
            if unknown == "foreign":
                unknown = uuid.uuid4()
                self.topology.topic_ids[unknown] = "parist"  # another tenant's
            self.login()
            self.produce(13, unknown, 5)
            self.assertEqual(self.sent(), [])  # waits, foreign or missing alike
            self.listing.waiting.pop(0).callback(None)
            (request,) = self.sent()
            self.assertNotEqual(request.topic_data[0].topic_id, unknown)  # a decoy
            self.assertEqual(self.listing.waiting, [])  # decided once more, no more

    def test_own_ids_do_not_wait(self):
        import uuid
        own = uuid.uuid4()
        self.topology.topic_ids[own] = "londont"
        self.login()
        self.produce(13, own, 5)
        self.assertEqual([r.topic_data[0].topic_id for r in self.sent()], [own])
        self.assertEqual(self.listing.waiting, [])


class TopicExistsTests(unittest.TestCase):
    """Refresher.topic_exists asks again before it calls a topic missing: a
    broker learns a topic created a moment ago a little later."""

    def answers(self, *codes):
        from types import SimpleNamespace
        from twisted.internet import defer
        from twisted.internet.task import Clock

        from vkafka.proxy.discovery import Refresher
        clock = Clock()
        refresher = Refresher(clock, Topology([("kafka1", 9092)], "gw", 6969, 3, 1),
                              None)
        asked = []

        def on_any(use, what):
            code = codes[min(len(asked), len(codes) - 1)]
            asked.append(code)
            return defer.succeed(SimpleNamespace(topics=[SimpleNamespace(
                error_code=code, topic_id=None,
                partitions=[0, 1, 2] if code == 0 else [])]))
        refresher._on_any = on_any
        found = refresher.topic_exists("orders")
        clock.pump([0.1] * 20)
        return self.successResultOf(found), asked

    def test_learnt_a_moment_later(self):
        self.assertEqual(self.answers(3, 5, 0), (3, [3, 5, 0]))

    def test_missing_after_a_second(self):
        found, asked = self.answers(3)
        self.assertEqual((found, len(asked)), (0, 5))

    def test_other_errors_not_asked_again(self):
        self.assertEqual(self.answers(29), (0, [29]))  # TOPIC_AUTHORIZATION_FAILED


class NextListingTests(unittest.TestCase):
    """Refresher.next_listing: the listing on its way, else one at most a
    second after the last began; a timeout either way."""

    def setUp(self):
        from twisted.internet import defer
        from twisted.internet.task import Clock

        from vkafka.proxy.discovery import Refresher
        self.clock = Clock()
        self.clock.advance(100)
        self.refresher = Refresher(self.clock, Topology([("kafka1", 9092)], "gw", 6969,
                                                        3, 1), None, all_topics=True)
        self.started = []

        def refresh():
            d = defer.Deferred()
            self.started.append(d)
            self.refresher._inflight = d
            d.addBoth(lambda r: (setattr(self.refresher, "_inflight", None), r)[1])
            return d
        self.refresher.refresh = refresh

    def test_starts_at_most_one_a_second(self):
        first = self.refresher.next_listing()
        self.assertEqual(len(self.started), 1)
        shared = self.refresher.next_listing()  # the one on its way
        self.assertEqual(len(self.started), 1)
        self.started[0].callback(None)
        self.assertTrue(first.called and shared.called)
        later = self.refresher.next_listing()
        self.assertEqual(len(self.started), 1)  # not yet: a second after the last
        self.clock.advance(1.0)
        self.assertEqual(len(self.started), 2)
        self.started[1].callback(None)
        self.assertTrue(later.called)

    def test_times_out(self):
        waiting = self.refresher.next_listing(timeout=5.0)
        self.clock.advance(4.9)
        self.assertFalse(waiting.called)
        self.clock.advance(0.2)
        self.assertTrue(waiting.called)
        self.started[0].errback(RuntimeError("late and failed"))  # no error escapes
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FetchRequestTests(TenantSpliceBase):
    """Fetch v13+ requests name topics by id: checked where they lie and
    forwarded as they came (rules/records.py, fetch_frame); fetches as a replica refused."""

    def setUp(self):
        import uuid
        super().setUp()
        self.own, self.foreign = uuid.uuid4(), uuid.uuid4()
        self.topology.topic_ids[self.own] = "londont"
        self.topology.topic_ids[self.foreign] = "parist"
        self.login()
        from vkafka.tenancy.sessions import FetchSessions
        self.client.services.fetch_sessions = FetchSessions()
        self.client.services.fetch_sessions.created(7)  # the session fetch_request names

    def fetch(self, version, ids=(), forgotten=(), replica=-1):
        from .test_fastpath import fetch_request
        raw = request_frame(fetch_request(version, ids, forgotten, replica), version, 5)
        self.broker_transport.clear()
        self.client.dataReceived(raw)
        return raw

    def count_request_decodes(self):
        from vkafka.filters import tenant
        seen = []

        def spy(frame):
            seen.append(frame)
            return decode_request(frame)
        self.patch(tenant, "decode_request", spy)
        return seen

    def test_own_ids_forwarded_as_they_came(self):
        decoded = self.count_request_decodes()
        for version in range(13, 19):
            raw = self.fetch(version, [self.own], [self.own])
            self.assertEqual(self.broker_transport.value(), broker_sees(raw), version)
        self.assertEqual(decoded, [])

    def test_a_read_of_one_request_skips_the_turns(self):
        """A read that is one whole Fetch, on a connection where nothing
        waits, is handled without ``_handle``'s framing, turns and outboxes
        (``_one_read``), and the broker gets what the general path sends for
        it (two in one read); a read while the connection waits takes the
        general path, which holds it."""
        from vkafka.proxy.splice import ClientConnection
        self.fetch(16, [self.own])  # the first opens the broker connection
        self.assertTrue(self.client.lane_open)
        handled = []
        real = ClientConnection._handle
        self.patch(ClientConnection, "_handle", lambda conn, frames, *rest: (
            handled.append(len(frames)), real(conn, frames, *rest))[1])
        raw = self.fetch(16, [self.own])
        alone = self.broker_transport.value()
        self.assertEqual(alone, broker_sees(raw))
        self.assertEqual(handled, [])
        self.fetch(16, [self.own])
        self.assertEqual(self.broker_transport.value(), alone)
        self.broker_transport.clear()
        self.client.dataReceived(raw + raw)
        self.assertEqual(handled, [2])
        self.assertEqual(self.broker_transport.value(), alone * 2)
        self.client.valve.hold("test")
        self.fetch(16, [self.own])
        self.assertEqual(handled, [2, 1])
        self.assertEqual(self.broker_transport.value(), b"")  # held, in turn
        self.client.valve.release("test")
        self.reactor.advance(0)
        self.assertEqual(self.broker_transport.value(), alone)

    def test_checked_ids_remembered_while_the_mappings_stay(self):
        """An id a Fetch named and had checked is not checked again while the
        namespace's memo stays (``HotNames.read``), nor looked up when an
        answer names it; after a mapping change it is checked again, and one
        no longer the tenant's becomes a decoy."""
        from vkafka.tenancy.context import RequestContext
        checked = []
        real = RequestContext.check_topic_id

        def spy(rctx, topic_id):
            checked.append(topic_id)
            return real(rctx, topic_id)
        self.patch(RequestContext, "check_topic_id", spy)
        for _ in range(3):
            raw = self.fetch(16, [self.own])
            self.assertEqual(self.broker_transport.value(), broker_sees(raw))
        self.assertEqual(checked, [self.own])
        namespace = self.client.namespace
        self.assertEqual(namespace.memo().read, {self.own.bytes})
        self.assertEqual(namespace.memo().ids, set())  # a Produce checks it itself
        context = RequestContext(namespace, {}, False)  # no id known to look up
        self.assertTrue(context.owns_topic_id(self.own.bytes))
        self.assertFalse(context.owns_topic_id(self.foreign.bytes))
        namespace.unavailable = "overlaps another virtual cluster"
        self.assertFalse(context.owns_topic_id(self.own.bytes))
        self.fetch(16, [self.own])
        _, sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertNotEqual(sent.topics[0].topic_id, self.own)
        self.assertEqual(checked, [self.own, self.own])
        self.assertEqual(namespace.memo().read, set())

    def test_ids_not_remembered_unless_plainly_read(self):
        """Not remembered: another tenant's id, the zero id, a concentrated
        topic's or a writable mapping's (both noted per request); a read-only
        mapping's is, for Fetch only: a Produce naming it is still refused."""
        import uuid
        namespace = self.client.namespace
        writable, read_only, zero = uuid.uuid4(), uuid.uuid4(), uuid.UUID(int=0)
        namespace.set_alias("w", "shared-orders")
        namespace.set_alias("ro", "their-orders", read_only=True)
        self.topology.topic_ids[writable] = "shared-orders"
        self.topology.topic_ids[read_only] = "their-orders"
        for topic_id in (self.foreign, zero, writable):
            self.setUp()
            namespace = self.client.namespace
            namespace.set_alias("w", "shared-orders")
            self.topology.topic_ids[writable] = "shared-orders"
            self.fetch(16, [topic_id])
            self.assertEqual(namespace.memo().read, set(), topic_id)
        namespace.set_alias("ro", "their-orders", read_only=True)
        self.topology.topic_ids[read_only] = "their-orders"
        raw = self.fetch(16, [read_only])
        self.assertEqual(self.broker_transport.value(), broker_sees(raw))  # readable
        self.assertEqual(namespace.memo().read, {read_only.bytes})
        self.broker_transport.clear()
        self.client.dataReceived(produce_frame(13, read_only, 6))
        _, sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertNotEqual(sent.topic_data[0].topic_id, read_only)  # refused: a decoy

    def test_foreign_id_becomes_decoy_in_place(self):
        """Another tenant's id, in topics or forgotten topics: swapped for a decoy
        (the same bytes otherwise), as the walker would; the answer about the
        decoy reaches the client as UNKNOWN_TOPIC_ID for its own id."""
        from .test_fastpath import fetch_response
        for in_topics in (True, False):
            self.setUp()  # the fetch closes the session it names (sessionless)
            ids, forgotten = (([self.own, self.foreign], []) if in_topics
                              else ([self.own], [self.foreign]))
            raw = self.fetch(16, ids, forgotten)
            sent = self.broker_transport.value()
            self.assertEqual(len(sent), len(broker_sees(raw)))
            _, request = decode_request(FrameDecoder().feed(sent)[0])
            _, original = decode_request(FrameDecoder().feed(raw)[0])
            sent_ids = [t.topic_id for t in request.topics] + \
                [t.topic_id for t in request.forgotten_topics_data]
            self.assertIn(self.own, sent_ids)
            self.assertNotIn(self.foreign, sent_ids)
            self.assertEqual(request.topics[0].partitions, original.topics[0].partitions)
            self.assertEqual(request.rack_id, original.rack_id)
        self.setUp()
        self.fetch(16, [self.foreign])
        _, request = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        decoy = request.topics[0].topic_id
        self.transport.clear()
        body = fetch_response(16, topic=decoy, errors=(ErrorCode.unknown_topic_id,) * 2)
        self.broker.dataReceived(frame(struct.pack(">i", 5) + b"\x00" + body))
        _, response = decode_response(self.responses()[0], 1, 16)
        self.assertEqual({t.topic_id for t in response.responses}, {self.foreign})

    def test_fetch_with_decoy_goes_sessionless(self):
        """A decoy (another tenant's id, or one this gateway has not learnt yet,
        as a gateway of a cluster meets after a failover) must not enter a
        broker session: later incremental answers about it would be dropped,
        and the client would wait for that partition forever (issue 23).  The
        fetch goes on with epoch -1 (the broker answers without a session,
        closing the connection's own session it names); the client's next
        fetch is full and checked again."""
        import uuid
        from dataclasses import replace

        from .test_fastpath import fetch_request
        for unknown in (self.foreign, uuid.uuid4()):
            for version, session, epoch in ((16, 7, 2), (18, 7, 0), (13, 0, 0),
                                            (17, 99, 0)):
                self.setUp()
                request = replace(fetch_request(version, [self.own, unknown]),
                                  session_id=i32(session), session_epoch=i32(epoch))
                self.broker_transport.clear()
                self.client.dataReceived(request_frame(request, version, 5))
                _, sent = decode_request(
                    FrameDecoder().feed(self.broker_transport.value())[0])
                owned = 7 if session == 7 else 0  # 99: not this connection's
                self.assertEqual((sent.session_id, sent.session_epoch), (owned, -1),
                                 (version, session, epoch))
                # the broker closes the session named (its own): no longer owned
                self.assertEqual(7 in self.client.services.fetch_sessions,
                                 session != 7)
                self.assertEqual(sent.topics[0].topic_id, self.own)
                self.assertNotIn(unknown, [t.topic_id for t in sent.topics])

    def test_fetch_without_decoy_keeps_its_session(self):
        from .test_fastpath import fetch_request
        self.fetch(16, [self.own])
        _, sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertEqual((sent.session_id, sent.session_epoch), (7, 2))
        self.assertIn(7, self.client.services.fetch_sessions)

    def test_foreign_session_incremental_answered_here(self):
        """An incremental fetch of a session this connection does not own (another
        tenant's, or none at all) is answered FETCH_SESSION_ID_NOT_FOUND by the
        gateway: nothing reaches the broker, so ids cannot be probed."""
        from .test_fastpath import fetch_request
        for version in (12, 13, 17):
            self.setUp()
            self.client.services.fetch_sessions = None  # owns no session
            request = fetch_request(version, [self.own] if version >= 13 else [])
            self.transport.clear()
            self.broker_transport.clear()
            self.client.dataReceived(request_frame(request, version, 5))
            self.assertEqual(self.broker_transport.value(), b"", version)
            _, response = decode_response(self.responses()[0], 1, version)
            self.assertEqual(response.error_code,
                             ErrorCode.fetch_session_id_not_found, version)
            self.assertEqual((response.session_id, response.responses), (0, ()))

    def test_foreign_session_full_fetch_unbound(self):
        """A full fetch (epoch 0 or -1) naming a session not its own would close
        that session on the broker: it goes on with session id 0 instead."""
        from dataclasses import replace

        from .test_fastpath import fetch_request
        for version, epoch in ((13, 0), (17, -1), (12, 0)):
            self.setUp()
            request = replace(fetch_request(version, [self.own] if version >= 13
                                            else []),
                              session_id=i32(99), session_epoch=i32(epoch))
            self.broker_transport.clear()
            self.client.dataReceived(request_frame(request, version, 5))
            _, sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
            self.assertEqual((sent.session_id, sent.session_epoch), (0, epoch), version)

    def test_sessions_a_connection_makes_are_bounded(self):
        """Full fetches each asking for a new broker session (epoch 0, session
        0), pipelined: FetchSessions.LIMIT go on and make sessions, the rest
        go on sessionless (epoch -1), so a tenant cannot fill the brokers'
        session cache (1,000 slots shared by every tenant) and evict others'.
        Answered, the sessions made hold the room; a fetch replacing one of
        them (its id, epoch 0) still makes one, decoded (v12) or not (v17)."""
        from dataclasses import replace

        from vkafka.tenancy.sessions import FetchSessions

        from .test_fastpath import fetch_request, fetch_response
        limit = FetchSessions.LIMIT
        for version in (12, 17):
            self.setUp()
            self.client.services.fetch_sessions = None
            new = replace(fetch_request(version, [self.own] if version >= 13 else []),
                          session_id=i32(0), session_epoch=i32(0))
            self.broker_transport.clear()
            self.client.dataReceived(b"".join(request_frame(new, version, c)
                                              for c in range(limit + 3)))
            sent = [decode_request(f)[1]
                    for f in FrameDecoder().feed(self.broker_transport.value())]
            self.assertEqual([(r.session_id, r.session_epoch) for r in sent],
                             [(0, 0)] * limit + [(0, -1)] * 3, version)
            topic = self.own if version >= 13 else "londont"
            for c in range(limit + 3):
                body = bytearray(fetch_response(version, topic=topic))
                body[6:10] = struct.pack(">i", 100 + c if c < limit else 0)
                self.broker.dataReceived(frame(struct.pack(">i", c) + b"\x00" + body))
            sessions = self.client.services.fetch_sessions
            self.assertEqual(sorted(s for s in range(100, 110) if s in sessions),
                             list(range(100, 100 + limit)))
            self.broker_transport.clear()
            again = replace(new, session_id=i32(100))  # replaces session 100
            self.client.dataReceived(request_frame(new, version, 20) +
                                     request_frame(again, version, 21))
            sent = [decode_request(f)[1]
                    for f in FrameDecoder().feed(self.broker_transport.value())]
            self.assertEqual([(r.session_id, r.session_epoch) for r in sent],
                             [(0, -1), (100, 0)], version)

    def test_session_the_broker_evicted_is_forgotten(self):
        """The broker answers an incremental fetch FETCH_SESSION_ID_NOT_FOUND
        (it evicted the session), and the client then asks for a new one with
        session 0: the evicted one no longer holds room (else a client under a
        busy broker would end with every fetch sessionless)."""
        from .test_fastpath import fetch_response
        for version in (12, 16):
            self.setUp()
            self.fetch(version, [self.own] if version >= 13 else [])  # session 7
            self.assertIn(7, self.client.services.fetch_sessions)
            topic = self.own if version >= 13 else "londont"
            body = bytearray(fetch_response(version, topic=topic))
            body[4:10] = struct.pack(">hi", ErrorCode.fetch_session_id_not_found, 0)
            self.broker.dataReceived(frame(struct.pack(">i", 5) + b"\x00" + body))
            self.assertNotIn(7, self.client.services.fetch_sessions, version)

    def test_session_from_response_is_owned(self):
        """The session id in a response (forwarded as bytes or not) becomes this
        connection's: its next incremental fetch is forwarded."""
        from dataclasses import replace

        from .test_fastpath import fetch_request, fetch_response
        self.client.services.fetch_sessions = None
        first = replace(fetch_request(17, [self.own]), session_id=i32(0),
                        session_epoch=i32(0))
        self.client.dataReceived(request_frame(first, 17, 5))
        body = bytearray(fetch_response(17, topic=self.own))
        body[6:10] = struct.pack(">i", 4242)  # session_id after throttle, error
        self.broker.dataReceived(frame(struct.pack(">i", 5) + b"\x00" + bytes(body)))
        self.assertIn(4242, self.client.services.fetch_sessions)
        self.broker_transport.clear()
        then = replace(fetch_request(17, [self.own]), session_id=i32(4242),
                       session_epoch=i32(1))
        raw = request_frame(then, 17, 6)
        self.client.dataReceived(raw)
        self.assertEqual(self.broker_transport.value(), broker_sees(raw))

    def test_response_with_foreign_topic_id_not_passed_as_bytes(self):
        """A v13+ response that names a topic id not the tenant's (an alias removed
        while a session read it) is decoded and the foreign topic dropped."""
        from .test_fastpath import fetch_request, fetch_response
        self.client.dataReceived(request_frame(fetch_request(17, [self.own]), 17, 5))
        self.transport.clear()
        body = fetch_response(17, topic=self.foreign)
        self.broker.dataReceived(frame(struct.pack(">i", 5) + b"\x00" + body))
        _, response = decode_response(self.responses()[0], 1, 17)
        self.assertEqual(response.responses, ())

    def test_replica_fetch_refused(self):
        """replica_id (v<=14) or replica_state (v15+) >= 0: a broker's request.
        Refused on the sliced path and the decoded one (v12): closed, not sent."""
        for version in (12, 14, 15, 17):
            for replica in (2, -2, -3):  # a follower; the debugging replica; a broker's own
                self.setUp()
                self.fetch(version, [self.own] if version >= 13 else [], replica=replica)
                self.assertEqual(self.broker_transport.value(), b"", (version, replica))
                self.assertTrue(self.transport.disconnecting, (version, replica))

    def test_offsets_as_a_replica_refused(self):
        """ListOffsets and OffsetForLeaderEpoch as a replica (not -1) are
        answered from the log's end: refused like a replica's Fetch."""
        from kio.schema.list_offsets.v9.request import (
            ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic)
        from kio.schema.offset_for_leader_epoch.v4.request import (
            OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic)
        for replica in (-1, 2, -2):
            requests = (
                (ListOffsetsRequest(replica_id=i32(replica), isolation_level=0,
                                    topics=(ListOffsetsTopic(name="t", partitions=(
                                        ListOffsetsPartition(
                                            partition_index=i32(0), timestamp=i64(-1),
                                            current_leader_epoch=i32(-1)),)),)), 9),
                (OffsetForLeaderEpochRequest(replica_id=i32(replica), topics=(
                    OffsetForLeaderTopic(topic="t", partitions=(OffsetForLeaderPartition(
                        partition=i32(0), current_leader_epoch=i32(-1),
                        leader_epoch=i32(0)),)),)), 4))
            for request, version in requests:
                self.setUp()
                self.login()
                self.client.dataReceived(request_frame(request, version, 5))
                sent = self.broker_transport.value()
                self.assertEqual(bool(sent), replica == -1, (request, replica))
                self.assertEqual(self.transport.disconnecting, replica != -1)

    def test_names_still_decoded_before_v13(self):
        from dataclasses import replace

        from kio.schema.fetch.v12.request import FetchPartition, FetchTopic

        from .test_fastpath import fetch_request
        request = replace(fetch_request(12), topics=(FetchTopic(topic="t", partitions=(
            FetchPartition(partition=i32(0), fetch_offset=i64(0),
                           partition_max_bytes=i32(1 << 20)),)),))
        self.broker_transport.clear()
        self.client.dataReceived(request_frame(request, 12, 5))
        _, sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        self.assertEqual(sent.topics[0].topic, "londont")


class FetchSessionPoolTests(TenantSpliceBase):
    """--max-fetch-sessions: one virtual cluster's connections to one broker
    hold at most that many broker fetch sessions through a gateway (each
    worker an even share), however many connections it opens (each may hold
    FetchSessions.LIMIT)."""

    def setUp(self):
        super().setUp()
        self.gateway.max_fetch_sessions = 3
        self.opened = set()
        self.own = uuid.uuid4()
        self.topology.topic_ids[self.own] = "londont"

    def connection(self, vcluster="london"):
        """A new authenticated connection of *vcluster* whose broker side is
        open: (client, its transport, its broker protocol, what reached it)."""
        from .test_fastpath import fetch_request
        transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 5))
        client = self.gateway.factory_for_port(6969).buildProtocol(None)
        client.makeConnection(transport)
        client.dataReceived(handshake())
        client.dataReceived(authenticate("sa", self.authority.issue(vcluster, "sa", 600)))
        sessionless = dataclasses.replace(fetch_request(17, [self.own]),
                                          session_id=i32(0), session_epoch=i32(-1))
        client.dataReceived(request_frame(sessionless, 17, 3))  # opens the broker side
        _, broker, broker_transport = self.brokers[-1]
        return client, transport, broker, broker_transport

    def new_sessions(self, conn, count, first_id, correlation=10):
        """*count* full fetches asking for a session, answered with sessions
        from *first_id* when made: the (session id, epoch) each went on with."""
        from .test_fastpath import fetch_request, fetch_response
        client, _, broker, sent = conn
        sent.clear()
        new = dataclasses.replace(fetch_request(17, [self.own]), session_id=i32(0),
                                  session_epoch=i32(0))
        client.dataReceived(b"".join(request_frame(new, 17, correlation + c)
                                     for c in range(count)))
        out = [decode_request(f)[1] for f in FrameDecoder().feed(sent.value())]
        if client not in self.opened:  # the answer to connection()'s fetch
            self.opened.add(client)
            broker.dataReceived(frame(struct.pack(">i", 3) + b"\x00" +
                                      fetch_response(17, topic=self.own)))
        for c, request in enumerate(out):
            body = bytearray(fetch_response(17, topic=self.own))
            made = first_id + c if request.session_epoch == 0 else 0
            body[6:10] = struct.pack(">i", made)
            broker.dataReceived(frame(struct.pack(">i", correlation + c) + b"\x00" + body))
        return [(r.session_id, r.session_epoch) for r in out]

    def test_a_tenants_connections_share_its_pool(self):
        """Two connections of one tenant: three sessions in all; the third and
        later fetches asking for one go on sessionless; another tenant's pool
        is its own; a closed connection gives its sessions' room back once
        the broker may evict them (idle STALE_AFTER seconds), so closing and
        reopening connections gets a tenant no more of the broker's cache."""
        from vkafka.tenancy.sessions import STALE_AFTER
        first, second = self.connection(), self.connection()
        self.assertEqual(self.new_sessions(first, 2, 100), [(0, 0)] * 2)
        self.assertEqual(self.new_sessions(second, 3, 200), [(0, 0), (0, -1), (0, -1)])
        pool = self.gateway.session_pool("london", first[0].node_id)
        self.assertEqual(pool.held, 3)
        paris = self.connection("paris")
        self.topology.topic_ids[self.own] = "parist"
        self.assertEqual(self.new_sessions(paris, 2, 300), [(0, 0)] * 2)
        self.topology.topic_ids[self.own] = "londont"
        first[3].clear()
        first[3].loseConnection()  # as Twisted stops the producer of a closed client
        first[0].connectionLost(None)  # its two closed on the broker, and...
        closers = [decode_request(f) for f in FrameDecoder().feed(first[3].value())]
        self.assertEqual([(h.api_key, r.session_id, r.session_epoch, r.topics)
                          for h, r in closers], [(1, 100, -1, ()), (1, 101, -1, ())])
        self.assertTrue(first[3].disconnecting)
        # ...should the broker not have taken those, their room is held:
        self.assertEqual(self.new_sessions(second, 1, 400), [(0, -1)])
        self.reactor.advance(STALE_AFTER)  # until a new session may evict them
        self.assertEqual(pool.held, 1)
        self.assertEqual(self.new_sessions(second, 2, 500), [(0, 0)] * 2)
        self.assertEqual(pool.held, 3)
        self.assertFalse(second[0].closed)


    def test_a_workers_share_of_the_pool(self):
        """A worker of a gateway of N holds --max-fetch-sessions // N (at
        least one): N pools of the whole setting let a tenant fill N times
        its room in the broker's session cache."""
        self.gateway.max_fetch_sessions, self.gateway.workers = 7, 3
        first, second = self.connection(), self.connection()
        self.assertEqual(self.new_sessions(first, 2, 100), [(0, 0)] * 2)
        self.assertEqual(self.new_sessions(second, 2, 200), [(0, -1)] * 2)
        self.assertEqual(self.gateway.session_pool("london", first[0].node_id).held, 2)
        self.gateway.max_fetch_sessions = 2  # fewer than the workers: one each
        paris = self.connection("paris")
        self.topology.topic_ids[self.own] = "parist"
        self.assertEqual(self.new_sessions(paris, 2, 300), [(0, 0), (0, -1)])

    def test_sessions_closed_when_the_gateway_closes(self):
        """A connection the gateway closes (here: a Fetch as a replica) closes
        its broker sessions first, at the version the client fetched with."""
        from .test_fastpath import fetch_request
        conn = self.connection()
        self.assertEqual(self.new_sessions(conn, 1, 700), [(0, 0)])
        conn[3].clear()
        conn[0].dataReceived(request_frame(fetch_request(17, [self.own], replica=3), 17, 30))
        self.assertTrue(conn[0].closed)
        [(header, closer)] = [decode_request(f) for f in FrameDecoder().feed(conn[3].value())]
        self.assertEqual((header.api_key, header.api_version, closer.session_id,
                          closer.session_epoch), (1, 17, 700, -1))


class CountingTransport(StringTransport):
    """Notes each write call (an Outbox's release is one call per read), and
    each write made after the connection was told to close."""

    calls = late = 0

    def write(self, data):
        self.calls += 1
        self.late += self.disconnecting
        super().write(data)

    def writeSequence(self, seq):
        self.write(b"".join(seq))


class ClientIdTests(TenantSpliceBase):
    """The client id in a tenant's request headers reaches the broker as
    ``<vcluster>/<the client's>``: brokers key client-id quotas, metrics and
    classic member ids by it, so no tenant shares another's or the gateway's."""

    def setUp(self):
        super().setUp()
        self.own = uuid.uuid4()
        self.topology.topic_ids[self.own] = "londont"
        self.login()
        self.client._connect()
        self.broker_transport.clear()

    def sent_client_ids(self):
        from vkafka.protocol.headers import parse_request_header
        return [parse_request_header(f).client_id
                for f in FrameDecoder().feed(self.broker_transport.value())]

    def metadata(self, correlation_id, client_id):
        from kio.schema.metadata.v12.request import MetadataRequest
        return request_frame(MetadataRequest(
            topics=None, allow_auto_topic_creation=False,
            include_topic_authorized_operations=False), 12, correlation_id, client_id)

    def test_sliced_and_decoded(self):
        """A sliced request (Produce) and a decoded one (Metadata) carry the
        tenant's client id; a client id naming another virtual cluster is
        only this one's.  Header tagged fields (Kafka defines none) are
        dropped; the body goes as it came."""
        produce = produce_frame(13, self.own, 5)
        tags = 4 + 8 + 2 + 4  # size, key, version, correlation id, "test"
        self.assertEqual(produce[tags:tags + 1], b"\x00")  # no header tags
        tagged = frame(produce[4:tags] + b"\x02\x00\x01\x7f\x05\x00"
                       + produce[tags + 1:])
        self.client.dataReceived(tagged + self.metadata(6, "paris/x")
                                 + produce_frame(9, "t", 7))
        self.assertEqual(self.sent_client_ids(), ["london/test", "london/paris/x",
                                                  "london/test"])
        self.assertEqual(self.broker_transport.value()[:len(produce) + 7],
                         broker_sees(produce))

    def test_body_starting_like_tags(self):
        """A header without tagged fields (Produce v8) before a body whose
        first byte is not 0 (a null transactional id): sent whole."""
        produce = produce_frame(8, "t", 5)
        self.assertEqual(produce[18:20], b"\xff\xff")
        self.client.dataReceived(produce)
        [sent] = FrameDecoder().feed(self.broker_transport.value())
        body = 8 + 2 + len("london/test")  # txn id, acks, timeout, topic count
        self.assertEqual(bytes(sent[body:body + 12]), produce[4 + 14:4 + 26])
        self.assertEqual(decode_request(sent)[1].topic_data[0].name, "londont")

    def test_null_and_changing_ids(self):
        """A null client id is the virtual cluster's alone; a connection whose
        client id changes from one request to the next is followed."""
        frames = [self.metadata(c, client_id)
                  for c, client_id in ((5, "a"), (6, "b"), (7, "b"), (8, ""))]
        null = frame(bytes(frames[3][4:12]) + struct.pack(">h", -1)
                     + bytes(frames[3][14:]))
        self.client.dataReceived(b"".join(frames) + null)
        self.assertEqual(self.sent_client_ids(), ["london/a", "london/b", "london/b",
                                                  "london/", "london/"])

    def test_long_client_id_cut(self):
        """A client id longer than MAX_CLIENT_ID once named is cut there (the
        group coordinator keeps it for every member, in a classic member's id
        too); the request goes on."""
        from vkafka.tenancy.naming import MAX_CLIENT_ID
        self.client.dataReceived(self.metadata(5, "x" * 32761))
        self.assertEqual(self.sent_client_ids(),
                         ["london/" + "x" * (MAX_CLIENT_ID - len("london/"))])
        self.assertFalse(self.transport.disconnected)

    def test_body_not_copied(self):
        """The header is made anew; the rest of the frame is sent as a view of
        the bytes that came."""
        from vkafka.filters.tenant import ClientIds
        payload = produce_frame(13, self.own, 5)[4:]
        size, head, rest = ClientIds("london").parts(payload)
        self.assertIs(rest.obj, payload)
        self.assertEqual(size + head + bytes(rest),
                         broker_sees(frame(payload)))


class DescribedClientIdTests(unittest.TestCase):
    """Group members' client ids, as brokers hold them, shown as sent."""

    def rctx(self):
        from vkafka.tenancy.context import RequestContext
        from vkafka.tenancy.vclusters import VirtualClusters
        return RequestContext(VirtualClusters().namespace("london"), {})

    def test_describe_groups(self):
        from kio.schema.describe_groups.v5.response import (
            DescribedGroup, DescribedGroupMember, DescribeGroupsResponse)
        from vkafka.tenancy.rules.groups import client_ids_shown

        def member(client_id):
            return DescribedGroupMember(
                member_id="m", group_instance_id=None, client_id=client_id,
                client_host="/h", member_metadata=b"", member_assignment=b"")
        response = DescribeGroupsResponse(
            throttle_time=i32Timedelta.parse(datetime.timedelta(0)), groups=(
                DescribedGroup(error_code=ErrorCode.none, group_id="g",
                               group_state="Stable", protocol_type="x",
                               protocol_data="", members=tuple(map(member, (
                                   "london/a", "london/", "paris/b", "londonx/c"))),
                               authorized_operations=i32(0)),))
        shown = client_ids_shown(None, self.rctx(), response)
        self.assertEqual([m.client_id for m in shown.groups[0].members],
                         ["a", "", "", ""])

    def test_naming_rule(self):
        from vkafka.tenancy.naming import broker_client_id, tenant_client_id
        self.assertEqual(broker_client_id("london", b"app"), b"london/app")
        self.assertEqual(broker_client_id("london", None), b"london/")
        from vkafka.tenancy.naming import MAX_CLIENT_ID  # cut, on a character
        self.assertEqual(len(broker_client_id("london", b"a" * 40000)), MAX_CLIENT_ID)
        cut = broker_client_id("london", "é".encode() * 40000)
        self.assertEqual(cut, b"london/" + "é".encode() * ((MAX_CLIENT_ID - 7) // 2))
        self.assertEqual(tenant_client_id("london", "london/app/1"), "app/1")
        self.assertEqual(tenant_client_id("london", None), None)


class OneSendPerReadTests(TenantSpliceBase):
    """The frames of one read leave in one write per socket (splice.Outbox),
    byte for byte and in order; a close still sends what came before it."""

    def setUp(self):
        super().setUp()
        self.own = uuid.uuid4()
        self.topology.topic_ids[self.own] = "londont"
        self.login()
        self.client._connect()  # as the first request after login would
        self.broker_transport.clear()
        for side in (self.client.outbox, self.client.upstream):
            side.transport.__class__ = CountingTransport

    def test_requests_of_one_read(self):
        requests = [produce_frame(13, self.own, c) for c in (5, 6, 7)]
        self.client.dataReceived(b"".join(requests))
        self.assertEqual(self.broker_transport.value(), broker_sees(b"".join(requests)))
        self.assertEqual(self.broker_transport.calls, 1)

    def test_responses_of_one_read(self):
        self.client.dataReceived(b"".join(produce_frame(13, self.own, c) for c in (5, 6)))
        answers = [produce_answer(13, self.own, c) for c in (5, 6)]
        self.broker.dataReceived(b"".join(answers))
        self.assertEqual(self.transport.value(), b"".join(answers))
        self.assertEqual(self.transport.calls, 1)

    def test_frames_before_a_refused_one_still_sent(self):
        """A read whose second frame closes the connection: the first still
        reaches the broker, as if each had been sent on its own."""
        good = produce_frame(13, self.own, 5)
        unoffered = frame(struct.pack(">hhih", 999, 0, 6, -1))  # API 999: closes
        self.client.dataReceived(good + unoffered)
        self.assertEqual(self.broker_transport.value(), broker_sees(good))
        self.assertEqual(self.broker_transport.late, 0)  # sent before the close
        self.assertTrue(self.transport.disconnected)


class HeartbeatTests(TenantSpliceBase):
    """KIP-848 heartbeats: the regex matched by the gateway, assignments by id."""

    def setUp(self):
        super().setUp()
        self.topology.learn_listing({"londonorders", "londonother", "parisorders"},
                                    self.reactor.seconds())
        self.login()

    def heartbeat_frame(self, regex, correlation_id, member="m1"):
        from kio.schema.consumer_group_heartbeat.v1.request import (
            ConsumerGroupHeartbeatRequest)
        return request_frame(ConsumerGroupHeartbeatRequest(
            group_id="g", member_id=member, member_epoch=i32(0 if regex else 1),
            rebalance_timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
            subscribed_topic_names=None, subscribed_topic_regex=regex,
            topic_partitions=None), 1, correlation_id)

    def heartbeat(self, regex, correlation_id, member="m1"):
        self.broker_transport.clear()
        self.client.dataReceived(self.heartbeat_frame(regex, correlation_id, member))
        return self.sent()

    def sent(self):
        """The one request the broker got."""
        [frame] = FrameDecoder().feed(self.broker_transport.value())
        return decode_request(frame)[1]

    def answer(self, correlation_id, topic_id):
        from kio.schema.consumer_group_heartbeat.v1.response import (
            Assignment, ConsumerGroupHeartbeatResponse, TopicPartitions)
        self.transport.clear()
        self.broker.dataReceived(response_frame(correlation_id, ConsumerGroupHeartbeatResponse(
            throttle_time=i32Timedelta.parse(datetime.timedelta(0)),
            error_code=ErrorCode.none, error_message=None, member_id="m1",
            member_epoch=i32(2), heartbeat_interval=i32Timedelta.parse(
                datetime.timedelta(seconds=5)),
            assignment=Assignment(topic_partitions=(TopicPartitions(
                topic_id=topic_id, partitions=(i32(0),)),)))))

    def test_regex_sent_as_alternation_and_kept_current(self):
        """The broker gets the exact alternation of the tenant's matching topics,
        never the tenant's pattern; a later heartbeat without a regex carries a
        new alternation once the tenant's topics changed, and none otherwise."""
        sent = self.heartbeat("^ord.*$", 3)
        self.assertEqual(sent.subscribed_topic_regex, "^(?:londonorders)$")
        self.assertEqual(self.heartbeat(None, 4).subscribed_topic_regex, None)
        self.topology.learn_topic("londonorders2")
        self.assertEqual(self.heartbeat(None, 5).subscribed_topic_regex,
                         "^(?:londonorders|londonorders2)$")

    def test_long_pattern_answered_as_invalid_and_not_kept(self):
        """A pattern past MAX_PATTERN is sent as the invalid one (the broker
        answers INVALID_REGULAR_EXPRESSION) and not remembered; a member or
        group id of any length is kept as a digest."""
        from vkafka.tenancy.patterns import INVALID, MAX_PATTERN
        sent = self.heartbeat("o" * (MAX_PATTERN + 1), 3)
        self.assertEqual(sent.subscribed_topic_regex, INVALID)
        subs = self.client.services.regex_subscriptions
        self.assertEqual(subs._sizes.get("london", 0), 0)
        member = "m" * 100_000
        self.assertEqual(self.heartbeat("^ord.*$", 4, member).subscribed_topic_regex,
                         "^(?:londonorders)$")
        [key] = subs._members["london"]
        self.assertLess(sum(map(len, key)), 200)

    def listing_refresher(self):
        """A refresher whose listings the test completes (``listings``)."""
        from twisted.internet import defer
        listings, background = [], []

        class Refresher:
            all_topics = True

            def next_listing(self):
                listings.append(defer.Deferred())
                return listings[-1]

            def refresh_listing(self):
                background.append(None)
        self.gateway.refresher = self.client.services.refresher = Refresher()
        return listings, background

    def test_new_pattern_waits_for_a_listing(self):
        """A member's new pattern is matched only after a topic listing begun
        after it came: a matching topic created a moment ago through another
        gateway is in its first alternation.  The same pattern again (a
        rejoin) does not wait."""
        listings, _ = self.listing_refresher()
        self.broker_transport.clear()
        self.client.dataReceived(self.heartbeat_frame("^ord.*$", 3))
        self.assertEqual((len(listings), self.broker_transport.value()), (1, b""))
        self.topology.learn_topic("londonorders2")  # what the listing learns
        listings[0].callback(None)
        self.assertEqual(self.sent().subscribed_topic_regex,
                         "^(?:londonorders|londonorders2)$")
        self.assertEqual(self.heartbeat("^ord.*$", 4).subscribed_topic_regex,
                         "^(?:londonorders|londonorders2)$")
        self.assertEqual(len(listings), 1)

    def test_subscribed_member_keeps_the_listing_fresh(self):
        """A subscribed member's heartbeat starts a background listing once the
        last is LISTING_MAX_AGE old, so topics created elsewhere reach its
        alternation without waiting for the periodic refresh."""
        from vkafka.tenancy.rules.common import LISTING_MAX_AGE
        listings, background = self.listing_refresher()
        self.client.dataReceived(self.heartbeat_frame("^ord.*$", 3))
        listings[0].callback(None)
        self.topology.learn_listing({"londonorders", "parisorders"},
                                    self.reactor.seconds())
        self.heartbeat(None, 4)
        self.assertEqual(background, [])
        self.reactor.advance(LISTING_MAX_AGE)
        self.heartbeat(None, 5)
        self.assertEqual(background, [None])
        self.heartbeat(None, 6, member="m2")  # subscribed by no pattern
        self.assertEqual(background, [None])

    def test_pattern_forgotten_while_waiting_never_sent(self):
        """A member whose pattern was forgotten while its listing was awaited
        (pushed out by the tenant's other members) is sent the invalid
        pattern, never its own pattern."""
        from vkafka.tenancy.patterns import INVALID
        listings, _ = self.listing_refresher()
        self.broker_transport.clear()
        self.client.dataReceived(self.heartbeat_frame(".*", 3))
        subscriptions = self.client.services.regex_subscriptions
        [key] = subscriptions._members["london"]
        subscriptions.forget(key)
        listings[0].callback(None)
        self.assertEqual(self.sent().subscribed_topic_regex, INVALID)

    def test_unknown_assigned_id_waits_for_a_listing(self):
        """An assignment naming a topic id the gateway has not learnt yet is held
        until a listing (asked for at once) says whose it is, then passed."""
        from twisted.internet import defer
        new_id = uuid.uuid4()
        listing = defer.Deferred()

        class Refresher:
            asked = 0

            def refresh(self):
                self.asked += 1
                return listing

            def refresh_listing(self):
                pass
        self.gateway.refresher = self.client.services.refresher = refresher = Refresher()
        self.reactor.advance(5)  # the listing is older than a second
        self.heartbeat("^ord.*$", 3)
        self.answer(3, new_id)
        self.assertEqual((refresher.asked, self.transport.value()), (1, b""))
        self.topology.topic_ids[new_id] = "londonorders"  # what the listing learns
        listing.callback(True)
        _, response = decode_response(self.responses()[0], 68, 1)
        self.assertEqual([t.topic_id for t in response.assignment.topic_partitions],
                         [new_id])


class EmptyIdTests(unittest.TestCase):
    def test_physical_empty_group_is_nobodys(self):
        """A physical group or transactional id "" (Kafka takes a simple offset
        commit for group "") belongs to no tenant: listings drop it."""
        from kio.schema.list_groups.v5.response import ListedGroup, ListGroupsResponse

        from vkafka.tenancy.vclusters import VirtualClusters
        from vkafka.tenancy.context import RequestContext
        from vkafka.tenancy.walker import rewrite_response
        namespace = VirtualClusters().namespace("london")
        response = ListGroupsResponse(
            throttle_time=i32Timedelta.parse(datetime.timedelta(0)),
            error_code=ErrorCode.none, groups=tuple(
                ListedGroup(group_id=g, protocol_type="consumer", group_state="Empty",
                            group_type="classic") for g in ("", "londong", "parisg")))
        seen = rewrite_response(response, RequestContext(namespace, {}))
        self.assertEqual([g.group_id for g in seen.groups], ["g"])


class LoopShareTests(Producing, TenantSpliceBase):
    """--tenant-loop-share: a tenant's decoded requests past its share of the
    loop hold that connection's reads; sliced requests are never counted.
    The work clock is faked: each decoded request costs 50 ms of it."""

    def setUp(self):
        super().setUp()
        from vkafka.filters.throttle import LoopShare
        from vkafka.proxy import login
        self.gateway.loop_share = LoopShare(0.25, self.reactor.seconds, self.reactor.callLater)
        self.ticks = []
        self.client.services.work_clock = self.tick
        self.login_work = login.LOGIN_WORK
        self.patch(login, "LOGIN_WORK", 0.0)  # the sums below are the requests' work

    def tick(self):
        self.ticks.append(None)
        return len(self.ticks) * 0.05  # read at its start and end: 50 ms a request

    def coordinator(self, correlation_id):
        self.client.dataReceived(request_frame(find_coordinator_request(["g"]), 4,
                                               correlation_id))

    def test_held_past_the_share_then_released(self):
        self.login()
        for n in range(5):  # the first burst: 0.25 s of work
            self.coordinator(10 + n)
        self.assertEqual(self.client.valve.reasons, set())
        self.coordinator(20)  # 50 ms past the share: 0.2 s at 0.25 s a second
        self.assertEqual(self.client.valve.reasons, {"throttle"})
        self.assertEqual(self.transport.producerState, "paused")
        self.reactor.advance(0.19)
        self.assertEqual(self.client.valve.reasons, {"throttle"})
        self.reactor.advance(0.02)
        self.assertEqual(self.client.valve.reasons, set())
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.ticks), 12)  # every decoded request measured
        sent = FrameDecoder().feed(self.broker_transport.value())
        self.assertEqual([bytes(f[:2]) for f in sent], [b"\x00\x0a"] * 6)  # nothing lost

    def test_partitions_made_and_deleted_counted(self):
        """Partitions created (CreateTopics, CreatePartitions) or deleted
        (DeleteTopics) cost their virtual cluster PARTITION_WORK each of its
        share: 100 at once hold its connections past the first burst; a
        validate-only creation VALIDATED_WORK each."""
        from kio.schema.delete_topics.v6 import request as dt
        from vkafka.tenancy.rules.common import PARTITION_WORK, VALIDATED_WORK
        self.client.services.loop_share = self.gateway.loop_share
        self.login()
        bucket = self.gateway.loop_share.bucket("london")
        self.create_topic(100, True, 10)
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05 - 100 * VALIDATED_WORK)
        self.assertEqual(self.client.valve.reasons, set())
        self.create_topic(100, False, 11)
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.1 - 100 * (
            PARTITION_WORK + VALIDATED_WORK))
        self.assertEqual(self.client.valve.reasons, {"throttle"})
        self.reactor.advance(10)  # the bucket full again
        self.gateway.topology.learn_topic("londont", partitions=100)
        self.client.dataReceived(request_frame(dt.DeleteTopicsRequest(
            topics=(dt.DeleteTopicState(name="t", topic_id=None),),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=5))), 6, 12))
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05 - 100 * PARTITION_WORK)

    def test_broker_work_charged_on_each_worker(self):
        """With --workers N each worker charges the work a tenant has the
        brokers do N times, the brokers being the same for all of them (a
        login, the partitions made); its own decoding once."""
        from vkafka.proxy import login
        from vkafka.tenancy.rules.common import PARTITION_WORK
        from vkafka.worker import split_over
        self.patch(login, "LOGIN_WORK", self.login_work)
        split_over(self.gateway, 3)
        gateway = self.gateway
        self.assertEqual([gateway.workers] + [budget.processes for budget in (
            gateway.members, gateway.producer_ids, gateway.acl_writes,
            gateway.rule_writes, gateway.loop_share)], [3] * 6)
        self.client.services.loop_share = self.gateway.loop_share
        self.login()
        bucket = self.gateway.loop_share.bucket("london")
        self.assertAlmostEqual(bucket.tokens, 0.25 - 3 * self.login_work)
        self.create_topic(10, False, 10)
        self.assertAlmostEqual(bucket.tokens, 0.25 - 3 * self.login_work - 0.05
                               - 3 * 10 * PARTITION_WORK)

    def create_topic(self, partitions, validate, correlation_id, assigned=0, version=7):
        from kio.schema.create_topics.v7 import request as ct
        assignments = tuple(ct.CreatableReplicaAssignment(
            partition_index=i32(n), broker_ids=(i32(1),)) for n in range(assigned))
        self.client.dataReceived(request_frame(ct.CreateTopicsRequest(
            topics=(ct.CreatableTopic(name="t", num_partitions=i32(
                -1 if assigned else partitions), replication_factor=i16(
                -1 if assigned else 1), assignments=assignments, configs=()),),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
            validate_only=validate), version, correlation_id))

    def test_every_way_to_ask_for_partitions_counted(self):
        """Explicit replica assignments (num_partitions -1) count each
        partition assigned; the broker's default (-1) counts what the answer
        says was made; CreatePartitions of a topic not learnt yet counts all
        of it, and one topic's smaller count takes nothing off another's
        (audit 24: 500 assigned partitions were charged as 1, 2,000 a
        second made and deleted, one broker 13 minutes behind)."""
        from kio.schema.create_partitions.v3 import request as cpr
        from kio.schema.create_topics.v7 import response as ctr
        from vkafka.tenancy.rules.common import PARTITION_WORK, VALIDATED_WORK
        self.client.services.loop_share = self.gateway.loop_share
        self.login()
        bucket = self.gateway.loop_share.bucket("london")
        self.create_topic(-1, False, 10)  # the broker's default: 1 now
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05 - PARTITION_WORK)
        self.broker.dataReceived(response_frame(10, ctr.CreateTopicsResponse(
            throttle_time=i32Timedelta.parse(datetime.timedelta(0)), topics=(
                ctr.CreatableTopicResult(
                    name="londont", topic_id=uuid.uuid4(), error_code=ErrorCode.none,
                    error_message=None, topic_config_error_code=i16(0),
                    num_partitions=i32(30), replication_factor=i16(1), configs=()),))))
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.1 - 30 * PARTITION_WORK)
        self.assertEqual(self.gateway.topology.partitions["londont"], 30)
        self.reactor.advance(20)  # full again: 0.25
        self.create_topic(0, True, 11, assigned=500)
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05 - 500 * VALIDATED_WORK)
        self.reactor.advance(20)
        self.create_topic(0, False, 12, assigned=500)
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05 - 500 * PARTITION_WORK)
        self.reactor.advance(20)  # full again: 0.25
        self.gateway.topology.learn_topic("londonbig", partitions=1000)
        self.client.dataReceived(request_frame(cpr.CreatePartitionsRequest(
            topics=(cpr.CreatePartitionsTopic(name="big", count=i32(1), assignments=None),
                    cpr.CreatePartitionsTopic(name="new", count=i32(900),
                                              assignments=None)),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
            validate_only=False), 3, 13))
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05 - 900 * PARTITION_WORK)

    def test_more_partitions_than_the_controller_makes_refused_uncharged(self):
        """A request adding over PARTITIONS_PER_REQUEST partitions: the
        controller refuses such a CreateTopics at once, but validates a
        CreatePartitions of any size (10^8 kept two brokers busy for minutes,
        audit 25), so the gateway refuses it whole as a decoy, and neither is
        charged beyond its decoding."""
        from kio.schema.create_partitions.v3 import request as cpr
        from vkafka.tenancy.rules.common import PARTITIONS_PER_REQUEST
        self.client.services.loop_share = self.gateway.loop_share
        self.login()
        bucket = self.gateway.loop_share.bucket("london")
        self.create_topic(2 ** 31 - 1, True, 10)
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05)
        self.reactor.advance(20)
        self.gateway.topology.learn_topic("londona", partitions=6)
        for n, validate in enumerate((True, False)):
            self.broker_transport.clear()
            self.client.dataReceived(request_frame(cpr.CreatePartitionsRequest(
                topics=(cpr.CreatePartitionsTopic(name="a", count=i32(
                    6 + PARTITIONS_PER_REQUEST // 2), assignments=None),
                    cpr.CreatePartitionsTopic(name="b", count=i32(
                        1 + PARTITIONS_PER_REQUEST // 2), assignments=None)),
                timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
                validate_only=validate), 3, 11 + n))
            self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05)
            self.reactor.advance(20)
            _, sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
            self.assertTrue(all(t.name.startswith("!") for t in sent.topics), sent)

    def test_markers_deletions_and_assignments_counted(self):
        """A partition added to a transaction costs TXN_PARTITION_WORK (its
        marker on every replica), one a DeleteRecords names
        DELETED_RECORDS_WORK; a KIP-848 join, leave, new subscription, rack
        or assignor MEMBERSHIP_WORK (the coordinator assigns anew), a plain
        heartbeat only its decoding (audits 25, 25b)."""
        from kio.schema.add_partitions_to_txn.v3 import request as apt
        from kio.schema.consumer_group_heartbeat.v0 import request as cgh
        from kio.schema.delete_records.v2 import request as drr
        from kio.static.primitive import i64
        from vkafka.tenancy.rules.common import (
            DELETED_RECORDS_WORK, MEMBERSHIP_WORK, TXN_PARTITION_WORK)
        self.client.services.loop_share = self.gateway.loop_share
        self.login()
        bucket = self.gateway.loop_share.bucket("london")
        self.client.dataReceived(request_frame(apt.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id="tx", v3_and_below_producer_id=i64(5),
            v3_and_below_producer_epoch=i16(0), v3_and_below_topics=(
                apt.AddPartitionsToTxnTopic(name="a", partitions=tuple(
                    i32(n) for n in range(60))),
                apt.AddPartitionsToTxnTopic(name="b", partitions=tuple(
                    i32(n) for n in range(40))))), 3, 10))
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05 - 100 * TXN_PARTITION_WORK)
        self.reactor.advance(20)
        self.client.dataReceived(request_frame(drr.DeleteRecordsRequest(
            topics=(drr.DeleteRecordsTopic(name="a", partitions=tuple(
                drr.DeleteRecordsPartition(partition_index=i32(n), offset=i64(5))
                for n in range(30))),),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=5))), 2, 11))
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05 - 30 * DELETED_RECORDS_WORK)
        costs = []
        for n, (epoch, topics, rack, assignor) in enumerate((
                (0, ("a",), None, None), (3, None, None, None),
                (3, ("a", "b"), None, None), (3, None, "r2", None),
                (3, None, None, "range"), (-1, None, None, None))):
            self.reactor.advance(20)
            self.client.dataReceived(request_frame(cgh.ConsumerGroupHeartbeatRequest(
                group_id="g", member_id="m", member_epoch=i32(epoch), instance_id=None,
                rack_id=rack, rebalance_timeout=i32Timedelta.parse(
                    datetime.timedelta(seconds=30)), subscribed_topic_names=topics,
                server_assignor=assignor, topic_partitions=None), 0, 12 + n))
            costs.append(round(0.25 - 0.05 - bucket.tokens, 6))
        self.assertEqual(costs, [MEMBERSHIP_WORK, 0, MEMBERSHIP_WORK, MEMBERSHIP_WORK,
                                 MEMBERSHIP_WORK, MEMBERSHIP_WORK])

    def test_lookups_by_time_charged_their_wait(self):
        """A ListOffsets asking by time (or -3, or any other negative) costs
        LOOKUP_WORK for each second until its answer, once a request: the
        broker reads every record of the batch it lands in, which the
        tenant may have made of a million (~0.6 s of broker CPU each time);
        one asking for the ends (-1, -2, -4, -5) only its decoding."""
        from kio.schema.list_offsets.v7 import request as lor
        from kio.schema.list_offsets.v7 import response as lop
        from vkafka.tenancy.rules.records import LOOKUP_WORK
        self.client.services.loop_share = self.gateway.loop_share
        self.login()
        bucket = self.gateway.loop_share.bucket("london")
        left = {}
        for n, times in enumerate(((-1,), (-2, -4, -5), (0,), (-1, 1234), (-3,), (-7,))):
            self.reactor.advance(20)  # the bucket full again
            self.client.dataReceived(request_frame(lor.ListOffsetsRequest(
                replica_id=i32(-1), isolation_level=i8(0), topics=(lor.ListOffsetsTopic(
                    name="t", partitions=tuple(lor.ListOffsetsPartition(
                        partition_index=i32(p), current_leader_epoch=i32(-1),
                        timestamp=i64(ts)) for p, ts in enumerate(times))),)),
                7, 10 + n))
            self.reactor.advance(0.4)
            self.broker.dataReceived(response_frame(10 + n, lop.ListOffsetsResponse(
                throttle_time=i32Timedelta.parse(datetime.timedelta(0)), topics=(
                    lop.ListOffsetsTopicResponse(name="londont", partitions=tuple(
                        lop.ListOffsetsPartitionResponse(
                            partition_index=i32(p), error_code=ErrorCode.none,
                            timestamp=i64(-1), offset=i64(5), leader_epoch=i32(0))
                        for p in range(len(times)))),)), flexible=True))
            left[times] = bucket.tokens
        cheap = left[(-1,)]
        self.assertAlmostEqual(left[(-2, -4, -5)], cheap)
        for times in ((0,), (-1, 1234), (-3,), (-7,)):
            self.assertAlmostEqual(left[times], cheap - 0.4 * LOOKUP_WORK, msg=times)
        self.assertEqual(len(self.responses()), 6)

    def test_partitions_a_transaction_produces_to_counted(self):
        """KIP-890's transactions add partitions by producing: each partition
        a transaction (producer id and epoch) first writes to costs
        TXN_PARTITION_WORK, its later batches nothing; the next transaction
        (the epoch bumped) pays again; a non-transactional batch nothing."""
        import struct
        from dataclasses import replace as with_fields
        from vkafka.tenancy.rules.common import TXN_PARTITION_WORK
        from .kafka_messages import produce_records, record_batch
        self.client.services.loop_share = self.gateway.loop_share
        self.client.services.work_clock = lambda: 0.0  # no loop time: only broker work
        self.login()
        bucket = self.gateway.loop_share.bucket("london")

        def batch(epoch, transactional=True):
            raw = bytearray(record_batch(1, producer=5))
            raw[22] |= 0x10 if transactional else 0
            struct.pack_into(">h", raw, 51, epoch)
            return bytes(raw)
        costs = []
        for n, (epoch, transactional) in enumerate(
                ((1, True), (1, True), (2, True), (2, False))):
            self.reactor.advance(20)
            request = produce_records("t", batch(epoch, transactional))
            self.client.dataReceived(request_frame(with_fields(
                request, transactional_id="tx" if transactional else None), 9, 20 + n))
            bucket.take(0)  # filled to now, whether the request was charged or not
            costs.append(round(0.25 - bucket.tokens, 6))
        self.assertEqual(costs, [TXN_PARTITION_WORK, 0, TXN_PARTITION_WORK, 0])

    def test_topic_config_changes_counted(self):
        """A topic config change costs RECONFIGURED_WORK per partition of the
        topic (every replica reconfigures each partition's log); validating
        one, or a group's, costs only its decoding."""
        from kio.schema.incremental_alter_configs.v1 import request as iac
        from kio.static.primitive import i8
        from vkafka.tenancy.rules.common import RECONFIGURED_WORK
        self.client.services.loop_share = self.gateway.loop_share
        self.login()
        bucket = self.gateway.loop_share.bucket("london")
        self.reactor.advance(20)  # full again: 0.25
        self.gateway.topology.learn_topic("londonbig", partitions=1000)

        def alter(kind, name, validate, correlation_id):
            self.client.dataReceived(request_frame(iac.IncrementalAlterConfigsRequest(
                resources=(iac.AlterConfigsResource(
                    resource_type=i8(kind), resource_name=name, configs=(
                        iac.AlterableConfig(name="retention.ms", config_operation=i8(0),
                                            value="86400000"),)),),
                validate_only=validate), 1, correlation_id))
        alter(2, "big", False, 10)
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.05 - 1000 * RECONFIGURED_WORK)
        self.reactor.advance(20)  # full again: 0.25
        alter(2, "big", True, 11)
        alter(32, "g", False, 12)
        self.assertAlmostEqual(bucket.tokens, 0.25 - 0.1)

    def test_decoded_answers_counted_too(self):
        """A small request can ask for a large answer: its decode and rewrite
        are charged as well (three requests and answers: 0.3 s of work)."""
        self.login()
        for n in range(3):
            self.assertEqual(self.client.valve.reasons, set(), n)
            self.coordinator(10 + n)
            sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[-1])
            key = sent[1].coordinator_keys[0]
            self.broker.dataReceived(response_frame(10 + n, find_coordinator_response(
                [(key, 1, "kafka1", 9092, 0)])))
        self.assertEqual(len(self.ticks), 12)
        self.assertEqual(self.client.valve.reasons, {"throttle"})
        self.assertEqual(len(self.responses()), 3)  # every answer went out

    def test_fetch_answers_counted(self):
        """A Fetch before v13 is decoded both ways, and both count: an answer
        naming 24,000 topics took half a second to decode and encode."""
        from .kafka_messages import fetch_request
        from .test_fastpath import fetch_response
        self.login()
        self.client.dataReceived(request_frame(fetch_request("orders", version=12), 12, 10))
        self.assertEqual(len(self.ticks), 2)
        body = fetch_response(12, topic="londonorders")
        self.broker.dataReceived(frame(struct.pack(">i", 10) + b"\x00" + body))
        self.assertEqual(len(self.responses()), 1)
        self.assertEqual(len(self.ticks), 4)

    def test_sliced_requests_not_counted(self):
        """Produce is rewritten by slicing, each timed on the rule table's
        path: one taking less than SMALL_WORK (nearly all, ~10 us) is not
        charged; a producer is limited by its rates, never by the loop
        share.  A small Produce taking longer (5,500 topics in 54 KB took 20
        ms) is charged.  One in the produce lane (its names decided before,
        filters/lane.py) is bounded instead, and not timed."""
        from vkafka.tenancy.services import SMALL_WORK
        self.login()
        clock = [0.0]

        def fast():
            clock[0] += SMALL_WORK / 4
            return clock[0]
        self.client.services.work_clock = fast
        for n in range(20):
            self.produce(9, f"orders{n}", 10 + n)
        self.assertEqual(self.client.valve.reasons, set())
        self.client.services.work_clock = self.tick  # 50 ms each
        for n in range(6):
            self.produce(9, "orders0", 30 + n)  # decided before: in the lane
        self.assertEqual((self.client.valve.reasons, self.ticks), (set(), []))
        for n in range(6):
            self.produce(9, f"new{n}", 40 + n)  # the rule table's path
        self.assertEqual(self.client.valve.reasons, {"throttle"})

    def wide_produce(self, topics, correlation_id):
        return wide_produce(topics, correlation_id)

    def test_wide_produce_counted(self):
        """A Produce of 64 KiB or more may name thousands of topics, each
        renamed on the loop: timed and charged (small ones are not)."""
        self.login()
        self.client.dataReceived(self.wide_produce(3000, 10))
        self.assertEqual(len(self.ticks), 2)
        self.assertFalse(self.transport.disconnecting)

    def test_produce_of_too_many_topics_closes(self):
        from vkafka.protocol.produce import MAX_TOPICS
        self.login()
        self.client.dataReceived(self.wide_produce(MAX_TOPICS + 1, 10))
        self.assertTrue(self.transport.disconnecting)

    def test_debt_holds_every_connection_of_the_tenant(self):
        """The share is the virtual cluster's: once one connection overspent,
        its other connections (a new one too) hold their next requests until
        the debt is paid, instead of spending more of the loop meanwhile."""
        self.login()
        for n in range(6):  # 0.3 s of work: 50 ms past the share
            self.coordinator(10 + n)
        self.assertEqual(self.client.valve.reasons, {"throttle"})
        other = self.gateway.factory_for_port(6969).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 9))
        other.makeConnection(transport)
        other.dataReceived(handshake())
        other.dataReceived(authenticate("sa", self.authority.issue("london", "sa", 600)))
        other.services.work_clock = self.tick
        ticks = len(self.ticks)
        other.dataReceived(request_frame(find_coordinator_request(["g"]), 4, 30))
        self.assertIn("login", other.valve.reasons)  # its login waits first
        self.assertEqual(len(self.ticks), ticks)  # not worked on: it waits
        self.reactor.advance(1)  # the debt (0.05 s) paid
        self.assertGreater(len(self.ticks), ticks)  # its turn came
        self.assertEqual(len(FrameDecoder().feed(transport.value())), 2)  # in order

    def test_waiting_connections_take_turns(self):
        """Past the share, a virtual cluster's connections are let go one at a
        time as the debt is paid, in the order they came: one with ten
        requests held does not keep another waiting until all ten are done
        (released together, the first to run spent the share again and the
        others were held anew: 12 connections making topics waited up to
        28 s).  One that closes while it waits leaves the line."""
        self.login()
        self.gateway.loop_share.bucket("london").tokens = -0.25  # 1 s of debt
        worked = []

        def connect(name, port):
            conn = self.gateway.factory_for_port(6969).buildProtocol(None)
            conn.makeConnection(StringTransport(peerAddress=IPv4Address(
                "TCP", "1.2.3.4", port)))
            conn.dataReceived(handshake())
            conn.dataReceived(authenticate("sa", self.authority.issue("london", "sa",
                                                                      600)))
            conn.services.work_clock = lambda: (
                worked.append((name, self.reactor.seconds())), len(worked) * 0.05)[1]
            return conn
        busy, gone, quiet = connect("busy", 7), connect("gone", 8), connect("quiet", 9)
        busy.dataReceived(b"".join(request_frame(find_coordinator_request(["g"]), 4,
                                                 10 + n) for n in range(10)))
        self.reactor.advance(0.1)
        gone.dataReceived(request_frame(find_coordinator_request(["g"]), 4, 10))
        quiet.dataReceived(request_frame(find_coordinator_request(["g"]), 4, 10))
        self.assertEqual(worked, [])  # all three wait
        gone.transport.loseConnection()
        gone.connectionLost(None)
        for _ in range(100):
            self.reactor.advance(0.05)
        starts = worked[::2]
        self.assertEqual([name for name, _ in starts].count("busy"), 10)
        self.assertNotIn("gone", [name for name, _ in starts])
        quiet_at = [at for name, at in starts if name == "quiet"]
        self.assertEqual(len(quiet_at), 1)
        # its turn came after busy's first or second, 0.2 s of debt each
        self.assertLessEqual(quiet_at[0], starts[0][1] + 0.45)
        self.assertEqual(quiet.valve.reasons, set())
        self.assertFalse(quiet._loop_queued)

    def test_logins_paced(self):
        """Each first login costs its virtual cluster LOGIN_WORK of its share:
        past it, a login's answer waits its turn (the connection's later
        requests behind it, in order); other virtual clusters' logins do not."""
        from vkafka.proxy import login
        LOGIN_WORK = self.login_work
        self.patch(login, "LOGIN_WORK", LOGIN_WORK)
        self.login()
        bucket = self.gateway.loop_share.bucket("london")
        self.assertAlmostEqual(bucket.tokens, 0.25 - LOGIN_WORK)
        bucket.tokens = -0.25  # a second of debt at 0.25 a second

        def connect(vcluster, port):
            conn = self.gateway.factory_for_port(6969).buildProtocol(None)
            transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", port))
            conn.makeConnection(transport)
            conn.dataReceived(handshake())
            conn.dataReceived(authenticate("sa", self.authority.issue(vcluster, "sa", 600)))
            return conn, transport
        paris, paris_transport = connect("paris", 7)
        self.assertEqual(len(FrameDecoder().feed(paris_transport.value())), 2)
        waiting, transport = connect("london", 8)
        self.assertEqual(len(FrameDecoder().feed(transport.value())), 1)  # handshake only
        self.reactor.advance(1 + LOGIN_WORK * 4 - 0.01)
        self.assertEqual(len(FrameDecoder().feed(transport.value())), 1)
        self.reactor.advance(0.02)
        self.assertEqual(len(FrameDecoder().feed(transport.value())), 2)
        self.assertEqual(waiting.valve.reasons, set())

    def test_share_is_per_virtual_cluster(self):
        self.login()
        for n in range(8):
            self.coordinator(10 + n)
        other = self.gateway.factory_for_port(6969).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.5", 5))
        other.makeConnection(transport)
        other.services.work_clock = self.tick
        other.dataReceived(handshake())
        other.dataReceived(authenticate("sa", self.authority.issue("paris", "sa", 600)))
        other.dataReceived(request_frame(find_coordinator_request(["g"]), 4, 9))
        self.assertEqual(other.valve.reasons, set())
        self.assertIn("throttle", self.client.valve.reasons)


def wide_produce(topics, correlation_id):
    """A framed Produce v9 naming *topics* topics, one empty partition each."""
    import datetime
    from kio.schema.produce.v9 import request as m
    from kio.static.primitive import i16, i32, i32Timedelta
    return request_frame(m.ProduceRequest(
        transactional_id=None, acks=i16(1),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=1)),
        topic_data=tuple(m.TopicProduceData(
            name=f"topic-{n:05d}-of-a-wide-request", partition_data=(
                m.PartitionProduceData(index=i32(0), records=b""),))
            for n in range(topics))), 9, correlation_id)


def versions_known():
    """The brokers' ApiVersions answer, as the gateway's refresh learns it:
    every version of the tenant table."""
    from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
    return ApiVersionsResponse(
        error_code=ErrorCode.none, throttle_time=i32Timedelta.parse(
            datetime.timedelta(0)),
        api_keys=tuple(ApiVersion(api_key=i16(key), min_version=i16(rule.min_version),
                                  max_version=i16(rule.max_version))
                       for key, rule in tenant_rules().items()))


def api_versions_frames(count):
    """*count* ApiVersions v3 requests, correlation ids 1..count, one buffer."""
    from kio.schema.api_versions.v3.request import ApiVersionsRequest
    return b"".join(request_frame(ApiVersionsRequest(
        client_software_name="t", client_software_version="1"), 3, n)
        for n in range(1, count + 1))


class PipelineTests(TenantSpliceBase):
    """Many requests in one read: they take turns with other connections
    (FRAMES_PER_TURN), and before a login only a few are answered at all."""

    def setUp(self):
        super().setUp()
        self.topology.api_versions = versions_known()

    def api_versions(self, count):
        return api_versions_frames(count)

    def answered(self):
        """The correlation ids of the answers the client got, in order."""
        return [struct.unpack(">i", bytes(a[:4]))[0] for a in self.responses()]

    def test_a_read_of_many_requests_takes_turns(self):
        """300 pipelined requests in one read: FRAMES_PER_TURN answered in
        this turn, the client's reads held, the rest in later turns, in order."""
        from vkafka.proxy.splice import FRAMES_PER_TURN
        self.login()
        self.client.dataReceived(self.api_versions(300))
        self.assertEqual(len(self.responses()), FRAMES_PER_TURN)
        self.assertIn("turn", self.client.valve.reasons)
        self.assertEqual(self.transport.producerState, "paused")
        while "turn" in self.client.valve.reasons:
            self.reactor.advance(0)
        self.assertEqual(self.answered(), list(range(1, 301)))
        self.assertEqual(self.transport.producerState, "producing")

    def test_answers_unsent_stop_the_reading(self):
        """The client reads none of its answers: once its transport says they
        pile up (pauseProducing, past its buffer size) the client is read no
        more and its requests already read wait; they go on, in order, once
        the client reads again."""
        self.login()
        self.client.unsent.pauseProducing()  # as Twisted does past bufferSize
        self.assertEqual(self.transport.producerState, "paused")
        self.client.dataReceived(self.api_versions(100))
        self.reactor.advance(0)
        self.assertEqual(self.responses(), [])
        self.client.unsent.resumeProducing()
        while self.client._held is not None:
            self.reactor.advance(0)
        self.assertEqual(self.answered(), list(range(1, 101)))
        self.assertEqual(self.transport.producerState, "producing")

    def tenant_clients(self, *vclusters):
        """A logged-in connection for each of *vclusters*, with budgets of
        1000 bytes a direction: [(client, transport)]."""
        from vkafka.proxy.buffers import Buffers
        self.gateway.buffers = Buffers(1000, 1000)
        clients = []
        for n, vcluster in enumerate(vclusters):
            client = self.gateway.factory_for_port(6969).buildProtocol(None)
            transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 6 + n))
            client.makeConnection(transport)
            client.dataReceived(handshake())
            client.dataReceived(authenticate("sa", self.authority.issue(
                vcluster, "sa", 600)))
            clients.append((client, transport))
        return clients

    def connected(self, client):
        """*client*'s broker connection, opened by a request: (broker, its transport)."""
        client.dataReceived(metadata_for(["t"], 3))
        for _, broker, transport in self.brokers:
            if broker.client is client:
                return broker, transport

    @staticmethod
    def full(transport, unsent):
        """*transport* as Twisted's would be with *unsent* bytes queued."""
        transport.dataBuffer, transport.offset, transport._tempDataLen = \
            bytes(unsent), 0, 0

    def test_frames_being_received_share_a_budget(self):
        """A tenant starting large frames on many connections and ending none:
        past its --tenant-request-buffer the next connection starting one
        waits, its reads held; when a frame ends the waiting one goes on.
        Another tenant's budget is its own."""
        (a, ta), (b, tb), (other, to) = self.tenant_clients("london", "london", "paris")
        a.dataReceived(struct.pack(">i", 900) + bytes(100))
        b.dataReceived(struct.pack(">i", 600) + bytes(100))
        other.dataReceived(struct.pack(">i", 900) + bytes(100))
        self.assertEqual((a.reserved, b.waiting, other.reserved), (900, 600, 900))
        self.assertEqual((ta.producerState, tb.producerState, to.producerState),
                         ("producing", "paused", "producing"))
        a.transport.loseConnection()
        a.connectionLost(None)  # its frame ends with it
        self.assertEqual((b.reserved, b.waiting, tb.producerState), (600, 0, "producing"))
        requests, _ = self.gateway.buffers.tenant("paris")
        other.dataReceived(bytes(800))  # the frame ends: nothing held for paris
        self.assertEqual((other.reserved, requests.total), (0, 0))

    def test_frames_waiting_their_turn_count(self):
        """A whole frame held for its turn (a throttle here; a rule asking
        first, MAX_IN_FLIGHT answers owed) stays in the budget until it is
        handled: another connection's large frame waits meanwhile."""
        (a, ta), (b, tb) = self.tenant_clients("london", "london")
        a.valve.hold_for("throttle", 10, self.reactor)
        a.dataReceived(frame(bytes(800)))
        requests, _ = self.gateway.buffers.tenant("london")
        self.assertEqual((a.reserved, a.parked, requests.total), (0, 800, 800))
        b.dataReceived(struct.pack(">i", 600) + bytes(100))
        self.assertEqual((b.waiting, tb.producerState), (600, "paused"))
        self.reactor.advance(10)  # the throttle ends: the frame is handled
        self.assertEqual((a.parked, b.reserved), (0, 600))

    def test_frames_admitted_in_order(self):
        """A frame that would fit does not overtake one waiting before it."""
        (a, _), (b, _), (c, _) = self.tenant_clients("london", "london", "london")
        a.dataReceived(struct.pack(">i", 900) + bytes(10))
        b.dataReceived(struct.pack(">i", 600) + bytes(10))
        c.dataReceived(struct.pack(">i", 50) + bytes(10))
        self.assertEqual((b.waiting, c.waiting), (600, 50))
        a.connectionLost(None)
        self.assertEqual((b.reserved, c.reserved), (600, 50))

    def test_requests_a_broker_has_not_taken_count(self):
        """A whole request the broker does not read (it holds the connection's
        long poll) stays in the tenant's request budget while Twisted holds it
        unsent: another connection's large frame waits until it is sent."""
        (a, ta), (b, tb) = self.tenant_clients("london", "london")
        _, to_broker = self.connected(a)
        self.full(to_broker, 900)
        a.valve.pauseProducing()  # as Twisted does past bufferSize
        requests, _ = self.gateway.buffers.tenant("london")
        self.assertEqual((a.queued, requests.total), (900, 900))
        b.dataReceived(struct.pack(">i", 600) + bytes(100))
        self.assertEqual((b.waiting, tb.producerState), (600, "paused"))
        self.full(to_broker, 0)
        a.valve.resumeProducing()  # as Twisted does once all is sent
        self.assertEqual((a.queued, b.reserved, tb.producerState),
                         (0, 600, "producing"))
        self.assertEqual(requests.total, 600)

    def test_answers_a_client_has_not_read_count(self):
        """Answers a client does not read stay in the tenant's answer budget:
        another connection's next answer to be held whole waits, its broker
        not read, until they are sent; the request budget is not touched, and
        a connection closing frees what it held."""
        (a, ta), (b, tb) = self.tenant_clients("london", "london")
        self.connected(a)
        broker_b, from_b = self.connected(b)
        self.full(ta, 990)
        a.unsent.pauseProducing()
        requests, answers = self.gateway.buffers.tenant("london")
        self.assertEqual((answers.total, requests.total), (990, 0))
        answer = response_frame(3, metadata_response(BROKERS))
        size = len(answer) - 4
        self.assertGreater(size, 10)
        broker_b.dataReceived(answer[:20])
        self.assertEqual((broker_b.waiting, from_b.producerState), (size, "paused"))
        self.assertIn("buffers", broker_b.valve.reasons)
        a.transport.loseConnection()
        a.connectionLost(None)
        self.assertEqual((broker_b.reserved, from_b.producerState), (size, "producing"))
        broker_b.dataReceived(answer[20:])  # whole: answered, freed
        self.assertEqual((broker_b.reserved, answers.total), (0, 0))
        self.assertEqual(len(FrameDecoder().feed(tb.value())), 3)  # login, metadata

    def test_requests_owed_an_answer_are_bounded(self):
        """Past MAX_IN_FLIGHT requests owed an answer (the broker reads a
        connection's next request only once it answered the last) the
        client's reads are held and the rest of its read waits; each answer
        lets one more go, in order."""
        from vkafka.proxy.sequencer import MAX_IN_FLIGHT
        self.login()
        self.client.dataReceived(b"".join(
            metadata_for(["t"], n) for n in range(1, MAX_IN_FLIGHT + 21)))
        self.reactor.advance(0)
        forwarded = FrameDecoder().feed(self.broker_transport.value())
        self.assertEqual(len(forwarded), MAX_IN_FLIGHT)
        self.assertEqual(len(self.client.sequencer), MAX_IN_FLIGHT)
        self.assertIn("in flight", self.client.valve.reasons)
        self.assertEqual(self.transport.producerState, "paused")
        self.broker_transport.clear()
        for n in range(1, 21):
            self.broker.dataReceived(response_frame(n, metadata_response(BROKERS)))
            self.reactor.advance(0)
        sent = FrameDecoder().feed(self.broker_transport.value())
        self.assertEqual([struct.unpack(">i", bytes(f[4:8]))[0] for f in sent],
                         list(range(MAX_IN_FLIGHT + 1, MAX_IN_FLIGHT + 21)))
        self.assertEqual(self.answered(), list(range(1, 21)))
        self.broker.dataReceived(response_frame(21, metadata_response(BROKERS)))
        self.reactor.advance(0)
        self.assertNotIn("in flight", self.client.valve.reasons)
        self.assertEqual(self.transport.producerState, "producing")

    def test_only_a_few_requests_before_login(self):
        """REQUESTS_BEFORE_LOGIN ApiVersions before a login are answered; one
        more closes the connection."""
        from vkafka.proxy.splice import REQUESTS_BEFORE_LOGIN
        self.client.dataReceived(self.api_versions(REQUESTS_BEFORE_LOGIN + 5))
        self.assertEqual(len(self.responses()), REQUESTS_BEFORE_LOGIN)
        self.assertTrue(self.transport.disconnecting)

    def test_api_versions_past_the_table_steps_down(self):
        """ApiVersions at a version past the table's: a v0 answer with
        UNSUPPORTED_VERSION and, as a broker answers, the versions of
        ApiVersions alone (KIP-511), not a close: a client (franz-go) that
        took a longer list as final never saw the brokers' features (KIP-890
        transactions, audit 19)."""
        raw = frame(struct.pack(">hhih", 18, 99, 7, 1) + b"x" + b"\x00" * 3)
        self.client.dataReceived(raw)
        [answer] = self.responses()
        self.assertFalse(self.transport.disconnecting)
        _, versions = decode_response(answer, 18, 0)
        self.assertEqual(versions.error_code, ErrorCode.unsupported_version)
        self.assertEqual([(a.api_key, a.min_version, a.max_version)
                          for a in versions.api_keys], [(18, 0, 4)])

    def test_features_of_minimum_zero_only_from_v4(self):
        """The gateway learns the brokers' answer at v4, which lists every
        feature (transaction.version, group.version: KIP-1022); a v3 answer
        leaves out those of minimum version 0, as a broker's does (older
        clients refuse them)."""
        from kio.schema.api_versions.v4 import response as v4
        from vkafka.proxy.discovery import API_VERSIONS_VERSION
        self.assertEqual(API_VERSIONS_VERSION, 4)
        known = versions_known()
        self.topology.api_versions = v4.ApiVersionsResponse(
            error_code=ErrorCode.none, throttle_time=known.throttle_time,
            api_keys=tuple(v4.ApiVersion(api_key=a.api_key, min_version=a.min_version,
                                         max_version=a.max_version)
                           for a in known.api_keys),
            supported_features=(
                v4.SupportedFeatureKey(name="metadata.version", min_version=i16(7),
                                       max_version=i16(27)),
                v4.SupportedFeatureKey(name="transaction.version",
                                       min_version=i16(0), max_version=i16(2))))
        from kio.schema.api_versions.v4.request import ApiVersionsRequest
        for version in (3, 4):
            self.client.dataReceived(request_frame(ApiVersionsRequest(
                client_software_name="t", client_software_version="1"), version, 9))
            _, answer = decode_response(self.responses()[-1], 18, version)
            self.transport.clear()
            names = [f.name for f in answer.supported_features]
            self.assertEqual(names, ["metadata.version"] if version == 3 else
                             ["metadata.version", "transaction.version"])

    def test_api_versions_answer_made_once(self):
        """The answer is made once per version and reused: a flood of them
        costs a lookup each."""
        from vkafka.tenancy.rules.addresses import local_api_versions
        first = local_api_versions(self.client.services, 3)
        self.assertIs(local_api_versions(self.client.services, 3), first)
        self.topology.api_versions = dataclasses.replace(self.topology.api_versions)
        self.assertIsNot(local_api_versions(self.client.services, 3), first)


class OffLoopTests(TenantSpliceBase):
    """Requests and answers of OFF_LOOP_FROM bytes or more are decoded and
    encoded with Services.offload (the codec thread, proxy/offload.py), so
    the loop serves other tenants meanwhile; here it is faked, each job
    finished by the test at 0.2 s of CPU.  Their rewrite stays on the loop,
    their connection's later requests wait in order, and the thread's time is
    charged to the tenant's loop share."""

    def setUp(self):
        super().setUp()
        from vkafka.filters.throttle import LoopShare
        self.gateway.loop_share = LoopShare(0.25, self.reactor.seconds, self.reactor.callLater)
        self.jobs = []
        self.client.services.offload = self.offload
        self.client.services.work_clock = lambda: 0.0  # only the jobs' 0.2 s count

    def offload(self, f, *args, key):
        from twisted.internet import defer
        self.assertEqual(key, "london")  # the codec thread takes tenants in turn
        d = defer.Deferred()
        self.jobs.append((d, f, args))
        return d

    def finish(self):
        """Run the jobs waiting, and those they lead to; their names."""
        names = []
        while self.jobs:
            d, f, args = self.jobs.pop(0)
            names.append(f.__name__)
            d.callback((f(*args), 0.2))
        return names

    def describe(self, count, correlation_id):
        return describe_configs([(2, f"t{i}") for i in range(count)], correlation_id)

    def test_large_request_and_answer_off_the_loop(self):
        from kio.schema.describe_configs.v4 import response as r
        from kio.static.primitive import i8
        self.login()
        self.client.dataReceived(self.describe(15_000, 10))  # ~75 KB
        self.client.dataReceived(metadata_for(["t"], 11))  # behind it
        self.assertEqual(self.broker_transport.value(), b"")
        self.assertEqual(self.transport.producerState, "paused")  # reads held
        self.assertEqual(self.finish(), ["decode_request", "encode_body"])
        sent = FrameDecoder().feed(self.broker_transport.value())
        # 0.4 s of thread: over the share, the Metadata behind it waits
        self.assertEqual([bytes(f[:2]) for f in sent], [b"\x00\x20"])
        self.assertIn("throttle", self.client.valve.reasons)
        self.reactor.advance(self.client.valve.until("throttle") - self.reactor.seconds())
        sent += FrameDecoder().feed(self.broker_transport.value()[
            sum(len(f) + 4 for f in sent):])
        self.assertEqual([bytes(f[:2]) for f in sent], [b"\x00\x20", b"\x00\x03"])
        _, request = decode_request(sent[0])
        self.assertEqual(request.resources[7].resource_name, "londont7")
        answer = r.DescribeConfigsResponse(
            throttle_time=datetime.timedelta(0), results=tuple(r.DescribeConfigsResult(
                error_code=ErrorCode.none, error_message=None, resource_type=i8(2),
                resource_name=f"londont{i}", configs=()) for i in range(10_000)))
        self.broker.dataReceived(response_frame(10, answer))
        self.assertEqual(self.responses(), [])
        self.assertEqual(self.finish(), ["decode_response", "encode_body"])
        [out] = self.responses()
        _, got = decode_response(out, 32, 4)
        self.assertEqual(got.results[7].resource_name, "t7")
        self.assertEqual(self.client.valve.reasons, {"throttle"})  # 0.8 s of thread

    def test_answers_behind_one_off_the_loop_count(self):
        """Answers the broker sent while one before them is decoded off the
        loop wait their turn in the tenant's answer budget (~100 Fetch
        answers of 50 MB could wait there): past it the broker's next answer
        is not read until they are sent.  They go out in order, and once
        sent they are freed."""
        from kio.schema.describe_configs.v4 import response as r
        from kio.static.primitive import i8

        from vkafka.proxy.buffers import Buffers
        metadata = response_frame(11, metadata_response(BROKERS))
        size = len(metadata) - 4
        self.gateway.buffers = Buffers(10**6, 2 * size)
        self.login()
        self.client.dataReceived(self.describe(10, 10))  # a small request
        for n in (11, 12, 13):
            self.client.dataReceived(metadata_for(["t"], n))
        answer = r.DescribeConfigsResponse(
            throttle_time=datetime.timedelta(0), results=tuple(r.DescribeConfigsResult(
                error_code=ErrorCode.none, error_message=None, resource_type=i8(2),
                resource_name=f"londont{i}", configs=()) for i in range(10_000)))
        self.broker.dataReceived(response_frame(10, answer))  # off the loop
        self.broker.dataReceived(metadata + response_frame(12, metadata_response(BROKERS)))
        _, answers = self.gateway.buffers.tenant("london")
        self.assertEqual(answers.total, self.broker.parked)  # the two, rewritten
        self.assertGreater(self.broker.parked, size)
        last = response_frame(13, metadata_response(BROKERS))
        self.broker.dataReceived(last[:20])
        self.assertEqual(self.broker.waiting, size)
        self.assertIn("buffers", self.broker.valve.reasons)
        self.assertEqual(self.responses(), [])
        self.finish()
        self.assertEqual((self.broker.parked, self.broker.reserved), (0, size))
        self.assertNotIn("buffers", self.broker.valve.reasons)
        self.broker.dataReceived(last[20:])
        self.assertEqual([struct.unpack(">i", bytes(a[:4]))[0] for a in self.responses()],
                         [10, 11, 12, 13])
        self.assertEqual(answers.total, 0)

    def test_small_ones_stay_on_the_loop(self):
        self.login()
        self.client.dataReceived(self.describe(10, 10))
        self.assertEqual(self.jobs, [])
        self.assertEqual(len(FrameDecoder().feed(self.broker_transport.value())), 1)


def describe_configs(resources, correlation_id):
    """A DescribeConfigs v4 request frame for *resources*: [(type, name)]."""
    from kio.schema.describe_configs.v4.request import (
        DescribeConfigsRequest, DescribeConfigsResource)
    from kio.static.primitive import i8
    return request_frame(DescribeConfigsRequest(
        resources=tuple(DescribeConfigsResource(
            resource_type=i8(kind), resource_name=name, configuration_keys=None)
            for kind, name in resources),
        include_synonyms=False, include_documentation=False), 4, correlation_id)


class DescribeConfigsTests(TenantSpliceBase):
    def test_resource_named_twice_refused(self):
        """A resource named again in one request is not asked of the broker
        (it would build its answer once more: a few bytes ask for megabytes);
        the repeat is answered INVALID_REQUEST, saying why."""
        from kio.schema.describe_configs.v4 import response as r
        from kio.static.primitive import i8
        self.login()
        self.client.dataReceived(describe_configs(
            [(2, "t"), (2, "t"), (4, "1"), (4, "1"), (2, "u")], 10))
        _, sent = decode_request(FrameDecoder().feed(self.broker_transport.value())[0])
        names = [x.resource_name for x in sent.resources]
        self.assertEqual([names[0], names[2], names[4]], ["londont", "1", "londonu"])
        self.assertTrue(names[1].startswith("!") and names[3].startswith("!"), names)
        self.broker.dataReceived(response_frame(10, r.DescribeConfigsResponse(
            throttle_time=datetime.timedelta(0), results=tuple(
                r.DescribeConfigsResult(
                    error_code=ErrorCode.none if not n.startswith("!") else
                    ErrorCode.invalid_topic_exception, error_message=None,
                    resource_type=x.resource_type, resource_name=n, configs=())
                for x, n in zip(sent.resources, names)))))
        _, got = decode_response(self.responses()[0], 32, 4)
        self.assertEqual([(x.resource_type, x.resource_name, x.error_code)
                          for x in got.results],
                         [(2, "t", ErrorCode.none), (2, "t", ErrorCode.invalid_request),
                          (4, "1", ErrorCode.none), (4, "1", ErrorCode.invalid_request),
                          (2, "u", ErrorCode.none)])
        self.assertIn("named twice", got.results[1].error_message)
