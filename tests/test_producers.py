"""New producer ids per virtual cluster (vkafka/tenancy/producers.py): a
tenant's batches under ever new producer ids are broker state for a day each;
the gateway lets each virtual cluster bring a bucket of them an hour."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from vkafka.tenancy.context import Rejected
from vkafka.tenancy.producers import SEVERAL, ProducerIds


class ProducerIdsTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.ids = ProducerIds(self.clock.seconds, per_hour=3)

    def test_new_ids_take_from_the_bucket(self):
        for producer in (1, 2, 3, 1, 2, 3):  # seen ones pass free
            self.ids.admit("acme", producer)
        e = self.assertRaises(Rejected, self.ids.admit, "acme", 4)
        self.assertIn("brought 3 new producer ids through this gateway process in "
                      "the last hour, its limit", str(e))
        self.ids.admit("other", 4)  # each virtual cluster its own
        self.clock.advance(1200)  # a third of the hour: one more
        self.ids.admit("acme", 4)
        self.assertRaises(Rejected, self.ids.admit, "acme", 5)
        self.clock.advance(3600 * 10)  # full again, never more than the bucket
        for producer in (5, 6, 7):
            self.ids.admit("acme", producer)
        self.assertRaises(Rejected, self.ids.admit, "acme", 8)

    def test_split_over_workers(self):
        """With --workers N each worker lets in an Nth: more cores do not
        multiply the producer states a tenant leaves on the brokers."""
        ids = ProducerIds(self.clock.seconds, per_hour=300)
        ids.processes = 100
        for producer in (1, 2, 3):
            ids.admit("acme", producer)
        e = self.assertRaises(Rejected, ids.admit, "acme", 4)
        self.assertIn("brought 3 new producer ids", str(e))

    def test_two_producers_in_one_request(self):
        e = self.assertRaises(Rejected, self.ids.admit, "acme", SEVERAL)
        self.assertIn("record batches of two producers", str(e))

    def test_seen_ids_bounded(self):
        """Past the bucket's size the oldest ids seen are forgotten: memory per
        virtual cluster stays bounded (a forgotten id is charged again)."""
        for producer in (1, 2, 3):
            self.ids.admit("acme", producer)
        self.clock.advance(3600)
        self.ids.admit("acme", 4)  # forgets 1
        self.ids.admit("acme", 2)
        self.ids.admit("acme", 1)  # charged again
        self.assertEqual(len(self.ids._tenants["acme"][0]), 3)


class TransactionPartitionsTests(unittest.TestCase):
    """A transaction's partitions count once each; memory stays bounded."""

    def test_each_partition_once_per_transaction(self):
        from vkafka.tenancy.producers import TransactionPartitions
        seen = TransactionPartitions()
        self.assertEqual(seen.added([(5, 1, "a0"), (5, 1, "a1")]), 2)
        self.assertEqual(seen.added([(5, 1, "a0"), (5, 1, "b0")]), 1)
        self.assertEqual(seen.added([(5, 2, "a0"), (6, 1, "a0")]), 2)

    def test_bounded(self):
        """The oldest transaction is forgotten past TRANSACTIONS; past
        PARTITIONS a transaction's further partitions count every time."""
        from vkafka.tenancy.producers import TransactionPartitions
        seen = TransactionPartitions()
        seen.TRANSACTIONS, seen.PARTITIONS = 2, 2
        seen.added([(1, 0, "a"), (2, 0, "a"), (3, 0, "a")])  # forgets (1, 0)
        self.assertEqual(len(seen._seen), 2)
        self.assertEqual(seen.added([(1, 0, "a")]), 1)
        self.assertEqual(seen.added([(3, 0, "b"), (3, 0, "c"), (3, 0, "c")]), 3)
