# -*- test-case-name: tests.test_rules -*-
"""Rules for group and transaction APIs beyond the plain walk: coordinators,
commits that would create a group, KIP-848 regex subscriptions and
assignments, ListTransactions' id pattern."""

import dataclasses
import sys
from dataclasses import replace

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64
from twisted.internet import defer


from ..consumer_protocol import Exchange, too_much_for_a_member
from ..members import budget as member_budget
from ..metadata_cache import made_of
from ..naming import GROUP, TOPIC, TRANSACTION, InvalidName, tenant_client_id
from ..rights import described_groups_shown
from ..patterns import (INVALID, MAX_PATTERN, InvalidPattern, alternation, fullmatch,
                        member_key, names_of)
from ..walker import rewrite_request as walk_request
from ..walker import rewrite_response as walk_response
from ..walker import with_error
from .addresses import rewrite_find_coordinator
from ...state.policy import POLICY_VIOLATION, held_at_most
from .common import (
    LISTING_MAX_AGE, MEMBERSHIP_WORK, broker_work, limits_for, logical_topics)


def offset_fetch_request(services, rctx, request):
    """Offsets of every topic (null topics) include concentrated topics'.
    The request as the client sent it is kept for its answer (``asked_again``)."""
    rctx.note_concentrated(rctx.namespace.concentrated())
    rctx.offsets_asked = request
    return walk_request(request, rctx)


def offset_fetch_response(services, rctx, response):
    """Names walked; a group whose coordinator moved answered with the
    partitions asked (``asked_again``); a group refused by an ACL (v8+ lists
    groups) shows no topics, as on a broker, whatever its decoy's coordinator
    answered."""
    response = asked_again(rctx.offsets_asked, walk_response(response, rctx))
    if rctx.rights is None or not hasattr(response, "groups"):
        return response
    return replace(response, groups=tuple(
        replace(g, topics=()) if g.error_code == ErrorCode.group_authorization_failed
        else g for g in response.groups))


COORDINATOR_MOVED = frozenset({ErrorCode.coordinator_load_in_progress,
                               ErrorCode.coordinator_not_available,
                               ErrorCode.not_coordinator})
"""Errors a group's coordinator answers while it moves, or before it is
ready: the client is to find it again and ask again."""


def asked_again(request, response):
    """An OffsetFetch answer whose group (v8+; before: the whole answer) has
    a COORDINATOR_MOVED error and no partitions, given the partitions the
    *request* asked for, each with STALE_MEMBER_EPOCH.  librdkafka reads the
    partitions, not that error: with none, the partitions it asked about
    wait for an answer for good, its consumer assigned them and reading
    nothing (librdkafka #5586, open; `make reliability`'s load after a
    broker came back: a tenant's five consumers read nothing in 300 s).  A
    partition with STALE_MEMBER_EPOCH is the one it asks about again, once
    it has found the coordinator (UNSTABLE_OFFSET_COMMIT would have it
    start from auto.offset.reset).  Java, Go, Python and JavaScript clients
    read the group's error first and go on as before.  Null topics (every
    partition) give nothing to fill."""
    if hasattr(response, "groups"):
        asked = {g.group_id: g.topics for g in request.groups}
        return replace(response, groups=tuple(
            replace(g, topics=_filled(type(response), asked.get(g.group_id)))
            if g.error_code in COORDINATOR_MOVED and not g.topics else g
            for g in response.groups))
    if getattr(response, "error_code", None) in COORDINATOR_MOVED and not response.topics:
        return replace(response, topics=_filled(type(response), request.topics))
    return response


def _filled(answer, topics):
    """The answer's topics for the request's *topics*, each partition with
    STALE_MEMBER_EPOCH (no offset, no metadata)."""
    if not topics:
        return ()
    module = sys.modules[answer.__module__]
    version = answer.__version__
    topic_class = module.OffsetFetchResponseTopics if version >= 8 \
        else module.OffsetFetchResponseTopic
    partition_class = module.OffsetFetchResponsePartitions if version >= 8 \
        else module.OffsetFetchResponsePartition
    fields = {f.name for f in dataclasses.fields(partition_class)}
    stale = {"committed_offset": i64(-1), "committed_leader_epoch": i32(-1),
             "metadata": "", "error_code": ErrorCode.stale_member_epoch}
    return tuple(topic_class(
        **{key: getattr(t, key) for key in ("name", "topic_id") if hasattr(t, key)},
        partitions=tuple(partition_class(partition_index=index, **{
            k: v for k, v in stale.items() if k in fields})
            for index in t.partition_indexes)) for t in topics)


_COORDINATOR_KINDS = {0: GROUP, 1: TRANSACTION}


def find_coordinator_request(services, rctx, request):
    key_type = getattr(request, "key_type", 0)  # v0 has groups only
    rctx.coordinator_kind = key_type  # the response's keys are renamed by this kind
    kind = _COORDINATOR_KINDS.get(key_type)

    def physical(key):
        if kind is None:
            return rctx.decoy_name(GROUP, key, "only group and transaction "
                                   "coordinators are available")
        return rctx.to_physical(kind, key)

    if hasattr(request, "coordinator_keys"):
        return replace(request, coordinator_keys=tuple(
            physical(k) for k in request.coordinator_keys))
    return replace(request, key=physical(request.key))


def find_coordinator_response(services, rctx, response):
    kind = _COORDINATOR_KINDS.get(rctx.coordinator_kind, GROUP)
    if hasattr(response, "coordinators"):
        items = []
        for c in response.coordinators:
            found = rctx.refusal(kind, c.key) or rctx.refusal(GROUP, c.key)
            if found is not None:
                items.append(replace(c, key=found.logical, node_id=-1, host="",
                                     port=-1, error_code=ErrorCode(
                                         found.code or ErrorCode.invalid_request),
                                     error_message=found.reason))
            else:
                items.append(replace(c, key=rctx.to_logical(kind, c.key)))
        response = replace(response, coordinators=tuple(items))
    elif rctx.refusals:
        _, found = next(rctx.all_refusals())
        message = {"error_message": found.reason} \
            if hasattr(response, "error_message") else {}  # v1+
        response = replace(response, node_id=-1, host="", port=-1,
                           error_code=ErrorCode(found.code or ErrorCode.invalid_request),
                           **message)
    return rewrite_find_coordinator(services, rctx, response)


def unknown_id_created(field, kind):
    """A request for which the broker creates what an unknown *field* names
    (a join, a KIP-848 heartbeat, a new transactional producer): a refused id
    goes as the empty string, which the broker refuses, creating nothing."""
    def rewrite(services, rctx, request):
        value = getattr(request, field, None)
        if value and rctx.refusal(kind, value) is not None:
            request = replace(request, **{field: rctx.empty_decoy(kind, value)})
        return request
    return rewrite


def within_group_capacity(services, rctx, request):
    """A request that would make a new consumer group (a join, a KIP-848
    join, a simple or transactional commit) beyond the tenant's
    capacity.consumerGroups: its group is refused with POLICY_VIOLATION.
    Groups are counted from the last usage inventory (at most a minute old;
    docs/governance.md) and those this process let the tenant make since."""
    group = request.group_id
    if not group or not _creates(request):
        return request
    return _refused_as(request, "group_id", _beyond_capacity(
        services, rctx, services.group_ids, GROUP, group, "consumer_groups",
        "a new consumer group"))


def within_transaction_capacity(services, rctx, request):
    """InitProducerId naming a transactional id the cluster does not hold,
    beyond the tenant's capacity.transactionalIds (or the gateway's default):
    refused with POLICY_VIOLATION, counted as groups are.  Each id is broker
    heap for 7 days after its last use, and a connection could make hundreds
    a second."""
    txn = request.transactional_id
    if not txn:
        return request
    return _refused_as(request, "transactional_id", _beyond_capacity(
        services, rctx, services.transactional_ids, TRANSACTION, txn,
        "transactional_ids", "a new transactional id"))


def _refused_as(request, field, refused):
    """*request* with its *field* the decoy *refused* stands for (None: as it
    is), once the capacity check has decided (maybe a Deferred)."""
    if isinstance(refused, defer.Deferred):
        return refused.addCallback(lambda r: _refused_as(request, field, r))
    return request if refused is None else replace(request, **{field: refused})


def _beyond_capacity(services, rctx, seen, kind, physical, what, noun, renewed=False):
    """None if the tenant may make (or use) *physical*, an id of *kind*;
    else a decoy standing for the refusal; or a Deferred of either, when the
    last inventory is older than a few seconds (a new one is taken first, so
    ids made through other gateways since count) or the id is about to be
    refused (its coordinator is asked first whether it exists: one made
    through another gateway a moment ago is the tenant's own, not new).
    Before the gateway's first inventory (asked for then, taken within a
    second or so) nothing is refused."""
    if seen is None or rctx.refusal(kind, physical) is not None:
        return None
    holds = seen.holds(physical)
    if holds is None:  # no inventory yet (one is being taken): counted from now
        seen.made(rctx.namespace.name, physical)
    if holds is None or holds:
        return None
    later = None if renewed or seen.renew is None else seen.renew()
    if later is not None:
        return later.addCallback(lambda _: _beyond_capacity(
            services, rctx, seen, kind, physical, what, noun, renewed=True))
    limit = held_at_most(limits_for(services, rctx), what)
    namespace = rctx.namespace
    held = seen.held(namespace)
    if held < limit:
        seen.made(namespace.name, physical)  # counted from now, not the next inventory
        return None

    def refused(exists=False):
        if exists:  # made through another gateway since the inventory: its own
            seen.made(namespace.name, physical)
            return None
        logical = namespace.logical(kind, physical) or physical
        return rctx.decoy_name(kind, logical, f"{noun}: the virtual cluster holds "
                               f"{held}, its limit is {limit}", POLICY_VIOLATION)
    if seen.exists is None:
        return refused()
    return seen.exists(physical, namespace.name).addCallback(refused)


def deleted_groups_configs_cleared(services, rctx, response):
    """DeleteGroups: each group deleted has its configs set back to their
    defaults (Kafka keeps them past the group: configuring and deleting new
    groups in a loop would add metadata records without end; audit 22b)."""
    clear = services.clear_group_configs
    if clear is None:
        return response
    deleted = []
    for r in response.results:  # the tenant's own groups (the walk dropped others)
        if r.error_code == ErrorCode.none:
            try:
                deleted.append(rctx.namespace.physical(GROUP, r.group_id))
            except InvalidName:
                continue
    if deleted:
        clear(deleted)
    return response


def answered_as_refused(kind):
    """The answer to a request whose group or transactional id (*kind*) was
    refused with a code (a capacity): every error of it that refusal's,
    with its reason where the answer has a message.  These answers (JoinGroup,
    OffsetCommit, ConsumerGroupHeartbeat, InitProducerId) name no group to
    put the refusal back on, and the broker's own error for the id it got
    instead (INVALID_GROUP_ID, NOT_COORDINATOR, INVALID_REQUEST) would tell
    the client nothing of why."""
    def rewrite(services, rctx, response):
        if not rctx.decoy_names:
            return response
        for found_kind, found in rctx.all_refusals():
            if found_kind == kind and found.code is not None:
                return with_error(response, ErrorCode(found.code), found.reason)
        return response
    return rewrite


def _creates(request):
    """Whether this request makes its group if it does not exist."""
    for name in ("member_epoch", "generation_id_or_member_epoch", "generation_id"):
        value = getattr(request, name, None)
        if value is not None:
            return value == 0 if name == "member_epoch" else value < 0
    return True  # JoinGroup, TxnOffsetCommit


def commit_needs_a_group(services, rctx, request):
    """A simple offset commit (generation -1) creates the group it names; a
    refused group id is sent with generation 0 instead, which the broker
    answers as for a group that does not exist (GROUP_ID_NOT_FOUND or
    ILLEGAL_GENERATION), creating nothing.  A TxnOffsetCommit before v3 has
    no generation: its refused group goes as the empty string (INVALID_GROUP_ID),
    or the transaction's commit would make the decoy a group on the cluster."""
    if rctx.refusal(GROUP, request.group_id) is not None:
        names = [n for n in ("generation_id_or_member_epoch", "generation_id")
                 if hasattr(request, n)]
        if not names:
            return replace(request, group_id=rctx.empty_decoy(GROUP, request.group_id))
        for name in names:
            if getattr(request, name) < 0:
                request = replace(request, **{name: i32(0)})
    return request


def heartbeat_request(services, rctx, request):
    """KIP-848: names walked; a regex subscription is matched by the gateway
    over the tenant's logical topic names (tenancy/patterns.py) and the broker
    gets the exact alternation of the matching physical names, kept current
    at each heartbeat.  A new pattern waits for a topic listing begun after
    it came (at most a second's wait, one listing a second per gateway): its
    topics may have been created a moment ago through another gateway.  A
    subscribed member's heartbeat renews a listing older than LISTING_MAX_AGE
    in the background, so a matching topic created elsewhere reaches its
    alternation at a later heartbeat, not at the periodic refresh (30 s).
    A join, a leave, a new subscription, rack or assignor (each makes the
    coordinator compute the assignment anew; a member sends them only when
    they change) costs MEMBERSHIP_WORK."""
    group = request.group_id
    if request.member_epoch <= 0 or any(
            getattr(request, name, None) is not None for name in (
                "subscribed_topic_names", "subscribed_topic_regex", "rack_id",
                "server_assignor")):
        broker_work(services, rctx, 1, MEMBERSHIP_WORK)  # an assignment computed anew
    request = _subscription_bounded(rctx, group, walk_request(request, rctx))
    request = within_group_capacity(services, rctx, _member_state_bounded(
        services, rctx, group, request))
    if isinstance(request, defer.Deferred):  # the capacity check looks again first
        return request.addCallback(lambda r: _heartbeat(services, rctx, r))
    return _heartbeat(services, rctx, request)


def _subscription_bounded(rctx, group, request):
    """A heartbeat asking the coordinator to keep too much for its member
    (consumer_protocol.too_much_for_a_member): its group refused
    (INVALID_REQUEST, saying why), nothing subscribed."""
    too_much = None if not group else too_much_for_a_member(
        request, ("member_id", "instance_id", "rack_id", "server_assignor"))
    if too_much is None:
        return request
    return replace(request, subscribed_topic_names=(), group_id=rctx.decoy_name(
        GROUP, group, too_much, ErrorCode.invalid_request))


KIP848_SESSION = 45.0
"""Seconds a silent KIP-848 member is counted (the brokers'
``group.consumer.session.timeout.ms`` default; the member does not say)."""


def _member_state_bounded(services, rctx, group, request):
    """A KIP-848 member's subscription (names, pattern and strings, sent when
    they change) counted as classic members' are (tenancy/members.py): one
    that would take its virtual cluster past the bound is refused
    (POLICY_VIOLATION, saying why), nothing subscribed; a heartbeat keeps
    its member counted, a leave forgets it."""
    members = getattr(services, "members", None)
    if members is None or not group or rctx.refusal(GROUP, request.group_id) is not None:
        return request
    vc, physical, member = rctx.namespace.name, request.group_id, request.member_id
    if request.member_epoch < 0:
        members.left(vc, physical, [member])
        return request
    names = request.subscribed_topic_names
    regex = getattr(request, "subscribed_topic_regex", None)
    if names is None and regex is None:
        members.seen(vc, physical, member)
        return request
    size = sum(len(n) for n in names or ()) + len(regex or "") + sum(
        len(getattr(request, f, None) or "") for f in ("instance_id", "rack_id"))
    too_much = members.beyond(vc, physical, member, size, member_budget(services, vc))
    if too_much is not None:
        return replace(request, subscribed_topic_names=(), group_id=rctx.decoy_name(
            GROUP, group, too_much, POLICY_VIOLATION))
    rctx.group_protocol = Exchange(None, member, group=physical, member_state=size,
                                   session=KIP848_SESSION)
    return request


def member_joined(services, rctx, response):
    """ConsumerGroupHeartbeat's answer: a member whose subscription was
    counted (``_member_state_bounded``), counted from now."""
    exchange = rctx.group_protocol
    if exchange is not None and exchange.group and response.error_code == ErrorCode.none:
        services.members.joined(rctx.namespace.name, exchange.group,
                                response.member_id or exchange.member_id,
                                exchange.member_state, exchange.session)
    return response


def _heartbeat(services, rctx, request):
    request = unknown_id_created("group_id", GROUP)(services, rctx, request)
    if not hasattr(request, "subscribed_topic_regex"):  # v0: no regex
        return request
    subscriptions = services.regex_subscriptions
    key = member_key(rctx.namespace.name, request.group_id, request.member_id)
    if request.member_epoch < 0:  # leaving
        subscriptions.forget(key)
        return request
    regex = request.subscribed_topic_regex
    refresher = services.refresher
    listing = getattr(refresher, "all_topics", False)
    if regex is not None:
        if regex == "":
            subscriptions.forget(key)
            return request
        if len(regex) > MAX_PATTERN:  # the broker's own answer: invalid
            subscriptions.forget(key)
            return replace(request, subscribed_topic_regex=INVALID)
        new = subscriptions.pattern(key) != regex
        subscriptions.subscribe(key, regex)
        if new and listing:
            return refresher.next_listing().addCallback(
                lambda _: _alternation_sent(services, rctx, request, key, regex))
    elif listing and subscriptions.pattern(key) is not None:
        listed = services.topology.listing_at
        if listed is None or services.clock.seconds() - listed >= LISTING_MAX_AGE:
            refresher.refresh_listing()  # for this member's next heartbeat
    return _alternation_sent(services, rctx, request, key, regex)


def _alternation_sent(services, rctx, request, key, regex):
    """*request* carrying the alternation of the tenant's topics that *key*'s
    pattern matches, if it is new or changed since the last one sent."""
    topology, namespace = services.topology, rctx.namespace
    rights = rctx.rights  # ACLs on: only the topics the member may DESCRIBE
    found = services.regex_subscriptions.broker_regex(
        key, made_of(topology, namespace) if rights is None else
        (made_of(topology, namespace), rights.principal, rights.host,
         rights.authorizer.generation),
        lambda: {n: p for n, p in logical_topics(topology, namespace).items()
                 if rights is None or rights.allows("DESCRIBE", TOPIC, n)})
    if found is None:  # forgotten meanwhile: the tenant's own pattern never goes on
        return request if regex is None else replace(request,
                                                     subscribed_topic_regex=INVALID)
    if regex is not None or found[1]:
        request = replace(request, subscribed_topic_regex=found[0])
    return request


def group_describe_response(services, rctx, response):
    """Members' regexes shown as the client sent them (or, for a member this
    gateway does not know, the logical names our alternation holds)."""
    response = walk_response(response, rctx)
    subscriptions, namespace = services.regex_subscriptions, rctx.namespace

    def shown(group, member):
        regex = member.subscribed_topic_regex
        if not regex:
            return regex
        original = subscriptions.pattern(member_key(namespace.name, group,
                                                    member.member_id))
        if original is not None:
            return original
        names = names_of(regex)
        if names is None:
            return None
        logical = [n for n in map(lambda p: namespace.logical(TOPIC, p), names) if n]
        return alternation(logical)

    groups = []
    for g in response.groups:
        physical = rctx.to_physical(GROUP, g.group_id) if g.group_id else ""
        members = tuple(replace(m, subscribed_topic_regex=shown(physical, m),
                                client_id=tenant_client_id(namespace.name, m.client_id))
                        for m in g.members)
        groups.append(replace(g, members=members))
    response = replace(response, groups=tuple(groups))
    return response if rctx.rights is None else \
        described_groups_shown(rctx.rights, response)


def client_ids_shown(services, rctx, response):
    """DescribeGroups: members' client ids as their clients sent them (a
    broker holds ``<vcluster>/<the client's>``: naming.broker_client_id)."""
    vcluster = rctx.namespace.name
    return replace(response, groups=tuple(
        replace(g, members=tuple(
            replace(m, client_id=tenant_client_id(vcluster, m.client_id))
            for m in g.members)) if g.members else g
        for g in response.groups))


def list_transactions_request(services, rctx, request):
    """The id pattern is applied by the gateway (RE2, linear time) to the
    tenant's logical ids; the broker lists without it."""
    rctx.id_pattern = getattr(request, "transactional_id_pattern", None)
    if rctx.id_pattern is not None:
        request = replace(request, transactional_id_pattern=None)
    return request


def list_transactions_response(services, rctx, response):
    response = walk_response(response, rctx)
    if rctx.id_pattern:
        try:
            kept = set(fullmatch(rctx.id_pattern, [t.transactional_id
                                               for t in response.transaction_states]))
        except InvalidPattern:
            return replace(response, error_code=ErrorCode.invalid_regular_expression,
                           transaction_states=())
        response = replace(response, transaction_states=tuple(
            t for t in response.transaction_states if t.transactional_id in kept))
    return response
