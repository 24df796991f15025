# -*- test-case-name: tests.test_lane -*-
"""The produce lane: a tenant's Produce as nearly every one is, in one call.

A producer sends the same few topics, request after request, each decided
once by the rule table's path (filters/tenant.py, rules/records.py) and
remembered in its namespace's memo (``naming.HotNames``): its name fields
and what they become, its topic ids known to be the tenant's.  A request
that holds nothing else to decide (v9 and later, no transactional id, no
compressed or transactional batch, the producer id already let write,
nothing past its end, no more partitions than its bytes pay for, at most
LANE_TOPICS and LANE_PARTITIONS, ACLs off, the token valid) is checked and
renamed by one compiled walk and goes out as pieces, its records never
copied: a read of several requests in one call (``_walk.produce_lane_many``),
a request the general path cut in one (``produce_lane``).  Its answer comes
back the same way when it is as nearly every one is (no node_endpoints, no
record error or error message, names the memo holds): as it came from v13,
renamed before (``produce_answer_lane_many``, ``produce_answer_lane``).
Python keeps what it decides per connection: the token's expiry, whether
ACLs are on (``lane_args``), and what that was decided from
(``LaneArgs.watched``), which the compiled read checks at every read
while it sends without Python (proxy/_lane.c); the bookkeeping per request
(the order of answers, the metrics, the sends) is compiled beside the
splice (proxy/_lane.c), the splice's Python its reference and the way of a
read taken in part or of a throttled tenant (proxy/splice.py).
Anything else, malformed bytes included, goes the rule table's way, which
decides the same for these requests and answers; tests/test_lane.py holds
the two paths to the same bytes and counts.
"""

from ..tenancy.context import RequestContext
from ..tenancy.rules.records import APPEND_BYTES
from .tenant import acls_on, expired

try:
    from ..protocol._walk import (produce_answer_lane, produce_answer_lane_many,
                                  produce_lane, produce_lane_many)
except ImportError:  # pragma: no cover - tests/test_walk.py fails, saying so
    produce_answer_lane = produce_answer_lane_many = produce_lane = \
        produce_lane_many = None

LANE_TOPICS, LANE_PARTITIONS = 64, 1024
"""Topics and partitions a Produce in the lane may name: far more than a
producer's request holds, and few enough that its walk stays well below
``services.SMALL_WORK`` (a request past them goes the rule table's way,
where its loop time is measured and charged)."""


def lane_args(services, login, client_ids, rule):
    """What the compiled walk checks an authenticated tenant's Produce
    against now (the rule's versions, the client id, the memo's names and
    ids, the producer id let write, the lane's bounds), or None when the
    connection's requests go the rule table's way (a token expired or being
    renewed, ACLs on).  Decided once per read, as it begins: the lane
    itself changes none of it (a request that would, a producer id not yet
    let write say, is not taken and goes the rule table's way)."""
    if produce_lane is None or client_ids is None or client_ids.given is None \
            or rule is None or login.raw_token_next or expired(services, login) \
            or acls_on(services, login) is not None:
        return None
    memo = login.namespace.memo()
    return (rule.min_version, rule.max_version, client_ids.given, client_ids.field,
            memo.to_broker[True], memo.ids,
            None if services.producer_ids is None else services.producer,
            LANE_TOPICS, LANE_PARTITIONS, APPEND_BYTES)


class LaneArgs:
    """One connection's ``lane_args``, remembered while what they are made
    of stays the same objects: the namespace's memo (a new one after any
    mapping, rule or prefix change), the virtual cluster's authorizer (a new
    one after any ACL or rights change), the login's claims and phase, the
    rule, the client id, the producer id let write.  The token's expiry is
    checked at every read.  Making them at every read was ~6% of a lane
    request's instructions; the same objects are told by identity, one at a
    time (a tuple of them made and compared at every read cost ~1 k
    instructions more)."""

    __slots__ = ("memo", "phase", "claims", "rule", "given", "authorizer", "producer",
                 "args")

    def __init__(self):
        self.memo = self.phase = self.claims = self.rule = self.given = \
            self.authorizer = self.producer = self.args = None

    def get(self, services, login, client_ids, rule):
        claims = login.claims
        if client_ids is None or claims is None \
                or services.clock.seconds() >= claims.expires_at:
            return None
        memo, authorizer = login.namespace.memo(), services.authorizer
        if authorizer is not None:
            authorizer = authorizer(claims.vcluster)
        if memo is not self.memo or claims is not self.claims or rule is not self.rule \
                or authorizer is not self.authorizer or login.phase is not self.phase \
                or client_ids.given is not self.given \
                or services.producer is not self.producer:
            args = lane_args(services, login, client_ids, rule)
            self.memo, self.phase, self.claims, self.rule, self.given, \
                self.authorizer, self.producer, self.args = memo, login.phase, \
                claims, rule, client_ids.given, authorizer, services.producer, args
        return self.args

    def watched(self, services, login, client_ids):
        """What made the last ``get``'s args, as ``(attributes, items,
        calls)`` for the compiled read (``Books.arm``): each ``(object,
        name, value)``, ``(dict, key, value)`` and ``(callable, argument,
        value)`` gives the same object while ``get`` would give the same
        args (the token's expiry is checked apart).  Only after a ``get``
        that gave args."""
        attrs = login.namespace.memo_watch() + (
            (login, "claims", self.claims), (login, "phase", self.phase),
            (client_ids, "given", self.given), (services, "producer", self.producer),
            (services, "authorizer", services.authorizer))
        if services.authorizer is None:
            return attrs, (), ()
        more, items, calls = authorizer_watches(services.authorizer,
                                                self.claims.vcluster, self.authorizer)
        return attrs + more, items, calls


def authorizer_watches(authorizer, vcluster, answer):
    """``(attributes, items, calls)`` watches under which
    ``authorizer(vcluster)`` stays *answer*: those the gateway state says
    (``GatewayState.authorizer_watch``, its cache: no call at every read)
    when *authorizer* is its method, else the call itself."""
    owner = getattr(authorizer, "__self__", None)
    watch = getattr(owner, "authorizer_watch", None)
    if watch is not None and authorizer == owner.authorizer:
        return (*watch(vcluster, answer), ())
    return (), (), ((authorizer, vcluster, answer),)


def in_lane(args, frame):
    """``(pieces to send, correlation id, version, acks, records, bytes
    counted)`` for the request *frame* (its payload) in the lane under
    *args* (``lane_args``), or None (the rule table's path).  Its bytes are
    counted as the rule table's path counts what it forwards: renamed."""
    return produce_lane(frame, args)


def read_in_lane(args, read, limit, most):
    """The requests of *read* (a read of the client's, size prefixes and
    all) the lane takes from its start under *args*, each whole and at
    most *limit* bytes, at most *most* of them: ``([(pieces, correlation id,
    version, acks, records, bytes counted, size in the read), ...], where
    the first not taken starts)``."""
    return produce_lane_many(read, args, limit, most)


def answer_in_lane(pending, frame):
    """``(frame for the client, its first error, records)`` for the
    broker's answer *frame* (its payload) to a request that came by the
    lane (``Pending.lane``: its namespace), or None (the rule table's
    path)."""
    return produce_answer_lane(frame, pending.api_version, pending.correlation_id,
                               pending.lane.memo().to_client[True])


def read_answers_in_lane(read, limit, owed):
    """The answers of *read* (a read of the broker's, size prefixes and
    all) the lane takes from its start, to the requests *owed* in turn
    (``Sequencer.owed_by_lane``: of one namespace), each whole and at most
    *limit* bytes: ``([(frame for the client, its first error, records),
    ...], where the first not taken starts, what the client is sent for
    them: pieces for one sendmsg)``."""
    return produce_answer_lane_many(read, limit, owed,
                                    owed[0].lane.memo().to_client[True])


def lane_context(services, pending):
    """The RequestContext of a request that came by the lane, made only when
    its answer goes the rule table's way (a lane request needs none)."""
    return RequestContext(pending.lane, services.topology.topic_ids, pending.rule.write)
