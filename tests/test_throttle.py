"""Throttle time written into responses (KIP-219) and the per-tenant rates."""

import struct

from twisted.internet.task import Clock
from twisted.trial import unittest

from vkafka.protocol.codec import decode_response
from vkafka.protocol.headers import is_flexible
from vkafka.protocol.throttle import throttled
from kio.static.constants import EntityType

from .test_fastpath import fetch_response, produce_response


def framed(api_key, version, body):
    """A response frame (no size prefix): correlation id 5, then *body*."""
    header = struct.pack(">i", 5)
    if is_flexible(api_key, version, EntityType.response):
        header += b"\x00"
    return header + body


class ThrottleFieldTests(unittest.TestCase):
    def check(self, api_key, version, frame):
        out = throttled(frame, api_key, version, 1234)
        _, response = decode_response(out, api_key, version)
        self.assertEqual(response.throttle_time.total_seconds(), 1.234,
                         (api_key, version))
        # never lowered: a broker's own longer throttle stays
        again = throttled(out, api_key, version, 10)
        self.assertIs(again, out)
        return response

    def test_produce_every_version(self):
        for version in range(3, 14):
            for kw in ({}, {"message": "boom", "record_errors": (0, 1)},
                       {"endpoints": (1, 2)}):
                if version < 8 and kw.get("record_errors"):
                    continue  # no record errors before v8
                response = self.check(0, version, framed(
                    0, version, produce_response(version, **kw)))
                self.assertEqual(len(response.responses), 2)

    def test_fetch_every_version(self):
        for version in range(4, 18):
            response = self.check(1, version, framed(1, version,
                                                     fetch_response(version)))
            self.assertEqual(len(response.responses), 2)

    def test_response_without_the_field_unchanged(self):
        """ApiVersions v0 has no throttle time: the frame is left as it is."""
        from kio.schema.api_versions.v0.response import ApiVersionsResponse
        from kio.schema.errors import ErrorCode
        from vkafka.protocol.codec import encode_body
        frame = framed(18, 0, encode_body(ApiVersionsResponse(
            error_code=ErrorCode.none, api_keys=())))
        self.assertIs(throttled(frame, 18, 0, 100), frame)


class BucketTests(unittest.TestCase):
    def test_delay_grows_with_debt(self):
        from vkafka.filters.throttle import Bucket
        clock = Clock()
        bucket = Bucket(1000, clock.seconds)  # 1000/s, one second of burst
        self.assertAlmostEqual(bucket.take(100), 0.1)  # empty at first
        clock.advance(2)
        self.assertEqual(bucket.take(1000), 0.0)  # the burst
        self.assertAlmostEqual(bucket.take(500), 0.5)
        clock.advance(0.5)
        self.assertAlmostEqual(bucket.take(0), 0.0)
        clock.advance(10)  # idle: the burst comes back, never more
        self.assertEqual(bucket.take(1000), 0.0)
        self.assertAlmostEqual(bucket.take(1000), 1.0)

    def test_rate_change_keeps_the_debt(self):
        from vkafka.filters.throttle import Bucket
        clock = Clock()
        bucket = Bucket(1000, clock.seconds)
        clock.advance(1)
        bucket.take(2000)  # one second in debt at 1000/s
        bucket.set_rate(500)
        self.assertAlmostEqual(bucket.take(0), 2.0)  # 1000 owed at 500/s


class SharesTests(unittest.TestCase):
    """The split of a tenant's limit between gateways (filters/shares.py)."""

    def setUp(self):
        from vkafka.filters.shares import RateShares
        from .test_limits import make_state
        self.state = make_state()
        self.clock = Clock()
        self.clock.advance(1000)
        self.state.clock = self.clock.seconds
        self.successResultOf(self.state.ensure_vcluster("acme"))
        self.successResultOf(self.state.put_limits(
            "acme", {"rates": {"produceBytesPerSecond": 1000}}))
        self.shares = RateShares("gw1", self.state, self.clock.seconds)

    def report(self, gateway, produce, age=0.0):
        self.successResultOf(self.state.store.put(f"rate/{gateway}/acme", {
            "produce_bytes_per_second": produce, "fetch_bytes_per_second": 0,
            "requests_per_second": 0, "at": self.clock.seconds() - age}))

    def test_alone_takes_it_all(self):
        self.assertEqual(self.shares.shares("acme", {"produce_bytes_per_second": 900})
                         ["produce_bytes_per_second"], 1.0)

    def test_split_by_demand_adds_up_to_one(self):
        self.report("gw2", 300)
        mine = self.shares.shares("acme", {"produce_bytes_per_second": 700})
        theirs = (300 + 50) / (1000 + 2 * 50)
        self.assertAlmostEqual(mine["produce_bytes_per_second"], 750 / 1100)
        self.assertAlmostEqual(mine["produce_bytes_per_second"] + theirs, 1.0)

    def test_rising_demand_never_adds_up_to_more_than_one(self):
        """Both gateways' clients want more each second than either said in
        its last report: each counts itself at no more than the other holds
        for it, so together they never take more than the limit."""
        from vkafka.filters.shares import RateShares
        other = RateShares("gw2", self.state, self.clock.seconds)
        tenants = (self.shares.tenant("acme"), other.tenant("acme"))
        self.clock.advance(3)  # past the warm-up
        for step, wanted in enumerate((100, 100, 400, 900, 1600) + (2500,) * 12):
            self.clock.advance(1)
            for tenant in tenants:
                tenant.observed["produce_bytes_per_second"] = wanted
            self.shares.tick()
            other.tick()
            rates = [t.buckets["produce_bytes_per_second"].rate for t in tenants]
            if step:  # once each has the other's report
                self.assertLessEqual(sum(rates), 1000 + 1e-9, (wanted, rates))
        self.assertEqual([round(r) for r in rates], [500, 500])  # held still: 1

    def test_one_large_second_reported_halved(self):
        """A second that caught one large request is averaged with the last
        report; a second with nothing wanted is reported as nothing."""
        tenant = self.shares.tenant("acme")
        reported = []
        for wanted in (1000, 3000, 1000, 0):
            self.clock.advance(1)
            tenant.observed["produce_bytes_per_second"] = wanted
            self.shares.tick()
            reported.append(self.state.rate_reports[("gw1", "acme")]
                            ["produce_bytes_per_second"])
        self.assertEqual(reported, [1000, 2000, 1500, 0])

    def test_stale_reports_left_out(self):
        self.report("gw2", 300, age=5)
        self.assertEqual(self.shares.shares("acme", {"produce_bytes_per_second": 1})
                         ["produce_bytes_per_second"], 1.0)

    def alive(self, gateway, age=0.0):
        self.successResultOf(self.state.store.put(
            f"gateway/{gateway}", {"at": self.clock.seconds() - age}))

    def test_fallback_equal_share_of_the_live(self):
        self.alive("gw2", age=10)
        self.alive("gw3", age=5)
        self.alive("gw4", age=60)  # gone
        self.shares._published(False)
        self.assertTrue(self.shares.fallback)
        self.assertAlmostEqual(self.shares.shares("acme", {})
                               ["produce_bytes_per_second"], 1 / 3)
        self.shares._published(True)
        self.assertFalse(self.shares.fallback)

    def test_warm_up_equal_share(self):
        """A gateway's first seconds with a tenant: the others' reports cannot
        have arrived yet, so it takes an equal share of the live gateways'."""
        self.alive("gw2")
        tenant = self.shares.tenant("acme")
        self.assertAlmostEqual(tenant.buckets["produce_bytes_per_second"].rate, 500)
        self.clock.advance(3)
        self.shares.tick()  # gw2 reported nothing for acme: all of it
        self.assertAlmostEqual(tenant.buckets["produce_bytes_per_second"].rate, 1000)

    def test_demand_counts_what_is_owed(self):
        """A gateway whose clients are held back asks for more than it served."""
        tenant = self.shares.tenant("acme")
        self.clock.advance(1)
        tenant.request(0, 1500)  # 1000 of burst, 500 owed
        demand = tenant.demand(1.0)
        self.assertAlmostEqual(demand["produce_bytes_per_second"], 2000)

    def test_idle_gateway_goes_quiet(self):
        tenant = self.shares.tenant("acme")
        self.clock.advance(1)
        tenant.request(0, 10)
        self.shares.tick()
        self.assertIn(("gw1", "acme"), self.state.rate_reports)
        self.clock.advance(5)
        self.shares.tick()  # nothing wanted: one zero report...
        at = self.state.rate_reports[("gw1", "acme")]["at"]
        self.assertEqual(self.state.rate_reports[("gw1", "acme")]
                         ["produce_bytes_per_second"], 0)
        self.clock.advance(1)
        self.shares.tick()  # ...then quiet
        self.assertEqual(self.state.rate_reports[("gw1", "acme")]["at"], at)

    def test_tick_publishes_and_resets(self):
        tenant = self.shares.tenant("acme")
        self.clock.advance(1)  # a second of burst: nothing owed
        tenant.request(0, 400)
        self.shares.tick()
        key = ("gw1", "acme")
        self.assertEqual(self.state.rate_reports[key]["produce_bytes_per_second"], 400)
        self.assertEqual(tenant.observed["produce_bytes_per_second"], 0)
        self.assertIn("gw1", self.state.gateways)  # and it says it is alive

    def test_unlimited_tenant_not_published(self):
        self.shares.tenant("other")
        self.shares.tick()
        self.assertNotIn(("gw1", "other"), self.state.rate_reports)


class ThrottledSpliceTests(unittest.TestCase):
    """A tenant over its rate: served, told to wait, and not read meanwhile."""

    def setUp(self):
        from vkafka.filters.shares import RateShares
        from .test_limits import make_state
        from .test_tenant_splice import ProduceResponseTests
        self.case = ProduceResponseTests("test_v13_passes_as_bytes")
        self.case.setUp()
        state = make_state()
        state.clock = self.case.reactor.seconds
        self.successResultOf(state.ensure_vcluster("london"))
        self.successResultOf(state.put_limits(
            "london", {"rates": {"produceBytesPerSecond": 100}}))
        self.case.gateway.state = state
        self.case.gateway.rate_shares = RateShares("gw", state,
                                                   self.case.reactor.seconds)

    def test_over_the_rate(self):
        import uuid
        from vkafka.protocol.framing import FrameDecoder
        case, own = self.case, uuid.uuid4()
        case.topology.topic_ids[own] = "londont"
        case.login()
        case.produce(13, own, 5)  # about 150 bytes: over the 100 of burst
        self.assertEqual(case.transport.producerState, "paused")
        case.answer(13, own, 5)
        _, response = decode_response(FrameDecoder().feed(case.transport.value())[0],
                                      0, 13)
        waited = response.throttle_time.total_seconds()
        self.assertGreater(waited, 0.0)
        case.reactor.advance(waited - 0.001)
        self.assertEqual(case.transport.producerState, "paused")
        case.reactor.advance(0.002)
        self.assertEqual(case.transport.producerState, "producing")

    def test_backpressure_end_does_not_cut_the_throttle_short(self):
        import uuid
        case, own = self.case, uuid.uuid4()
        case.topology.topic_ids[own] = "londont"
        case.login()
        case.produce(13, own, 5)
        case.client.valve.pauseProducing()  # the broker's socket is full...
        case.client.valve.resumeProducing()  # ...and drains
        self.assertEqual(case.transport.producerState, "paused")

    def test_requests_the_gateway_answers_count(self):
        """ApiVersions (answered by the gateway) counts against
        requestsPerSecond as forwarded requests do; past the rate the rest of
        the read waits for the throttle's end, then is answered in order."""
        from vkafka.protocol.framing import FrameDecoder
        from .test_tenant_splice import api_versions_frames, versions_known
        case = self.case
        case.topology.api_versions = versions_known()
        self.successResultOf(case.gateway.state.put_limits(
            "london", {"rates": {"requestsPerSecond": 2}}))
        case.gateway.rate_shares.tenant("london").set(
            case.gateway.state.limits_of("london").rates, {})
        case.login()
        case.client.dataReceived(api_versions_frames(10))
        answered = len(FrameDecoder().feed(case.transport.value()))
        self.assertLess(answered, 10)
        self.assertEqual(case.transport.producerState, "paused")
        for _ in range(100):
            case.reactor.advance(0.5)
        answers = FrameDecoder().feed(case.transport.value())
        self.assertEqual([struct.unpack(">i", bytes(a[:4]))[0] for a in answers],
                         list(range(1, 11)))

    def test_unlimited_tenant_not_paused(self):
        import uuid
        case, own = self.case, uuid.uuid4()
        self.successResultOf(case.gateway.state.delete_limits("london"))
        case.gateway.rate_shares.tenant("london").set(
            case.gateway.state.limits_of("london").rates, {})
        case.topology.topic_ids[own] = "londont"
        case.login()
        case.produce(13, own, 5)
        self.assertEqual(case.transport.producerState, "producing")


class ConnectionsAcrossGatewaysTests(unittest.TestCase):
    """capacity.connections is the virtual cluster's total over every gateway."""

    def setUp(self):
        from vkafka.filters.shares import RateShares
        from vkafka.proxy.gateway import Gateway
        from vkafka.proxy.topology import Topology
        from .test_limits import make_state
        self.clock = Clock()
        self.clock.advance(1000)
        self.state = make_state()
        self.successResultOf(self.state.ensure_vcluster("acme"))
        self.successResultOf(self.state.put_limits(
            "acme", {"capacity": {"connections": 3}}))
        self.gateway = Gateway(self.clock, Topology([("k", 9092)], "gw", 6969, 3, 1),
                               {})
        self.gateway.state = self.state
        self.gateway.rate_shares = RateShares(
            "gw1", self.state, self.clock.seconds,
            connections=lambda vc: self.gateway.per_vcluster.get(vc, 0))

    def test_others_count(self):
        self.successResultOf(self.state.store.put("rate/gw2/acme", {
            "connections": 2, "at": self.clock.seconds()}))
        self.assertTrue(self.gateway.admit_tenant("acme"))  # 2 there + 1 here
        self.assertFalse(self.gateway.admit_tenant("acme"))
        self.clock.advance(60)  # gw2 went quiet long ago: its count is gone
        self.assertTrue(self.gateway.admit_tenant("acme"))

    def test_own_count_published(self):
        self.gateway.admit_tenant("acme")
        self.gateway.rate_shares.tenant("acme")
        self.gateway.rate_shares.tick()
        self.assertEqual(self.state.rate_reports[("gw1", "acme")]["connections"], 1)
