"""Fetch sessions are connection-bound (tenancy/sessions.py)."""

from twisted.trial import unittest

from vkafka.tenancy.sessions import FetchSessions


class FetchSessionsTests(unittest.TestCase):
    def test_unknown_session_is_never_forwarded(self):
        """An incremental fetch (epoch > 0) of a session the connection does not
        own is refused; a full fetch of one (epoch 0 opens anew, -1 closes)
        goes on without it, so it cannot close another connection's session."""
        sessions = FetchSessions()
        self.assertEqual(sessions.check(1234, 3), "refuse")
        self.assertEqual(sessions.check(1234, 0), "unbind")
        self.assertEqual(sessions.check(1234, -1), "unbind")
        self.assertEqual(sessions.check(0, -1), "forward")
        self.assertEqual(sessions.check(0, 0), "forward")

    def test_own_session_forwarded_until_closed(self):
        """A session the broker made for this connection is forwarded; a full
        fetch naming it closes it, after which it is not this connection's."""
        sessions = FetchSessions()
        sessions.created(77)
        self.assertEqual(sessions.check(77, 5), "forward")
        self.assertEqual(sessions.check(77, -1), "forward")
        self.assertNotIn(77, sessions)
        self.assertEqual(sessions.check(77, 6), "refuse")

    def test_bounded(self):
        """At most LIMIT sessions are remembered; the oldest are forgotten."""
        sessions = FetchSessions()
        for session in range(1, FetchSessions.LIMIT + 11):
            sessions.created(session)
        self.assertEqual(len(sessions), FetchSessions.LIMIT)
        self.assertNotIn(1, sessions)
        self.assertIn(FetchSessions.LIMIT + 10, sessions)
        sessions.created(0)  # no session: nothing to own
        self.assertEqual(len(sessions), FetchSessions.LIMIT)

    def test_sessions_made_are_bounded(self):
        """Room for LIMIT sessions, made or being made: a full fetch past it is
        told no (it goes on sessionless); an answer gives its room back, and a
        session closed makes room again."""
        sessions = FetchSessions()
        self.assertEqual([sessions.reserve() for _ in range(FetchSessions.LIMIT + 1)],
                         [True] * FetchSessions.LIMIT + [False])
        sessions.created(0, made=True)  # answered without a session
        self.assertTrue(sessions.reserve())
        for session in range(1, FetchSessions.LIMIT + 1):
            sessions.created(session, made=True)
        self.assertEqual(len(sessions), FetchSessions.LIMIT)
        self.assertFalse(sessions.reserve())
        self.assertEqual(sessions.check(1, 0), "forward")  # replaced: closed first
        self.assertTrue(sessions.reserve())
        self.assertFalse(sessions.reserve())

    def test_pool_counts_what_every_connection_holds(self):
        """Sessions of two connections hold room in one pool: made, being made,
        forced (a session the broker named unasked), closed, forgotten as the
        oldest, and released with the connection."""
        from vkafka.tenancy.sessions import SessionPool
        pool = SessionPool(3)
        one, two = FetchSessions(pool), FetchSessions(pool)
        self.assertTrue(one.reserve())
        self.assertTrue(two.reserve())
        one.created(11, made=True)
        self.assertTrue(one.reserve())
        self.assertFalse(two.reserve())  # the pool is full
        self.assertEqual(pool.held, 3)
        two.created(0, made=True)  # answered without a session
        self.assertEqual(pool.held, 2)
        for session in (21, 22, 23, 24, 25):  # unasked; the oldest forgotten
            two.created(session)
        self.assertEqual((len(two), pool.held), (FetchSessions.LIMIT, 2 + FetchSessions.LIMIT))
        two.closed(25)
        one.release()
        self.assertEqual(pool.held, FetchSessions.LIMIT - 1)
        two.release()
        self.assertEqual(pool.held, 0)

    def test_release_later(self):
        """A closed connection's sessions hold their room until the broker may
        evict them (STALE_AFTER seconds idle)."""
        from twisted.internet.task import Clock

        from vkafka.tenancy.sessions import STALE_AFTER, SessionPool
        clock, pool = Clock(), SessionPool(5)
        sessions = FetchSessions(pool)
        sessions.created(1)
        self.assertTrue(sessions.reserve())
        sessions.release(clock.callLater)
        self.assertEqual((len(sessions), pool.held), (0, 2))
        clock.advance(STALE_AFTER - 1)
        self.assertEqual(pool.held, 2)
        clock.advance(1)
        self.assertEqual(pool.held, 0)
