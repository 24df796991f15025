# -*- test-case-name: tests.test_tenant_splice,tests.test_security -*-
"""SASL/PLAIN, answered by the gateway itself (the brokers never see it).

Handles SaslHandshake v0 (then a raw token frame) and v1 (then
SaslAuthenticate requests), and reports the session lifetime (KIP-368) so
that clients re-authenticate before their token expires.
"""

import datetime

from kio.schema.errors import ErrorCode
from kio.static.constants import EntityType
from kio.static.primitive import i64Timedelta

from ..protocol.codec import decode_body, encode_body
from ..protocol.headers import payload_class
from .tokens import TokenError

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
MECHANISM = "PLAIN"
VERSIONS = {SASL_HANDSHAKE: (0, 1), SASL_AUTHENTICATE: (0, 2)}


class SaslFailure(Exception):
    """Authentication failed; the message goes to the client."""


def parse_plain(auth_bytes):
    """``authzid NUL username NUL password`` -> (username, password)."""
    parts = bytes(auth_bytes).split(b"\x00")
    if len(parts) != 3:
        raise SaslFailure("malformed PLAIN token: expected authzid\\0user\\0password")
    try:
        authzid, username, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise SaslFailure("malformed PLAIN token: not UTF-8")
    if authzid and authzid != username:
        raise SaslFailure("authorization id must be empty or equal the username")
    return username, password


def authenticate(authority, auth_bytes):
    """Claims of a valid PLAIN token, else SaslFailure with the reason.

    A valid token is still refused if the authority's ``admission`` (set by
    tenancy.mode.Tenancy) says its virtual cluster cannot be served: before
    the connection has claims or a namespace.
    """
    username, password = parse_plain(auth_bytes)
    try:
        claims = authority.verify(username, password)
    except TokenError as e:
        raise SaslFailure(f"Authentication failed: {e}")
    admission = getattr(authority, "admission", None)
    refusal = admission(claims.vcluster) if admission is not None else None
    if refusal is not None:
        raise SaslFailure(f"Authentication failed: {refusal}")
    return claims


def handshake_response(version, mechanism):
    cls = payload_class(SASL_HANDSHAKE, version, EntityType.response)
    error = ErrorCode.none if mechanism == MECHANISM else ErrorCode.unsupported_sasl_mechanism
    return encode_body(cls(error_code=error, mechanisms=(MECHANISM,))), error == ErrorCode.none


def decode_handshake(frame, offset, version):
    return decode_body(SASL_HANDSHAKE, version, EntityType.request, frame, offset)


def decode_authenticate(frame, offset, version):
    return decode_body(SASL_AUTHENTICATE, version, EntityType.request, frame, offset)


def authenticate_response(version, error=None, lifetime_ms=0):
    """SaslAuthenticate response body; *error* is a message or None for success."""
    cls = payload_class(SASL_AUTHENTICATE, version, EntityType.response)
    kwargs = {
        "error_code": ErrorCode.sasl_authentication_failed if error else ErrorCode.none,
        "error_message": error,
        "auth_bytes": b"",
    }
    if version >= 1:
        kwargs["session_lifetime"] = i64Timedelta.parse(
            datetime.timedelta(milliseconds=max(0, int(lifetime_ms))))
    return encode_body(cls(**kwargs))
