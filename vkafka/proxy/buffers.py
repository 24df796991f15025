# -*- test-case-name: tests.test_tenant_splice -*-
"""Bytes a virtual cluster's connections make the gateway hold, in one process.

A frame whose size prefix has come but whose bytes have not is buffered
until it is whole: up to ``--max-frame-size`` (100 MiB) a connection.  A
tenant that starts such frames on many connections and never ends them held
that much memory on each (95 GB in reach of one token).  And a whole frame
is then written to the other side at once: to a broker that reads nothing
while it holds the connection's long poll, or to a client that never reads
its answers, where it waited as long as they liked (60 MiB a connection).

So each virtual cluster has two budgets, one for requests
(``--tenant-request-buffer``) and one for the broker's answers that are held
whole (``--tenant-answer-buffer``, streamed Fetch answers are not).  In each,
a frame counts from its size prefix (its announced size) until it is whole,
and the bytes written and not yet sent count while Twisted says the
transport is full (``pauseProducing``) until it has sent them all
(``resumeProducing``).  A connection starting one more frame past the budget
waits, its reads held (with at most one read buffered), until room is made.
A frame larger than the whole budget is read when the tenant holds nothing
else.  Frames are admitted in order and an admitted one is always read on,
so the tenant's requests progress; a tenant that never ends its frames, or
never lets them be sent, stalls its own connections only.  The two budgets
are apart: an answer never waits for a request's room.  A broker reads a
connection's next request only once it has sent its answer to the last
(Kafka mutes the channel meanwhile), so an answer waiting for room that
requests held might wait for ever.
"""

from collections import deque

from ..tuning import unsent


class Buffers:
    """The budgets of every virtual cluster in this process."""

    def __init__(self, requests, answers):
        self.limits = (requests, answers)
        self._tenants = {}

    def tenant(self, vcluster):
        """The virtual cluster's (requests, answers) TenantBuffers."""
        found = self._tenants.get(vcluster)
        if found is None:
            found = self._tenants[vcluster] = tuple(
                TenantBuffer(limit) for limit in self.limits)
        return found


class TenantBuffer:
    """One budget of one virtual cluster.  Its holders (one side of a
    connection) have ``reserved`` (the size of the frame they are
    receiving, admitted) or ``waiting`` (one not admitted yet), ``queued``
    (bytes written, not sent), ``parked`` (whole frames waiting their turn)
    and a ``valve`` holding their reads."""

    def __init__(self, limit):
        self.limit = limit
        self.total = 0
        self.waiting = deque()

    def receiving(self, holder, size):
        """*holder* is now receiving a frame of *size* bytes (None: none)."""
        if holder.waiting:
            self.waiting.remove(holder)
            holder.waiting = 0
            holder.valve.release("buffers")
        self.total -= holder.reserved
        holder.reserved = 0
        if size:  # in order: none overtakes a frame waiting
            if self.waiting or self.total and self.total + size > self.limit:
                holder.waiting = size
                self.waiting.append(holder)
                holder.valve.hold("buffers")
            else:
                self.total += size
                holder.reserved = size
        self._admit()

    def queued(self, holder, size):
        """*holder* has *size* bytes written and not sent yet (0: all sent)."""
        self._holds(holder, "queued", size)

    def parked(self, holder, size):
        """*holder* keeps *size* bytes of whole frames waiting for their turn
        (requests: a throttle, a rule asking first, MAX_IN_FLIGHT answers
        owed; answers: behind one being rewritten, sequencer.py)."""
        self._holds(holder, "parked", size)

    def _holds(self, holder, what, size):
        self.total += size - getattr(holder, what)
        setattr(holder, what, size)
        self._admit()

    def gone(self, holder):
        """*holder*'s connection closed: what it held is freed."""
        self.receiving(holder, None)
        self.queued(holder, 0)
        self.parked(holder, 0)

    def _admit(self):
        while self.waiting and (not self.total or
                                self.total + self.waiting[0].waiting <= self.limit):
            holder = self.waiting.popleft()
            holder.reserved, holder.waiting = holder.waiting, 0
            self.total += holder.reserved
            holder.valve.release("buffers")


class Queue:
    """What *holder* wrote to *transport* and Twisted has not sent, counted in
    *budget*: told by the transport's producer, which Twisted pauses when the
    transport is full (at each write while it is) and resumes once it has
    sent everything."""

    __slots__ = ("budget", "holder", "transport")

    def __init__(self, budget, holder, transport):
        self.budget = budget
        self.holder = holder
        self.transport = transport

    def full(self):
        self.budget.queued(self.holder, unsent(self.transport))

    def sent(self):
        if self.holder.queued:
            self.budget.queued(self.holder, 0)

