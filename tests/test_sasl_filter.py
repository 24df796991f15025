"""SASL/PLAIN termination as a state machine (vkafka/filters/sasl.py)."""

from kio.schema.errors import ErrorCode
from twisted.internet.task import Clock
from twisted.trial import unittest

from vkafka.auth.sasl import SASL_AUTHENTICATE, SaslFailure
from vkafka.auth.tokens import TokenAuthority
from vkafka.filters.sasl import Phase, SaslTerminator
from vkafka.protocol.codec import decode_body
from vkafka.tenancy.mode import Tenancy

SECRET = "s" * 40


def plain(username, token):
    return b"\x00" + username.encode() + b"\x00" + token.encode()


class SaslTerminatorTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.authority = TokenAuthority(SECRET, self.clock.seconds)
        self.admitted = []
        self.full = set()

        def admit(vcluster):
            if vcluster in self.full:
                return False
            self.admitted.append(vcluster)
            return True
        self.sasl = SaslTerminator(Tenancy(self.authority), admit, "limit 1",
                                   self.clock.seconds)

    def token(self, vcluster="london", username="sa", lifetime=600):
        return self.authority.issue(vcluster, username, lifetime)

    def answer(self, body):
        from kio.static.constants import EntityType
        return decode_body(SASL_AUTHENTICATE, 2, EntityType.response, body, 0)

    def test_phases(self):
        """Each phase takes only its own step, table-driven: (step, then phase,
        accepted)."""
        steps = [
            ("authenticate", Phase.WAITING, False),   # before any handshake
            ("handshake", Phase.HANDSHAKEN, True),
            ("authenticate", Phase.AUTHENTICATED, True),
            ("authenticate", Phase.AUTHENTICATED, False),  # again, no handshake
            ("handshake", Phase.HANDSHAKEN, True),   # re-authentication
            ("authenticate", Phase.AUTHENTICATED, True),
        ]
        for step, phase, accepted in steps:
            if step == "handshake":
                _, ok = self.sasl.handshake(1, "PLAIN")
                self.assertEqual(ok, accepted)
            else:
                body, failure = self.sasl.authenticate(2, plain("sa", self.token()))
                self.assertEqual(failure is None, accepted, step)
                self.assertEqual(self.answer(body).error_code == ErrorCode.none,
                                 accepted)
            self.assertIs(self.sasl.phase, phase, step)
        self.assertEqual(self.admitted, ["london"])  # counted at the first login only

    def test_v0_handshake_expects_raw_token(self):
        _, ok = self.sasl.handshake(0, "PLAIN")
        self.assertTrue(ok)
        self.assertTrue(self.sasl.raw_token_next)
        self.assertEqual(self.sasl.accept(plain("sa", self.token(lifetime=60))), 60)
        self.assertFalse(self.sasl.raw_token_next)
        self.assertEqual(self.sasl.namespace.name, "london")

    def test_other_mechanism_refused(self):
        _, ok = self.sasl.handshake(1, "SCRAM-SHA-512")
        self.assertFalse(ok)
        self.assertIs(self.sasl.phase, Phase.WAITING)

    def test_reauthentication_keeps_the_account(self):
        """A re-login into another tenant is refused; the first login stands."""
        self.sasl.handshake(1, "PLAIN")
        self.sasl.authenticate(2, plain("sa", self.token("london")))
        self.sasl.handshake(1, "PLAIN")
        _, failure = self.sasl.authenticate(2, plain("sa", self.token("paris")))
        self.assertIn("same account", str(failure))
        self.assertEqual(self.sasl.claims.vcluster, "london")
        self.assertIs(self.sasl.phase, Phase.AUTHENTICATED)

    def test_tenant_at_its_limit(self):
        self.full.add("london")
        self.sasl.handshake(1, "PLAIN")
        body, failure = self.sasl.authenticate(2, plain("sa", self.token()))
        self.assertIsInstance(failure, SaslFailure)
        self.assertIn("too many connections", self.answer(body).error_message)
        self.assertIsNone(self.sasl.claims)
        self.assertIs(self.sasl.phase, Phase.WAITING)
