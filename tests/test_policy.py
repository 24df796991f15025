"""Capacity and topic policy checks (vkafka/state/policy.py), one table row
per limit: what is allowed, what is refused, with which Kafka error."""

import datetime

from twisted.trial import unittest

from vkafka.state.limits import Limits
from vkafka.state import policy
from vkafka.state.policy import Holdings
from vkafka.tenancy.naming import GROUP, TRANSACTION

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
                                (str(ceiling), None), (str(ceiling - 1), None),
                                (None, None)):
                found = policy.configs_allowed(Limits.NONE, {key: value})
                self.assertEqual(None if found is None else found.code, code, (key, value))
        found = policy.new_topic(Limits.NONE, Holdings({}), "t", "acmet", 1, 1,
                                 {"segment.ms": "1"})
        self.assertEqual(found.message, "segment.ms 1: the gateway's floor is 600000, to "
                         "keep the shared brokers' memory, files, disks and cleaner in bounds")

    def test_compression_levels_capped(self):
        """A topic codec recompresses at its level what is produced in
        another: zstd 22 took a broker 0.5 s a MiB (audit 25b).  zstd and
        lz4 levels above 9 are refused; fast (negative) zstd levels and
        every gzip level pass."""
        cases = (("compression.zstd.level", "22", policy.POLICY_VIOLATION),
                 ("compression.zstd.level", "10", policy.POLICY_VIOLATION),
                 ("compression.zstd.level", "3", None),
                 ("compression.zstd.level", "-5", None),
                 ("compression.lz4.level", "17", policy.POLICY_VIOLATION),
                 ("compression.lz4.level", "9", None),
                 ("compression.gzip.level", "9", None))
        for key, value, code in cases:
            found = policy.configs_allowed(Limits.NONE, {key: value})
            self.assertEqual(None if found is None else found.code, code, (key, value))

    def test_capped_defaults(self):
        self.assertEqual(policy.capped_defaults(LIMITS, {"retention.ms": "10"}),
                         {"retention.ms": "10", "retention.bytes": "5000"})
        configs = {}
        self.assertIs(policy.capped_defaults(Limits.NONE, configs), configs)


def seen_of(known, kind=GROUP, made_by=None):
    """usage.inventory.IdsSeen over one inventory that listed *known* (physical
    ids; None: no inventory yet), counted for tenant "acme" by its prefix."""
    from vkafka.usage.inventory import Figures, IdsSeen, Snapshot
    if known is None:
        return IdsSeen(lambda: None, kind)
    held = sum(1 for k in known if k.startswith("acme"))
    figures = Figures(**{"consumerGroups" if kind == GROUP else "transactionalIds": held})
    snapshot = Snapshot(0, {"acme": figures}, *((frozenset(known), frozenset())
                                                 if kind == GROUP else
                                                 (frozenset(), frozenset(known))))
    return IdsSeen(lambda: snapshot, kind)


class GroupCapacityTests(unittest.TestCase):
    """capacity.consumerGroups: a request that would make a new group beyond
    the limit has its group refused (POLICY_VIOLATION); existing groups and
    members of them go on."""

    def rewrite(self, request, known, group_ids=None, limits=None):
        from vkafka.tenancy.context import RequestContext
        from vkafka.tenancy.rules import groups
        from vkafka.tenancy.services import Services
        from vkafka.tenancy.vclusters import VirtualClusters
        limits = limits or Limits.from_json({"capacity": {"consumerGroups": 2}})
        services = Services(None, None, {}, limits_of=lambda vc: limits,
                            group_ids=group_ids or seen_of(known))
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

    def test_default_without_limits(self):
        """A virtual cluster without limits still holds at most the gateway's
        default: groups are broker heap for days (HELD_AT_MOST)."""
        at_most = policy.HELD_AT_MOST["consumer_groups"]
        known = {f"acme{i}" for i in range(at_most)}
        out, rctx = self.rewrite(self.join("acmenew"), known, limits=Limits.NONE)
        found = rctx.refusal(GROUP, out.group_id)
        self.assertEqual(found.code, policy.POLICY_VIOLATION)
        self.assertIn(f"holds {at_most}, its limit is {at_most}", found.reason)
        out, rctx = self.rewrite(self.join("acmenew"), set(list(known)[1:]),
                                 limits=Limits.NONE)
        self.assertEqual(out.group_id, "acmenew")

    def test_group_configs_only_on_existing_groups(self):
        """Configs of a group that does not exist are a config record each in
        the cluster's metadata, however many: limit or none, only the tenant's
        existing groups take configs (POLICY_VIOLATION otherwise)."""
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
        for limit, known, refused in ((2, {"acmea"}, ["ghost-1"]),
                                      (None, {"acmea"}, ["ghost-1"]),
                                      (2, None, [])):
            limits = Limits.from_json({} if limit is None else
                                      {"capacity": {"consumerGroups": limit}})
            services = Services(None, None, {}, limits_of=lambda vc: limits,
                                group_ids=seen_of(known))
            rctx = RequestContext(VirtualClusters().namespace("acme"), {})
            out = configs_request(False)(services, rctx, request)
            sent = [r.resource_name for r in out.resources]
            self.assertEqual(sent[0], "acmea")
            self.assertEqual(sent[1] != "acmeghost-1", bool(refused), (limit, known))
            if refused:
                (_, code, reason), = rctx.config_refusals.values()
                self.assertEqual(code, policy.POLICY_VIOLATION)


    def configs(self, groups, seen, value="45001", describe=False):
        """The resource names an IncrementalAlterConfigs (or DescribeConfigs)
        of *groups* sends, and its refusals: [(reason, code)]."""
        from kio.schema.describe_configs.v4 import request as d
        from kio.schema.incremental_alter_configs.v1 import request as m
        from kio.static.primitive import i8
        from vkafka.tenancy.context import RequestContext
        from vkafka.tenancy.rules.configs import configs_request
        from vkafka.tenancy.services import Services
        from vkafka.tenancy.vclusters import VirtualClusters
        if describe:
            request = d.DescribeConfigsRequest(resources=tuple(
                d.DescribeConfigsResource(resource_type=i8(32), resource_name=g,
                                          configuration_keys=None) for g in groups),
                include_synonyms=False, include_documentation=False)
        else:
            request = m.IncrementalAlterConfigsRequest(
                validate_only=False, resources=tuple(m.AlterConfigsResource(
                    resource_type=i8(32), resource_name=g, configs=(m.AlterableConfig(
                        name="consumer.session.timeout.ms",
                        config_operation=i8(0 if value else 1), value=value),))
                    for g in groups))
        services = Services(None, None, {}, limits_of=lambda vc: Limits.NONE,
                            group_ids=seen)
        rctx = RequestContext(VirtualClusters().namespace("acme"), {})
        out = configs_request(describe)(services, rctx, request)
        if not hasattr(out, "resources"):  # a Deferred: the coordinator asked first
            out = self.successResultOf(out)
        return [r.resource_name for r in out.resources], [
            (reason, code) for (_, code, reason) in rctx.config_refusals.values()]

    def test_group_configs_need_the_inventory(self):
        """A group this gateway let a commit make (that the broker may have
        refused) takes no configs until an inventory lists it: 71 config
        records were written for groups that never existed (audit 22).
        Configs set back to their defaults pass for any group (Kafka keeps a
        deleted group's configs)."""
        seen = seen_of({"acmea"})
        seen.made("acme", "acmeb")
        sent, _ = self.configs(["a", "b"], seen)
        self.assertEqual(sent[0], "acmea")
        self.assertNotEqual(sent[1], "acmeb")
        sent, _ = self.configs(["a", "b", "gone"], seen, value=None)
        self.assertEqual(sent, ["acmea", "acmeb", "acmegone"])

    def test_group_configs_of_a_group_made_a_moment_ago(self):
        """A group the last inventory did not list: its coordinator is asked
        (at most GROUPS_ASKED a request) and a group that exists takes configs
        at once (kafka-configs right after the first commit)."""
        from twisted.internet import defer
        from vkafka.tenancy.rules.configs import GROUPS_ASKED
        asked = []

        def exists(physical, vc):
            self.assertEqual(vc, "acme")
            asked.append(physical)
            return defer.succeed(physical == "acmenew")
        seen = seen_of({"acmea"})
        seen.exists = exists
        names, _ = self.configs(["new", "a", "ghost", "new"], seen)
        self.assertEqual(asked, ["acmenew", "acmeghost"])
        self.assertEqual(names[:2], ["acmenew", "acmea"])
        self.assertNotEqual(names[2], "acmeghost")
        many = [f"g{i}" for i in range(GROUPS_ASKED + 5)]
        asked.clear()
        self.configs(many, seen)
        self.assertEqual(len(asked), GROUPS_ASKED)

    def test_group_configs_before_the_first_inventory(self):
        """A gateway that has not taken its first inventory yet asks the
        coordinator of every group configured: one that never existed is
        refused (before, anything passed until the first inventory)."""
        from twisted.internet import defer
        asked = []

        def exists(physical, vc):
            asked.append(physical)
            return defer.succeed(physical == "acmenew")
        seen = seen_of(None)
        seen.exists = exists
        names, refusals = self.configs(["new", "ghost"], seen)
        self.assertEqual(asked, ["acmenew", "acmeghost"])
        self.assertEqual(names[0], "acmenew")
        self.assertNotEqual(names[1], "acmeghost")
        self.assertEqual([code for _, code in refusals], [policy.POLICY_VIOLATION])

    def test_groups_described_at_most(self):
        """The broker builds ~2 KB of configs for any group named, existing or
        not: one DescribeConfigs names at most GROUPS_DESCRIBED groups."""
        from vkafka.tenancy.rules.configs import GROUPS_DESCRIBED
        names = [f"g{i}" for i in range(GROUPS_DESCRIBED + 2)]
        sent, refused = self.configs(names, seen_of(set()), describe=True)
        self.assertEqual(sent[:GROUPS_DESCRIBED], [f"acme{n}" for n in
                                                   names[:GROUPS_DESCRIBED]])
        self.assertTrue(all(n.startswith("!") for n in sent[GROUPS_DESCRIBED:]))
        self.assertEqual(len(refused), 2)
        self.assertEqual(refused[0][0], f"at most {GROUPS_DESCRIBED} groups' configs in one "
                                 "request")

    def test_refused_groups_answered_with_the_refusal(self):
        """The answers of a join, a commit and a KIP-848 heartbeat whose group
        was refused name no group: every error in them is the refusal's
        (POLICY_VIOLATION with the reason where there is a message), not the
        broker's error for the id it got instead (INVALID_GROUP_ID,
        NOT_COORDINATOR)."""
        from kio.schema.consumer_group_heartbeat.v0 import response as h
        from kio.schema.offset_commit.v9 import response as c
        from kio.schema.errors import ErrorCode
        from kio.static.primitive import i32
        from vkafka.tenancy.rules import groups
        out, rctx = self.rewrite(self.join("acmec"), {"acmea", "acmeb"})
        answer = groups.answered_as_refused(GROUP)
        commit = c.OffsetCommitResponse(
            throttle_time=datetime.timedelta(0), topics=(c.OffsetCommitResponseTopic(
                name="t", partitions=(c.OffsetCommitResponsePartition(
                    partition_index=i32(0), error_code=ErrorCode.not_coordinator),)),))
        got = answer(None, rctx, commit)
        self.assertEqual(got.topics[0].partitions[0].error_code,
                         ErrorCode.policy_violation)
        beat = h.ConsumerGroupHeartbeatResponse(
            throttle_time=datetime.timedelta(0), error_code=ErrorCode.invalid_group_id,
            error_message="GroupId can't be empty.", member_id=None,
            member_epoch=i32(0), heartbeat_interval=datetime.timedelta(0),
            assignment=None)
        got = answer(None, rctx, beat)
        self.assertEqual((got.error_code, got.error_message),
                         (ErrorCode.policy_violation, "a new consumer group: the "
                          "virtual cluster holds 2, its limit is 2"))
        _, allowed = self.rewrite(self.join("acmea"), {"acmea", "acmeb"})
        self.assertIs(answer(None, allowed, commit), commit)

    def test_stale_inventory_renewed_before_deciding(self):
        """An id the last inventory did not list, when that inventory is old:
        a new one is taken first, so an id made through another gateway since
        is not refused as new (a Java producer's restart failed for a minute),
        and a third id is refused only on fresh figures."""
        from twisted.internet import defer
        from vkafka.usage.inventory import Figures, IdsSeen, Snapshot
        snapshots = [Snapshot(0, {"acme": Figures(consumerGroups=2)},
                              frozenset({"acmea", "acmeb"}))]
        pending = []

        def renew():
            pending.append(defer.Deferred())
            return pending[-1]
        seen = IdsSeen(lambda: snapshots[-1], GROUP, renew)
        out, rctx = self.rewrite(self.join("acmec"), None, seen)
        self.assertIsInstance(out, defer.Deferred)
        snapshots.append(Snapshot(1, {"acme": Figures(consumerGroups=3)},
                                  frozenset({"acmea", "acmeb", "acmec"})))
        pending[0].callback(None)
        self.assertEqual(self.successResultOf(out).group_id, "acmec")
        out, rctx = self.rewrite(self.join("acmed"), None, seen)
        pending[1].callback(None)  # nothing new: refused
        found = rctx.refusal(GROUP, self.successResultOf(out).group_id)
        self.assertEqual(found.code, policy.POLICY_VIOLATION)


    def test_coordinator_asked_before_refusing(self):
        """Before refusing an id as new, the gateway asks its coordinator: an
        id made through another gateway (or worker) since the last inventory
        is the tenant's own and passes, and counts from then on; one that
        does not exist is refused."""
        from twisted.internet import defer
        asked = []

        def exists(physical, vc):
            self.assertEqual(vc, "acme")
            asked.append(physical)
            return defer.succeed(physical == "acmeother")
        seen = seen_of({"acmea", "acmeb"})
        seen.exists = exists
        out, _ = self.rewrite(self.join("acmeother"), None, seen)
        self.assertEqual(self.successResultOf(out).group_id, "acmeother")
        self.assertTrue(seen.holds("acmeother"))
        out, rctx = self.rewrite(self.join("acmenew"), None, seen)
        found = rctx.refusal(GROUP, self.successResultOf(out).group_id)
        self.assertEqual(found.reason, "a new consumer group: the virtual cluster "
                                       "holds 3, its limit is 2")
        self.assertEqual(asked, ["acmeother", "acmenew"])


    def test_deleted_groups_configs_cleared(self):
        """Kafka keeps a group's configs past DeleteGroups: each group the
        broker deleted has them cleared (making, configuring and deleting
        groups in a loop added metadata records without end; audit 22b)."""
        from kio.schema.delete_groups.v2 import response as d
        from kio.schema.errors import ErrorCode
        from vkafka.tenancy.context import RequestContext
        from vkafka.tenancy.rules import tenant_rules
        from vkafka.tenancy.services import Services
        from vkafka.tenancy.vclusters import VirtualClusters
        cleared = []
        services = Services(None, None, {}, clear_group_configs=cleared.append)
        rctx = RequestContext(VirtualClusters().namespace("acme"), {})
        response = d.DeleteGroupsResponse(throttle_time=datetime.timedelta(0), results=(
            d.DeletableGroupResult(group_id="acmea", error_code=ErrorCode.none),
            d.DeletableGroupResult(group_id="acmeb",
                                   error_code=ErrorCode.group_id_not_found),
            d.DeletableGroupResult(group_id="othera", error_code=ErrorCode.none)))
        out = tenant_rules()[42].rewrite_response(services, rctx, response)
        self.assertEqual([r.group_id for r in out.results], ["a", "b"])
        self.assertEqual(cleared, [["acmea"]])


class TransactionCapacityTests(unittest.TestCase):
    """capacity.transactionalIds (or the gateway's default): an InitProducerId
    naming a new transactional id beyond it is refused with POLICY_VIOLATION;
    ids the cluster holds, and idempotent producers, go on."""

    def init(self, txn, known, limits, seen=None):
        from kio.schema.init_producer_id.v5.request import InitProducerIdRequest
        from kio.static.primitive import i16, i32Timedelta, i64
        import datetime
        from vkafka.tenancy.context import RequestContext
        from vkafka.tenancy.rules import tenant_rules
        from vkafka.tenancy.services import Services
        from vkafka.tenancy.vclusters import VirtualClusters
        services = Services(None, None, {}, limits_of=lambda vc: limits,
                            transactional_ids=seen or seen_of(known, TRANSACTION))
        rctx = RequestContext(VirtualClusters().namespace("acme"), {})
        request = InitProducerIdRequest(
            transactional_id=txn, transaction_timeout=i32Timedelta.parse(
                datetime.timedelta(seconds=60)), producer_id=i64(-1),
            producer_epoch=i16(-1))
        return tenant_rules()[22].rewrite_request(services, rctx, request), rctx

    def answered(self, rctx, code=0):
        from kio.schema.errors import ErrorCode
        from kio.schema.init_producer_id.v5.response import InitProducerIdResponse
        from kio.static.primitive import i16, i32Timedelta, i64
        from vkafka.tenancy.rules import tenant_rules
        response = InitProducerIdResponse(
            throttle_time=i32Timedelta.parse(__import__("datetime").timedelta(0)),
            error_code=ErrorCode(code), producer_id=i64(-1), producer_epoch=i16(-1))
        return tenant_rules()[22].rewrite_response(None, rctx, response).error_code

    def test_table(self):
        from kio.schema.errors import ErrorCode
        two = Limits.from_json({"capacity": {"transactionalIds": 2}})
        full = {"acmea", "acmeb", "othera"}
        cases = [  # (logical id, ids known, limits, sent as)
            ("c", full, two, ""),                      # a third id: refused
            ("a", full, two, "acmea"),                 # one it holds
            ("c", {"acmea", "othera"}, two, "acmec"),  # room for one more
            ("c", None, two, "acmec"),                 # no inventory yet
            (None, full, two, None),                   # idempotent producer
            ("c", {"acmea", "acmeb"}, Limits.NONE, "acmec"),  # the default
        ]
        for txn, known, limits, sent in cases:
            out, rctx = self.init(txn, known, limits)
            self.assertEqual(out.transactional_id, sent, (txn, known))
            if sent == "":  # the broker refuses "" (INVALID_REQUEST), creating nothing
                self.assertEqual(self.answered(rctx, 42), ErrorCode.policy_violation)
                self.assertIn("holds 2, its limit is 2",
                              rctx.refusal(TRANSACTION, "").reason)
            else:
                self.assertEqual(self.answered(rctx), ErrorCode.none)

    def test_default_without_limits(self):
        at_most = policy.HELD_AT_MOST["transactional_ids"]
        known = {f"acme{i}" for i in range(at_most)}
        out, _ = self.init("new", known, Limits.NONE)
        self.assertEqual(out.transactional_id, "")
        out, _ = self.init("7", known, Limits.NONE)  # one it holds
        self.assertEqual(out.transactional_id, "acme7")

    def test_ids_let_in_before_the_first_inventory_count(self):
        """Before the gateway's first inventory nothing is refused, but what
        is let in counts: an inventory taken while those ids were made may
        not list them."""
        from vkafka.usage.inventory import IdsSeen, Snapshot
        limits = Limits.from_json({"capacity": {"transactionalIds": 1}})
        snapshots = [None]
        seen = IdsSeen(lambda: snapshots[-1], TRANSACTION)
        out, _ = self.init("a", None, limits, seen)
        self.assertEqual(out.transactional_id, "acmea")
        snapshots.append(Snapshot(5, {}, frozenset(), frozenset()))  # a not listed yet
        out, _ = self.init("b", None, limits, seen)
        self.assertEqual(out.transactional_id, "")
        out, _ = self.init("a", None, limits, seen)
        self.assertEqual(out.transactional_id, "acmea")

    def test_ids_made_here_count_at_once(self):
        """Between two inventories the ids this process let the tenant make
        count at once, each once; a new inventory counts them itself."""
        from vkafka.usage.inventory import Figures, IdsSeen, Snapshot
        limits = Limits.from_json({"capacity": {"transactionalIds": 2}})
        snapshots = [Snapshot(0, {}, frozenset(), frozenset({"othera"}))]
        seen = IdsSeen(lambda: snapshots[-1], TRANSACTION)
        for txn, sent in (("a", "acmea"), ("a", "acmea"), ("b", "acmeb"), ("c", ""),
                          ("a", "acmea")):
            out, _ = self.init(txn, None, limits, seen)
            self.assertEqual(out.transactional_id, sent, txn)
        snapshots.append(Snapshot(100, {"acme": Figures(transactionalIds=1)},
                                  frozenset(), frozenset({"acmea"})))  # b expired
        out, _ = self.init("c", None, limits, seen)
        self.assertEqual(out.transactional_id, "acmec")
        from vkafka.tenancy.vclusters import VirtualClusters
        self.assertEqual(seen.held(VirtualClusters().namespace("acme")), 2)

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
        from vkafka.usage.inventory import Figures, IdsSeen, Snapshot
        snapshots = [Snapshot(0, {}, frozenset({"othera"}))]
        seen = IdsSeen(lambda: snapshots[-1], GROUP)
        group = GroupCapacityTests("test_table")
        for name, refused in (("acmea", False), ("acmeb", False), ("acmec", True),
                              ("acmea", False)):
            out, rctx = group.rewrite(group.join(name), None, seen)
            self.assertEqual(rctx.refusal(GROUP, out.group_id) is not None, refused,
                             name)
        snapshots.append(Snapshot(1, {"acme": Figures(consumerGroups=1)},
                                  frozenset({"acmea"})))  # b not listed yet
        out, rctx = group.rewrite(group.join("acmec"), None, seen)
        self.assertIsNotNone(rctx.refusal(GROUP, out.group_id))  # b counts MADE_KEPT s
        snapshots.append(Snapshot(100, {"acme": Figures(consumerGroups=1)},
                                  frozenset({"acmea"})))  # b was never made
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
