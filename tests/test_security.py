"""Transport security without sockets: SNI names, backend settings, the gateway's
own SASL/PLAIN login on an in-memory transport, and the options that refuse
bad TLS configuration."""

import datetime

from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.response import SaslAuthenticateResponse
from kio.schema.sasl_handshake.v1.response import SaslHandshakeResponse
from kio.static.primitive import i64Timedelta
from twisted.internet import defer, protocol
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial import unittest

from vkafka.protocol.codec import decode_request, encode_body
from vkafka.protocol.framing import FrameDecoder, frame
from vkafka.proxy.security import (
    BackendSecurity, SaslError, SaslPlainEndpoint, SecurityConfigError, SniRouter)
from vkafka.tap import Options

from .certs import ThrowawayCA


class SniRouterTests(unittest.TestCase):
    def test_names_round_trip(self):
        router = SniRouter("broker{id}.kafka.example.com")
        self.assertEqual(router.host_for(7), "broker7.kafka.example.com")
        self.assertEqual(router.node_for("broker7.kafka.example.com"), 7)
        self.assertEqual(router.node_for("BROKER7.kafka.example.com".lower()), 7)

    def test_other_names_route_nowhere(self):
        """Bootstrap and unknown names get no broker (any broker then serves)."""
        router = SniRouter("broker{id}.kafka.example.com")
        for name in ("bootstrap.kafka.example.com", "broker.kafka.example.com",
                     "broker1.kafka.example.com.evil", "xbroker1.kafka.example.com",
                     None, ""):
            self.assertIsNone(router.node_for(name), name)

    def test_pattern_needs_one_id(self):
        self.assertRaises(SecurityConfigError, SniRouter, "broker.example.com")
        self.assertRaises(SecurityConfigError, SniRouter, "{id}.{id}.example.com")


class BackendSecurityTests(unittest.TestCase):
    def test_unknown_protocol(self):
        e = self.assertRaises(SecurityConfigError, BackendSecurity, "TLS")
        self.assertIn("--backend-security-protocol", str(e))

    def test_sasl_needs_credentials(self):
        e = self.assertRaises(SecurityConfigError, BackendSecurity, "SASL_SSL")
        self.assertIn("--backend-sasl-username", str(e))

    def test_unreadable_ca(self):
        e = self.assertRaises(SecurityConfigError, BackendSecurity, "SSL",
                              ca_file="/nonexistent/ca.pem")
        self.assertIn("--backend-ssl-ca-file", str(e))


class _Recorder(protocol.Protocol):
    def __init__(self):
        self.received = []

    def dataReceived(self, data):
        self.received.append(data)


class _Inner:
    """An endpoint that connects to a StringTransport."""

    def __init__(self):
        self.transport = StringTransport()

    def connect(self, factory):
        self.proto = factory.buildProtocol(None)
        self.proto.makeConnection(self.transport)
        return defer.succeed(self.proto)


def _response(correlation_id, body, flexible):
    header = correlation_id.to_bytes(4, "big") + (b"\x00" if flexible else b"")
    return frame(header + encode_body(body))


class SaslLoginTests(unittest.TestCase):
    def setUp(self):
        self.inner = _Inner()
        self.wrapped = _Recorder()
        self.done = SaslPlainEndpoint(self.inner, "gw", "pw").connect(
            protocol.Factory.forProtocol(lambda: self.wrapped))

    def sent(self):
        frames = FrameDecoder().feed(self.inner.transport.value())
        self.inner.transport.clear()
        return [decode_request(f) for f in frames]

    def test_login_then_hand_over(self):
        """Handshake, PLAIN token, then the wrapped protocol gets the connection
        and every later byte; the Deferred fires only after the broker said yes."""
        [(header, request)] = self.sent()
        self.assertEqual((header.api_key, header.api_version, request.mechanism),
                         (17, 1, "PLAIN"))
        wrapper = self.inner.proto
        wrapper.dataReceived(_response(header.correlation_id, SaslHandshakeResponse(
            error_code=ErrorCode.none, mechanisms=("PLAIN",)), False))
        [(header, request)] = self.sent()
        self.assertEqual(request.auth_bytes, b"\x00gw\x00pw")
        self.assertNoResult(self.done)
        wrapper.dataReceived(_response(header.correlation_id, SaslAuthenticateResponse(
            error_code=ErrorCode.none, error_message=None, auth_bytes=b"",
            session_lifetime=i64Timedelta.parse(datetime.timedelta(0))), True))
        self.assertIs(self.successResultOf(self.done), self.wrapped)
        wrapper.dataReceived(b"kafka bytes")
        self.assertEqual(self.wrapped.received, [b"kafka bytes"])
        self.wrapped.transport.write(b"out")
        self.assertEqual(self.inner.transport.value(), b"out")

    def test_refusal_fails_the_connect(self):
        [(header, _)] = self.sent()
        wrapper = self.inner.proto
        wrapper.dataReceived(_response(header.correlation_id, SaslHandshakeResponse(
            error_code=ErrorCode.unsupported_sasl_mechanism, mechanisms=("SCRAM-SHA-512",)),
            False))
        failure = self.failureResultOf(self.done, SaslError)
        self.assertIn("UNSUPPORTED_SASL_MECHANISM", str(failure.value))
        self.assertEqual(self.wrapped.received, [])

    def test_garbage_answer_fails_the_connect(self):
        self.inner.proto.dataReceived(b"\x00\x00\x00\x03abc")
        self.failureResultOf(self.done, SaslError)


class TlsOptionsTests(unittest.TestCase):
    def setUp(self):
        self.ca = ThrowawayCA(self.mktemp())
        self.cert, self.key, _ = self.ca.issue("gw", ["localhost"])

    def parse(self, *argv):
        options = Options({})
        options.parseOptions(["--token-secret", "s" * 32, *argv])
        return options

    def test_sasl_ssl_tenancy(self):
        options = self.parse("--security-protocol=SASL_SSL", "--multi-tenancy=true",
                             f"--ssl-certificate={self.cert}", f"--ssl-key={self.key}")
        self.assertIsNotNone(options["server-tls"])
        self.assertTrue(options["multi-tenancy"])

    def test_ssl_needs_certificate(self):
        e = self.assertRaises(usage.UsageError, self.parse, "--security-protocol=SSL")
        self.assertIn("--ssl-certificate", str(e))

    def test_bad_key_named(self):
        e = self.assertRaises(usage.UsageError, self.parse, "--security-protocol=SSL",
                              f"--ssl-certificate={self.cert}",
                              f"--ssl-key={self.cert}")
        self.assertIn("--ssl-key", str(e))

    def test_sni_needs_tls(self):
        e = self.assertRaises(usage.UsageError, self.parse, "--routing=sni")
        self.assertIn("--routing sni", str(e))

    def test_sni_default_pattern(self):
        options = self.parse("--security-protocol=SSL", "--routing=sni",
                             "--advertised-host=kafka.example.com",
                             f"--ssl-certificate={self.cert}", f"--ssl-key={self.key}")
        self.assertEqual(options["sni"].host_for(3), "broker3.kafka.example.com")

    def test_unknown_client_protocol(self):
        e = self.assertRaises(usage.UsageError, self.parse, "--security-protocol=TLS")
        self.assertIn("GATEWAY_SECURITY_PROTOCOL", str(e))


class AdminTlsOptionTests(unittest.TestCase):
    def setUp(self):
        self.ca = ThrowawayCA(self.mktemp())
        self.cert, self.key, _ = self.ca.issue("gw", ["localhost"])

    def test_admin_tls_needs_certificate(self):
        options = Options({})
        e = self.assertRaises(usage.UsageError, options.parseOptions,
                              ["--admin-tls=true"])
        self.assertIn("--admin-tls", str(e))

    def test_admin_tls_keeps_kafka_plaintext(self):
        """HTTPS on the admin port does not turn the Kafka ports to TLS."""
        from twisted.internet.testing import MemoryReactorClock

        from vkafka.tap import makeService
        options = Options({})
        options.parseOptions(["--admin-tls=true", f"--ssl-certificate={self.cert}",
                              f"--ssl-key={self.key}", "--port-count=1",
                              "--tuning=false", "--workers=1"])
        service = makeService(options, MemoryReactorClock())
        kinds = {type(s.endpoint).__name__ for s in service
                 if hasattr(s, "endpoint")}
        self.assertEqual(kinds, {"TCP4ServerEndpoint", "SSL4ServerEndpoint"})
        admin = [s for s in service if hasattr(s, "endpoint")
                 and s.endpoint._port == options["admin-port"]]
        self.assertEqual(type(admin[0].endpoint).__name__, "SSL4ServerEndpoint")
