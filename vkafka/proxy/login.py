# -*- test-case-name: tests.test_tenant_splice -*-
"""A tenant connection's login: SASL answered by the gateway, with its clocks.

The SASL state machine is filters/sasl.py (no I/O); this is its side that
touches time and the connection: the deadline to authenticate (slow-loris),
the token's expiry (a client that does not re-authenticate is closed) and
what a successful login changes on the connection.
"""

from twisted.logger import Logger

from ..auth.sasl import SASL_HANDSHAKE, SaslFailure
from ..filters.sasl import SaslTerminator
from ..protocol.codec import CodecError
from ..protocol.headers import HeaderError
from .sequencer import Pending

LOGIN_WORK = 0.002
"""Seconds of its virtual cluster's loop share (``--tenant-loop-share``)
a first login costs: the token checked here, then a broker connection
opened and logged in for it.  At the default share a virtual cluster logs
in ~125 connections a second on a gateway process, after a first ~125 at
once; past that each login's answer waits its turn.  Eight threads logging
in and out 277 times a second had made another tenant's Metadata 3.6 times
slower (audit 23a)."""


class Login:
    """The login of one client connection *conn* (tenant mode)."""

    log = Logger()

    def __init__(self, conn, gateway):
        self.conn = conn
        self.gateway = gateway
        self.sasl = SaslTerminator(
            gateway.tenancy, gateway.admit_tenant,
            f"limit {gateway.max_connections_per_vcluster} per gateway, or the "
            "virtual cluster's capacity.connections",
            gateway.reactor.seconds)
        self._deadline = None
        self._expiry = None
        self._pace = None

    def start(self):
        """The connection is open: it must authenticate in time."""
        self._deadline = self.gateway.reactor.callLater(
            self.gateway.authentication_timeout, self._timed_out)

    def answer(self, frame, request):
        """SaslHandshake and SaslAuthenticate, answered by the gateway.  Until
        the shared state is read to its end (a gateway or worker starting),
        an authentication waits for it, and the client's later requests with
        it: the revocations and deleted virtual clusters in it are not known
        yet, and a revoked token would be let in.  The login deadline still
        holds (a state that never loads closes the connection)."""
        if self._oversized(frame):
            return
        if request.api_key != SASL_HANDSHAKE and self._state_pending(
                lambda: self.answer(frame, request)):
            return
        first = self.sasl.claims is None
        try:
            body, failure, close = self.sasl.answer(frame, request.api_key,
                                                    request.api_version)
        except (CodecError, HeaderError) as e:
            return self.conn.fail(f"malformed SASL request: {e}")
        if failure is not None:
            self._refused(failure)
        elif not close and request.api_key != SASL_HANDSHAKE:
            self._authenticated(first)
            if first:
                return self._paced(lambda: self.conn.answer(request, body))
        self.conn.answer(request, body, close_after=close)

    def _oversized(self, frame):
        """A SASL frame past --unauthenticated-frame-size closes the connection,
        unread.  Before a login the decoder refuses it at its size; a
        re-authentication comes when frames may be as large as any request,
        and a 60 MB token parsed and checked on the loop held it for seconds."""
        limit = self.gateway.unauthenticated_frame_size
        if len(frame) <= limit:
            return False
        self._refused(f"a SASL frame of {len(frame)} bytes")
        self.conn.fail(f"a SASL frame of {len(frame)} bytes, over the {limit} "
                       "bytes a login may take (--unauthenticated-frame-size)")
        return True

    def _state_pending(self, retry):
        """True if the shared state is still loading: *retry* is called once
        it is, and the connection's reads and later requests wait until then."""
        loaded = self.gateway.state_loaded
        if loaded is None or loaded.called:
            return False
        conn = self.conn
        conn._held = []
        conn.valve.hold("state")

        def resume(result):
            held, conn._held = conn._held, None
            conn.valve.release("state")
            if not conn.closed:
                retry()
                conn._replay(held)
            return result
        loaded.addBoth(resume)
        return True

    def raw_token(self, frame):
        """SaslHandshake v0 is followed by the bare PLAIN token, answered bare."""
        if self._oversized(frame):
            return
        if self._state_pending(lambda: self.raw_token(frame)):
            return
        first = self.sasl.claims is None
        try:
            self.sasl.accept(bytes(frame))
        except SaslFailure as e:
            self._refused(e)
            return self.conn.fail(str(e))
        self._authenticated(first)
        answer = lambda: self.conn.sequencer.answered(Pending(-1, -1, 0, None), b"")  # noqa: E731
        if first:
            return self._paced(answer)
        answer()

    def _paced(self, answer):
        """*answer* a first login now, or once its virtual cluster's loop
        share has paid for it (LOGIN_WORK); the connection's later requests
        wait behind it, in order."""
        share = self.gateway.loop_share
        wait = 0 if share is None else share.charge_brokers(
            self.sasl.claims.vcluster, LOGIN_WORK)
        if wait < 0.001:
            return answer()
        conn = self.conn
        conn._held = []  # None here: this request was not held behind another
        conn.valve.hold("login")

        def send():
            self._pace = None
            held, conn._held = conn._held, None
            conn.valve.release("login")
            if not conn.closed:
                answer()
                conn._replay(held)
        self._pace = self.gateway.reactor.callLater(wait, send)

    def stop(self):
        """The connection closed: no timer outlives it."""
        for timer in (self._expiry, self._deadline, self._pace):
            if timer is not None and timer.active():
                timer.cancel()
        self._expiry = self._deadline = self._pace = None

    def _refused(self, why):
        self.log.info("client {peer}: {why}", peer=self.conn.peer, why=why)
        self.gateway.count_auth_failure()

    def _authenticated(self, first):
        """A login (or re-login) succeeded: no login deadline, a timer for the
        token's expiry; the connection learns who it serves."""
        claims = self.sasl.claims
        self.stop()
        self._expiry = self.gateway.reactor.callLater(
            max(0, claims.expires_at - self.gateway.reactor.seconds()), self._expired)
        self.conn.logged_in(claims, self.sasl.admitted if first else None)

    def _timed_out(self):
        self._deadline = None
        if self.sasl.claims is None:
            self.conn.fail(f"not authenticated within "
                           f"{self.gateway.authentication_timeout:g}s")

    def _expired(self):
        self._expiry = None
        self.conn.fail("token expired; the client did not re-authenticate")
