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

    def test_revoked_a_fraction_of_a_millisecond_later(self):
        """A token minted 0.2 ms before a revocation is revoked: its issue
        time is rounded down to the millisecond, never up past the revocation."""
        self.clock.now = 1000.0006
        token = self.authority.issue("london", "sa", 90)
        self.authority.revocations.revoke("london", "sa", 1000.0008)
        self.assertRefused("sa", token, "revoked")

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


class RotationTests(unittest.TestCase):
    """Rotating the secret: the new one signs, previous ones still verify."""

    def setUp(self):
        self.clock = Clock()
        self.old = TokenAuthority("o" * 32, self.clock)
        self.rotated = TokenAuthority("n" * 32, self.clock,
                                      previous_secrets=("o" * 32, "p" * 32))

    def test_previous_secret_verifies(self):
        """A token signed with a previous secret is still accepted, with its claims."""
        claims = self.rotated.verify("sa", self.old.issue("london", "sa", 90))
        self.assertEqual((claims.vcluster, claims.username), ("london", "sa"))

    def test_new_tokens_signed_with_current(self):
        """New tokens are signed with the current secret only: a gateway that
        knows only the new secret accepts them, one that knows only the old refuses."""
        token = self.rotated.issue("london", "sa", 90)
        TokenAuthority("n" * 32, self.clock).verify("sa", token)
        e = self.assertRaises(TokenError, self.old.verify, "sa", token)
        self.assertIn("signature", str(e))

    def test_other_secret_still_forged(self):
        """A secret in neither list is refused as forged."""
        token = TokenAuthority("x" * 32, self.clock).issue("london", "sa", 90)
        e = self.assertRaises(TokenError, self.rotated.verify, "sa", token)
        self.assertIn("signature", str(e))

    def test_checks_still_apply(self):
        """Expiry and revocation apply to tokens of previous secrets too."""
        token = self.old.issue("london", "sa", 90)
        self.rotated.revocations.revoke("london", "sa", self.clock.now)
        e = self.assertRaises(TokenError, self.rotated.verify, "sa", token)
        self.assertIn("revoked", str(e))
        self.clock.now += 90
        e = self.assertRaises(TokenError, TokenAuthority(
            "n" * 32, self.clock, previous_secrets=("o" * 32,)).verify, "sa", token)
        self.assertIn("expired", str(e))

    def test_short_previous_secret_refused(self):
        """A previous secret shorter than 32 characters is refused like a current one."""
        self.assertRaises(ValueError, TokenAuthority, "n" * 32,
                          previous_secrets=("short",))
