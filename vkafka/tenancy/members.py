# -*- test-case-name: tests.test_members -*-
"""How much group member state a virtual cluster keeps on the brokers.

A classic group's coordinator keeps, for every member, the protocol metadata
of its JoinGroup (every protocol's, opaque bytes for any protocol type but
"consumer") and the assignment the leader's SyncGroup gave it, for as long
as the member heartbeats.  One JoinGroup may carry up to the gateway's
decoded-request size (1 MiB), and one connection can make members without
end (each JoinGroup with no member id is a new one): a few hundred members
of 1 MiB are a broker's heap, which every tenant shares.  Capacities count
groups, not members, and ``group.max.size`` bounds one group only.

So each gateway counts the bytes of member state each virtual cluster
made through it (``capacity.memberStateBytes`` at most, 32 MiB by default:
``state.policy.HELD_AT_MOST``; with ``--workers N`` each worker counts its
own against an Nth of it, the kernel spreading connections evenly, so more
cores do not multiply the bound): a member is
counted from its JoinGroup's answer with the size of its metadata (and
later of its assignment), and forgotten when it leaves, or when it has not
joined, synced or heartbeaten through this process for its session timeout
(the broker has dropped it by then, or it heartbeats through another
gateway).  KIP-848 members count their subscriptions likewise, from the
ConsumerGroupHeartbeat that sends them.  A JoinGroup, SyncGroup or
ConsumerGroupHeartbeat that would take its virtual cluster past the bound is
refused with POLICY_VIOLATION (``consumer_protocol``, ``rules/groups.py``).
"""

from collections import OrderedDict

from ..state.limits import Limits
from ..state.policy import held_at_most

SESSIONS = (10.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""How long a silent member is counted: its session timeout rounded up to
one of these (at most Kafka's own ceiling, ``group.max.session.timeout.ms``'s
default), so that members are kept in a few lists each in expiry order."""
MEMBER_OVERHEAD = 200
"""Bytes counted for every member besides its metadata: its ids, client id
and host as the coordinator keeps them."""


class Members:
    """The group members each virtual cluster made through this process;
    *clock* ``() -> seconds``."""

    def __init__(self, clock):
        self.clock = clock
        self.processes = 1
        """The gateway's workers (set by vkafka/worker.py): each holds an
        equal part of every budget."""
        self._tenants = {}
        """vc -> [{session: OrderedDict((group, member) -> [bytes, session,
        expires, assignment bytes])}, total bytes]; each list least recently
        seen first, so in expiry order."""

    def held(self, vc):
        """Bytes of member state *vc* keeps through this process now."""
        tenant = self._tenants.get(vc)
        if tenant is None:
            return 0
        self._expire(vc, tenant)
        return tenant[1]

    def beyond(self, vc, group, member, size, budget):
        """Why a member *member* (or a new one: "") of *group* keeping *size*
        bytes would take *vc* past *budget* bytes, or None."""
        tenant = self._tenants.get(vc)
        if tenant is None:
            held = old = 0
        else:
            self._expire(vc, tenant)
            held = tenant[1]
            entry = _find(tenant, (group, member)) if member else None
            old = 0 if entry is None else entry[0]
        return _beyond(held, size + MEMBER_OVERHEAD - old, budget, "this member")

    def assignments_beyond(self, vc, group, sizes, budget):
        """Why the leader's assignments (member -> bytes) for *group* would
        take *vc* past the bound, or None.  Members not counted here (made
        through another gateway) are not counted for their assignments
        either; a member id the group does not have, the broker ignores."""
        tenant = self._tenants.get(vc)
        if tenant is None:
            return None
        self._expire(vc, tenant)
        more = 0
        for member, size in sizes.items():
            entry = _find(tenant, (group, member))
            if entry is not None:
                more += size - entry[3]
        return _beyond(tenant[1], more, budget, "these assignments")

    def joined(self, vc, group, member, size, session_seconds):
        """*member* of *group* answered as joined, with *size* bytes of metadata."""
        tenant = self._tenants.get(vc)
        if tenant is None:
            tenant = self._tenants[vc] = [{}, 0]
        size += MEMBER_OVERHEAD
        session = next((s for s in SESSIONS if s >= session_seconds), SESSIONS[-1])
        entry = _find(tenant, (group, member), pop=True)
        if entry is not None:  # a rejoin: its last assignment stays till the next
            size += entry[3]
            tenant[1] -= entry[0]
        tenant[0].setdefault(session, OrderedDict())[(group, member)] = [
            size, session, self.clock() + session, 0 if entry is None else entry[3]]
        tenant[1] += size

    def assigned(self, vc, group, sizes):
        """The leader's SyncGroup gave members of *group* assignments of
        these sizes (member -> bytes): each replaces the member's last."""
        tenant = self._tenants.get(vc)
        if tenant is None:
            return
        for member, size in sizes.items():
            entry = _find(tenant, (group, member))
            if entry is not None:
                entry[0] += size - entry[3]
                tenant[1] += size - entry[3]
                entry[3] = size

    def seen(self, vc, group, member):
        """*member* of *group* is alive (a heartbeat, a join, a sync)."""
        tenant = self._tenants.get(vc)
        if tenant is None:
            return
        entry = _find(tenant, (group, member))
        if entry is not None:
            entry[2] = self.clock() + entry[1]
            tenant[0][entry[1]].move_to_end((group, member))

    def left(self, vc, group, members):
        """*members* of *group* left it (LeaveGroup)."""
        tenant = self._tenants.get(vc)
        if tenant is None:
            return
        for member in members:
            entry = _find(tenant, (group, member), pop=True)
            if entry is not None:
                tenant[1] -= entry[0]

    def _expire(self, vc, tenant):
        """Forget the members silent past their session timeout: the front of
        each list."""
        now = self.clock()
        for session, members in list(tenant[0].items()):
            while members:
                key, entry = next(iter(members.items()))
                if entry[2] > now:
                    break
                del members[key]
                tenant[1] -= entry[0]
            if not members:
                del tenant[0][session]
        if not tenant[0]:
            del self._tenants[vc]


def budget(services, vc):
    """*vc*'s capacity.memberStateBytes (or the gateway's default), this
    process's part of it."""
    limits_of = getattr(services, "limits_of", None)
    whole = held_at_most(Limits.NONE if limits_of is None else limits_of(vc),
                         "member_state_bytes")
    members = getattr(services, "members", None)
    return whole if members is None else whole // members.processes


def _beyond(held, more, budget, what):
    if more <= 0 or held + more <= budget:
        return None
    return (f"group member state: the virtual cluster keeps {held} bytes of group "
            f"members' metadata, assignments and subscriptions through this gateway "
            f"process; {what} would take it past {budget} (capacity.memberStateBytes, "
            "split evenly over the gateway's workers)")


def _find(tenant, key, pop=False):
    """The entry of member *key* in any of *tenant*'s lists (None: none)."""
    for members in tenant[0].values():
        entry = members.pop(key, None) if pop else members.get(key)
        if entry is not None:
            return entry
    return None
