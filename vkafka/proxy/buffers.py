# -*- test-case-name: tests.test_tenant_splice -*-
"""Bytes of requests being received, per virtual cluster, in one process.

A frame whose size prefix has come but whose bytes have not is buffered
until it is whole: up to ``--max-frame-size`` (100 MiB) a connection.  A
tenant that starts such frames on many connections and never ends them held
that much memory on each (95 GB in reach of one token).  Each virtual
cluster may have at most ``--tenant-request-buffer`` bytes of such frames
(their announced sizes) being received at once; a connection starting one
more past it waits, its reads held, with at most one read buffered, until
another ends.  A frame larger than the whole budget is read when it is the
tenant's only one.  Frames are admitted in order and an admitted one is
always read on, so the tenant's requests progress; a tenant that never ends
its frames stalls its own connections only.
"""

from collections import deque


class RequestBuffers:
    """The budgets of every virtual cluster in this process."""

    def __init__(self, limit):
        self.limit = limit
        self._tenants = {}

    def tenant(self, vcluster):
        found = self._tenants.get(vcluster)
        if found is None:
            found = self._tenants[vcluster] = TenantBuffer(self.limit)
        return found


class TenantBuffer:
    """One virtual cluster's budget.  Connections hold ``reserved`` (the
    size of the frame they are receiving, admitted) or ``waiting`` (one not
    admitted yet) and a ``valve``."""

    def __init__(self, limit):
        self.limit = limit
        self.total = 0
        self.waiting = deque()

    def receiving(self, conn, size):
        """*conn* is now receiving a frame of *size* bytes (None: none)."""
        if conn.waiting:
            self.waiting.remove(conn)
            conn.waiting = 0
            conn.valve.release("buffers")
        self.total -= conn.reserved
        conn.reserved = 0
        if size:
            if self.total and self.total + size > self.limit:
                conn.waiting = size
                self.waiting.append(conn)
                conn.valve.hold("buffers")
            else:
                self.total += size
                conn.reserved = size
        self._admit()

    def _admit(self):
        while self.waiting and (not self.total or
                                self.total + self.waiting[0].waiting <= self.limit):
            conn = self.waiting.popleft()
            conn.reserved, conn.waiting = conn.waiting, 0
            self.total += conn.reserved
            conn.valve.release("buffers")
