# -*- test-case-name: tests.test_security -*-
"""Transport security on both sides of the gateway.

Client side: ``SSL`` and ``SASL_SSL`` listeners serve a PEM certificate
chain and key; with SNI routing one TLS port stands for every broker and the
host name the client asked for picks the broker.

Broker side: every connection the gateway opens (splices, its own metadata
refreshes, the state store) comes from one endpoint factory, so the backend
security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) is chosen once,
here.  TLS to brokers verifies the chain and, by default, the broker's host
name with service-identity.  SASL/PLAIN to brokers uses the gateway's own
credentials and completes before the connection is handed over, so the
splice never sees the exchange.
"""

import re
from dataclasses import dataclass

from OpenSSL import crypto
from twisted.internet import defer, protocol, ssl
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.protocols.policies import ProtocolWrapper
from twisted.python import failure

from ..client import (
    KafkaClientProtocol, ProtocolError, SaslError, sasl_plain_login, tcp_endpoint)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                       re.S)


class SecurityConfigError(ValueError):
    """A certificate, key or credential setting cannot be used."""


def uses_tls(security_protocol):
    return security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(security_protocol):
    return security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def _read(path, setting):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SecurityConfigError(f"{setting}: cannot read {path}: {e.strerror}")


def load_certificates(path, setting):
    """Every certificate of a PEM file, leaf first."""
    blocks = _PEM_CERT.findall(_read(path, setting))
    if not blocks:
        raise SecurityConfigError(f"{setting}: no PEM certificate in {path}")
    try:
        return [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in blocks]
    except crypto.Error as e:
        raise SecurityConfigError(f"{setting}: bad certificate in {path}: {e}")


def load_key(path, setting):
    try:
        return crypto.load_privatekey(crypto.FILETYPE_PEM, _read(path, setting))
    except crypto.Error as e:
        raise SecurityConfigError(f"{setting}: bad private key in {path}: {e}")


def server_tls_options(cert_file, key_file):
    """The client-facing TLS context: a certificate chain and its key."""
    chain = load_certificates(cert_file, "--ssl-certificate")
    key = load_key(key_file, "--ssl-key")
    try:
        return ssl.CertificateOptions(privateKey=key, certificate=chain[0],
                                      extraCertChain=chain[1:])
    except Exception as e:  # pyOpenSSL: the key does not match the certificate
        raise SecurityConfigError(f"--ssl-certificate/--ssl-key: {e}")


def server_name(transport):
    """The SNI host name a TLS client asked for, or None."""
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    name = getattr(handle, "get_servername", lambda: None)()
    return name.decode("ascii", "replace").lower() if name else None


@dataclass(frozen=True)
class BackendSecurity:
    """How the gateway connects to brokers; ``endpoint`` is its connector."""

    protocol: str = "PLAINTEXT"
    ca_file: str | None = None
    check_hostname: bool = True
    cert_file: str | None = None
    key_file: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None

    def __post_init__(self):
        if self.protocol not in SECURITY_PROTOCOLS:
            raise SecurityConfigError(
                f"--backend-security-protocol: {self.protocol!r} is not one of "
                f"{', '.join(SECURITY_PROTOCOLS)}")
        if uses_sasl(self.protocol) and not (self.sasl_username and self.sasl_password):
            raise SecurityConfigError(
                f"--backend-sasl-username and --backend-sasl-password are required "
                f"with backend {self.protocol}")
        if bool(self.cert_file) != bool(self.key_file):
            raise SecurityConfigError("--backend-ssl-certificate and --backend-ssl-key "
                                      "go together")
        trust = client_cert = None
        if uses_tls(self.protocol):
            if self.ca_file:
                trust = ssl.trustRootFromCertificates(
                    [ssl.Certificate(c) for c in
                     load_certificates(self.ca_file, "--backend-ssl-ca-file")])
            else:
                trust = ssl.platformTrust()
            if self.cert_file:
                chain = load_certificates(self.cert_file, "--backend-ssl-certificate")
                key = load_key(self.key_file, "--backend-ssl-key")
                client_cert = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                    ssl.Certificate(chain[0]), ssl.KeyPair(key))
        object.__setattr__(self, "_trust", trust)
        object.__setattr__(self, "_client_cert", client_cert)

    def tls_options(self, host):
        if self.check_hostname:
            return ssl.optionsForClientTLS(host, trustRoot=self._trust,
                                           clientCertificate=self._client_cert)
        extra = {}
        if self._client_cert is not None:
            extra = {"privateKey": self._client_cert.privateKey.original,
                     "certificate": self._client_cert.original}
        return ssl.CertificateOptions(trustRoot=self._trust, **extra)

    def endpoint(self, reactor, host, port, timeout=10):
        """A client endpoint to one broker, secured as configured."""
        endpoint = tcp_endpoint(reactor, host, port, timeout=timeout)
        if uses_tls(self.protocol):
            endpoint = wrapClientTLS(self.tls_options(host), endpoint)
        if uses_sasl(self.protocol):
            endpoint = SaslPlainEndpoint(endpoint, self.sasl_username,
                                         self.sasl_password)
        return endpoint


class SaslPlainEndpoint:
    """Connects, authenticates with SASL/PLAIN, then hands over the connection.

    The Deferred of ``connect`` fires with the caller's protocol only once the
    broker has accepted the credentials, so callers treat an authenticated
    connection exactly like a plaintext one.
    """

    def __init__(self, inner, username, password):
        self.inner = inner
        self.username = username
        self.password = password

    def connect(self, factory):
        connecting = None
        wrapper = None

        def cancel(d):
            if wrapper is not None and wrapper.transport is not None:
                wrapper.transport.abortConnection()
            elif connecting is not None:
                connecting.cancel()

        done = defer.Deferred(cancel)
        builder = _SaslFactory(factory, self.username, self.password, done)
        connecting = self.inner.connect(builder)

        def connected(proto):
            nonlocal wrapper
            wrapper = proto

        def failed(f):
            if not done.called:
                done.errback(f)
        connecting.addCallbacks(connected, failed)
        return done


class _SaslFactory(protocol.Factory):
    noisy = False

    def __init__(self, factory, username, password, done):
        self.factory = factory
        self.username = username
        self.password = password
        self.done = done

    def buildProtocol(self, addr):
        wrapped = self.factory.buildProtocol(addr)
        if wrapped is None:
            return None
        return _SaslAuthenticator(self, wrapped)

    def registerProtocol(self, proto):
        pass

    def unregisterProtocol(self, proto):
        pass


class _SaslAuthenticator(ProtocolWrapper):
    """Logs in with the internal client (``client.sasl_plain_login``) on the raw
    connection, then hands it to the wrapped protocol: with nothing pending and
    no byte buffered, so the splice sees the connection as a fresh one."""

    authenticated = False

    def __init__(self, factory, wrapped):
        super().__init__(factory, wrapped)
        self.login = KafkaClientProtocol("vkafka", max_frame_size=1024 * 1024)

    def makeConnection(self, transport):
        protocol.Protocol.makeConnection(self, transport)  # wrapped waits for auth

    def connectionMade(self):
        self.login.makeConnection(self.transport)
        sasl_plain_login(self.login, self.factory.username,
                         self.factory.password).addCallbacks(self._accepted,
                                                              self._failed)

    def dataReceived(self, data):
        if self.authenticated:
            return self.wrappedProtocol.dataReceived(data)
        self.login.dataReceived(data)

    def _accepted(self, _):
        try:
            self.login.release()
        except ProtocolError:
            return self._failed(failure.Failure())
        self.authenticated = True
        self.wrappedProtocol.makeConnection(self)
        self.factory.done.callback(self.wrappedProtocol)

    def _failed(self, reason):
        if reason.check(SaslError):
            error = reason.value
        elif reason.check(ConnectionLost, ConnectionDone):
            error = SaslError(f"broker closed the connection during SASL: "
                              f"{reason.getErrorMessage()}")
        else:
            error = SaslError(f"bad SASL answer from the broker: "
                              f"{reason.getErrorMessage()}")
        if not self.factory.done.called:
            self.factory.done.errback(error)
        self.transport.abortConnection()

    def connectionLost(self, reason):
        if self.authenticated:
            return super().connectionLost(reason)
        self.login.connectionLost(reason)  # fails the login: see _failed


class SniRouter:
    """Maps TLS server names to broker ids with a pattern like
    ``broker{id}.kafka.example.com`` (the inverse of the advertised name)."""

    def __init__(self, pattern):
        if pattern.count("{id}") != 1:
            raise SecurityConfigError(
                f"--sni-host-pattern: {pattern!r} must contain {{id}} exactly once")
        self.pattern = pattern.lower()
        before, after = self.pattern.split("{id}")
        self._regex = re.compile(re.escape(before) + r"(\d+)" + re.escape(after))

    def host_for(self, node_id):
        return self.pattern.replace("{id}", str(node_id))

    def node_for(self, host):
        match = self._regex.fullmatch(host or "")
        return int(match.group(1)) if match else None
