"""Capacity and topic policy checks (vkafka/state/policy.py), one table row
per limit: what is allowed, what is refused, with which Kafka error."""

from twisted.trial import unittest

from vkafka.state.limits import Limits
from vkafka.state import policy
from vkafka.state.policy import Holdings
from vkafka.tenancy.naming import GROUP

LIMITS = Limits.from_json({
    "capacity": {"topics": 3, "partitions": 10, "partitionsPerTopic": 4},
    "topicPolicy": {"replicationFactorMin": 2, "replicationFactorMax": 3,
                    "retentionMsMax": 1000, "retentionBytesMax": 5000,
                    "namePattern": "[a-z][a-z0-9.-]*",
                    "configsForbidden": ["min.insync.replicas"]},
})


class NewTopicTests(unittest.TestCase):
    # (logical name, partitions, replication, configs, error code or None)
    CASES = [
        ("orders", 2, 2, {}, None),
        ("orders", -1, -1, {}, None),  # broker defaults: 1 partition, RF unchecked
        ("Orders", 2, 2, {}, policy.POLICY_VIOLATION),  # pattern
        ("orders", 5, 2, {}, policy.INVALID_PARTITIONS),  # per topic
        ("orders", 2, 1, {}, policy.INVALID_REPLICATION_FACTOR),
        ("orders", 2, 4, {}, policy.INVALID_REPLICATION_FACTOR),
        ("orders", 2, 2, {"retention.ms": "1001"}, policy.POLICY_VIOLATION),
        ("orders", 2, 2, {"retention.ms": "-1"}, policy.POLICY_VIOLATION),  # infinite
        ("orders", 2, 2, {"retention.ms": "soon"}, policy.INVALID_CONFIG),
        ("orders", 2, 2, {"retention.bytes": "5000"}, None),
        ("orders", 2, 2, {"min.insync.replicas": "2"}, policy.POLICY_VIOLATION),
    ]

    def test_table(self):
        for name, partitions, replication, configs, code in self.CASES:
            held = Holdings({"acmea": 1})
            found = policy.new_topic(LIMITS, held, name, "acme" + name, partitions,
                                     replication, configs)
            self.assertEqual(None if found is None else found.code, code,
                             (name, partitions, replication, configs, found))
            # allowed topics count from then on, refused ones do not
            self.assertEqual(held.topics, 2 if code is None else 1)

    def test_message_names_limit_and_figures(self):
        found = policy.new_topic(LIMITS, Holdings({}), "orders", "acmeorders", 9, 2, {})
        self.assertEqual(found.message, "9 partitions: the virtual cluster's limit is "
                                        "4 per topic")

    def test_one_request_cannot_pass_by_small_steps(self):
        """Topics of one request count against the capacity as they are allowed."""
        held = Holdings({"acmea": 5})
        results = [policy.new_topic(LIMITS, held, f"t{i}", f"acmet{i}", 3, 2, {})
                   for i in range(2)]
        self.assertIsNone(results[0])  # 5 + 3 = 8 partitions
        self.assertEqual((results[1].code, results[1].message), (
            policy.POLICY_VIOLATION, "3 more partitions: the virtual cluster holds 8, "
                                     "its limit is 10 in total"))
        self.assertEqual((held.topics, held.total_partitions), (2, 8))

    def test_topic_count(self):
        held = Holdings({"acmea": 1, "acmeb": 1, "acmec": 1})
        found = policy.new_topic(LIMITS, held, "d", "acmed", 1, 2, {})
        self.assertEqual((found.code, found.message), (
            policy.POLICY_VIOLATION, "the virtual cluster holds 3 topics, its limit is 3"))

    def test_no_limits_allow_anything(self):
        self.assertIsNone(policy.new_topic(Limits.NONE, Holdings({}), "ANY", "acmeANY",
                                           10000, 100, {"retention.ms": "-1"}))


class ChangeTests(unittest.TestCase):
    def test_more_partitions(self):
        held = Holdings({"acmea": 2, "acmeb": 4})
        self.assertIsNone(policy.more_partitions(LIMITS, held, "acmea", 4))
        self.assertEqual(held.total_partitions, 8)
        self.assertEqual(policy.more_partitions(LIMITS, held, "acmeb", 5).code,
                         policy.INVALID_PARTITIONS)
        held = Holdings({"acmea": 3, "acmeb": 4, "acmec": 3})
        self.assertEqual(policy.more_partitions(LIMITS, held, "acmea", 4).code,
                         policy.POLICY_VIOLATION)

    def test_configs(self):
        cases = [  # (changes, error code or None)
            ({"cleanup.policy": "compact"}, None),
            ({"retention.ms": "500"}, None),
            ({"retention.ms": None}, policy.POLICY_VIOLATION),  # back to the default
            ({"min.insync.replicas": None}, policy.POLICY_VIOLATION),
        ]
        for changes, code in cases:
            found = policy.configs_allowed(LIMITS, changes)
            self.assertEqual(None if found is None else found.code, code, changes)
        allowed = Limits.from_json({"topicPolicy": {"configsAllowed": ["retention.ms"]}})
        self.assertEqual(policy.configs_allowed(allowed, {"cleanup.policy": "x"}).code,
                         policy.POLICY_VIOLATION)
        self.assertIsNone(policy.configs_allowed(allowed, {"retention.ms": "1"}))

    def test_floors_hold_without_limits(self):
        """Whatever a virtual cluster's limits (none here), configs that cost
        the shared brokers without bound are refused below FLOORS or above
        CEILINGS (``segment.ms=1`` rolled a segment, a file handle and a
        memory map, per batch): within them, or back to the default, allowed."""
        for key, floor in policy.FLOORS.items():
            for value, code in ((str(floor - 1), policy.POLICY_VIOLATION),
                                ("0", policy.POLICY_VIOLATION),
                                ("x", policy.INVALID_CONFIG),
                                (str(floor), None), (str(floor * 10), None), (None, None)):
                found = policy.configs_allowed(Limits.NONE, {key: value})
                self.assertEqual(None if found is None else found.code, code, (key, value))
        for key, ceiling in policy.CEILINGS.items():  # 60 MB batches, files kept open
            for value, code in ((str(ceiling + 1), policy.POLICY_VIOLATION),
                                ("9223372036854775807", policy.POLICY_VIOLATION),
                                (str(ceiling), None), ("1000", None), (None, None)):
                found = policy.configs_allowed(Limits.NONE, {key: value})
                self.assertEqual(None if found is None else found.code, code, (key, value))
        found = policy.new_topic(Limits.NONE, Holdings({}), "t", "acmet", 1, 1,
                                 {"segment.ms": "1"})
        self.assertEqual(found.message, "segment.ms 1: the gateway's floor is 600000, to "
                         "keep the shared brokers' memory, files, disks and cleaner in bounds")

    def test_capped_defaults(self):
        self.assertEqual(policy.capped_defaults(LIMITS, {"retention.ms": "10"}),
                         {"retention.ms": "10", "retention.bytes": "5000"})
        configs = {}
        self.assertIs(policy.capped_defaults(Limits.NONE, configs), configs)


class GroupCapacityTests(unittest.TestCase):
    """capacity.consumerGroups: a request that would make a new group beyond
    the limit has its group refused (POLICY_VIOLATION); existing groups and
    members of them go on."""

    def rewrite(self, request, known, group_ids=None):
        from vkafka.tenancy.context import RequestContext
        from vkafka.tenancy.rules import groups
        from vkafka.tenancy.services import Services
        from vkafka.tenancy.vclusters import VirtualClusters
        limits = Limits.from_json({"capacity": {"consumerGroups": 2}})
        services = Services(None, None, {}, limits_of=lambda vc: limits,
                            group_ids=group_ids or (lambda: known))
        rctx = RequestContext(VirtualClusters().namespace("acme"), {})
        return groups.within_group_capacity(services, rctx, request), rctx

    def join(self, group):
        from kio.schema.join_group.v9.request import JoinGroupRequest
        from kio.static.primitive import i32Timedelta
        import datetime
        return JoinGroupRequest(
            group_id=group, session_timeout=i32Timedelta.parse(datetime.timedelta(10)),
            rebalance_timeout=i32Timedelta.parse(datetime.timedelta(10)),
            member_id="", group_instance_id=None, protocol_type="consumer",
            protocols=(), reason=None)

    def test_table(self):
        full = {"acmea", "acmeb", "othera"}
        cases = [  # (physical group, groups known, refused)
            ("acmec", full, True),           # a third group of acme
            ("acmea", full, False),          # an existing one
            ("acmec", {"acmea", "othera"}, False),  # room for one more
            ("acmec", None, False),          # no inventory yet
        ]
        for group, known, refused in cases:
            out, rctx = self.rewrite(self.join(group), known)
            found = rctx.refusal(GROUP, out.group_id)
            self.assertEqual(found is not None, refused, (group, known))
            if refused:
                self.assertEqual((found.logical, found.code), ("c", policy.POLICY_VIOLATION))
                self.assertIn("holds 2, its limit is 2", found.reason)

    def test_group_configs_only_on_existing_groups(self):
        """Configs of a group that does not exist are a config record each in
        the cluster's metadata, however many: with a group limit, only the
        tenant's existing groups take configs (POLICY_VIOLATION otherwise)."""
        from kio.schema.incremental_alter_configs.v1 import request as m
        from kio.static.primitive import i8
        from vkafka.tenancy.context import RequestContext
        from vkafka.tenancy.rules.configs import configs_request
        from vkafka.tenancy.services import Services
        from vkafka.tenancy.vclusters import VirtualClusters
        request = m.IncrementalAlterConfigsRequest(validate_only=False, resources=tuple(
            m.AlterConfigsResource(resource_type=i8(32), resource_name=group,
                                   configs=(m.AlterableConfig(
                                       name="consumer.session.timeout.ms",
                                       config_operation=i8(0), value="45001"),))
            for group in ("a", "ghost-1")))
        for limit, known, refused in ((2, {"acmea"}, ["ghost-1"]), (None, {"acmea"}, []),
                                      (2, None, [])):
            limits = Limits.from_json({} if limit is None else
                                      {"capacity": {"consumerGroups": limit}})
            services = Services(None, None, {}, limits_of=lambda vc: limits,
                                group_ids=lambda: known)
            rctx = RequestContext(VirtualClusters().namespace("acme"), {})
            out = configs_request(False)(services, rctx, request)
            sent = [r.resource_name for r in out.resources]
            self.assertEqual(sent[0], "acmea")
            self.assertEqual(sent[1] != "acmeghost-1", bool(refused), (limit, known))
            if refused:
                (_, code, reason), = rctx.config_refusals.values()
                self.assertEqual(code, policy.POLICY_VIOLATION)
                self.assertIn("only existing groups take configs", reason)

    def test_refused_transactional_commit_makes_no_group(self):
        """TxnOffsetCommit before v3 has no generation to make its refused
        group's commit fail: the group goes as "" (INVALID_GROUP_ID), never as
        a decoy the transaction's commit would make a group of."""
        from kio.schema.txn_offset_commit.v2.request import TxnOffsetCommitRequest
        from kio.static.primitive import i16, i64
        from vkafka.tenancy.rules.groups import commit_needs_a_group
        request = TxnOffsetCommitRequest(
            transactional_id="t", group_id="acmec", producer_id=i64(1),
            producer_epoch=i16(0), topics=())
        out, rctx = self.rewrite(request, {"acmea", "acmeb"})
        self.assertEqual(commit_needs_a_group(None, rctx, out).group_id, "")

    def test_members_of_a_group_not_checked(self):
        """A commit by a member (generation >= 0) or a KIP-848 heartbeat of a
        member (epoch > 0) makes no group."""
        from kio.schema.offset_commit.v9.request import OffsetCommitRequest
        from kio.static.primitive import i32
        request = OffsetCommitRequest(group_id="acmec", generation_id_or_member_epoch=i32(3),
                                      member_id="m", group_instance_id=None, topics=())
        out, _ = self.rewrite(request, {"acmea", "acmeb"})
        self.assertEqual(out.group_id, "acmec")
        simple = OffsetCommitRequest(group_id="acmec", generation_id_or_member_epoch=i32(-1),
                                     member_id="", group_instance_id=None, topics=())
        out, _ = self.rewrite(simple, {"acmea", "acmeb"})
        self.assertNotEqual(out.group_id, "acmec")


class TopicRequestsBase(unittest.TestCase):
    """acme's CreateTopics rewritten under capacity limits (no broker)."""

    def setUp(self):
        from twisted.internet.task import Clock
        from vkafka.proxy.topology import Topology
        from vkafka.tenancy.rules import tenant_rules
        from vkafka.tenancy.services import Services
        from vkafka.tenancy.vclusters import VirtualClusters
        self.clock = Clock()
        self.topology = Topology([("kafka1", 9092)], "gw", 6969, 3, 1)
        self.topology.learn_listing(["acmeold"], 0, {"acmeold": 1})
        limits = Limits.from_json({"capacity": {"topics": 2, "partitions": 3}})
        self.services = Services(self.topology, self.clock, tenant_rules(),
                                 limits_of=lambda vc: limits)
        self.namespace = VirtualClusters().namespace("acme")

    def context(self):
        from vkafka.tenancy.context import RequestContext
        return RequestContext(self.namespace, self.topology.topic_ids, True)

    def create(self, name, validate_only=False):
        """(the topic name sent to the broker, the request's context)."""
        import datetime
        from kio.schema.create_topics.v7 import request as rq
        from kio.static.primitive import i16, i32, i32Timedelta
        from vkafka.tenancy.rules import topics
        rctx = self.context()
        out = topics.create_topics_request(self.services, rctx, rq.CreateTopicsRequest(
            topics=(rq.CreatableTopic(name=name, num_partitions=i32(1),
                                      replication_factor=i16(-1), assignments=(),
                                      configs=()),),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
            validate_only=validate_only))
        return (out.topics[0].name if out.topics else None), rctx  # None: by a rule

    def answer(self, rctx, name, code):
        import uuid
        from kio.schema.create_topics.v7 import response as rs
        from kio.static.primitive import i16, i32
        from vkafka.tenancy.rules import topics
        from vkafka.tenancy.rules.common import NO_THROTTLE
        topics.create_topics_response(self.services, rctx, rs.CreateTopicsResponse(
            throttle_time=NO_THROTTLE, topics=(rs.CreatableTopicResult(
                name=name, topic_id=uuid.uuid4(), error_code=code, error_message=None,
                topic_config_error_code=i16(0), num_partitions=i32(1),
                replication_factor=i16(3), configs=()),)))


class CreationsInFlightTests(TopicRequestsBase):
    """Creations admitted under a capacity limit count as held until their
    answer: requests checked one after another against one listing (many
    connections at once) cannot each take the last place."""

    def test_the_last_place_taken_once(self):
        from kio.schema.errors import ErrorCode
        sent, first = self.create("a")
        self.assertEqual(sent, "acmea")
        self.assertNotEqual(self.create("b", validate_only=True)[0], "acmeb")
        self.assertNotEqual(self.create("b")[0], "acmeb")  # a is in flight
        self.answer(first, "acmea", ErrorCode.topic_already_exists)  # a failed
        sent, second = self.create("b")
        self.assertEqual(sent, "acmeb")
        self.answer(second, "acmeb", ErrorCode.none)  # b made: held for good
        self.assertNotEqual(self.create("c")[0], "acmec")

    def test_an_answer_that_never_comes(self):
        from vkafka.tenancy.rules.common import RESERVED_FOR
        self.create("a")
        self.assertNotEqual(self.create("b")[0], "acmeb")
        self.clock.advance(RESERVED_FOR)
        self.assertEqual(self.create("b")[0], "acmeb")

    def test_groups_made_here_count_at_once(self):
        """capacity.consumerGroups between two inventories: the groups this
        process let the tenant make count from the moment they are let."""
        from vkafka.usage.inventory import GroupsSeen, Snapshot
        snapshot = Snapshot(0, {}, frozenset({"othera"}))
        seen = GroupsSeen(lambda: snapshot)
        group = GroupCapacityTests("test_table")
        for name, refused in (("acmea", False), ("acmeb", False), ("acmec", True),
                              ("acmea", False)):
            out, rctx = group.rewrite(group.join(name), None, seen)
            self.assertEqual(rctx.refusal(GROUP, out.group_id) is not None, refused,
                             name)
        snapshot = Snapshot(1, {}, frozenset({"acmea"}))  # b was never made
        out, rctx = group.rewrite(group.join("acmec"), None, seen)
        self.assertIsNone(rctx.refusal(GROUP, out.group_id))

    def test_partitions_added_in_flight_count(self):
        import datetime
        from kio.schema.create_partitions.v3 import request as rq
        from kio.static.primitive import i32, i32Timedelta
        from vkafka.tenancy.rules import topics
        self.topology.learn_listing(["acmeold", "acmeolder"], 0,
                                    {"acmeold": 1, "acmeolder": 1})

        def grow(name):
            rctx = self.context()
            out = topics.create_partitions_request(
                self.services, rctx, rq.CreatePartitionsRequest(
                    topics=(rq.CreatePartitionsTopic(name=name, count=i32(2),
                                                     assignments=None),),
                    timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
                    validate_only=False))
            return out.topics[0].name
        self.assertEqual(grow("old"), "acmeold")  # 3 partitions of 3
        self.assertNotEqual(grow("older"), "acmeolder")


class RuleMadeNamesTests(TopicRequestsBase):
    """A concentration rule makes concentrated topics of valid names only:
    the name goes into each of their records twice (a 300,000-character one
    made each record megabytes); any other name is refused by the walk."""

    def test_only_valid_names(self):
        from vkafka.names import ConcentrationRule
        self.namespace.set_rule(ConcentrationRule("r", "ev-.*", (("delete", "conc"),)))
        for name in ("ev-" + "x" * 300, "ev-a/../b c!", "ev-ü☃"):
            sent, rctx = self.create(name)
            self.assertTrue(sent.startswith("!vkafka-refused-"), name)
            self.assertEqual(rctx.created, [], name)

    def test_mapping_names_checked_in_the_state(self):
        from vkafka.auth.tokens import TokenAuthority
        from vkafka.state.model import GatewayState, StateError
        from vkafka.state.store import MemoryStore
        from vkafka.tenancy.vclusters import VirtualClusters
        state = GatewayState(MemoryStore(), TokenAuthority("z" * 32, lambda: 0),
                             VirtualClusters(), lambda: 0)
        failure = self.failureResultOf(state.put_mapping(
            "acme", "x" * 250, {"physicalTopicName": "shared"}), StateError)
        self.assertEqual((failure.value.status, failure.value.error),
                         (400, "invalid_name"))

    def test_made_by_rule_within_a_budget(self):
        """Each concentrated topic a rule makes is a record of the shared
        state: past the budget (here 2) the next is THROTTLING_QUOTA_EXCEEDED."""
        from kio.schema.errors import ErrorCode
        from vkafka.names import ConcentrationRule
        from vkafka.tenancy.rules.common import StateWrites
        self.services.rule_writes = StateWrites(self.clock.seconds, 2)
        self.services.limits_of = lambda vc: Limits.NONE
        self.namespace.set_rule(ConcentrationRule("r", "ev-.*", (("delete", "conc"),)))
        outcomes = []
        for name in ("ev-1", "ev-2", "ev-3"):
            _, rctx = self.create(name)
            [(_, made)] = rctx.created
            made.addErrback(lambda f: None)  # no state here: the first two fail
            outcomes.append(made)
        code, message, _ = self.successResultOf(outcomes[2])
        self.assertEqual(code, ErrorCode.throttling_quota_exceeded)
        self.assertIn("a second per virtual cluster", message)
