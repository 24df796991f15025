# -*- test-case-name: tests.test_sequencer -*-
"""Response order for one client connection, free of sockets.

Kafka clients match responses to requests by order as well as by correlation
id: every response goes back in the order its request came, whether the
broker answers it, the gateway answers it itself (SASL, ApiVersions, a
refused fetch session, a cached Metadata answer) or a rule rewrites it
asynchronously (CreateTopics by a concentration rule).  The sequencer holds
the requests still waiting and lets a response out only when everything
before it has gone.
"""

from collections import deque
from dataclasses import dataclass

FETCH = 1
MAX_IN_FLIGHT = 100
"""Requests of one connection owed an answer at once.  A broker reads a
connection's next request only once it has answered the last, so whatever
a client pipelines waits anyway; past this many its reads are held until
answers come (the splice), and what waits stays in the client's socket.
Without it the gateway read on, keeping each request's state until the
broker answered it: 50,000 small requests behind a long poll held 24 MB.
Clients send a few at a time (a Java producer 5)."""


@dataclass(slots=True)
class Pending:
    """A request awaiting its response, with what is needed to rewrite it."""
    correlation_id: int
    api_key: int
    api_version: int
    rule: object
    context: object = None
    local: bytes | None = None
    """A response the gateway made itself (or one rewritten out of turn), sent
    when its turn comes."""
    close_after: bool = False
    """Close the connection once this response is sent (a failed login)."""
    sent: float = 0.0
    waiting: bool = False
    """Its response is being rewritten asynchronously (responses behind it wait)."""
    throttle: float = 0.0
    """Seconds its request earned against the tenant's rates (filters/throttle.py)."""
    work: float = 0.0
    """Seconds of the loop its response took to decode and rewrite (0: passed
    as bytes or renamed by slicing), charged to the tenant's LoopShare."""
    held: int = 0
    """Bytes of its broker's answer kept (``local``) until its turn."""
    lane: object = None
    """Its namespace, when it came by the produce lane (filters/lane.py): its
    answer may go back the same way (its ``context`` is made only if not)."""


class Sequencer:
    """The requests of one connection still owed a response, in order.

    *write(frame)* sends a response frame to the client; *close()* closes the
    connection after a response that asks for it.
    """

    room = None
    """Called once, when fewer than MAX_IN_FLIGHT requests are owed again (set
    by whoever waits for it)."""
    held = 0
    """Bytes of broker answers kept until their turn: behind an answer being
    rewritten asynchronously (the codec thread, a rule asking first), as the
    broker answers in order.  ~100 Fetch answers of 50 MB could wait there."""
    parked = None
    """Called with ``held`` when it changes (the tenant's answer budget,
    buffers.py: past it the broker's next answer is not read).  No deadlock:
    what holds them finishes without this broker connection."""

    def __init__(self, write, close):
        self.pending = deque()
        self._write = write
        self._close = close

    def __len__(self):
        return len(self.pending)

    @property
    def head(self):
        return self.pending[0] if self.pending else None

    def owed_by_lane(self, most):
        """The requests owed from the head, at most *most*, while each came by
        the produce lane of the head's namespace and waits for the broker's
        answer (none made by the gateway, none being rewritten): the answers
        the broker's next read may hold for the lane, in turn."""
        owed = []
        lane = self.pending[0].lane if self.pending else None
        if lane is None:
            return owed
        for pending in self.pending:
            if len(owed) == most or pending.lane is not lane \
                    or pending.local is not None or pending.waiting:
                break
            owed.append(pending)
        return owed

    def forwarded(self, pending):
        """A request went to the broker; its response comes in turn."""
        self.pending.append(pending)

    def answered(self, pending, frame):
        """The gateway answers a request itself with *frame* (a whole response)."""
        pending.local = frame
        self.pending.append(pending)
        self.release()

    def awaiting_broker(self):
        """The request the broker's next response answers: the first neither
        answered by the gateway nor being rewritten (None: nobody asked)."""
        head = self.head
        if head is not None and head.local is None and not head.waiting:
            return head
        return next((p for p in self.pending if p.local is None and not p.waiting),
                    None)

    def ready(self, pending, frame):
        """*pending*'s response is ready: sent now if it is next, else in turn."""
        pending.waiting = False
        if self.pending and self.pending[0] is pending:
            self.pending.popleft()
            self._write(frame)
        else:
            pending.local = bytes(frame)
            pending.held = len(pending.local)
            self.held += pending.held
            if self.parked is not None:
                self.parked(self.held)
        self.release()

    def streamable(self):
        """The head request when its response may be forwarded as it arrives
        (a Fetch the broker answers next, nothing made by the gateway ahead)."""
        head = self.head
        if head is None or head.api_key != FETCH or head.local is not None \
                or head.waiting:
            return None
        return head

    def sent_in_turn(self, count):
        """The first *count* requests' answers were written (the produce
        lane's, taken in turn from ``owed_by_lane``)."""
        for _ in range(count):
            self.pending.popleft()
        self.release()

    def streamed(self):
        """The head's response went out as it arrived."""
        self.pending.popleft()
        self.release()

    def release(self):
        """Send the responses at the head that are ready, in order."""
        while self.pending and self.pending[0].local is not None:
            item = self.pending.popleft()
            self._write(item.local)
            if item.held:
                self.held -= item.held
                if self.parked is not None:
                    self.parked(self.held)
            if item.close_after:
                self._close()
                return
        if self.room is not None and len(self.pending) < MAX_IN_FLIGHT:
            room, self.room = self.room, None
            room()
