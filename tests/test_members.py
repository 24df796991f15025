"""Classic group member state per virtual cluster (vkafka/tenancy/members.py),
and the JoinGroup, SyncGroup, Heartbeat and LeaveGroup rows that keep it."""

import dataclasses
import types

from kio.schema.errors import ErrorCode
from twisted.internet.task import Clock
from twisted.trial import unittest

from vkafka.tenancy import consumer_protocol as cp
from vkafka.state.limits import Capacity, Limits
from vkafka.state.policy import HELD_AT_MOST
from vkafka.tenancy.members import MEMBER_OVERHEAD, SESSIONS, Members, budget

from .test_consumer_protocol import Base, join_request, join_response, sync_request, \
    sync_response


class MembersTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.members = Members(self.clock.seconds)

    def test_counted_until_left_or_silent(self):
        """A member counts its metadata (and a small overhead) from its join;
        until it leaves, or has been silent for its session timeout; a
        heartbeat keeps it; a rejoin replaces what it counted."""
        m = self.members
        m.joined("a", "g", "m1", 1000, 10)
        m.joined("a", "g", "m2", 2000, 30)
        m.joined("b", "g", "m1", 500, 10)
        self.assertEqual(m.held("a"), 3000 + 2 * MEMBER_OVERHEAD)
        m.joined("a", "g", "m1", 100, 10)  # a rejoin with less
        self.assertEqual(m.held("a"), 2100 + 2 * MEMBER_OVERHEAD)
        self.clock.advance(9)
        m.seen("a", "g", "m1")
        self.clock.advance(9)  # m1 heartbeat 9 s ago, m2 joined 18 s ago
        self.assertEqual(m.held("a"), 2100 + 2 * MEMBER_OVERHEAD)
        self.assertEqual(m.held("b"), 0)  # silent past its session
        self.clock.advance(9)
        self.assertEqual(m.held("a"), 2000 + MEMBER_OVERHEAD)
        m.left("a", "g", ["m2", "unknown"])
        self.assertEqual(m.held("a"), 0)

    def test_bounded(self):
        """A new member, a rejoin with more, or assignments past the budget:
        the reason; at the budget: None.  Assignments count for the members
        they are given to, replacing the last; members unknown here count
        nothing (a member id the group lacks, the broker ignores)."""
        m = self.members
        room = 10_000 - MEMBER_OVERHEAD
        self.assertIsNone(m.beyond("a", "g", "", room, 10_000))
        self.assertIn("past 10000", m.beyond("a", "g", "", room + 1, 10_000))
        m.joined("a", "g", "m1", 4000 - MEMBER_OVERHEAD, 10)
        self.assertIsNone(m.beyond("a", "g", "m1", room, 10_000))  # its own replaced
        self.assertIsNotNone(m.beyond("a", "g", "", room, 10_000))
        self.assertIsNone(m.assignments_beyond(
            "a", "g", {"m1": 6000, "ghost": 10**6}, 10_000))
        self.assertIsNotNone(m.assignments_beyond("a", "g", {"m1": 6001}, 10_000))
        m.assigned("a", "g", {"m1": 6000, "ghost": 10**6})
        self.assertEqual(m.held("a"), 10_000)
        m.assigned("a", "g", {"m1": 10})
        self.assertEqual(m.held("a"), 4010)
        m.joined("a", "g", "m1", 0, 10)  # a rejoin keeps its last assignment
        self.assertEqual(m.held("a"), 10 + MEMBER_OVERHEAD)
        self.assertIsNone(m.assignments_beyond("b", "g", {"m1": 10**9}, 10_000))

    def test_budget_from_the_limits(self):
        """capacity.memberStateBytes, else the gateway's default (32 MiB)."""
        limits = Limits(capacity=Capacity(member_state_bytes=7))
        services = types.SimpleNamespace(limits_of=lambda vc: limits)
        self.assertEqual(budget(services, "a"), 7)
        self.assertEqual(budget(types.SimpleNamespace(limits_of=None), "a"),
                         HELD_AT_MOST["member_state_bytes"])
        self.assertEqual(HELD_AT_MOST["member_state_bytes"], 32 << 20)

    def test_budget_split_over_workers(self):
        """With --workers N each worker holds an Nth of the budget: more
        cores do not multiply what a tenant keeps in the coordinators."""
        members = Members(lambda: 0.0)
        members.processes = 4
        limits = Limits(capacity=Capacity(member_state_bytes=4000))
        services = types.SimpleNamespace(limits_of=lambda vc: limits, members=members)
        self.assertEqual(budget(services, "a"), 1000)
        services.limits_of = None
        self.assertEqual(budget(services, "a"), 8 << 20)

    def test_sessions_rounded_up(self):
        """A silent member counts its session timeout rounded up to one of
        SESSIONS, at most the last, whatever it asked for."""
        self.members.joined("a", "g", "m1", 10, 10**9)
        self.members.joined("a", "g", "m2", 10, 11)
        self.clock.advance(29)
        self.assertEqual(self.members.held("a"), 20 + 2 * MEMBER_OVERHEAD)
        self.clock.advance(1)
        self.assertEqual(self.members.held("a"), 10 + MEMBER_OVERHEAD)
        self.clock.advance(SESSIONS[-1] - 30)
        self.assertEqual(self.members.held("a"), 0)


class RowTests(Base):
    """The rows count and bound the members a tenant makes."""

    def setUp(self):
        super().setUp()
        self.clock = Clock()
        self.members = Members(self.clock.seconds)
        limits = Limits(capacity=Capacity(member_state_bytes=5_000))
        self.services = types.SimpleNamespace(
            members=self.members, limits_of=lambda vc: limits if vc == "paris" else None)

    def join(self, metadata, member="", version=9, protocol_type="connect"):
        ctx = self.ctx()
        request = cp.join_group_request(self.services, ctx, join_request(
            version, "g", protocol_type, [metadata], member=member))
        response = dataclasses.replace(join_response(
            version, [b""], protocol_type=protocol_type), member_id=member or "m-new")
        return request, cp.join_group_response(self.services, ctx, response)

    def test_joins_past_the_bound_refused(self):
        """Members of any protocol type count their metadata from their
        answered join; one past the budget goes to the decoy group with no
        protocols, answered POLICY_VIOLATION; a member that left frees its
        bytes; a heartbeat keeps one counted past its session timeout."""
        big = b"x" * 2000
        for version in (0, 4, 9):
            self.members._tenants.clear()
            request, response = self.join(big, version=version)
            self.assertEqual((request.group_id, response.error_code),
                             ("parisg", ErrorCode.none))
            self.assertEqual(self.members.held("paris"), 2000 + MEMBER_OVERHEAD)
            self.join(big, member="m-2", version=version)
            request, response = self.join(big, version=version)
            self.assertNotEqual(request.group_id, "parisg")
            self.assertEqual(request.protocols, ())
            self.assertEqual(response.error_code, ErrorCode.policy_violation)
        self.assertEqual(self.members.held("paris"), 4000 + 2 * MEMBER_OVERHEAD)
        cp.leave_group_request(self.services, self.ctx(), leave_request(0, "g", ["m-new"]))
        self.assertEqual(self.members.held("paris"), 2000 + MEMBER_OVERHEAD)
        self.clock.advance(9)  # join_request's session: 10 s
        cp.heartbeat_request(self.services, self.ctx(), heartbeat_request("g", "m-2"))
        self.clock.advance(9)
        self.assertEqual(self.members.held("paris"), 2000 + MEMBER_OVERHEAD)
        self.clock.advance(1)
        self.assertEqual(self.members.held("paris"), 0)

    def test_consumer_members_counted_physical(self):
        """A "consumer" member counts the subscription the broker gets."""
        mine = cp.encode(cp_subscription(["orders"]))
        request, _ = self.join(mine, protocol_type="consumer")
        self.assertEqual(self.members.held("paris"),
                         len(request.protocols[0].metadata) + MEMBER_OVERHEAD)

    def test_assignments_past_the_bound_refused(self):
        """The leader's assignments count for the members they go to; past
        the budget the SyncGroup goes to the decoy group with none, answered
        POLICY_VIOLATION."""
        self.join(b"", member="m-0")
        self.join(b"", member="m-1")
        for assignments, code in (([b"a" * 2000, b"b" * 2000], ErrorCode.none),
                                  ([b"a" * 2000, b"b" * 2601], ErrorCode.policy_violation)):
            ctx = self.ctx()
            request = cp.sync_group_request(self.services, ctx, sync_request(
                5, "g", assignments, protocol_type="connect"))
            response = cp.sync_group_response(self.services, ctx, sync_response(
                5, b"mine", protocol_type="connect"))
            self.assertEqual(response.error_code, code)
            self.assertEqual(request.assignments == (), code != ErrorCode.none)
        self.assertEqual(self.members.held("paris"), 4000 + 2 * MEMBER_OVERHEAD)
        cp.leave_group_request(self.services, self.ctx(), leave_request(
            5, "g", ["m-0", "m-1"]))
        self.assertEqual(self.members.held("paris"), 0)


def cp_subscription(topics):
    from .test_consumer_protocol import subscription
    return subscription(0, topics)


def leave_request(version, group, members):
    from kio.index import load_payload_module
    from kio.static.constants import EntityType
    module = load_payload_module(13, version, EntityType.request)
    if version < 3:
        return module.LeaveGroupRequest(group_id=group, member_id=members[0])
    return module.LeaveGroupRequest(group_id=group, members=tuple(
        module.MemberIdentity(member_id=m, group_instance_id=None) for m in members))


def heartbeat_request(group, member):
    from kio.schema.heartbeat.v4.request import HeartbeatRequest
    from kio.static.primitive import i32
    return HeartbeatRequest(group_id=group, generation_id=i32(3), member_id=member,
                            group_instance_id=None)
