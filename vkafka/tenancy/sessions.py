# -*- test-case-name: tests.test_sessions -*-
"""Fetch sessions (KIP-227) are connection-bound state.

A broker's fetch session ids are broker-wide: any connection that names one
reads, moves or closes that session.  So a tenant's connection may name
only the sessions the broker made for it, on that connection; any other id
is treated exactly as an id that does not exist, without reaching the
broker: an incremental fetch is answered FETCH_SESSION_ID_NOT_FOUND by the
gateway, and a full fetch (epoch 0 or -1, which would close the named
session) goes on with session id 0.  Ids cannot be probed for either: an
existing foreign id and a made-up one get the same answer from the same
place.

A Fetch in which the gateway put a decoy (a topic not the tenant's, or one
whose id this gateway has not learnt yet: a gateway of a cluster meets ids
learnt through another) goes on sessionless (epoch -1, closing the session it
names if it is this connection's): the decoy is this request's alone, so in a
broker session it would stay after the request, and the broker's answers
about it in later incremental fetches would be dropped on the way back.  The
client would wait for that partition forever with no error (issue 23: a
consumer stalled after a gateway of its cluster was killed).  Sessionless, the
client gets the partition's error in this answer, and as the session is gone
it sends a full fetch next, checked again.

A connection holds at most ``FetchSessions.LIMIT`` broker sessions, made or
being made.  Each is a slot of the broker's session cache
(``max.incremental.fetch.session.cache.slots``, 1,000 a broker, shared by
every tenant's consumers and the followers), which makes room for a new
session by evicting others: a tenant sending full fetches that each ask for a
new session (epoch 0, session 0), in a loop or pipelined, would push every
other tenant's consumers off incremental fetches.  Past the limit a full
fetch goes on sessionless (epoch -1: answered in full, no session made, the
one it named, if this connection's, closed), which every client handles (its
next fetch is a full one again).  A closing connection closes the sessions
it made on the broker (``rules/records.session_closers``), so their slots are
free at once.
"""

from collections import OrderedDict

FETCH_SESSION_ID_NOT_FOUND = 70
INITIAL_EPOCH, FINAL_EPOCH = 0, -1
STALE_AFTER = 120.0
"""Seconds a broker session must be idle before a new one may evict it
(the brokers' ``min.incremental.fetch.session.eviction.ms``, 120,000 by default)."""


class SessionPool:
    """The broker fetch sessions one virtual cluster's connections to one
    broker hold through this gateway process (its share of
    ``--max-fetch-sessions``, ``Gateway.session_pool``): a tenant opening
    many connections gets no more of the broker's shared session cache than
    this."""

    __slots__ = ("limit", "held")

    def __init__(self, limit):
        self.limit = limit
        self.held = 0

    def take(self, force=False):
        """One more session: True, or False at the limit (unless *force*: the
        broker made one the gateway did not ask room for)."""
        if self.held >= self.limit and not force:
            return False
        self.held += 1
        return True

    def give(self, count=1):
        self.held -= count


class FetchSessions:
    """The fetch session ids one client connection owns, and the sessions it
    is having made; both hold room in its virtual cluster's *pool*."""

    LIMIT = 4
    """A client keeps one session per broker connection; a few spare for
    sessions replaced while responses were in flight.  Sessions made or being
    made past it are refused (``reserve``); should the broker name more, the
    oldest are forgotten."""

    __slots__ = ("_ids", "_making", "_pool", "version")

    def __init__(self, pool=None):
        self._ids = OrderedDict()
        self._making = 0
        self._pool = SessionPool(self.LIMIT) if pool is None else pool
        self.version = 0
        """The Fetch version the client last used (its sessions are closed
        with it when the connection closes)."""

    def owned(self):
        """The session ids this connection owns, oldest first."""
        return tuple(self._ids)

    def __contains__(self, session_id):
        return session_id in self._ids

    def __len__(self):
        return len(self._ids)

    def check(self, session_id, epoch, rights=None):
        """What to do with a Fetch naming *session_id* at *epoch*:
        ``"forward"``, ``"unbind"`` (a full fetch naming a session this
        connection does not own: forward it with session id 0) or
        ``"refuse"`` (an incremental fetch of such a session: answer
        FETCH_SESSION_ID_NOT_FOUND).  *rights*: the generation of the ACLs
        deciding now (None: off); an incremental fetch of a session made
        under other ACLs is refused too, so the client's next full fetch
        names its topics again and they are checked again."""
        if session_id and session_id in self._ids and epoch not in (
                INITIAL_EPOCH, FINAL_EPOCH) and self._ids[session_id] != rights:
            self.closed(session_id)
            return "refuse"
        if session_id == 0 or session_id in self._ids:
            if session_id and epoch in (INITIAL_EPOCH, FINAL_EPOCH):
                self.closed(session_id)  # the broker closes it
            return "forward"
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
            return "unbind"
        return "refuse"

    def reserve(self):
        """A full fetch (epoch 0) would make a broker session: True, room held
        for it until ``created`` (*made*), or False: this connection holds
        LIMIT sessions, made or being made, or its virtual cluster's pool is
        full (it must go on sessionless)."""
        if len(self._ids) + self._making >= self.LIMIT or not self._pool.take():
            return False
        self._making += 1
        return True

    def closed(self, session_id):
        """A request closes *session_id* (this connection's no longer)."""
        if self._ids.pop(session_id, False) is not False:
            self._pool.give()

    def created(self, session_id, rights=None, made=False):
        """The broker answered with *session_id*: this connection owns it
        (made under the ACLs of generation *rights*).  *made*: the answer to
        a fetch ``reserve`` held room for, which the session now holds (or,
        if none was made, is given back)."""
        if made:
            self._making -= 1
        if session_id and session_id not in self._ids:
            self._ids[session_id] = rights
            if not made:
                self._pool.take(force=True)
            while len(self._ids) > self.LIMIT:
                self.closed(next(iter(self._ids)))
        elif made:
            self._pool.give()

    def release(self, call_later=None):
        """The connection closed (its sessions closed on the broker first, if
        the broker connection was still up).  Should the broker not have taken
        those closes, its sessions stay in its cache, where a new session may
        evict them only once idle STALE_AFTER seconds: they hold their room in
        the pool until then (``call_later(seconds, f, *args)``; None: give it
        back now), so a tenant closing and reopening connections holds no more
        of the cache than the pool."""
        held = len(self._ids) + self._making
        self._ids.clear()
        self._making = 0
        if held and call_later is not None:
            call_later(STALE_AFTER, self._pool.give, held)
        elif held:
            self._pool.give(held)
