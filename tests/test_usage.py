"""Usage per virtual cluster (vkafka/usage/): the hourly ledger, the records of
several gateways added up, the inventory's attribution, the admin endpoints.
In-memory stores and Twisted's Clock: no Kafka, no global reactor."""

import csv
import io
import json

from treq.testing import StubTreq
from twisted.internet import defer, task
from twisted.trial import unittest

from vkafka.admin.app import admin_root
from vkafka.auth.tokens import TokenAuthority
from vkafka.metrics import Metrics
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore
from vkafka.tenancy.vclusters import VirtualClusters
from vkafka.usage.inventory import (
    DESCRIBE_LOG_DIRS, LIST_GROUPS, Inventory, InventoryError, attribute, version_for)
from vkafka.usage.ledger import (
    FIELDS, HOUR, PUBLISH_EVERY, RETENTION_HOURS, Ledger, Series, UsageBook, hour_of,
    parse_key, record_key)
from vkafka.usage.report import BadPeriod, month_start, period

from .test_admin import ADMIN, make_checker
from .usage_fakes import FakeCluster, make_usage

H = hour_of(1_790_000_000)  # 2026-09-21T14
"""An hour the tests start in (hours since the epoch)."""


def counted(**fields):
    """A full FIELDS dict: the fields given, the rest 0."""
    return {name: fields.get(name, 0) for name in FIELDS}


def traffic(metrics, vc, size, records=0, api="Produce", out=0, out_records=0):
    """What the splice counts for one request of *vc* and its response."""
    connection = metrics.for_connection(vc)
    connection.request(api, size, records)
    if out:
        connection.response(api, out, 0.001, 0, out_records)


class LateStore(MemoryStore):
    """A MemoryStore whose topic is read to its end only when told (``load``)."""

    def __init__(self):
        super().__init__()
        self.ready = defer.Deferred()

    def load(self):
        self.ready.callback(None)


class GatewayUnderTest:
    """One gateway's ledger on *store*, its own Metrics and connections."""

    def __init__(self, store, clock, gateway_id="gw1:6969"):
        self.metrics = Metrics()
        self.connections = {}
        self.book = UsageBook(store)
        self.ledger = Ledger(gateway_id, self.metrics, self.book, store, clock.seconds,
                             lambda: self.connections)


class SeriesTests(unittest.TestCase):
    def test_hours_in_order_whatever_order_they_come(self):
        """Hours are kept sorted; a second put replaces; sums take [start, end)."""
        series = Series()
        for hour, n in [(10, 1), (8, 2), (12, 3), (9, 4), (10, 5)]:
            series.put(hour, [n] * len(FIELDS))
        self.assertEqual(list(series.hours), [8, 9, 10, 12])
        self.assertEqual(series.get(10), [5] * len(FIELDS))
        totals = [0] * len(FIELDS)
        self.assertTrue(series.add_to(totals, 9, 12))
        self.assertEqual(totals, [9] * len(FIELDS))
        self.assertFalse(series.add_to([0] * len(FIELDS), 13, 20))
        series.remove(9)
        series.drop_before(10)
        self.assertEqual((list(series.hours), series.get(8)), ([10, 12], None))
        self.assertEqual(len(series.counts), 2 * len(FIELDS))

    def test_keys(self):
        """<vc>/<YYYY-MM-DDTHH>/<gateway id>, UTC; a gateway id may hold ':'."""
        key = record_key("london", H, "host-a:6969")
        self.assertEqual(key, "london/2026-09-21T14/host-a:6969")
        self.assertEqual(parse_key(key), ("london", H, "host-a:6969"))
        for bad in ("london/2026-09-21/gw", "london/x/gw", "london/2026-09-21T14/",
                    "london"):
            self.assertRaises(ValueError, parse_key, bad)


class LedgerTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(H * HOUR + HOUR - 25)  # 25 s before the hour ends
        self.store = MemoryStore()
        self.gw = GatewayUnderTest(self.store, self.clock)
        self.gw.ledger.start(self.clock)
        self.addCleanup(self.gw.ledger.stop)

    def record(self, vc, hour, gateway="gw1:6969"):
        value = self.store.data.get(record_key(vc, hour, gateway))
        return None if value is None else {k: value[k] for k in FIELDS}

    def test_hour_buckets(self):
        """Traffic counts in the UTC hour it happened in: the end of an hour
        takes a last sample into it, and a record per virtual cluster and
        hour holds its cumulative counts."""
        traffic(self.gw.metrics, "london", 100, 5, out=40)
        self.clock.advance(PUBLISH_EVERY)  # written at once, 15 s before the end
        self.assertEqual(self.record("london", H),
                         counted(bytesIn=100, recordsIn=5, bytesOut=40, requests=1))
        traffic(self.gw.metrics, "london", 50, 2)
        self.clock.advance(14.9)
        traffic(self.gw.metrics, "london", 7, 1)  # the hour's last tenth of a second
        self.clock.advance(0.1)  # the hour ends
        traffic(self.gw.metrics, "london", 1000, 10, api="Fetch", out=3000,
                out_records=30)
        self.clock.advance(PUBLISH_EVERY)
        self.assertEqual(self.record("london", H), counted(
            bytesIn=157, recordsIn=8, bytesOut=40, requests=3))
        self.assertEqual(self.record("london", H + 1), counted(
            bytesIn=1000, recordsIn=10, bytesOut=3000, recordsOut=30, requests=1))
        book = self.gw.book
        self.assertEqual(book.period("london", H, H + 2), counted(
            bytesIn=1157, recordsIn=18, bytesOut=3040, recordsOut=30, requests=4))
        self.assertEqual(book.period("london", H + 1, H + 2)["bytesIn"], 1000)
        self.assertEqual(set(self.gw.ledger.buckets), {("london", H + 1)},
                         "a past hour, written, is forgotten by the ledger")

    def test_only_changes_and_connections_are_written(self):
        """An idle virtual cluster is written again only while it has open
        connections here (their count stays current for the other gateways);
        connections alone make a virtual cluster active in an hour."""
        puts = []
        put = self.store.put
        self.store.put = lambda key, value: (puts.append(key), put(key, value))[1]
        traffic(self.gw.metrics, "london", 10)
        self.clock.advance(PUBLISH_EVERY)
        self.clock.advance(PUBLISH_EVERY)  # nothing new: nothing written
        self.assertEqual(len(puts), 1)
        self.gw.connections["paris"] = 2
        self.clock.advance(PUBLISH_EVERY)
        self.clock.advance(PUBLISH_EVERY)
        # the hour ended in between: its last record, then the new hour's
        self.assertEqual(puts[1:], [record_key("paris", H, "gw1:6969")]
                         + [record_key("paris", H + 1, "gw1:6969")] * 2)
        paris = record_key("paris", H + 1, "gw1:6969")
        self.assertEqual(self.store.data[paris]["connections"], 2)
        self.assertEqual(self.gw.book.connections("paris", self.clock.seconds()), 2)

    def test_labels_outside_virtual_clusters_are_not_charged(self):
        """Connections before their SASL login, and passthrough, are no
        virtual cluster's."""
        for label in ("unauthenticated", "-"):
            traffic(self.gw.metrics, label, 500)
        self.clock.advance(PUBLISH_EVERY)
        self.assertEqual(self.store.data, {})

    def test_a_write_that_fails_is_made_good(self):
        """While the usage topic cannot be written, the counts are kept and
        then written whole; the ledger says so once."""
        self.store.available = False
        traffic(self.gw.metrics, "london", 10)
        self.clock.advance(PUBLISH_EVERY)
        self.assertTrue(self.gw.ledger.failing)
        traffic(self.gw.metrics, "london", 5)
        self.clock.advance(PUBLISH_EVERY)
        self.store.available = True
        self.clock.advance(PUBLISH_EVERY)
        self.assertFalse(self.gw.ledger.failing)
        self.assertEqual(self.record("london", H), counted(bytesIn=15, requests=2))
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_hours_beyond_the_retention_are_forgotten(self):
        """The book keeps 35 days (840 hours); so does a ledger that could
        never write."""
        traffic(self.gw.metrics, "london", 10)
        self.clock.advance(PUBLISH_EVERY)
        self.store.available = False
        traffic(self.gw.metrics, "paris", 10)
        self.clock.advance(PUBLISH_EVERY)
        self.assertEqual(self.gw.book.entries(), 1)
        self.clock.advance(RETENTION_HOURS * HOUR)
        self.assertEqual(self.gw.book.entries(), 1)  # the hour it began: kept
        self.clock.advance(HOUR)
        self.assertEqual((self.gw.book.entries(), self.gw.ledger.buckets), (0, {}))


class RestartTests(unittest.TestCase):
    def test_a_restarted_gateway_counts_on_from_its_record(self):
        """A gateway that restarts within an hour (same id, counters back to
        0) adds to what its record of the hour says, once the topic is read;
        it writes nothing before."""
        clock = task.Clock()
        clock.advance(H * HOUR + 60)
        store = MemoryStore()
        first = GatewayUnderTest(store, clock)
        traffic(first.metrics, "london", 300, 3)
        first.ledger.tick()
        store.subscribers.remove(first.book.apply)
        late = LateStore()
        late.data = dict(store.data)
        second = GatewayUnderTest(late, clock)
        traffic(second.metrics, "london", 20, 1)
        clock.advance(5)
        second.ledger.tick()
        self.assertEqual(len(late.data), 1)
        for key, value in list(late.data.items()):  # the topic, read at last
            for callback in late.subscribers:
                callback(key, value)
        late.load()
        second.ledger.tick()
        self.assertEqual(second.book.period("london", H, H + 1),
                         counted(bytesIn=320, recordsIn=4, requests=2))


class GatewaysTests(unittest.TestCase):
    def test_usage_is_the_sum_over_gateways(self):
        """Two gateways on one usage topic: each writes its own records, each
        reads both; a period sums every gateway's hours; connections of a
        gateway that stopped writing stop counting."""
        clock = task.Clock()
        clock.advance(H * HOUR + 30)
        store = MemoryStore()
        a = GatewayUnderTest(store, clock, "host-a:6969")
        b = GatewayUnderTest(store, clock, "host-b:6969")
        traffic(a.metrics, "london", 100, 1)
        traffic(b.metrics, "london", 250, 2, out=60)
        traffic(b.metrics, "paris", 9)
        a.connections["london"], b.connections["london"] = 3, 4
        for gw in (a, b):
            gw.ledger.tick()
        for book in (a.book, b.book):
            self.assertEqual(book.period("london", H, H + 1), counted(
                bytesIn=350, recordsIn=3, bytesOut=60, requests=2))
            self.assertEqual(book.connections("london", clock.seconds()), 7)
            self.assertEqual(book.vclusters(H, H + 1), {"london", "paris"})
            self.assertEqual(book.vclusters(H + 1, H + 2), set())
        clock.advance(20)
        a.ledger.tick()  # b has stopped
        clock.advance(20)
        a.ledger.tick()
        self.assertEqual(a.book.connections("london", clock.seconds()), 3)

    def test_records_of_other_versions(self):
        """A record this version cannot read is left out, a field it lacks is
        0, fields it does not know are ignored, a tombstone removes the hour."""
        store = MemoryStore()
        book = UsageBook(store)
        store.put(record_key("london", H, "gw"), {"bytesIn": 5, "newField": [1]})
        store.put(record_key("london", H, "gw2"), {"bytesIn": -1})
        store.put(record_key("london", H, "gw3"), {"bytesIn": True})
        store.put("nonsense", {"bytesIn": 1})
        self.assertEqual(book.period("london", H, H + 1), counted(bytesIn=5))
        store.put(record_key("london", H, "gw"), None)
        self.assertEqual(book.period("london", H, H + 1), counted())
        self.assertEqual(len(self.flushLoggedErrors()), 0)


class PeriodTests(unittest.TestCase):
    NOW = H * HOUR + 1234  # 2026-09-21T14:20:34Z

    def test_defaults_the_month_so_far(self):
        """No from/to: from the first of the month, the current hour included."""
        start, end = period(self.NOW)
        self.assertEqual((start, end), (month_start(self.NOW), H + 1))
        self.assertEqual(start * HOUR, 1788220800)  # 2026-09-01T00:00Z

    def test_forms_accepted(self):
        """A whole hour in any ISO 8601 form; no zone is UTC; a date is its
        midnight; an offset is converted."""
        for text, hour in [("2026-09-21T14", H), ("2026-09-21T14:00Z", H),
                           ("2026-09-21T14:00:00+00:00", H),
                           ("2026-09-21T16:00+02:00", H), ("2026-09-21", H - 14)]:
            self.assertEqual(period(self.NOW, text, "2026-09-22")[0], hour, text)

    def test_refused(self):
        """Not a date, not a whole hour, to not after from, or from beyond
        the 35 days kept: BadPeriod naming the parameter."""
        for start, end, field in [("2026-13-01", None, "from"),
                                  ("2026-09-21T14:30", None, "from"),
                                  ("2026-09-21T14:00+05:30", None, "from"),
                                  (None, "yesterday", "to"),
                                  ("2026-09-21T14", "2026-09-21T14", "to"),
                                  ("2026-08-16T12", None, "from")]:
            e = self.assertRaises(BadPeriod, period, self.NOW, start, end)
            self.assertEqual(e.field, field, (start, end))
        self.assertEqual(period(self.NOW, "2026-08-17T14")[0], H - RETENTION_HOURS)


def make_state():
    clock = task.Clock()
    clock.advance(H * HOUR + 1234)
    state = GatewayState(MemoryStore(), TokenAuthority("z" * 32, clock.seconds),
                         VirtualClusters(), clock.seconds)
    return state, clock


class AttributionTests(unittest.TestCase):
    def setUp(self):
        self.state, _ = make_state()
        for vc, prefix in [("london", "london"), ("paris", "paris."), ("rome", "rome")]:
            self.state.ensure_vcluster(vc, prefix)
        self.vclusters = self.state.vclusters

    def test_topics_partitions_groups_storage(self):
        """A topic in a namespace is its virtual cluster's, with every replica
        (storageBytes) and each partition once, its largest replica
        (storageBytesOnce); groups by prefix; the gateway's own and other
        topics are nobody's."""
        topics = {"londonorders": 2, "londonpay": 1, "paris.x": 1, "_vkafka_state": 1,
                  "other": 1, "romeo": 1}
        sizes = {("londonorders", 0): [100, 100, 90], ("londonorders", 1): [50, 40],
                 ("londonpay", 0): [7], ("paris.x", 0): [3, 3], ("other", 0): [1000],
                 ("_vkafka_state", 0): [5]}
        figures = attribute(self.vclusters, topics, topics,
                            ["londong1", "londong2", "paris.g", "elsewhere"], sizes)
        self.assertEqual(figures["london"].to_json(), {
            "topics": 2, "partitions": 3, "consumerGroups": 2, "transactionalIds": 0,
            "storageBytes": 387, "storageBytesOnce": 157})
        self.assertEqual(figures["paris"].to_json(), {
            "topics": 1, "partitions": 1, "consumerGroups": 1, "transactionalIds": 0,
            "storageBytes": 6, "storageBytesOnce": 3})
        self.assertEqual(figures["rome"].to_json(), {
            "topics": 1, "partitions": 1, "consumerGroups": 0, "transactionalIds": 0,
            "storageBytes": 0, "storageBytesOnce": 0})

    def test_mapped_topics_are_split_between_who_maps_them(self):
        """A mapped topic counts as a topic of each virtual cluster that maps it
        (a concentrated one with its logical partitions), and its bytes are
        split evenly among them, the remainder to the first names."""
        self.vclusters.namespace("london").set_alias("shared", "common")
        self.vclusters.namespace("paris").set_alias("s", "common", read_only=True)
        self.vclusters.namespace("rome").set_alias("c1", "pool", concentrated=True,
                                                   partitions=2)
        self.vclusters.namespace("rome").set_alias("c2", "pool", concentrated=True)
        self.vclusters.namespace("london").set_alias("c", "pool", concentrated=True,
                                                     partitions=1)
        topics = {"common": 3, "pool": 6}
        sizes = {("common", 0): [101, 101], ("pool", 0): [10], ("pool", 1): [11]}
        figures = {vc: f.to_json() for vc, f in attribute(
            self.vclusters, topics, topics, [], sizes).items()}
        self.assertEqual(figures["london"], {
            "topics": 2, "partitions": 4, "consumerGroups": 0, "transactionalIds": 0,
            "storageBytes": 101 + 11, "storageBytesOnce": 51 + 11})
        self.assertEqual(figures["paris"], {
            "topics": 1, "partitions": 3, "consumerGroups": 0, "transactionalIds": 0,
            "storageBytes": 101, "storageBytesOnce": 50})
        self.assertEqual(figures["rome"], {
            "topics": 2, "partitions": 8, "consumerGroups": 0, "transactionalIds": 0,
            "storageBytes": 10, "storageBytesOnce": 10})
        total = sum(f["storageBytes"] for f in figures.values())
        self.assertEqual(total, 202 + 21, "shared bytes are counted once in all")

    def test_overlapping_namespaces_own_nothing(self):
        """A virtual cluster that overlaps another (met through a token) is
        unavailable: neither is given anything."""
        self.vclusters.namespace("londonx")
        figures = attribute(self.vclusters, ["londonxa", "londona"], {}, [],
                            {("londona", 0): [5]})
        self.assertEqual((figures["london"].topics, figures["london"].storageBytes,
                          figures["londonx"].topics), (0, 0, 0))
        self.assertEqual(figures["paris"].topics, 0)

    def test_partitions_from_the_log_dirs_when_the_listing_lacks_them(self):
        figures = attribute(self.vclusters, ["londonnew"], {}, [],
                            {("londonnew", 0): [1], ("londonnew", 1): [1, 1]})
        self.assertEqual(figures["london"].partitions, 2)


class InventoryTests(unittest.TestCase):
    def setUp(self):
        self.state, self.clock = make_state()
        self.state.ensure_vcluster("london")
        self.cluster = FakeCluster({
            1: (["londong"], {"londont": {0: 100, 1: 60}}, ["londontx", "othertx"]),
            2: (["londonh", "other"], {"londont": {0: 100}}),
            3: ([], {"londont": {1: 70}})})
        self.metrics = Metrics()
        self.inventory = Inventory(self.clock.seconds,
                                   self.cluster.topology({"londont": 2}),
                                   self.state.vclusters, self.cluster.ask,
                                   metrics=self.metrics)

    def gauge(self, name, **labels):
        return self.metrics.registry.get_sample_value(name, labels)

    def test_every_broker_is_asked(self):
        """ListGroups, DescribeLogDirs and ListTransactions to every broker:
        groups and transactional ids of all the coordinators, replicas of all
        the brokers; the gauges follow."""
        snapshot = self.successResultOf(self.inventory.take())
        self.assertEqual(snapshot.figures["london"].to_json(), {
            "topics": 1, "partitions": 2, "consumerGroups": 2, "transactionalIds": 1,
            "storageBytes": 330, "storageBytesOnce": 170})
        self.assertEqual(sorted(port for port, _ in self.cluster.asked), [1, 2, 3])
        self.assertEqual(self.cluster.asked[0][1], [("ListGroupsRequest", 5),
                                                    ("DescribeLogDirsRequest", 4),
                                                    ("ListTransactionsRequest", 1)])
        self.assertEqual(snapshot.transactional_ids, {"londontx", "othertx"})
        self.assertEqual(self.gauge("vkafka_usage_transactional_ids",
                                    vcluster="london"), 1)
        self.assertEqual(self.gauge("vkafka_usage_storage_bytes", vcluster="london",
                                    replicas="once"), 170)
        self.assertEqual(self.gauge("vkafka_usage_consumer_groups",
                                    vcluster="london"), 2)
        self.state.delete_vcluster("london")
        self.successResultOf(self.inventory.take())
        self.assertIsNone(self.gauge("vkafka_usage_topics", vcluster="london"))

    def test_the_first_is_asked_for(self):
        """Before the first inventory, the capacity checks ask for one at once
        (not a minute after the gateway started), at most one try every
        ASK_AGAIN seconds while none succeeds."""
        from vkafka.usage.inventory import ASK_AGAIN
        self.cluster.down = True
        self.assertIsNone(self.inventory.latest_or_ask())
        self.assertIsNone(self.inventory.latest_or_ask())
        self.assertEqual(len(self.cluster.asked), 3)  # one inventory: three brokers
        self.clock.advance(ASK_AGAIN)
        self.cluster.down = False
        snapshot = self.inventory.latest_or_ask()
        self.assertEqual(len(self.cluster.asked), 6)
        self.assertIsNotNone(snapshot)
        self.assertEqual(snapshot.figures["london"].consumerGroups, 2)
        self.assertIs(self.inventory.latest_or_ask(), snapshot)
        self.assertEqual(len(self.cluster.asked), 6)

    def test_exists_asks_the_coordinator(self):
        """``exists``: FindCoordinator of the id on a broker, then DescribeGroups
        or DescribeTransactions on its coordinator; a Dead group, an unknown
        transactional id, a failure or more than ASKED_PER_SECOND questions
        in a second: not known to exist."""
        import datetime as dt
        from kio.schema.describe_groups.v5 import response as g
        from kio.schema.describe_transactions.v0 import response as t
        from kio.schema.errors import ErrorCode
        from kio.schema.find_coordinator.v4 import response as f
        from kio.static.primitive import i16, i32, i64
        from vkafka.tenancy.naming import GROUP, TRANSACTION
        from vkafka.usage.inventory import ASKED_PER_SECOND
        zero = dt.timedelta(0)
        asked = []

        def ask(host, port, asks):
            (body, _), = asks
            asked.append((port, type(body).__name__))
            if type(body).__name__ == "FindCoordinatorRequest":
                return defer.succeed([f.FindCoordinatorResponse(
                    throttle_time=zero, coordinators=(f.Coordinator(
                        key=body.coordinator_keys[0], node_id=i32(2), host="h",
                        port=i32(2), error_code=ErrorCode.none, error_message=None),))])
            if type(body).__name__ == "DescribeGroupsRequest":
                name = body.groups[0]
                return defer.succeed([g.DescribeGroupsResponse(throttle_time=zero, groups=(
                    g.DescribedGroup(error_code=ErrorCode.none, group_id=name,
                                     group_state="Empty" if name == "londong" else "Dead",
                                     protocol_type="", protocol_data="", members=(),
                                     authorized_operations=i32(-2147483648)),))])
            name = body.transactional_ids[0]
            if name == "broken":
                return defer.fail(ConnectionResetError("reset (test)"))
            return defer.succeed([t.DescribeTransactionsResponse(
                throttle_time=zero, transaction_states=(t.TransactionState(
                    error_code=ErrorCode.none if name == "londontx" else
                    ErrorCode.transactional_id_not_found, transactional_id=name,
                    transaction_state="Empty", transaction_timeout=zero,
                    transaction_start_time=dt.datetime.now(dt.timezone.utc),
                    producer_id=i64(1), producer_epoch=i16(0), topics=()),))])
        self.inventory.ask = ask
        found = [self.successResultOf(self.inventory.exists(kind, name)) for kind, name in
                 ((GROUP, "londong"), (GROUP, "gone"), (TRANSACTION, "londontx"),
                  (TRANSACTION, "nothere"), (TRANSACTION, "broken"))]
        self.assertEqual(found, [True, False, True, False, False])
        self.assertEqual(asked[:2], [(1, "FindCoordinatorRequest"),
                                     (2, "DescribeGroupsRequest")])
        for _ in range(ASKED_PER_SECOND):
            self.inventory.exists(GROUP, "londong")
        before = len(asked)
        self.assertFalse(self.successResultOf(self.inventory.exists(GROUP, "londong")))
        self.assertEqual(len(asked), before)  # not asked: too many this second
        self.assertTrue(self.successResultOf(  # another virtual cluster's questions
            self.inventory.exists(GROUP, "londong", "paris")))
        self.clock.advance(1)
        self.assertTrue(self.successResultOf(self.inventory.exists(GROUP, "londong")))

    def test_callers_share_one_inventory(self):
        """Concurrent callers share one round of questions; ``current`` reuses
        a fresh one."""
        asked = []
        d = defer.Deferred()
        self.cluster.ask = lambda *a: (asked.append(a), d)[1]
        self.inventory.ask = self.cluster.ask
        self.inventory.topology.brokers = {1: ("localhost", 1)}
        first, second = self.inventory.take(), self.inventory.current(5)
        self.assertEqual(len(asked), 1)
        d.callback(self.successResultOf(FakeCluster().ask("localhost", 1, [])))
        self.assertIs(self.successResultOf(first), self.successResultOf(second))
        self.clock.advance(4)
        self.assertIs(self.successResultOf(self.inventory.current(5)),
                      self.inventory.latest)
        self.assertEqual(len(asked), 1)

    def test_capacity_checks_wait_for_brokers_a_few_seconds(self):
        """A broker that does not answer holds a capacity check DECIDE_WITHIN
        seconds at most: ``renewed`` fires (the inventory goes on, and is
        the latest once it ends), ``exists`` says not known."""
        from vkafka.tenancy.naming import GROUP
        from vkafka.usage.inventory import DECIDE_WITHIN
        answers = []
        self.inventory.ask = lambda *a: (answers.append(defer.Deferred()), answers[-1])[1]
        self.inventory.call_later = self.clock.callLater
        renewed = self.inventory.renewed()
        exists = self.inventory.exists(GROUP, "londong", "london")
        self.clock.advance(DECIDE_WITHIN - 0.1)
        self.assertNoResult(renewed)
        self.assertNoResult(exists)
        self.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(renewed))
        self.assertFalse(self.successResultOf(exists))
        self.assertIsNone(self.inventory.latest)
        for d in answers[:3]:  # the three brokers of the inventory answer late
            d.callback(self.successResultOf(self.cluster.ask("localhost", 1, [])))
        self.assertIsNotNone(self.inventory.latest)
        self.assertIsNone(self.inventory.renewed())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ids_listed_anew_alone(self):
        """A capacity check's renewal (``ids_renewed``) past RENEW_AFTER asks
        every broker ListGroups and ListTransactions only, not a whole
        inventory (the topic listing and every replica's size: ~0.2 s at
        10,000 topics, which each new group's first join waited for); the
        groups and ids counted anew, topics and storage as they were; the
        gauges follow.  Fresh, nothing is asked; before the first inventory
        a whole one is taken."""
        from vkafka.usage.inventory import RENEW_AFTER
        refreshed = []
        self.inventory.refresh = lambda: (refreshed.append(1), defer.succeed(None))[1]
        self.assertIsNone(self.successResultOf(self.inventory.ids_renewed()))
        whole = [("ListGroupsRequest", 5), ("DescribeLogDirsRequest", 4),
                 ("ListTransactionsRequest", 1)]
        self.assertEqual([a for _, a in self.cluster.asked], [whole] * 3)
        taken = self.inventory.latest
        self.clock.advance(RENEW_AFTER - 1)
        self.assertIsNone(self.inventory.ids_renewed())
        self.assertEqual(len(self.cluster.asked), 3)
        self.clock.advance(1)
        groups, sizes, txns = self.cluster.brokers[1]
        self.cluster.brokers[1] = (groups + ["londonz"], {}, txns + ["londonty"])
        self.assertIsNone(self.successResultOf(self.inventory.ids_renewed()))
        self.assertEqual([a for _, a in self.cluster.asked[3:]], [[
            ("ListGroupsRequest", 5), ("ListTransactionsRequest", 1)]] * 3)
        self.assertEqual(refreshed, [1])  # the topic listing only for the whole one
        latest = self.inventory.latest
        self.assertEqual(latest.figures["london"].to_json(), {
            "topics": 1, "partitions": 2, "consumerGroups": 3, "transactionalIds": 2,
            "storageBytes": 330, "storageBytesOnce": 170})
        self.assertEqual(taken.figures["london"].consumerGroups, 2)  # not changed
        self.assertIn("londonz", latest.group_ids)
        self.assertEqual((latest.at, latest.ids_listed), (taken.at, taken.at + RENEW_AFTER))
        self.assertEqual(self.gauge("vkafka_usage_consumer_groups",
                                    vcluster="london"), 3)
        self.assertIsNone(self.inventory.ids_renewed())
        self.cluster.down = True  # a listing that fails leaves what was
        self.clock.advance(RENEW_AFTER)
        self.assertIsNone(self.successResultOf(self.inventory.ids_renewed()))
        self.assertIs(self.inventory.latest, latest)

    def test_ids_listing_waits_a_few_seconds(self):
        """A broker that does not answer the ids' listing holds a capacity
        check DECIDE_WITHIN seconds at most; calls meanwhile share the
        listing; its answer, when it comes, is the latest."""
        from vkafka.usage.inventory import DECIDE_WITHIN, RENEW_AFTER
        self.successResultOf(self.inventory.take())
        self.clock.advance(RENEW_AFTER)
        answers = []

        def ask(host, port, asks):
            answers.append((defer.Deferred(), port, asks))
            return answers[-1][0]
        self.inventory.ask = ask
        self.inventory.call_later = self.clock.callLater
        first, second = self.inventory.ids_renewed(), self.inventory.ids_renewed()
        self.assertEqual(len(answers), 3)
        self.clock.advance(DECIDE_WITHIN)
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.cluster.brokers[2] = (["londonh", "londonk"], {})
        for d, port, asks in answers:
            d.callback(self.successResultOf(self.cluster.ask("localhost", port, asks)))
        self.assertIn("londonk", self.inventory.latest.group_ids)
        self.assertIsNone(self.inventory.ids_renewed())

    def test_failures(self):
        """No broker known, or one that cannot be asked: InventoryError; the
        periodic run logs it and keeps the last inventory."""
        self.successResultOf(self.inventory.take())
        kept = self.inventory.latest
        self.cluster.down = True
        self.failureResultOf(self.inventory.take(), InventoryError)
        self.successResultOf(self.inventory.run())
        self.assertIs(self.inventory.latest, kept)
        self.assertIn("connection refused", self.inventory.last_error)
        self.inventory.topology.brokers = {}
        f = self.failureResultOf(self.inventory.take(), InventoryError)
        self.assertIn("no broker", f.getErrorMessage())

    def test_broker_asker(self):
        """Over the gateway's client: both requests pipelined on one session,
        the raw answers decoded by the blocking runner (a thread in the
        gateway); a refused request fails the ask with its own error."""
        from vkafka.protocol.codec import encode_body
        from vkafka.protocol.headers import response_header
        from vkafka.usage.inventory import broker_asker, request

        from .usage_fakes import list_groups, log_dirs
        answers = {LIST_GROUPS: list_groups(["g"]),
                   DESCRIBE_LOG_DIRS: log_dirs({"t": {0: 9}})}
        blocking = []

        class Client:
            def request(self, body, version, raw=False):
                self.raw = raw
                answer = answers.get(body.__api_key__)
                if answer is None:
                    return defer.fail(ConnectionResetError("reset (test)"))
                return defer.succeed(response_header(body.__api_key__, version, 1)
                                     + encode_body(answer))

        class Connector:
            def session(self, host, port, use):
                return use(Client())

        ask = broker_asker(Connector(), lambda f, *a: (blocking.append(f),
                                                       f(*a))[1])
        asks = [(request(LIST_GROUPS, 5), 5), (request(DESCRIBE_LOG_DIRS, 4), 4)]
        self.assertEqual(self.successResultOf(ask("h", 1, asks)),
                         [answers[LIST_GROUPS], answers[DESCRIBE_LOG_DIRS]])
        self.assertEqual(len(blocking), 1)
        del answers[LIST_GROUPS]
        f = self.failureResultOf(ask("h", 1, asks), ConnectionResetError)
        self.assertIn("reset (test)", f.getErrorMessage())

    def test_versions_follow_the_brokers(self):
        """The highest version both sides speak, within the range used."""
        from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
        offered = ApiVersionsResponse(
            error_code=0, throttle_time=0, api_keys=(
                ApiVersion(api_key=LIST_GROUPS, min_version=0, max_version=4),
                ApiVersion(api_key=DESCRIBE_LOG_DIRS, min_version=1,
                           max_version=9)))
        self.assertEqual((version_for(LIST_GROUPS, offered),
                          version_for(DESCRIBE_LOG_DIRS, offered),
                          version_for(LIST_GROUPS, None)), (4, 4, 5))


class EndpointTests(unittest.TestCase):
    """GET .../vcluster/{vc}/usage and GET .../usage through the admin app."""

    def setUp(self):
        self.state, self.clock = make_state()
        self.state.ensure_vcluster("london")
        self.state.ensure_vcluster("paris")
        self.cluster = FakeCluster({1: (["londong"], {"londont": {0: 500}})})
        self.usage = make_usage(self.state, self.clock.seconds, self.cluster,
                                {"londont": 1})
        self.put = lambda vc, hour, gw, **f: self.usage.ledger.store.put(
            record_key(vc, hour, gw), {**counted(**f), "connections": 1,
                                       "at": self.clock.seconds()})
        self.http = StubTreq(admin_root(self.state, make_checker(),
                                        lambda: (None, {}), usage=self.usage))

    @defer.inlineCallbacks
    def get(self, path):
        response = yield self.http.get("http://gw/admin/vclusters/v1" + path,
                                       auth=ADMIN)
        content = yield response.content()
        kind = response.headers.getRawHeaders(b"content-type")[0]
        body = json.loads(content) if kind.startswith(b"application/json") else \
            content.decode()
        return response.code, body, response.headers

    @defer.inlineCallbacks
    def test_usage_of_a_virtual_cluster(self):
        """now: the inventory and the connections over every gateway; period:
        the hours asked for, summed over gateways (the month so far by
        default)."""
        self.put("london", H, "a", bytesIn=10, requests=1)
        self.put("london", H, "b", bytesIn=5, recordsIn=2)
        self.put("london", H - 30, "a", bytesOut=1)
        self.put("paris", H, "a", bytesIn=99)
        code, body, _ = yield self.get("/vcluster/london/usage")
        self.assertEqual(code, 200, body)
        self.assertEqual(body, {
            "vcluster": "london",
            "now": {"at": "2026-09-21T14:20:34Z", "topics": 1, "partitions": 1,
                    "consumerGroups": 1, "transactionalIds": 0, "storageBytes": 500,
                    "storageBytesOnce": 500,
                    "connections": 2},
            "period": {"from": "2026-09-01T00:00:00Z", "to": "2026-09-21T15:00:00Z",
                       **counted(bytesIn=15, recordsIn=2, bytesOut=1, requests=1)}})
        code, body, _ = yield self.get(
            "/vcluster/london/usage?from=2026-09-21T14:00Z&to=2026-09-21T15")
        self.assertEqual(body["period"], {
            "from": "2026-09-21T14:00:00Z", "to": "2026-09-21T15:00:00Z",
            **counted(bytesIn=15, recordsIn=2, requests=1)})

    @defer.inlineCallbacks
    def test_bad_input(self):
        """400 naming the parameter: not a whole hour by the document's pattern,
        an impossible date, to before from, beyond 35 days, given twice, an
        unknown format; 404 for an unknown virtual cluster."""
        for query, field in [("from=2026-09-21T14:30", "from"),
                             ("from=2026-02-30", "from"),
                             ("from=2026-09-21T14&to=2026-09-21T12", "to"),
                             ("from=2026-01-01", "from"),
                             ("to=2026-09-22&to=2026-09-23", "to")]:
            code, body, _ = yield self.get(f"/vcluster/london/usage?{query}")
            self.assertEqual((code, body["error"], body["field"]),
                             (400, "bad_field", field), query)
            code, body, _ = yield self.get(f"/usage?{query}")
            self.assertEqual((code, body["field"]), (400, field), query)
        code, body, _ = yield self.get("/usage?format=xml")
        self.assertEqual((code, body["field"]), (400, "format"))
        code, body, _ = yield self.get("/usage?since=2026-09-01")
        self.assertEqual((code, body["error"], body["field"]),
                         (400, "unknown_field", "since"))
        code, body, _ = yield self.get("/vcluster/nobody/usage")
        self.assertEqual(code, 404)

    @defer.inlineCallbacks
    def test_cluster_unreachable(self):
        """The last inventory answers "now" when the cluster cannot be asked;
        without one, 503."""
        self.cluster.down = True
        code, body, _ = yield self.get("/vcluster/london/usage")
        self.assertEqual((code, body["error"]), (503, "unavailable"))
        self.cluster.down = False
        yield self.get("/vcluster/london/usage")
        self.cluster.down = True
        self.clock.advance(60)
        code, body, _ = yield self.get("/vcluster/london/usage")
        self.assertEqual((code, body["now"]["at"]), (200, "2026-09-21T14:20:34Z"))
        code, body, _ = yield self.get("/usage")
        self.assertEqual(code, 200)

    @defer.inlineCallbacks
    def test_export_json_and_csv(self):
        """Every virtual cluster of the state, and one deleted since that has
        records in the period; CSV with a header row."""
        self.put("london", H, "a", bytesIn=10, requests=1)
        self.put("gone", H - 1, "a", bytesOut=7)
        self.put("old", H - 24 * 30, "a", bytesOut=7)
        code, body, _ = yield self.get("/usage?from=2026-09-21")
        self.assertEqual(code, 200)
        self.assertEqual(body, {
            "from": "2026-09-21T00:00:00Z", "to": "2026-09-21T15:00:00Z",
            "vclusters": [{"vcluster": "gone", **counted(bytesOut=7)},
                          {"vcluster": "london", **counted(bytesIn=10, requests=1)},
                          {"vcluster": "paris", **counted()}]})
        code, text, headers = yield self.get("/usage?from=2026-09-21&format=csv")
        self.assertEqual((code, headers.getRawHeaders(b"content-type")),
                         (200, [b"text/csv; charset=utf-8"]))
        self.assertIn(b"vkafka-usage-2026-09-21T00-2026-09-21T15.csv",
                      headers.getRawHeaders(b"content-disposition")[0])
        rows = list(csv.reader(io.StringIO(text)))
        self.assertEqual(rows[0], ["vcluster", "from", "to", *FIELDS])
        self.assertEqual(rows[2], ["london", "2026-09-21T00:00:00Z",
                                   "2026-09-21T15:00:00Z", "10", "0", "0", "0", "1"])
        self.assertEqual(len(rows), 4)

    @defer.inlineCallbacks
    def test_not_measured(self):
        """An admin app without usage (tests, tools) answers 503."""
        http = StubTreq(admin_root(self.state, make_checker(), lambda: (None, {})))
        response = yield http.get("http://gw/admin/vclusters/v1/usage", auth=ADMIN)
        self.assertEqual(response.code, 503)
        yield response.content()


class MemoryTests(unittest.TestCase):
    def test_cost_per_vcluster_hour(self):
        """What the book holds per (virtual cluster, hour, gateway): 48 bytes
        of arrays plus their growth; measured, it stays under 64 bytes once a
        series is a few days long (docs/governance.md quotes it)."""
        import tracemalloc
        store = MemoryStore()
        book = UsageBook(store)
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for vc in range(50):
            for hour in range(RETENTION_HOURS):
                book.apply(record_key(f"vc{vc}", H - hour, "gw"),
                           {**counted(bytesIn=10 ** 9, requests=10 ** 6), "at": 0.0,
                            "connections": 0})
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        per = grown / (50 * RETENTION_HOURS)
        print(f"usage book: {per:.1f} bytes per vcluster-hour-gateway")
        self.assertLess(per, 64)



class ServiceTests(unittest.TestCase):
    def test_stopping_writes_the_last_figures(self):
        """A gateway that stops writes what it counted since its last write
        before the usage topic's store closes."""
        from vkafka.usage.report import UsageService
        state, clock = make_state()
        usage = make_usage(state, clock.seconds)
        store = usage.ledger.store
        stopped = []
        store.stop = lambda: stopped.append(True)
        service = UsageService(usage, store, clock)
        service.startService()
        traffic(usage.ledger.metrics, "london", 42)
        clock.advance(3)
        self.successResultOf(service.stopService())
        self.assertEqual(usage.book.period("london", H, H + 1), counted(
            bytesIn=42, requests=1))
        self.assertEqual(stopped, [True])

    def test_the_gateway_measures_usage(self):
        """makeService (virtual clusters): the usage topic (--usage-topic) is
        created compacted and deleted after 35 days, its values not kept twice;
        the admin API answers usage; a usage topic that is the state topic, or
        not a gateway topic, stops the start."""
        from twisted.internet.testing import MemoryReactorClock
        from twisted.python.usage import UsageError

        from vkafka.tap import Options
        from vkafka.usage.report import UsageService

        def options(*argv):
            parsed = Options({})
            parsed.parseOptions(["--security-protocol", "SASL_PLAINTEXT",
                                 "--multi-tenancy", "true", "--token-secret", "s" * 32,
                                 "--tuning", "false", "--workers", "1", *argv])
            return parsed
        from vkafka.tap import makeService
        top = makeService(options("--usage-topic", "_vkafka_usage_x"),
                          MemoryReactorClock())
        [service] = [s for s in top if isinstance(s, UsageService)]
        self.assertEqual((service.store.topic, service.store.keep,
                          service.store.configs["cleanup.policy"],
                          service.store.configs["retention.ms"]),
                         ("_vkafka_usage_x", False, "compact,delete",
                          str(35 * 24 * 3600 * 1000)))
        for bad in ("_vkafka_state", "usage"):
            self.assertRaises(UsageError, options, "--usage-topic", bad)
