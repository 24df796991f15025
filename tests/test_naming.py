"""The naming rule and ownership by longest prefix."""

from twisted.trial import unittest

from vkafka.tenancy.naming import GROUP, TOPIC, TRANSACTION, InvalidName
from vkafka.tenancy.vclusters import VirtualClusters


class NamingTests(unittest.TestCase):
    def setUp(self):
        self.vclusters = VirtualClusters()
        self.london = self.vclusters.namespace("london")
        self.lon = self.vclusters.namespace("lon")

    def test_prefix_without_separator(self):
        """london + londonTopic -> londonlondonTopic, for topics, groups and txn ids."""
        for kind in (TOPIC, GROUP, TRANSACTION):
            self.assertEqual(self.london.physical(kind, "londonTopic"),
                             "londonlondonTopic")
            self.assertEqual(self.london.logical(kind, "londonlondonTopic"),
                             "londonTopic")

    def test_longest_prefix_owns(self):
        """"londonX" belongs to london, never to lon."""
        self.assertIsNone(self.lon.logical(TOPIC, "londonX"))
        self.assertEqual(self.lon.logical(TOPIC, "lonX"), "X")

    def test_collision_refused(self):
        """lon may not create "donX": its physical name is london's."""
        e = self.assertRaises(InvalidName, self.lon.physical, TOPIC, "donX")
        self.assertIn("collides", str(e))

    def test_limits(self):
        """Too long once prefixed, bad characters, internal names: refused with reasons."""
        self.assertRaises(InvalidName, self.london.physical, TOPIC, "a" * 244)
        self.assertEqual(len(self.london.physical(TOPIC, "a" * 243)), 249)
        self.assertRaises(InvalidName, self.london.physical, TOPIC, "bad name")
        self.assertRaises(InvalidName, self.london.physical, TOPIC, "")
        self.assertIsNone(self.london.logical(TOPIC, "__consumer_offsets"))

    def test_configured_prefix(self):
        """A virtual cluster's prefix can differ from its name."""
        ns = self.vclusters.define("paris", "fr_")
        self.assertEqual(ns.physical(TOPIC, "t"), "fr_t")
        self.assertEqual(ns.logical(TOPIC, "fr_t"), "t")
        self.assertIsNone(ns.logical(TOPIC, "parist"))

    def test_scrub(self):
        """Broker messages lose the prefix of quoted names, nothing else."""
        self.assertEqual(
            self.london.scrub("Topic 'londonlondonTopic' already exists in london."),
            "Topic 'londonTopic' already exists in london.")

    def test_regex_confined(self):
        """A tenant's regex is anchored under its prefix."""
        import re
        regex = re.compile(self.lon.regex("a.*"))
        self.assertTrue(regex.fullmatch("lonabc"))
        self.assertFalse(regex.fullmatch("xlonabc"))
        self.assertFalse(regex.fullmatch("abc"))
