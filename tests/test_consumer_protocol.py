"""The embedded consumer protocol: subscriptions and assignments renamed, or refused.

The unit tests are table-driven, no I/O: messages are built with kio,
rewritten as the JoinGroup, SyncGroup and DescribeGroups rows do, and read
back.  ConsumerProtocolKafkaTests, at the end, checks the same hole against
the real cluster: what paris's groups are given, and what the broker holds.
"""

import dataclasses
import datetime
import struct

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i32Timedelta
from twisted.trial import unittest

from vkafka.tenancy import consumer_protocol as cp
from vkafka.tenancy.consumer_protocol import ASSIGNMENT, SUBSCRIPTION
from vkafka.tenancy.naming import Namespace, Prefixes
from vkafka.tenancy.vclusters import VirtualClusters
from vkafka.tenancy.context import RequestContext

SECONDS = i32Timedelta.parse(datetime.timedelta(seconds=10))


def subscription(version, topics, owned=(), user_data=b"ud", generation=7, rack="r1"):
    """A ConsumerProtocolSubscription at *version* (fields it lacks left out)."""
    module = SUBSCRIPTION.classes[version]
    values = {"topics": tuple(topics), "user_data": user_data}
    if version >= 1:
        tp = _topic_partition(SUBSCRIPTION, version)
        values["owned_partitions"] = tuple(
            tp(topic=t, partitions=tuple(i32(p) for p in ps)) for t, ps in owned)
    if version >= 2:
        values["generation_id"] = i32(generation)
    if version >= 3:
        values["rack_id"] = rack
    return module(**values)


def assignment(version, partitions, user_data=b"ud"):
    tp = _topic_partition(ASSIGNMENT, version)
    return ASSIGNMENT.classes[version](
        assigned_partitions=tuple(tp(topic=t, partitions=tuple(i32(p) for p in ps))
                                  for t, ps in partitions), user_data=user_data)


def _topic_partition(fmt, version):
    import importlib
    package = ("consumer_protocol_subscription" if fmt is SUBSCRIPTION
               else "consumer_protocol_assignment")
    return importlib.import_module(f"kio.schema.{package}.v{version}.data").TopicPartition


def owned_of(message):
    return [(tp.topic, list(tp.partitions)) for tp in
            getattr(message, "owned_partitions", None) or
            getattr(message, "assigned_partitions", None) or ()]


class Base(unittest.TestCase):
    def setUp(self):
        self.vclusters = VirtualClusters()
        self.london = self.vclusters.namespace("london")
        self.paris = self.vclusters.namespace("paris")

    def ctx(self, namespace=None):
        return RequestContext(namespace or self.paris, {})

    def decoded(self, fmt, data):
        found = cp.read(fmt, data)
        self.assertIsNotNone(found)
        return found


class CodecTests(Base):
    def test_golden_bytes(self):
        """The bytes are Java's: int16 version, then the message's fields in order."""
        s = struct.Struct
        cases = [
            (subscription(0, ["a"], user_data=None),
             s(">hih1si").pack(0, 1, 1, b"a", -1)),
            (subscription(3, ["a"], owned=[("a", [2])], user_data=b"x", generation=5,
                          rack="r"),
             s(">hih1si1sih1siiih1s").pack(3, 1, 1, b"a", 1, b"x", 1, 1, b"a", 1, 2,
                                           5, 1, b"r")),
            (assignment(1, [("t", [0, 1])], user_data=None),
             s(">hih1siiii").pack(1, 1, 1, b"t", 2, 0, 1, -1)),
        ]
        for (message, expected), fmt in zip(cases, (SUBSCRIPTION, SUBSCRIPTION,
                                                    ASSIGNMENT)):
            self.assertEqual(cp.encode(message), expected, message)
            self.assertEqual(cp.read(fmt, expected), (message.__version__, message))

    def test_round_trip_every_version(self):
        """Every version kio knows (0-3) reads back exactly as written."""
        self.assertEqual((SUBSCRIPTION.highest, ASSIGNMENT.highest), (3, 3))
        for version in range(4):
            for fmt, message in (
                    (SUBSCRIPTION, subscription(version, ["a", "b"], [("a", [0, 3])])),
                    (SUBSCRIPTION, subscription(version, [], user_data=None, rack=None)),
                    (ASSIGNMENT, assignment(version, [("a", [0]), ("b", [])])),
                    (ASSIGNMENT, assignment(version, [], user_data=None))):
                data = cp.encode(message)
                self.assertEqual(cp.read(fmt, data), (version, message))
                self.assertEqual(cp.encode(self.decoded(fmt, data)[1]), data)

    def test_read_as_java(self):
        """A newer version is read as the newest known, trailing bytes ignored;
        what Java cannot read is None; readable by Java but not by kio raises."""
        v3 = cp.encode(subscription(3, ["a"]))
        newer = struct.pack(">h", 9) + v3[2:] + b"future fields"
        self.assertEqual(cp.read(SUBSCRIPTION, newer), (9, subscription(3, ["a"])))
        self.assertEqual(cp.read(SUBSCRIPTION, v3 + b"xx"), (3, subscription(3, ["a"])))
        for garbage in (b"", b"\x00", struct.pack(">h", -1) + v3[2:],
                        struct.pack(">hi", 0, 5) + b"\x00\x01a",  # 5 topics, 1 there
                        struct.pack(">hi", 0, -1) + struct.pack(">i", -1),  # null topics
                        b"{\"json\": true}"):
            self.assertIsNone(cp.read(SUBSCRIPTION, garbage), garbage)
        not_utf8 = struct.pack(">hih", 0, 1, 2) + b"\xff\xfe" + struct.pack(">i", -1)
        self.assertRaises(cp.Unreadable, cp.read, SUBSCRIPTION, not_utf8)


class RequestTests(Base):
    def test_physical_every_version(self):
        """Topics and owned partitions become physical; the version, user data,
        generation and rack are kept."""
        for version in range(4):
            message = subscription(version, ["orders", "londonsecret"],
                                   [("orders", [1])])
            out = cp.to_physical(SUBSCRIPTION, cp.encode(message), self.ctx())
            version_out, renamed = self.decoded(SUBSCRIPTION, out)
            self.assertEqual(version_out, version)
            # another tenant's physical name is just a name in paris's own namespace
            self.assertEqual(renamed.topics, ("parisorders", "parislondonsecret"))
            self.assertEqual(renamed.user_data, b"ud")
            if version >= 1:
                self.assertEqual(owned_of(renamed), [("parisorders", [1])])
            if version >= 3:
                self.assertEqual((renamed.generation_id, renamed.rack_id), (7, "r1"))
            message = assignment(version, [("orders", [0, 2])])
            out = cp.to_physical(ASSIGNMENT, cp.encode(message), self.ctx())
            self.assertEqual(owned_of(self.decoded(ASSIGNMENT, out)[1]),
                             [("parisorders", [0, 2])])

    def test_refused(self):
        """Unreadable bytes, unknown versions and names the tenant may not name
        are refused, with a reason naming the cause."""
        v0 = struct.pack(">hi", 0, 1)
        cases = [
            (b"", "not a"),
            (b"garbage!", "not a"),
            (struct.pack(">h", 4) + cp.encode(subscription(3, ["a"]))[2:], "newer"),
            (cp.encode(subscription(0, ["bad name"])), "bad name"),
            (cp.encode(subscription(0, [""])), "empty name"),
            (cp.encode(subscription(1, ["ok"], [("a" * 300, [0])])), "longer"),
            (v0 + struct.pack(">h", 2) + b"\xff\xfe" + struct.pack(">i", -1),
             "unreadable"),
        ]
        for data, why in cases:
            e = self.assertRaises(cp.Refused, cp.to_physical, SUBSCRIPTION, data,
                                  self.ctx())
            self.assertIn(why, str(e), data)

    def test_refused_other_namespace(self):
        """A name whose physical form lies in another virtual cluster's namespace
        ("lon" + "donX" is london's "londonX") is refused, not forwarded."""
        prefixes = Prefixes()
        lon = Namespace("lon", "lon", prefixes)
        Namespace("london", "london", prefixes)
        for fmt, message in ((SUBSCRIPTION, subscription(1, ["mine", "donX"])),
                             (ASSIGNMENT, assignment(0, [("donX", [0])]))):
            e = self.assertRaises(cp.Refused, cp.to_physical, fmt, cp.encode(message),
                                  self.ctx(lon))
            self.assertIn("collides", str(e))

    def test_unknown_type_assignments(self):
        """SyncGroup without a protocol type: what Java cannot read passes as it
        is; what it can read is renamed or refused like a "consumer" one."""
        ctx = self.ctx()
        for opaque in (b"connect's own bytes", struct.pack(">h", -3) + b"xyz"):
            self.assertEqual(cp.to_physical(ASSIGNMENT, opaque, ctx, strict=False),
                             opaque)
        readable = cp.encode(assignment(0, [("t", [0])])) + b"trailing"
        out = cp.to_physical(ASSIGNMENT, readable, ctx, strict=False)
        self.assertEqual(out, cp.encode(assignment(0, [("parist", [0])])))
        newer = struct.pack(">h", 7) + cp.encode(assignment(3, [("t", [0])]))[2:]
        not_utf8 = struct.pack(">hih", 0, 1, 1) + b"\xff" + struct.pack(">ii", 0, -1)
        for refused in (cp.encode(assignment(0, [("bad name", [0])])), newer, not_utf8):
            self.assertRaises(cp.Refused, cp.to_physical, ASSIGNMENT, refused, ctx,
                              strict=False)

    def test_concentrated_and_aliases(self):
        """An alias names its physical topic; a concentrated topic its virtual
        name, without sending the request through the concentration layer."""
        self.paris.set_alias("shared", "sharedtopic", read_only=True)
        self.paris.set_alias("conc", "bigtopic", concentrated=True)
        ctx = self.ctx()
        out = cp.to_physical(SUBSCRIPTION, cp.encode(subscription(0, ["shared", "conc"])),
                             ctx)
        self.assertEqual(self.decoded(SUBSCRIPTION, out)[1].topics,
                         ("sharedtopic", "parisconc"))
        self.assertFalse(ctx.concentrated)
        back = cp.to_logical(SUBSCRIPTION, out, ctx)
        self.assertEqual(self.decoded(SUBSCRIPTION, back)[1].topics, ("shared", "conc"))


class ResponseTests(Base):
    def test_logical_foreign_dropped(self):
        """Names become logical; other tenants', internal and unprefixed topics
        are dropped from topics, owned and assigned partitions, at every version."""
        foreign = ["londonsecret", "__consumer_offsets", "plain"]
        for version in range(4):
            message = subscription(version, ["parisorders", *foreign],
                                   [(t, [0]) for t in ("parisorders", *foreign)])
            out = cp.to_logical(SUBSCRIPTION, cp.encode(message), self.ctx())
            version_out, renamed = self.decoded(SUBSCRIPTION, out)
            self.assertEqual((version_out, renamed.topics), (version, ("orders",)))
            self.assertEqual(owned_of(renamed), [("orders", [0])] if version else [])
            message = assignment(version, [(t, [1]) for t in ("parisorders", *foreign)])
            out = cp.to_logical(ASSIGNMENT, cp.encode(message), self.ctx())
            self.assertEqual(owned_of(self.decoded(ASSIGNMENT, out)[1]),
                             [("orders", [1])])
            self.assertNotIn(b"london", out)

    def test_unreadable_and_newer(self):
        """Unreadable "consumer" bytes become an empty message (unknown type: as
        they are); a newer version is shown as the newest known; empty stays empty."""
        ctx = self.ctx()
        self.assertEqual(cp.to_logical(ASSIGNMENT, b"junk", ctx), ASSIGNMENT.empty())
        self.assertEqual(cp.to_logical(ASSIGNMENT, b"junk", ctx, strict=False), b"junk")
        self.assertEqual(cp.to_logical(ASSIGNMENT, b"", ctx), b"")
        not_utf8 = struct.pack(">hih", 0, 1, 1) + b"\xff" + struct.pack(">ii", 0, -1)
        self.assertEqual(cp.to_logical(ASSIGNMENT, not_utf8, ctx, strict=False),
                         ASSIGNMENT.empty())
        newer = struct.pack(">h", 5) + cp.encode(assignment(3, [("parist", [0])]))[2:]
        self.assertEqual(cp.to_logical(ASSIGNMENT, newer + b"more", ctx),
                         cp.encode(assignment(3, [("t", [0])])))


def join_request(version, group, protocol_type, metadatas, member="m-1"):
    from kio.index import load_payload_module
    from kio.static.constants import EntityType
    module = load_payload_module(11, version, EntityType.request)
    values = dict(group_id=group, session_timeout=SECONDS, member_id=member,
                  protocol_type=protocol_type, protocols=tuple(
                      module.JoinGroupRequestProtocol(name=f"p{i}", metadata=m)
                      for i, m in enumerate(metadatas)))
    fields = module.JoinGroupRequest.__dataclass_fields__
    for name, value in (("rebalance_timeout", SECONDS), ("group_instance_id", None),
                        ("reason", None)):
        if name in fields:
            values[name] = value
    return module.JoinGroupRequest(**values)


def join_response(version, metadatas, protocol_type="consumer"):
    from kio.index import load_payload_module
    from kio.static.constants import EntityType
    module = load_payload_module(11, version, EntityType.response)
    member = module.JoinGroupResponseMember
    static = {"group_instance_id": None} if (
        "group_instance_id" in member.__dataclass_fields__) else {}
    values = dict(error_code=ErrorCode.none, generation_id=i32(3), protocol_name="p0",
                  leader="m-1", member_id="m-1", members=tuple(
                      member(member_id=f"m-{i}", metadata=m, **static)
                      for i, m in enumerate(metadatas)))
    fields = module.JoinGroupResponse.__dataclass_fields__
    for name, value in (("throttle_time", i32Timedelta.parse(datetime.timedelta(0))),
                        ("protocol_type", protocol_type)):
        if name in fields:
            values[name] = value
    return module.JoinGroupResponse(**values)


def sync_request(version, group, assignments, protocol_type=None):
    from kio.index import load_payload_module
    from kio.static.constants import EntityType
    module = load_payload_module(14, version, EntityType.request)
    values = dict(group_id=group, generation_id=i32(3), member_id="m-1",
                  assignments=tuple(module.SyncGroupRequestAssignment(
                      member_id=f"m-{i}", assignment=a)
                      for i, a in enumerate(assignments)))
    fields = module.SyncGroupRequest.__dataclass_fields__
    if "group_instance_id" in fields:
        values["group_instance_id"] = None
    if "protocol_type" in fields:
        values.update(protocol_type=protocol_type, protocol_name=None)
    return module.SyncGroupRequest(**values)


def sync_response(version, data, protocol_type=None):
    from kio.index import load_payload_module
    from kio.static.constants import EntityType
    module = load_payload_module(14, version, EntityType.response)
    values = dict(error_code=ErrorCode.none, assignment=data)
    fields = module.SyncGroupResponse.__dataclass_fields__
    if "throttle_time" in fields:
        values["throttle_time"] = i32Timedelta.parse(datetime.timedelta(0))
    if "protocol_type" in fields:
        values.update(protocol_type=protocol_type, protocol_name=None)
    return module.SyncGroupResponse(**values)


class RowTests(Base):
    """The JoinGroup, SyncGroup and DescribeGroups rows, request then response."""

    def test_join_group_every_version(self):
        """"consumer" subscriptions go physical (group id too), the leader's
        copies come back logical; other protocol types pass as bytes."""
        mine = cp.encode(subscription(1, ["orders"], [("orders", [0])]))
        for version in range(10):
            ctx = self.ctx()
            request = cp.join_group_request(None, ctx, join_request(
                version, "g", "consumer", [mine, mine]))
            self.assertEqual(request.group_id, "parisg")
            for p in request.protocols:
                self.assertEqual(self.decoded(SUBSCRIPTION, p.metadata)[1].topics,
                                 ("parisorders",))
            physical = [p.metadata for p in request.protocols]
            foreign = cp.encode(subscription(0, ["londonsecret", "parisother"]))
            response = cp.join_group_response(None, ctx, join_response(
                version, physical + [foreign]))
            self.assertEqual(response.error_code, ErrorCode.none)
            self.assertEqual([self.decoded(SUBSCRIPTION, m.metadata)[1].topics
                              for m in response.members],
                             [("orders",), ("orders",), ("other",)])
            ctx = self.ctx()
            connect = b"\x00\x01connect's opaque metadata naming londonsecret"
            request = cp.join_group_request(None, ctx, join_request(
                version, "g", "connect", [connect]))
            self.assertEqual(request.protocols[0].metadata, connect)
            response = cp.join_group_response(None, ctx, join_response(
                version, [connect], protocol_type="connect"))
            self.assertEqual(response.members[0].metadata, connect)

    def test_join_group_refused(self):
        """A "consumer" JoinGroup with unreadable metadata or a name the tenant
        may not name goes to the decoy group with no protocols, and is answered
        INCONSISTENT_GROUP_PROTOCOL with no members."""
        for metadata in (b"junk", cp.encode(subscription(0, ["ok", "bad name"]))):
            for version in (0, 5, 9):
                ctx = self.ctx()
                request = cp.join_group_request(None, ctx, join_request(
                    version, "g", "consumer", [cp.encode(subscription(0, ["ok"])),
                                               metadata]))
                self.assertNotIn(request.group_id, ("g", "parisg"))
                self.assertEqual(request.protocols, ())
                self.assertTrue(ctx.refusals)
                broker = join_response(version, [b"whatever"])
                response = cp.join_group_response(None, ctx, broker)
                self.assertEqual((response.error_code, response.members,
                                  response.leader, response.member_id),
                                 (ErrorCode.inconsistent_group_protocol, (), "", "m-1"))

    def test_join_group_member_bounded(self):
        """What a member asks the coordinator to keep is bounded: a "consumer"
        subscription to more than MAX_SUBSCRIBED_NAMES names (the broker turns
        it into a KIP-848 member's name list), more than MAX_PROTOCOLS
        protocols, instance ids and protocol names over MAX_MEMBER_STRING bytes,
        whatever the protocol type: the decoy group, INCONSISTENT_GROUP_PROTOCOL.
        At the bounds: joined.  The member id is the broker's (made of the
        client id, itself cut: naming.MAX_CLIENT_ID): not bounded here, or a
        Java consumer of a long group id could never join (audit 22c)."""
        many = cp.MAX_SUBSCRIBED_NAMES
        at = cp.encode(subscription(1, [f"t{i}" for i in range(many)]))
        over = cp.encode(subscription(1, [f"t{i}" for i in range(many + 1)]))
        long = "m" * (cp.MAX_MEMBER_STRING + 1)
        cases = [  # (protocol type, metadatas, member id, instance id, refused)
            ("consumer", [at], "m-1", None, False),
            ("consumer", [over], "m-1", None, True),
            ("connect", [b"x"] * cp.MAX_PROTOCOLS, "m-1", None, False),
            ("connect", [b"x"] * (cp.MAX_PROTOCOLS + 1), "m-1", None, True),
            ("connect", [b"x"], long, None, False),
            ("consumer", [at], "m-1", long, True),
            ("consumer", [at], "m-1", long[1:], False),
        ]
        for protocol_type, metadatas, member, instance, refused in cases:
            ctx = self.ctx()
            request = dataclasses.replace(join_request(
                5, "g", protocol_type, metadatas, member=member), group_instance_id=instance)
            request = cp.join_group_request(None, ctx, request)
            self.assertEqual(request.group_id != "parisg", refused,
                             (protocol_type, len(metadatas), len(member)))
            if refused:
                self.assertEqual(request.protocols, ())

    def test_reasons_cut(self):
        """JoinGroup and LeaveGroup reasons (the broker logs them) are cut to
        MAX_MEMBER_STRING bytes, on a character's boundary."""
        from kio.schema.leave_group.v5.request import LeaveGroupRequest, MemberIdentity
        long = "é" * cp.MAX_MEMBER_STRING
        join = dataclasses.replace(join_request(9, "g", "connect", [b"x"]), reason=long)
        self.assertEqual(cp.join_group_request(None, self.ctx(), join).reason,
                         "é" * (cp.MAX_MEMBER_STRING // 2))
        leave = cp.leave_group_request(None, self.ctx(), LeaveGroupRequest(
            group_id="g", members=(MemberIdentity(member_id="m", group_instance_id=None,
                                                  reason=long),)))
        self.assertEqual((leave.group_id, leave.members[0].reason),
                         ("parisg", "é" * (cp.MAX_MEMBER_STRING // 2)))

    def test_heartbeat_member_strings_bounded(self):
        """A KIP-848 member's own strings (ids, rack, assignor) and name list:
        what the coordinator keeps for it, bounded as a classic member's."""
        from types import SimpleNamespace
        fields = ("member_id", "instance_id", "rack_id", "server_assignor")
        ok = dict(member_id="m", instance_id=None, rack_id="r" * cp.MAX_MEMBER_STRING,
                  server_assignor=None, subscribed_topic_names=("t",))
        self.assertIsNone(cp.too_much_for_a_member(SimpleNamespace(**ok), fields))
        for name in fields:
            request = SimpleNamespace(**{**ok, name: "é" * cp.MAX_MEMBER_STRING})
            self.assertEqual(cp.too_much_for_a_member(request, fields),
                             f"{name} of {2 * cp.MAX_MEMBER_STRING} bytes: at most "
                             f"{cp.MAX_MEMBER_STRING}")

    def test_sync_group(self):
        """Assignments go physical whether or not the type is given (v5 "consumer",
        null, or before v5); a declared other type passes as bytes; the
        member's assignment comes back logical, others' topics dropped."""
        mine = cp.encode(assignment(0, [("orders", [0, 1])]))
        for version, declared in ((0, None), (3, None), (5, None), (5, "consumer")):
            ctx = self.ctx()
            request = cp.sync_group_request(None, ctx, sync_request(
                version, "g", [mine, b""], declared))
            self.assertEqual(request.group_id, "parisg")
            self.assertEqual(owned_of(self.decoded(
                ASSIGNMENT, request.assignments[0].assignment)[1]),
                [("parisorders", [0, 1])])
            self.assertEqual(request.assignments[1].assignment, b"")
            broker = cp.encode(assignment(0, [("parisorders", [0]),
                                              ("londonsecret", [0])]))
            response = cp.sync_group_response(None, ctx, sync_response(
                version, broker, declared))
            self.assertEqual(owned_of(self.decoded(ASSIGNMENT, response.assignment)[1]),
                             [("orders", [0])])
        ctx = self.ctx()
        request = cp.sync_group_request(None, ctx, sync_request(
            5, "g", [b"\x00\x01opaque"], "connect"))
        self.assertEqual(request.assignments[0].assignment, b"\x00\x01opaque")

    def test_sync_group_refused(self):
        """A foreign name in an assignment, or unreadable bytes declared
        "consumer": decoy group, no assignments, INCONSISTENT_GROUP_PROTOCOL."""
        cases = [(3, None, cp.encode(assignment(0, [("bad name", [0])]))),
                 (5, "consumer", b"junk")]
        for version, declared, data in cases:
            ctx = self.ctx()
            request = cp.sync_group_request(None, ctx, sync_request(
                version, "g", [data], declared))
            self.assertNotIn(request.group_id, ("g", "parisg"))
            self.assertEqual(request.assignments, ())
            response = cp.sync_group_response(None, ctx, sync_response(
                version, cp.encode(assignment(0, [("parisorders", [0])]))))
            self.assertEqual((response.error_code, response.assignment),
                             (ErrorCode.inconsistent_group_protocol, b""))

    def test_describe_groups(self):
        """DescribeGroups: a "consumer" group's member metadata and assignment
        logical, foreign topics dropped; other types untouched."""
        from kio.schema.describe_groups.v5.response import (
            DescribedGroup, DescribedGroupMember, DescribeGroupsResponse)

        def group(protocol_type, metadata, assigned):
            return DescribedGroup(
                error_code=ErrorCode.none, group_id="g", group_state="Stable",
                protocol_type=protocol_type, protocol_data="range",
                authorized_operations=i32(0), members=(DescribedGroupMember(
                    member_id="m", group_instance_id=None, client_id="c",
                    client_host="h", member_metadata=metadata,
                    member_assignment=assigned),))
        metadata = cp.encode(subscription(2, ["parisa", "londonsecret"]))
        assigned = cp.encode(assignment(2, [("parisa", [0]), ("londonsecret", [0])]))
        response = cp.describe_groups_response(None, self.ctx(), DescribeGroupsResponse(
            throttle_time=i32Timedelta.parse(datetime.timedelta(0)), groups=(
                group("consumer", metadata, assigned),
                group("connect", metadata, assigned))))
        consumer, connect = response.groups
        member = consumer.members[0]
        self.assertEqual(self.decoded(SUBSCRIPTION, member.member_metadata)[1].topics,
                         ("a",))
        self.assertEqual(owned_of(self.decoded(ASSIGNMENT, member.member_assignment)[1]),
                         [("a", [0])])
        self.assertEqual((connect.members[0].member_metadata,
                          connect.members[0].member_assignment), (metadata, assigned))

    def test_rows_in_tenant_table(self):
        """rules.py routes JoinGroup, SyncGroup and DescribeGroups through here."""
        from vkafka.tenancy.rules import tenant_rules
        from vkafka.tenancy.services import Services
        table = tenant_rules()
        self.assertIs(table[14].rewrite_request, cp.sync_group_request)
        ctx, services = self.ctx(), Services(None, None, table)
        sent = table[11].rewrite_request(services, ctx, join_request(9, "g", "consumer",
                                                                     [b"x"]))
        self.assertEqual(sent.group_id, "")  # refused: a join the broker refuses
        response = table[11].rewrite_response(services, ctx, join_response(9, []))
        self.assertEqual(response.error_code, ErrorCode.inconsistent_group_protocol)
        response = table[15].rewrite_response(services, self.ctx(), _described(
            cp.encode(assignment(0, [("londonsecret", [0])]))))
        self.assertEqual(response.groups[0].members[0].member_assignment,
                         cp.encode(assignment(0, [])))


def _described(assigned):
    from kio.schema.describe_groups.v5.response import (
        DescribedGroup, DescribedGroupMember, DescribeGroupsResponse)
    return DescribeGroupsResponse(
        throttle_time=i32Timedelta.parse(datetime.timedelta(0)), groups=(
            DescribedGroup(
                error_code=ErrorCode.none, group_id="parisg", group_state="Stable",
                protocol_type="consumer", protocol_data="range",
                authorized_operations=i32(0), members=(DescribedGroupMember(
                    member_id="m", group_instance_id=None, client_id="c",
                    client_host="h", member_metadata=b"",
                    member_assignment=assigned),)),))



# --- against the real cluster ---------------------------------------------------

from . import stack  # noqa: E402
from .rawclient import RawClient  # noqa: E402
from .test_isolation import IsolationBase  # noqa: E402

MEMBER_ID_REQUIRED, REBALANCE_IN_PROGRESS = 79, 27


class ConsumerProtocolKafkaTests(IsolationBase):
    """paris joins its own groups naming london's physical topic in the consumer
    protocol; neither the gateway's answers nor the broker's group state ever
    give paris london's topic or partitions."""

    def setUp(self):
        """london owns topic "secret" (1 partition); paris owns "mine" (2)."""
        self.london, self.paris = self.vcluster(), self.vcluster()
        self.create_topic(self.london, "secret", 1, 1)
        self.create_topic(self.paris, "mine", 2, 1)
        self.secret = f"{self.london}secret"  # london's physical name

    # raw classic member

    def join(self, raw, group, metadata, member_id="", version=9):
        from kio.schema.join_group.v9.request import (
            JoinGroupRequest, JoinGroupRequestProtocol)
        timeout = i32Timedelta.parse(datetime.timedelta(seconds=30))
        return raw.request(JoinGroupRequest(
            group_id=group, session_timeout=timeout, rebalance_timeout=timeout,
            member_id=member_id, group_instance_id=None, protocol_type="consumer",
            protocols=(JoinGroupRequestProtocol(name="range", metadata=metadata),),
            reason=None), version)

    def joined(self, raw, group, metadata):
        """JoinGroup until a member: (response, member id)."""
        response = self.join(raw, group, metadata)
        if response.error_code == MEMBER_ID_REQUIRED:
            response = self.join(raw, group, metadata, response.member_id)
        self.assertEqual(response.error_code, ErrorCode.none, response)
        return response

    def sync(self, raw, group, joined, assignments, version):
        from kio.index import load_payload_module
        from kio.static.constants import EntityType
        module = load_payload_module(14, version, EntityType.request)
        values = dict(group_id=group, generation_id=joined.generation_id,
                      member_id=joined.member_id, group_instance_id=None,
                      assignments=tuple(module.SyncGroupRequestAssignment(
                          member_id=m, assignment=a) for m, a in assignments))
        if version >= 5:
            values.update(protocol_type="consumer", protocol_name=joined.protocol_name)
        return raw.request(module.SyncGroupRequest(**values), version)

    # the broker, directly

    def broker(self, physical_group):
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        from kio.static.primitive import i8
        raw = RawClient("localhost", 29092)
        self.addCleanup(raw.close)
        [found] = raw.request(FindCoordinatorRequest(
            key_type=i8(0), coordinator_keys=(physical_group,)), 4).coordinators
        self.assertEqual(found.error_code, ErrorCode.none)
        direct = RawClient("localhost", found.port)
        self.addCleanup(direct.close)
        return direct

    def broker_classic(self, physical_group):
        """{member id: (subscribed topics, assigned (topic, partition)s)} of a
        classic group, as the broker holds them."""
        from kio.schema.describe_groups.v5.request import DescribeGroupsRequest
        [group] = self.broker(physical_group).request(DescribeGroupsRequest(
            groups=(physical_group,), include_authorized_operations=False), 5).groups
        out = {}
        for m in group.members:
            subscribed = cp.read(SUBSCRIPTION, m.member_metadata)
            assigned = cp.read(ASSIGNMENT, m.member_assignment)
            out[m.member_id] = (
                set(subscribed[1].topics) if subscribed else set(),
                {(tp.topic, p) for tp in (assigned[1].assigned_partitions if assigned
                                          else ()) for p in tp.partitions})
        return group.group_state, out

    def broker_consumer_group(self, physical_group):
        """The KIP-848 group as the broker holds it (ConsumerGroupDescribe)."""
        from kio.schema.consumer_group_describe.v0.request import (
            ConsumerGroupDescribeRequest)
        [group] = self.broker(physical_group).request(ConsumerGroupDescribeRequest(
            group_ids=(physical_group,), include_authorized_operations=False),
            0).groups
        return group

    def london_topic_id(self):
        """london's topic id, as the brokers know it (the broker asked may
        learn of the topic a moment after its creation was answered)."""
        from confluent_kafka import KafkaError, KafkaException, TopicCollection
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        found = []

        def described():
            try:
                found.append(admin.describe_topics(TopicCollection([self.secret]))[
                    self.secret].result(30).topic_id)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise
            return found
        stack.wait_until(described, f"the brokers to know {self.secret}", 30)
        return str(found[0])

    def assertNothingOfLondon(self, group):
        """No member of the KIP-848 *group* subscribes to or is assigned london's
        topic, by name or by id."""
        london_id = self.london_topic_id()
        for m in group.members:
            self.assertNotIn(self.secret, m.subscribed_topic_names)
            for assignment_ in (m.assignment, m.target_assignment):
                for tp in assignment_.topic_partitions:
                    self.assertNotEqual(tp.topic_name, self.secret)
                    self.assertNotEqual(str(tp.topic_id), london_id)

    def kip848_consumer(self, group, wait=True):
        """A real KIP-848 consumer of paris in *group*, subscribed to "mine"
        (*wait*: once it has partitions)."""
        from confluent_kafka import Consumer
        consumer = Consumer(self.confluent_config(
            self.paris, **{"group.id": group, "group.protocol": "consumer",
                           "auto.offset.reset": "earliest"}))
        self.addCleanup(consumer.close)
        consumer.subscribe(["mine"])

        def assigned():
            consumer.poll(0.5)
            return consumer.assignment()
        if wait:
            stack.wait_until(assigned, "the KIP-848 consumer's assignment", 60,
                             interval=0)
        return consumer

    def classic_member(self, raw, group, metadata, member_id=""):
        """JoinGroup and SyncGroup v5, again until the member of a KIP-848 group
        has the assignment the broker computed for it (meanwhile it answers
        REBALANCE_IN_PROGRESS): the SyncGroup response."""
        state = {"member": member_id}

        def synced():
            joined = self.join(raw, group, metadata, state["member"])
            if joined.error_code in (MEMBER_ID_REQUIRED, ErrorCode.unknown_member_id):
                state["member"] = joined.member_id
                return None
            if joined.error_code == REBALANCE_IN_PROGRESS:
                return None
            self.assertEqual(joined.error_code, ErrorCode.none)
            state["member"] = joined.member_id
            response = self.sync(raw, group, joined, [], 5)
            if response.error_code == REBALANCE_IN_PROGRESS:
                return None
            self.assertEqual(response.error_code, ErrorCode.none)
            return response
        return stack.wait_until(synced, "the classic member's assignment", 60,
                                interval=0.5)

    def assertMineOnly(self, synced):
        """A SyncGroup answer that assigns, at most, partitions of "mine"."""
        self.assertNotIn(self.london.encode(), synced.assignment)
        _, found = cp.read(ASSIGNMENT, synced.assignment)
        self.assertLessEqual({t for t, _ in owned_of(found)}, {"mine"})

    def test_classic_group_then_upgraded(self):
        """A classic group of paris: its leader subscribes to and assigns itself
        london's physical topic (SyncGroup v3: no protocol type).  The broker
        holds names in paris's namespace only.  A KIP-848 member then joins: the
        broker converts the group from the subscriptions and assignments it
        holds, and assigns the classic member nothing of london."""
        raw = self.coordinator(self.paris, "pg")
        # no user data: Kafka upgrades no group whose assignor uses it
        metadata = cp.encode(subscription(1, [self.secret, "mine"],
                                          [(self.secret, [0])], user_data=None))
        joined = self.joined(raw, "pg", metadata)
        self.assertEqual(joined.leader, joined.member_id)
        [member] = joined.members
        # the leader sees the subscription as paris sent it: paris's own names
        self.assertEqual(cp.read(SUBSCRIPTION, member.metadata)[1].topics,
                         (self.secret, "mine"))
        mine = cp.encode(assignment(0, [(self.secret, [0]), ("mine", [0])],
                                    user_data=None))
        synced = self.sync(raw, "pg", joined, [(joined.member_id, mine)], 3)
        self.assertEqual(synced.error_code, ErrorCode.none)
        self.assertEqual(synced.assignment, mine)
        _, members = self.broker_classic(f"{self.paris}pg")
        self.assertEqual(members, {joined.member_id: (
            {f"{self.paris}{self.secret}", f"{self.paris}mine"},
            {(f"{self.paris}{self.secret}", 0), (f"{self.paris}mine", 0)})})

        self.kip848_consumer("pg", wait=False)

        def upgraded():
            group = self.broker_consumer_group(f"{self.paris}pg")
            ids = {m.member_id for m in group.members}
            return group.error_code == ErrorCode.none and joined.member_id in ids
        stack.wait_until(upgraded, "the group upgraded with its classic member", 30)
        self.assertMineOnly(self.classic_member(raw, "pg", metadata, joined.member_id))
        group = self.broker_consumer_group(f"{self.paris}pg")
        self.assertEqual((group.error_code, len(group.members)), (ErrorCode.none, 2))
        self.assertNothingOfLondon(group)

    def test_classic_member_of_kip848_group(self):
        """A KIP-848 consumer group of paris; a raw classic member joins it naming
        london's topic (the broker parses the subscription itself): SyncGroup
        assigns it nothing of london, and the broker subscribed it to names in
        paris's namespace only."""
        self.kip848_consumer("pk")
        raw = self.coordinator(self.paris, "pk")
        metadata = cp.encode(subscription(3, [self.secret], [(self.secret, [0])],
                                          rack=None))
        synced = self.classic_member(raw, "pk", metadata)
        self.assertMineOnly(synced)
        self.assertEqual(owned_of(cp.read(ASSIGNMENT, synced.assignment)[1]), [])
        group = self.broker_consumer_group(f"{self.paris}pk")
        self.assertEqual(len(group.members), 2)
        subscribed = {t for m in group.members for t in m.subscribed_topic_names}
        self.assertEqual(subscribed, {f"{self.paris}mine", f"{self.paris}{self.secret}"})
        self.assertNothingOfLondon(group)

    def test_refused_join_creates_nothing(self):
        """A "consumer" JoinGroup with unreadable metadata or an invalid topic
        name: INCONSISTENT_GROUP_PROTOCOL, and no group on the broker."""
        from kio.schema.list_groups.v5.request import ListGroupsRequest
        for group, metadata in (("junk", b"not a subscription"),
                                ("bad", cp.encode(subscription(0, ["bad name"])))):
            raw = self.coordinator(self.paris, group)
            response = self.join(raw, group, metadata)
            self.assertEqual(response.error_code, ErrorCode.inconsistent_group_protocol)
            self.assertEqual(response.members, ())
        listed = set()
        for port in (29092, 29093, 29094):
            direct = RawClient("localhost", port)
            self.addCleanup(direct.close)
            listed |= {g.group_id for g in direct.request(
                ListGroupsRequest(states_filter=(), types_filter=()), 5).groups}
        self.assertFalse({g for g in listed if g.startswith(self.paris)}, listed)

    def test_classic_consumers_still_work(self):
        """Two confluent-kafka classic consumers of paris share "mine": both get
        partitions, every record is read; DescribeGroups through the gateway
        shows logical names, the broker physical ones."""
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient
        producer = Producer(self.confluent_config(self.paris))
        for i in range(40):
            producer.produce("mine", value=str(i).encode(), partition=i % 2)
        self.assertEqual(producer.flush(30), 0)
        consumers = []
        for _ in range(2):
            consumer = Consumer(self.confluent_config(
                self.paris, **{"group.id": "pc", "auto.offset.reset": "earliest",
                               "enable.auto.commit": False}))
            self.addCleanup(consumer.close)
            consumer.subscribe(["mine"])
            consumers.append(consumer)
        values = []

        def shared():
            for consumer in consumers:
                values.extend(m.value() for m in consumer.consume(100, 0.5)
                              if m.error() is None)
            return len(values) >= 40 and all(c.assignment() for c in consumers)
        stack.wait_until(shared, "both consumers assigned, every record read", 90,
                         interval=0)
        # no commits: a partition moved by the second join is read again
        self.assertEqual(sorted({int(v) for v in values}), list(range(40)))
        for consumer in consumers:
            self.assertEqual([(tp.topic, len(consumer.assignment()))
                              for tp in consumer.assignment()], [("mine", 1)])

        admin = AdminClient(self.confluent_config(self.paris))
        [described] = admin.describe_consumer_groups(["pc"]).values()
        seen = {tp.topic for m in described.result(30).members
                for tp in m.assignment.topic_partitions}
        self.assertEqual(seen, {"mine"})
        _, members = self.broker_classic(f"{self.paris}pc")
        self.assertEqual({t for topics, _ in members.values() for t in topics},
                         {f"{self.paris}mine"})
        self.assertEqual({tp for _, assigned in members.values() for tp in assigned},
                         {(f"{self.paris}mine", 0), (f"{self.paris}mine", 1)})
