"""Tokens: issue, verify, and every way a token is refused."""

from twisted.trial import unittest

from vkafka.auth.tokens import TokenAuthority, TokenError, parse_duration

SECRET = "s" * 32


class Clock:
    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


class TokenTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.authority = TokenAuthority(SECRET, self.clock)

    def test_round_trip(self):
        """A fresh token names its virtual cluster, user and expiry."""
        claims = self.authority.verify("sa", self.authority.issue("london", "sa", 90))
        self.assertEqual((claims.vcluster, claims.username, claims.expires_at),
                         ("london", "sa", self.clock.now + 90))

    def assertRefused(self, username, token, reason):
        e = self.assertRaises(TokenError, self.authority.verify, username, token)
        self.assertIn(reason, str(e))

    def test_expired(self):
        """A token past its expiry is refused as expired."""
        token = self.authority.issue("london", "sa", 90)
        self.clock.now += 90
        self.assertRefused("sa", token, "expired")

    def test_forged(self):
        """A token signed with another secret is refused as forged."""
        token = TokenAuthority("t" * 32, self.clock).issue("london", "sa", 90)
        self.assertRefused("sa", token, "signature")

    def test_malformed(self):
        """Garbage is refused as malformed."""
        self.assertRefused("sa", "abc", "malformed")
        self.assertRefused("sa", "", "malformed")

    def test_username_mismatch(self):
        """The SASL username must be the token's."""
        self.assertRefused("bob", self.authority.issue("london", "sa", 90), "username")

    def test_revoked(self):
        """Revoking an account refuses every token issued before."""
        token = self.authority.issue("london", "sa", 90)
        self.authority.revocations.revoke("london", "sa", self.clock.now)
        self.assertRefused("sa", token, "revoked")
        self.clock.now += 1
        self.authority.verify("sa", self.authority.issue("london", "sa", 90))

    def test_bad_issue(self):
        """Bad names and lifetimes are refused when issuing."""
        self.assertRaises(ValueError, self.authority.issue, "bad name", "sa", 90)
        self.assertRaises(ValueError, self.authority.issue, "london", "sa", 0)
        self.assertRaises(ValueError, TokenAuthority, "short")

    def test_durations(self):
        """90d, 12h, 30m, 45s and bare seconds parse; nonsense does not."""
        self.assertEqual([parse_duration(d) for d in ("90d", "12h", "30m", "45s", "7")],
                         [7776000, 43200, 1800, 45, 7])
        self.assertRaises(ValueError, parse_duration, "soon")
