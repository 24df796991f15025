"""Tenant patterns are matched by the gateway, with RE2 (tenancy/patterns.py)."""

from twisted.trial import unittest

from vkafka.tenancy import patterns
from vkafka.tenancy.patterns import RegexSubscriptions


TOPICS = {"orders": "acmeorders", "orders.eu": "acmeorders.eu",
          "payments": "acmepayments", "xorders": "acmexorders"}


class PatternTests(unittest.TestCase):
    def test_anchored_and_unanchored_alike(self):
        """The whole name must match, as the broker's RE2J matches(): '^orders.*$'
        and 'orders.*' pick the same topics, 'rders' none."""
        for pattern in ("^orders.*$", "orders.*", "(orders|orders\\.eu)"):
            self.assertEqual(patterns.fullmatch(pattern, TOPICS),
                             ["orders", "orders.eu"], pattern)
        self.assertEqual(patterns.fullmatch("rders", TOPICS), [])

    def test_alternation_is_exact(self):
        """The broker gets an anchored alternation of exactly the matching
        physical names ('.' escaped): no pattern of the tenant's reaches it."""
        regex = patterns.alternation(["acmeorders", "acmeorders.eu"])
        self.assertEqual(regex, "^(?:acmeorders|acmeorders\\.eu)$")
        import re2
        compiled = re2.compile(regex)
        self.assertTrue(compiled.fullmatch("acmeorders.eu"))
        self.assertFalse(compiled.fullmatch("acmeordersXeu"))
        self.assertFalse(compiled.search("otheracmeorders"))
        self.assertEqual(patterns.names_of(regex), ["acmeorders", "acmeorders.eu"])
        self.assertEqual(patterns.alternation([]), patterns.NOTHING)
        self.assertEqual(patterns.names_of(patterns.NOTHING), [])

    def test_escape_attempt_is_just_a_pattern(self):
        """')|(' cannot escape anything: it is matched over the tenant's own
        logical names (here: invalid, so the broker's own error comes back)."""
        subs = RegexSubscriptions()
        subs.subscribe("m", ")|(.*")
        self.assertEqual(subs.broker_regex("m", 1, lambda: TOPICS),
                         (patterns.INVALID, True))
        subs.subscribe("n", ".*|other.*")
        regex, _ = subs.broker_regex("n", 1, lambda: TOPICS)
        self.assertEqual(sorted(patterns.names_of(regex)), sorted(TOPICS.values()))

    def test_catastrophic_pattern_is_linear(self):
        """'(a+)+b' over a 32 KB id: RE2 answers (no backtracking); the test
        asserts the answer, not a time."""
        self.assertEqual(patterns.fullmatch("(a+)+b", ["a" * 32767]), [])
        self.assertEqual(patterns.fullmatch("(a+)+b", ["a" * 32766 + "b"]),
                         ["a" * 32766 + "b"])

    def test_costly_programs_refused(self):
        """RE2 is linear in the text, but past its DFA's memory it steps the
        whole program per character: a pattern whose program passes the
        memory bound (1,500 branches like ``.*a.{9}b``) or MAX_PATTERN is
        refused; an alternation of 900 topic names is not."""
        nasty = "|".join(f".*a.{{{3 + i % 50}}}b" for i in range(1500))
        with self.assertRaises(patterns.InvalidPattern):
            patterns.compile_pattern(nasty)
        with self.assertRaises(patterns.InvalidPattern):
            patterns.compile_pattern("a" * (patterns.MAX_PATTERN + 1))
        names = [f"orders-{i}-events" for i in range(900)]
        self.assertEqual(patterns.fullmatch("|".join(names), names + ["other"]), names)

    def test_invalid_pattern(self):
        with self.assertRaises(patterns.InvalidPattern):
            patterns.fullmatch("(", ["x"])

    def test_subscription_kept_current(self):
        """A member's regex is re-evaluated when the tenant's topics change
        (the made-of key): the new alternation is 'changed' once."""
        subs = RegexSubscriptions()
        subs.subscribe(("acme", "g", "m1"), "^orders.*$")
        first, changed = subs.broker_regex(("acme", "g", "m1"), 1, lambda: TOPICS)
        self.assertTrue(changed)
        self.assertEqual(subs.broker_regex(("acme", "g", "m1"), 1, lambda: TOPICS),
                         (first, False))
        more = dict(TOPICS, **{"orders2": "acmeorders2"})
        regex, changed = subs.broker_regex(("acme", "g", "m1"), 2, lambda: more)
        self.assertTrue(changed)
        self.assertIn("acmeorders2", patterns.names_of(regex))
        subs.forget(("acme", "g", "m1"))
        self.assertIsNone(subs.broker_regex(("acme", "g", "m1"), 2, lambda: more))
        self.assertIsNone(subs.pattern(("acme", "g", "m1")))

    def test_bounded_in_bytes(self):
        """A tenant's patterns are kept up to PATTERN_BYTES (its oldest
        forgotten first), the alternations of all up to MATCH_BYTES."""
        subs = RegexSubscriptions()
        subs.PATTERN_BYTES, subs.MATCH_BYTES = 1000, 100
        for m in range(20):
            subs.subscribe(("acme", "g", f"m{m}"), f"{m:03}" + "x" * 97)
        self.assertEqual(len(subs._members["acme"]), 10)
        self.assertIsNone(subs.pattern(("acme", "g", "m9")))
        self.assertEqual(subs._sizes["acme"], 1000)
        subs.subscribe(("acme", "g", "m19"), "short")  # replaced, not added
        self.assertEqual(subs._sizes["acme"], 905)
        topics = {f"t{i}": f"acme{i}" + "x" * 40 for i in range(3)}
        longest = 0
        for m in range(10, 20):
            subs.subscribe(("acme", "g", f"m{m}"), f"t.*|{m}")
            regex, _ = subs.broker_regex(("acme", "g", f"m{m}"), 1, lambda: topics)
            self.assertEqual(len(patterns.names_of(regex)), 3)
            longest = max(longest, len(regex))
            self.assertLessEqual(subs._matched, subs.MATCH_BYTES + longest)
        self.assertLess(len(subs._matches), 10)

    def test_tenants_never_share_an_answer(self):
        """Two tenants, no mappings, the same pattern and the same made-of key
        (topic set version, namespace version 0): each gets an alternation of
        its own topics only, whichever asked first."""
        subs = RegexSubscriptions()
        theirs = {"orders": "otherorders"}
        subs.subscribe(("acme", "g", "m"), "orders.*")
        subs.subscribe(("other", "g", "m"), "orders.*")
        acme, _ = subs.broker_regex(("acme", "g", "m"), 1, lambda: TOPICS)
        other, _ = subs.broker_regex(("other", "g", "m"), 1, lambda: theirs)
        self.assertEqual(patterns.names_of(other), ["otherorders"])
        self.assertEqual(sorted(patterns.names_of(acme)),
                         ["acmeorders", "acmeorders.eu"])
