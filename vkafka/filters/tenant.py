# -*- test-case-name: tests.test_tenant_splice -*-
"""The tenant rewrite of one request: the rule table's row applied to a frame.

The splice hands over an authenticated tenant's request frame; this filter
checks it against the row (token expiry, decode limits), rewrites it by
slicing when the row can (``rewrite_frame``), else decodes, rewrites and
encodes it (``rewrite_request``), then sends it through the concentration
layer if it names concentrated topics.  Its answer says what the splice does:
forward a frame, answer with a body the rules made, or close the connection.
"""

import struct
from dataclasses import dataclass

from twisted.internet import defer

from ..protocol.codec import decode_request, encode_body
from ..protocol.framing import SIZE, Malformed
from ..protocol.headers import (
    client_id_end, is_flexible, peek_request, request_body_offset, skip_tagged_fields)
from ..tenancy import concentration
from ..tenancy.concentration.shared import MESSAGE_TOO_LARGE
from ..tenancy.context import Foreign, Rejected, RequestContext
from ..tenancy.naming import broker_client_id
from ..tenancy.rights import Rights
from ..tenancy.rules.keys import repeated
from ..tenancy.services import OFF_LOOP_FROM, SMALL_WORK
from ..tenancy.walker import plan

PRODUCE, METADATA = 0, 3
PRODUCE_FRAMING = 64 * 1024
"""Bytes a concentrated Produce may hold beyond --max-decoded-request: a
producer's max.request.size (1 MiB by default, as that limit) counts its
batches, not the names and partitions around them."""
REWRITE_ERRORS = (Malformed, struct.error, Foreign, Rejected)
"""What hostile or broken bytes raise (the connection is closed with the
reason); anything else is a bug and surfaces as one."""


@dataclass(slots=True)
class Outcome:
    """What to do with a request: forward *frame* (its body at *body_offset*,
    None if not known), answer with *answer* (a body), close for *refused*,
    or wait for *later*."""
    frame: object = None
    context: RequestContext = None
    body_offset: int | None = None
    answer: bytes | None = None
    refused: str | None = None
    later: object = None
    """A Deferred firing with the Outcome, when the rule must ask first (a
    capacity limit checked against a fresh topic listing); the connection's
    later requests wait for it, in order."""
    work: float = 0.0
    """Seconds the gateway's loop spent decoding and rewriting it (0 for a
    request rewritten by slicing): the tenant's LoopShare is charged."""


class ClientIds:
    """The client id in a tenant's request headers, as the broker gets it:
    ``<vcluster>/<the client's>`` (``naming.broker_client_id``).  The header
    is sent anew and the rest of the frame as it is, not copied; a
    connection's client id rarely changes, so its field is made once."""

    __slots__ = ("vcluster", "given", "end", "field", "grows")

    def __init__(self, vcluster):
        self.vcluster = vcluster
        self.given, self.end = None, 0

    def parts(self, frame):
        """*frame*'s pieces to send, size prefix first.  Raises HeaderError
        (a truncated client id or header; a long client id is cut).

        A flexible header's tagged fields are dropped: Kafka defines none for
        requests, and nothing unclassified reaches a broker."""
        end = self.end
        if frame[8:end] != self.given:  # the length field included: same end
            end = self._learn(frame)
        if len(frame) > end and frame[end] and is_flexible(*peek_request(frame)[:2]):
            return self._untagged(frame, end)  # else 0 tags, or a body's first byte
        return (SIZE.pack(len(frame) + self.grows), bytes(frame[:8]) + self.field,
                memoryview(frame)[end:])

    def _untagged(self, frame, end):
        body = skip_tagged_fields(frame, end)
        head = bytes(frame[:8]) + self.field + b"\x00"  # no tagged fields
        return (SIZE.pack(len(head) + len(frame) - body), head,
                memoryview(frame)[body:])

    def _learn(self, frame):
        end = client_id_end(frame)
        raw = bytes(frame[8:end])  # null (-1) and empty alike: nothing after "/"
        shown = broker_client_id(self.vcluster, raw[2:])
        self.field = struct.pack(">h", len(shown)) + shown
        self.given, self.end, self.grows = raw, end, 8 + len(self.field) - end
        return end


def decode_limit(max_decoded_request, api_key):
    """Bytes of a request the gateway decodes on its event loop: Metadata is
    names only, ~10,000 topics in a quarter of the limit."""
    return max_decoded_request // 4 if api_key == METADATA else max_decoded_request


def expired(services, login):
    """Whether the connection's token has expired: its requests are refused
    until the client authenticates again (KIP-368)."""
    return services.clock.seconds() >= login.claims.expires_at


def acls_on(services, login):
    """The virtual cluster's authorizer when its ACLs are on (every request
    is then checked against them), else None."""
    if services.authorizer is None:
        return None
    authorizer = services.authorizer(login.claims.vcluster)
    return authorizer if authorizer.enabled else None


def rewrite_request(services, login, max_decoded_request, rule, frame, api_key,
                    api_version, waited=False):
    """The Outcome of an authenticated tenant's request *frame* under *rule*;
    *login* is the connection's SASL state (its claims and namespace).

    A Produce naming a topic id this gateway cannot place among the tenant's
    topics waits for the gateway's next topic listing (at most a few seconds)
    and is decided again (*waited*): in a gateway cluster or with workers, a
    client's Metadata may have passed through another process, which learnt
    the new topic's id first.  Answered UNKNOWN_TOPIC_ID at once instead, an
    idempotent producer's retry could meet a later batch already written and
    stall on OUT_OF_ORDER_SEQUENCE_NUMBER until its delivery timeout (Kafka
    4.1, KAFKA-15591).  Another tenant's id waits the same way, so the
    answer's timing tells an existing foreign id from a missing one no
    better than its error code does."""
    if expired(services, login):
        return Outcome(refused="token expired; the client did not re-authenticate")
    what = f"API {api_key} v{api_version}"
    context = RequestContext(login.namespace, services.topology.topic_ids, rule.write)
    authorizer = acls_on(services, login)
    if authorizer is not None:
        if rule.needs is None:  # fail closed: no row says what it needs
            return Outcome(refused=f"{what}: not available while the virtual "
                                   "cluster's ACLs are on")
        context.rights = Rights(authorizer, login.claims.username,
                                services.peer_host, rule.needs, services.audit,
                                login.claims.vcluster, api_key)
    start = None
    try:
        if rule.rewrite_frame is not None:
            body_offset = request_body_offset(frame)
            # It may name thousands of topics, each renamed here: timed, and
            # charged past SMALL_WORK (nearly all take ~10 us: not charged).
            start = services.work_clock()
            rewritten = rule.rewrite_frame(services, context, frame, body_offset,
                                           api_version)
            again = (services, login, max_decoded_request, rule, frame, api_key,
                     api_version)
            if context.check_first is not None and context.answer is None:
                return Outcome(context=context, later=_checked_first(
                    again, waited, context, rewritten, body_offset,
                    services.work_clock() - start))
            outcome = _walked(again, waited, context, rewritten, body_offset, start)
            if outcome is not None:
                return outcome
        if rule.rewrite_request is None:
            return Outcome(frame=frame, context=context)
        limit = decode_limit(max_decoded_request, api_key)
        if len(frame) > limit:
            return Outcome(refused=f"{what} request of {len(frame)} bytes: over "
                                   f"the {limit} bytes the gateway decodes "
                                   "(--max-decoded-request)")
    except REWRITE_ERRORS as e:
        return Outcome(refused=f"cannot rewrite {what}: {e}")
    if start is None:  # else the walk that declined counts too
        start = services.work_clock()
    outcome = _decoded(services, context, rule, frame, api_key, what,
                       max_decoded_request)
    outcome.work = services.work_clock() - start
    return outcome


def _walked(again, waited, context, rewritten, body_offset, start):
    """The Outcome of a request its rule rewrote by slicing (*rewritten*),
    or None where the rule declined (decode it); *again*: rewrite_request's
    arguments, to decide it anew."""
    services, _, max_decoded_request, _, _, api_key, api_version = again
    if context.answer is not None:  # e.g. a fetch session not its own
        return Outcome(context=context, answer=context.answer)
    if context.unplaced_ids and api_key == PRODUCE and not waited \
            and getattr(services.refresher, "all_topics", False):
        return Outcome(context=context, later=services.refresher.next_listing(
        ).addCallback(lambda _: _settled(rewrite_request(*again, waited=True))))
    if rewritten is not None and not context.concentrated:
        work = services.work_clock() - start
        return Outcome(frame=rewritten, context=context, body_offset=body_offset,
                       work=work if work >= SMALL_WORK else 0.0)
    if rewritten is not None:  # decoded once more: counted as work
        start = services.work_clock()
        outcome = _concentrated(services, context, api_key, rewritten, body_offset,
                                f"API {api_key} v{api_version}", max_decoded_request)
        outcome.work = services.work_clock() - start
        return outcome
    return None


@defer.inlineCallbacks
def _checked_first(again, waited, context, rewritten, body_offset, work):
    """``_walked`` once the rule's ``check_first`` has run: in the codec
    thread (proxy/offload.py), its time charged with the walk's; the
    connection's later requests wait for it, in order."""
    services = again[0]
    check, args, then = context.check_first
    context.check_first = None
    seconds = 0.0
    try:
        if services.offload is not None:
            result, seconds = yield services.offload(
                check, *args, key=context.namespace.name)
        else:
            start = services.work_clock()
            result = check(*args)
            seconds = services.work_clock() - start
        start = services.work_clock()  # what *then* does counts too
        then(result)
        outcome = _walked(again, waited, context, rewritten, body_offset, start)
    except REWRITE_ERRORS as e:
        outcome = Outcome(refused=f"cannot rewrite API {again[5]} v{again[6]}: {e}")
    outcome = yield _settled(outcome)
    outcome.work += work + seconds
    return outcome


def _settled(outcome):
    """*outcome*, or the Deferred of the one it waits for: what a later
    Outcome fires with never waits again."""
    return outcome if outcome.later is None else outcome.later


def _decoded(services, context, rule, frame, api_key, what, max_decoded_request):
    """The Outcome of a request the rule rewrites decoded (its size checked)."""
    if services.offload is not None and len(frame) >= OFF_LOOP_FROM:
        return Outcome(context=context, later=_off_loop(
            services, context, rule, frame, api_key, what, max_decoded_request))
    try:
        header, request = decode_request(frame)
        _unique(api_key, request)
        if context.rights is not None and context.rights.needs.whole:
            context.rights.precheck(request, plan(type(request)))
        request = rule.rewrite_request(services, context, request)
    except REWRITE_ERRORS as e:
        return Outcome(refused=f"cannot rewrite {what}: {e}")
    head = bytes(frame[:header.body_offset])
    if isinstance(request, defer.Deferred):  # the rule must ask first
        return Outcome(context=context, later=request.addCallback(
            lambda r: _encoded(services, context, api_key, head, r, what,
                               max_decoded_request)))
    return _encoded(services, context, api_key, head, request, what, max_decoded_request)


def _unique(api_key, request):
    """Rejected if *request* repeats a key a broker hashes (rules/keys.py)."""
    found = repeated(api_key, request)
    if found is not None:
        raise Rejected(f"{found} (a broker reads it into a hashed list)")


@defer.inlineCallbacks
def _off_loop(services, context, rule, frame, api_key, what, max_decoded_request):
    """``_decoded`` for a large request: decoded and encoded in the codec
    thread (proxy/offload.py), rewritten on the loop; the later requests of
    its connection wait for it, in order.  The Outcome's work is all of it,
    the thread's and the loop's."""
    work = 0.0
    try:
        (header, request), seconds = yield services.offload(
            decode_request, frame, key=context.namespace.name)
        work += seconds
        _unique(api_key, request)
        start = services.work_clock()
        try:
            if context.rights is not None and context.rights.needs.whole:
                context.rights.precheck(request, plan(type(request)))
            request = rule.rewrite_request(services, context, request)
        finally:
            work += services.work_clock() - start
        if isinstance(request, defer.Deferred):  # the rule must ask first
            request = yield request
        if context.answer is not None:
            outcome = Outcome(context=context, answer=context.answer)
        else:
            body, seconds = yield services.offload(encode_body, request,
                                                   key=context.namespace.name)
            work += seconds
            outcome = _concentrated(services, context, api_key,
                                    bytes(frame[:header.body_offset]) + body, None,
                                    what, max_decoded_request)
    except REWRITE_ERRORS as e:
        outcome = Outcome(refused=f"cannot rewrite {what}: {e}")
    outcome.work += work
    return outcome


def _encoded(services, context, api_key, head, request, what, max_decoded_request):
    """The Outcome of a rewritten, decoded request: its frame, or the answer
    the rule made instead."""
    if context.answer is not None:
        return Outcome(context=context, answer=context.answer)
    try:
        frame = head + encode_body(request)
    except REWRITE_ERRORS as e:
        return Outcome(refused=f"cannot rewrite {what}: {e}")
    return _concentrated(services, context, api_key, frame, None, what,
                         max_decoded_request)


def _concentrated(services, context, api_key, frame, body_offset, what,
                  max_decoded_request):
    """The request through the concentration layer if it names concentrated
    topics (then decoded once more, so held to the decode limit).  A Produce
    came this far by slicing, whatever its size: past the limit it is
    answered MESSAGE_TOO_LARGE for its concentrated topics' partitions, its
    records copied but never read (a Java producer splits its batches and
    sends them again), where closing the connection would have the producer
    send the same request until its delivery timeout."""
    if not context.concentrated:
        return Outcome(frame=frame, context=context, body_offset=body_offset)
    limit = decode_limit(max_decoded_request, api_key)
    too_large = None
    if api_key == PRODUCE:
        limit += PRODUCE_FRAMING
    if len(frame) > limit:  # its records are decoded one by one, on the event loop
        reason = (f"a request of {len(frame)} bytes, over the {limit} bytes the "
                  "gateway decodes (--max-decoded-request)")
        if api_key != PRODUCE:
            return Outcome(refused=f"concentrated topics, {what}: {reason}")
        too_large = concentration.Refused(  # the records' bytes copied, not read
            f"a produce to concentrated topics in {reason}", MESSAGE_TOO_LARGE)
    try:
        header, request = decode_request(frame)
        try:
            rewritten = concentration.rewrite_request(
                services, context, api_key, request) if too_large is None \
                else _refused_produce(context, request, too_large)
        except concentration.Refused as e:
            if api_key != PRODUCE:
                raise
            rewritten = _refused_produce(context, request, e)
        frame = bytes(frame[:header.body_offset]) + encode_body(rewritten)
    except REWRITE_ERRORS as e:  # Refused, BatchError
        return Outcome(refused=f"concentrated topics, {what}: {e}")
    return Outcome(frame=frame, context=context)


def _refused_produce(context, request, refused):
    """A Produce the concentration layer refuses is answered as a broker would
    answer it: each partition of its concentrated topics with the refusal's
    error code and reason (decoys the broker refuses,
    concentration/refusal.py), its other topics written.  A closed
    connection instead had the producer send the same batch again until its
    delivery timeout, and say nothing of why."""
    context.concentration = None
    reason = "{}: " + str(refused).replace("{", "{{").replace("}", "}}")
    return concentration.refuse(context, PRODUCE, request, (reason, refused.code))
