# -*- test-case-name: tests.test_tokens -*-
"""Tokens: HS256 JWTs naming a virtual cluster, a username and an expiry.

PyJWT does the signing; we check expiry ourselves against an injected clock
so that tests never depend on wall time.
"""

import math
import re
import time
import uuid
from dataclasses import dataclass

import jwt

from ..names import valid_vcluster_name

ALGORITHM = "HS256"
MAX_LIFETIME = 10 * 365 * 24 * 3600
_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class TokenError(Exception):
    """The token is refused; the message says why (sent to the client)."""


@dataclass(frozen=True)
class Claims:
    vcluster: str
    username: str
    issued_at: float
    expires_at: float
    token_id: str


def parse_duration(text):
    """``90d`` -> seconds.  Units: s, m, h, d, w; a bare number is seconds."""
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"bad duration {text!r}: use e.g. 3600, 90m, 12h, 90d")
    return int(match.group(1)) * _UNITS[match.group(2)]


class Revocations:
    """Which tokens are revoked: every token of an account issued before a time."""

    def __init__(self):
        self._before = {}

    def revoke(self, vcluster, username, at):
        self._before[(vcluster, username)] = at

    def is_revoked(self, claims):
        for username in (claims.username, "*"):  # "*": the whole virtual cluster
            before = self._before.get((claims.vcluster, username))
            if before is not None and claims.issued_at <= before:
                return True
        return False


class TokenAuthority:
    """Issues tokens with one shared secret; verifies them with it or with a
    previous secret, so the secret can be rotated without refusing the tokens
    clients hold (docs/operations.md)."""

    def __init__(self, secret, clock=time.time, revocations=None, previous_secrets=()):
        for value in (secret, *previous_secrets):
            if not value or len(value) < 32:
                raise ValueError("the token secret must be at least 32 characters")
        self.secret = secret
        self.verifying = (secret, *(s for s in previous_secrets if s != secret))
        """The current secret first: it verifies nearly every token."""
        self.clock = clock
        self.revocations = revocations or Revocations()
        self.admission = None
        """``vcluster -> reason or None``: why sasl.authenticate must refuse a
        valid token of that virtual cluster (set by tenancy.mode.Tenancy)."""

    def issue(self, vcluster, username, lifetime_seconds):
        if not valid_vcluster_name(vcluster):
            raise ValueError(f"invalid virtual cluster name {vcluster!r}")
        if not username or len(username) > 255:
            raise ValueError("username must be 1 to 255 characters")
        if not 0 < lifetime_seconds <= MAX_LIFETIME:
            raise ValueError(f"lifetime must be 1..{MAX_LIFETIME} seconds")
        now = self.clock()
        # iat keeps milliseconds: a revocation must not catch a token minted just
        # after it; rounded down, never up, or one minted just before escapes it.
        claims = {"vcluster": vcluster, "username": username,
                  "iat": math.floor(now * 1000) / 1000,
                  "exp": int(now + lifetime_seconds), "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, username, token):
        """The token's claims, or TokenError saying why it is refused."""
        try:
            raw = self._decode(token)
        except jwt.InvalidSignatureError:
            raise TokenError("token signature is invalid (forged, or signed with "
                             "another secret)")
        except jwt.MissingRequiredClaimError as e:
            raise TokenError(f"token is malformed: {e}")
        except jwt.InvalidTokenError:
            raise TokenError("token is malformed")
        try:
            claims = Claims(str(raw["vcluster"]), str(raw["username"]),
                            float(raw["iat"]), float(raw["exp"]),
                            str(raw.get("jti", "")))
        except (TypeError, ValueError):
            raise TokenError("token is malformed: bad claims")
        if not valid_vcluster_name(claims.vcluster):
            raise TokenError("token is malformed: bad virtual cluster name")
        if claims.expires_at <= self.clock():
            raise TokenError("token has expired")
        if claims.username != username:
            raise TokenError("SASL username does not match the token's")
        if self.revocations.is_revoked(claims):
            raise TokenError("token has been revoked")
        return claims

    def _decode(self, token):
        """The claims of a token signed with any verifying secret."""
        for secret in self.verifying:
            try:
                return jwt.decode(token, secret, algorithms=[ALGORITHM],
                                  options={"verify_exp": False, "verify_iat": False,
                                           "require": ["exp", "iat", "vcluster",
                                                       "username"]})
            except jwt.InvalidSignatureError as e:
                refused = e
        raise refused
