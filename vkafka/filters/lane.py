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
renamed by one compiled walk (``_walk.produce_lane``) and goes out as
pieces, its records never copied.  Its answer comes back the same way when
it is as nearly every one is (no node_endpoints, no record error or error
message, names the memo holds): as it came from v13, renamed before
(``_walk.produce_answer_lane``).  Python keeps what it decides per
connection: the token's expiry, whether ACLs are on, the metrics, rates
and the order of answers (proxy/splice.py).
Anything else, malformed bytes included, goes the rule table's way, which
decides the same for these requests and answers; tests/test_lane.py holds
the two paths to the same bytes and counts.
"""

from ..tenancy.context import RequestContext
from ..tenancy.rules.records import APPEND_BYTES
from .tenant import acls_on, expired

try:
    from ..protocol._walk import produce_answer_lane, produce_lane
except ImportError:  # pragma: no cover - tests/test_walk.py fails, saying so
    produce_answer_lane = produce_lane = None

LANE_TOPICS, LANE_PARTITIONS = 64, 1024
"""Topics and partitions a Produce in the lane may name: far more than a
producer's request holds, and few enough that its walk stays well below
``services.SMALL_WORK`` (a request past them goes the rule table's way,
where its loop time is measured and charged)."""


def in_lane(services, login, client_ids, rule, frame, limit=-1):
    """``(pieces to send, correlation id, version, acks, records)`` for an
    authenticated tenant's request *frame* in the lane, or None (the rule
    table's path).  *limit* >= 0: *frame* is a read with its size prefix,
    taken when it is one whole frame of at most *limit* bytes."""
    if produce_lane is None or client_ids is None or client_ids.given is None \
            or rule is None or login.raw_token_next or expired(services, login) \
            or acls_on(services, login) is not None:
        return None
    memo = login.namespace.memo()
    return produce_lane(
        frame, rule.min_version, rule.max_version, client_ids.given, client_ids.field,
        memo.to_broker[True], memo.ids,
        None if services.producer_ids is None else services.producer,
        LANE_TOPICS, LANE_PARTITIONS, APPEND_BYTES, limit)


def answer_in_lane(pending, frame, limit=-1):
    """``(frame for the client, its first error, records)`` for the
    broker's answer *frame* to a request that came by the lane
    (``Pending.lane``: its namespace), or None (the rule table's path).
    *limit*: as for ``in_lane``."""
    taken = produce_answer_lane(frame, pending.api_version, pending.correlation_id,
                                pending.lane.memo().to_client[True], limit)
    return None if taken is None else (taken[0], taken[1], 0)


def lane_context(services, pending):
    """The RequestContext of a request that came by the lane, made only when
    its answer goes the rule table's way (a lane request needs none)."""
    return RequestContext(pending.lane, services.topology.topic_ids, pending.rule.write)
