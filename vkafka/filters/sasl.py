# -*- test-case-name: tests.test_sasl_filter -*-
"""SASL/PLAIN termination for one client connection: a small state machine.

The gateway answers SaslHandshake and SaslAuthenticate itself (the PLAIN
password is a vkafka token naming the virtual cluster); nothing of them
reaches a broker.  The phases, and what each accepts:

- WAITING: SaslHandshake (any other SASL request: "SaslHandshake first").
- HANDSHAKEN: SaslAuthenticate with the token.
- RAW: after a v0 handshake the next frame is the bare token (no header).
- AUTHENTICATED: requests flow; a new handshake starts re-authentication,
  which must keep the same account.

This object holds the phase and the claims; the connection does the I/O
(answers, closing, timers) with what it returns.
"""

from enum import Enum

from ..auth import sasl
from ..protocol.headers import parse_request_header


class Phase(Enum):
    WAITING = "waiting for SaslHandshake"
    HANDSHAKEN = "waiting for SaslAuthenticate"
    RAW = "waiting for the bare token of a v0 handshake"
    AUTHENTICATED = "authenticated"


class SaslTerminator:
    """The SASL state of one connection: *tenancy* checks tokens and gives
    namespaces; *admit(vcluster)* is False when a virtual cluster is at its
    connection limit (asked once, at the first login); *clock()* is now."""

    def __init__(self, tenancy, admit, limit_text, clock):
        self.tenancy = tenancy
        self.clock = clock
        self.admit = admit
        self.limit_text = limit_text
        self.phase = Phase.WAITING
        self.claims = None
        self.namespace = None
        self.admitted = None
        """The virtual cluster counted against its limit (first login)."""

    @property
    def raw_token_next(self):
        return self.phase is Phase.RAW

    def answer(self, frame, api_key, api_version):
        """The gateway's answer to a SaslHandshake or SaslAuthenticate *frame*:
        (response body, failure or None, close the connection after it).
        Raises CodecError or HeaderError when the request is malformed."""
        offset = parse_request_header(frame).body_offset
        if api_key == sasl.SASL_HANDSHAKE:
            request = sasl.decode_handshake(frame, offset, api_version)
            body, ok = self.handshake(api_version, request.mechanism)
            return body, None, not ok
        request = sasl.decode_authenticate(frame, offset, api_version)
        body, failure = self.authenticate(api_version, request.auth_bytes)
        return body, failure, failure is not None

    def handshake(self, api_version, mechanism):
        """(response body, ok): ok=False closes the connection after it."""
        body, ok = sasl.handshake_response(api_version, mechanism)
        if ok:
            self.phase = Phase.RAW if api_version == 0 else Phase.HANDSHAKEN
        else:
            self._back()
        return body, ok

    def authenticate(self, api_version, auth_bytes):
        """(response body, failure): a SaslFailure (or "SaslHandshake first")
        closes the connection after the answer; None: authenticated."""
        if self.phase is not Phase.HANDSHAKEN:
            return (sasl.authenticate_response(api_version, "SaslHandshake first"),
                    sasl.SaslFailure("SaslAuthenticate before SaslHandshake"))
        try:
            lifetime = self.accept(auth_bytes)
        except sasl.SaslFailure as e:
            return sasl.authenticate_response(api_version, str(e)), e
        return sasl.authenticate_response(api_version, None, lifetime * 1000), None

    def accept(self, auth_bytes):
        """Check the PLAIN token (SaslAuthenticate's bytes, or the bare token
        of a v0 handshake); return seconds left.  Raises SaslFailure."""
        try:
            claims = sasl.authenticate(self.tenancy.authority, auth_bytes)
            if self.claims is not None and (claims.vcluster, claims.username) != (
                    self.claims.vcluster, self.claims.username):
                raise sasl.SaslFailure("re-authentication must keep the same account")
            if self.claims is None:
                if not self.admit(claims.vcluster):
                    raise sasl.SaslFailure(
                        f"too many connections for this virtual cluster "
                        f"({self.limit_text})")
                self.admitted = claims.vcluster
        except sasl.SaslFailure:
            self._back()
            raise
        self.claims = claims
        self.namespace = self.tenancy.namespace(claims.vcluster)
        self.phase = Phase.AUTHENTICATED
        return max(0, claims.expires_at - self.clock())

    def _back(self):
        """A failed step: back to waiting, or to authenticated (re-auth)."""
        self.phase = Phase.WAITING if self.claims is None else Phase.AUTHENTICATED
