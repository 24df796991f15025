"""The naming rule; overlapping prefixes own nothing."""

from twisted.trial import unittest

from vkafka.tenancy.naming import GROUP, TOPIC, TRANSACTION, InvalidName
from vkafka.tenancy.vclusters import VirtualClusters


class NamingTests(unittest.TestCase):
    def setUp(self):
        self.vclusters = VirtualClusters()
        self.london = self.vclusters.namespace("london")
        self.paris = self.vclusters.namespace("paris")

    def test_prefix_without_separator(self):
        """london + londonTopic -> londonlondonTopic, for topics, groups and txn ids."""
        for kind in (TOPIC, GROUP, TRANSACTION):
            self.assertEqual(self.london.physical(kind, "londonTopic"),
                             "londonlondonTopic")
            self.assertEqual(self.london.logical(kind, "londonlondonTopic"),
                             "londonTopic")

    def test_overlapping_own_nothing(self):
        """lon and london overlap: neither owns "londonX" nor "lonX" (no guessing)."""
        lon = self.vclusters.namespace("lon")
        for ns in (lon, self.london):
            for physical in ("londonX", "lonX"):
                self.assertIsNone(ns.logical(TOPIC, physical))

    def test_overlapping_create_refused(self):
        """lon may not create "donX" (london's physical name) nor anything else."""
        lon = self.vclusters.namespace("lon")
        for logical in ("donX", "X"):
            e = self.assertRaises(InvalidName, lon.physical, TOPIC, logical)
            self.assertIn("unavailable", str(e))

    def test_longest_prefix_guard(self):
        """Below the overlap rule, a namespace still yields to a longer prefix."""
        from vkafka.tenancy.naming import Namespace, Prefixes
        prefixes = Prefixes()
        lon, _ = Namespace("lon", "lon", prefixes), Namespace("london", "london",
                                                              prefixes)
        self.assertIsNone(lon.logical(TOPIC, "londonX"))
        self.assertEqual(lon.logical(TOPIC, "lonX"), "X")
        e = self.assertRaises(InvalidName, lon.physical, TOPIC, "donX")
        self.assertIn("collides", str(e))

    def test_limits(self):
        """Too long once prefixed, bad characters, internal names: refused with reasons."""
        self.assertRaises(InvalidName, self.london.physical, TOPIC, "a" * 244)
        self.assertEqual(len(self.london.physical(TOPIC, "a" * 243)), 249)
        self.assertRaises(InvalidName, self.london.physical, TOPIC, "bad name")
        self.assertRaises(InvalidName, self.london.physical, TOPIC, "")
        self.assertIsNone(self.london.logical(TOPIC, "__consumer_offsets"))

    def test_ids_bounded(self):
        """Group and transactional ids are at most MAX_ID_LENGTH bytes once
        prefixed: 32 KB ones were broker heap for days, and 900 of them put
        every tenant's ListGroups over the answer limit (audit 22)."""
        from vkafka.tenancy.naming import MAX_ID_LENGTH
        room = MAX_ID_LENGTH - len(self.london.prefix)
        for kind in (GROUP, TRANSACTION):
            self.assertEqual(len(self.london.physical(kind, "g" * room)), MAX_ID_LENGTH)
            e = self.assertRaises(InvalidName, self.london.physical, kind, "g" * (room + 1))
            self.assertIn(f"too long: at most {room} bytes", str(e))
            self.assertRaises(InvalidName, self.london.physical, kind, "é" * room)

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
        self.assertEqual(self.london.scrub("Group london.dot not found."),
                         "Group .dot not found.")
        self.assertEqual(self.london.scrub("Group 'london:é' not found."),
                         "Group ':é' not found.")

    def test_scrub_mapped_topics(self):
        """A mapped topic's physical name (outside the namespace, maybe
        another tenant's mapping too) becomes its logical name, as a whole
        name only."""
        self.london.set_alias("shared", "zshared.events")
        self.london.set_alias("both", "common", concentrated=True, partitions=3)
        self.assertEqual(
            self.london.scrub("Topic 'zshared.events' already exists."),
            "Topic 'shared' already exists.")
        self.assertEqual(self.london.scrub("'zshared.events2' and common-x, common"),
                         "'zshared.events2' and common-x, both")


    def test_concentrated_produce_records_bounded(self):
        """A Produce to concentrated topics writes at most MAX_RECORDS records
        (counted from the batch headers before any is decoded), over all its
        partitions."""
        import importlib

        from kio.static.primitive import i32

        from vkafka.tenancy.concentration.records import MAX_RECORDS
        from vkafka.tenancy.concentration.requests import _request_partition
        from vkafka.tenancy.concentration.shared import Exchange, Refused

        from .test_batches import kio_batch
        m = importlib.import_module("kio.schema.produce.v9.request")
        self.london.set_alias("t", "physical.conc", concentrated=True, partitions=3)
        alias = self.london.aliases["t"]
        half = kio_batch([(None, b"")] * (MAX_RECORDS // 2))
        exchange = Exchange()
        for index in (0, 1):
            _request_partition(None, exchange, 0, "t", alias, m.PartitionProduceData(
                index=i32(index), records=half))
        with self.assertRaises(Refused):
            _request_partition(None, exchange, 0, "t", alias, m.PartitionProduceData(
                index=i32(2), records=kio_batch([(None, b"")])))

    def test_concentrated_alias_without_a_partition_count(self):
        """A concentrated mapping the shared state holds without a usable
        partition count (written by hand, or by another version) has no
        partitions: every partition named is refused, never a TypeError."""
        from vkafka.tenancy.concentration.requests import _request_partition
        from vkafka.tenancy.context import Rejected
        for count in (None, "3", -2, 1.5):
            self.london.set_alias("t", "physical.conc", concentrated=True,
                                  partitions=count)
            alias = self.london.aliases["t"]
            self.assertEqual(alias.partitions, 0, count)
            with self.assertRaises(Rejected):
                _request_partition(None, None, 2, "t", alias, 0)
