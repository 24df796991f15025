# -*- test-case-name: tests.test_rules -*-
"""Rules for the topic APIs: Metadata and DescribeTopicPartitions (all-topics
requests become requests for the tenant's topics by name), CreateTopics
(concentration rules), CreatePartitions and DeleteTopics (aliases)."""

import typing
import uuid
from dataclasses import replace

from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.static.constants import EntityType
from kio.static.primitive import i16, i32

from twisted.internet import defer

from ...protocol.codec import encode_body
from ..concentration import create_by_rule, synthetic_id
from ..naming import TOPIC, InvalidName
from ..context import ZERO_UUID
from ..walker import rewrite_request as walk_request
from ..walker import rewrite_response as walk_response
from .addresses import rewrite_metadata
from ...state.limits import Limits
from ...state.policy import (
    Violation, capped_defaults, explicit, more_partitions, new_topic, out_of_bounds)
from .addresses import mapping_key
from ..rights import created_topics_shown
from .common import (
    LISTING_MAX_AGE, NO_THROTTLE, PARTITION_WORK, PARTITIONS_PER_REQUEST,
    TOO_MANY_PARTITIONS, VALIDATED_WORK, broker_work, holdings, limits_for, released,
    reserve, tenant_topics)


def metadata_request(services, rctx, request):
    """All-topics requests cost O(the tenant's topics): they become a request for
    the tenant's topics by name, from a listing at most LISTING_MAX_AGE old (past
    half that age a new one is fetched in the background); with no fresh
    listing, one all-topics request refreshes it.  Answers are reused for a
    moment (metadata_cache.py)."""
    if request.topics is None:
        topology, namespace = services.topology, rctx.namespace
        now = services.clock.seconds()
        mapping = mapping_key(services)
        if rctx.rights is not None:  # the answer shows what this principal may see
            rights = rctx.rights
            mapping = (mapping, rights.principal, rights.host,
                       rights.authorizer.generation)
        rctx.answer = services.metadata_answers.get(topology, namespace, request, now,
                                                    mapping)
        if rctx.answer is not None:
            return request  # answered by the gateway, never forwarded
        rctx.on_answer = services.metadata_answers.keeper(topology, namespace, request,
                                                         now, mapping)
        rctx.note_concentrated(namespace.concentrated())  # among "all topics"
        if topology.listing_at is not None and \
                now - topology.listing_at < LISTING_MAX_AGE:
            if now - topology.listing_at >= LISTING_MAX_AGE / 2 and \
                    services.refresher is not None:
                services.refresher.refresh_listing()  # meanwhile, this one serves
            module = load_payload_module(3, request.__version__, EntityType.request)
            fields = module.MetadataRequestTopic.__dataclass_fields__
            names = tenant_topics(topology, rctx.namespace)
            make = (lambda n: module.MetadataRequestTopic(name=n, topic_id=None)) \
                if "topic_id" in fields else \
                (lambda n: module.MetadataRequestTopic(name=n))
            rctx.topics_asked = "by-name"
            request = replace(request, topics=tuple(make(n) for n in names))
            return replace(request, allow_auto_topic_creation=False) \
                if hasattr(request, "allow_auto_topic_creation") else request
        rctx.topics_asked = "listing"
    request = walk_request(request, rctx)
    if getattr(request, "allow_auto_topic_creation", False):
        request = replace(request, allow_auto_topic_creation=False)
    return request


def metadata_response(services, rctx, response):
    counts = {t.name: len(t.partitions) for t in response.topics
              if t.name and t.error_code == 0}
    if rctx.topics_asked == "listing":
        services.topology.learn_listing(counts, services.clock.seconds(), counts)
    else:
        services.topology.partitions.update(counts)
    if rctx.topics_asked == "by-name":
        # topics deleted since the listing: forget them, don't show them
        gone = [t for t in response.topics
                if t.error_code == ErrorCode.unknown_topic_or_partition]
        for t in gone:
            services.topology.learn_topic(t.name, exists=False)
        if gone:
            response = replace(response, topics=tuple(
                t for t in response.topics
                if t.error_code != ErrorCode.unknown_topic_or_partition))
    return rewrite_metadata(services, rctx, walk_response(response, rctx))


def describe_topic_partitions_request(services, rctx, request):
    """KIP-966 pages by cursor through every topic the broker has.  A tenant
    pages only through its own: an all-topics request becomes a request for
    the tenant's topics by name, and its cursor only says where to start in
    that list (a cursor naming a topic that is not the tenant's, or no topic,
    starts at the next of the tenant's names, as a missing topic would)."""
    if request.topics:
        return walk_request(request, rctx)
    namespace, topology = rctx.namespace, services.topology
    if services.refresher is not None and (topology.listing_at is None or
            services.clock.seconds() - topology.listing_at >= LISTING_MAX_AGE):
        services.refresher.refresh_listing()  # for the next page or request
    names = list(tenant_topics(topology, namespace))
    cursor = request.cursor
    if cursor is not None:
        try:
            start = namespace.physical(TOPIC, cursor.topic_name)
        except InvalidName:
            start = namespace.prefix + cursor.topic_name
        names = [n for n in names if n >= start]
        if start not in names:
            cursor = None
        else:
            cursor = replace(cursor, topic_name=start)
    if not names:  # no topics at all would mean every topic to the broker
        module = load_payload_module(75, request.__version__, EntityType.response)
        rctx.answer = encode_body(module.DescribeTopicPartitionsResponse(
            throttle_time=NO_THROTTLE, topics=(), next_cursor=None))
        return request
    rctx.topics_asked = "by-name"
    make = typing.get_args(typing.get_type_hints(type(request))["topics"])[0]
    return replace(request, cursor=cursor, topics=tuple(make(name=n) for n in names))


def describe_topic_partitions_response(services, rctx, response):
    if rctx.topics_asked == "by-name":  # topics deleted since the listing
        response = replace(response, topics=tuple(
            t for t in response.topics
            if t.error_code != ErrorCode.unknown_topic_or_partition))
    return walk_response(response, rctx)


def repartitioned(services, rctx, response):
    """CreatePartitions: answers that show the old partition count are stale."""
    released(services, rctx)
    if any(r.error_code == 0 for r in response.results):
        services.topology.topics_changed()
    for r in response.results:
        count = (rctx.partitions_asked or {}).get(r.name)
        if r.error_code == 0 and count is not None:
            services.topology.learn_topic(rctx.namespace.physical(TOPIC, r.name),
                                          partitions=count)
    return response


def create_topics_request(services, rctx, request):
    """Topics beyond the tenant's limits are refused (policy.py, as Kafka
    refuses: per topic, validate-only alike); under a capacity limit the
    topic listing is fetched first, so topics made through other gateways
    count.  Names a concentration rule matches become concentrated topics (a
    mapping in the shared state), never topics on the cluster; the rest are
    created."""
    return _listing_first(services, rctx, request, _create_topics)


def _listing_first(services, rctx, request, rewrite):
    """*rewrite* now, or after a fresh topic listing when the tenant has a
    capacity limit (a Deferred: the splice holds the connection's next
    requests meanwhile)."""
    capacity = limits_for(services, rctx).capacity
    if services.refresher is None or (capacity.topics is None
                                      and capacity.partitions is None):
        return rewrite(services, rctx, request)
    return services.refresher.refresh().addCallback(
        lambda _: rewrite(services, rctx, request))


def _create_topics(services, rctx, request):
    namespace = rctx.namespace
    refused = _beyond_limits(services, rctx, request.topics,
                             not request.validate_only)
    kept, planned = [], []
    rights = rctx.rights  # a topic the principal may not CREATE: the walk refuses it
    for t in request.topics:
        rule = None if t.name in namespace.aliases or not namespace.rules or \
            t.name in refused or (rights is not None and not rights.permits(
                TOPIC, t.name)) or not _valid(namespace, t.name) \
            else namespace.rule_for(t.name)
        if rule is None:
            kept.append(t)
        elif not request.validate_only and services.rule_writes is not None and \
                not services.rule_writes.take(namespace.name, 1):
            planned.append((t.name, defer.succeed((
                ErrorCode.throttling_quota_exceeded, "concentrated topics are made "
                f"at most {services.rule_writes.RATE:g} a second per virtual "
                f"cluster on a gateway, after {RULE_TOPICS_AT_ONCE} at once", -1))))
        else:
            planned.append((t.name, create_by_rule(services, rctx, rule, t,
                                                   request.validate_only)))
    rctx.created = planned
    walked = walk_request(replace(request, topics=tuple(kept)), rctx)
    asked = {t.name: _partitions(t) for t in walked.topics}
    made = sum(max(asked[t.name], 1) for o, t in zip(kept, walked.topics)
               if o.name not in refused)  # the broker's default (-1): see the answer
    if made > PARTITIONS_PER_REQUEST:
        made = 0  # the controller refuses the whole request at once
    if request.validate_only:
        broker_work(services, rctx, made, VALIDATED_WORK)
    else:
        rctx.partitions_asked = asked
        broker_work(services, rctx, made, PARTITION_WORK)
    limits = limits_for(services, rctx)
    if limits is Limits.NONE and not refused:
        return walked
    return replace(walked, topics=tuple(
        _refused(rctx, original, t, refused[original.name])
        if original.name in refused else _capped(limits, t)
        for original, t in zip(kept, walked.topics)))


RULE_TOPICS_AT_ONCE = 1000
"""Concentrated topics a virtual cluster may make by rule at once on a
gateway process (then one a second): each is a record of the shared state
(rules/common.StateWrites)."""


def _valid(namespace, name):
    """Whether *name* is a topic name Kafka takes in this namespace: a rule
    makes no concentrated topic of any other (the walk refuses it).  Its
    name goes into every record of it, twice: a 300,000-character one made
    each record megabytes."""
    try:
        namespace.physical(TOPIC, name)
    except InvalidName:
        return False
    return True


def _beyond_limits(services, rctx, topics, creates):
    """{logical name: Violation} of the topics the tenant's limits refuse;
    those allowed count as held until the answer if the request *creates*."""
    limits = limits_for(services, rctx)
    if limits is Limits.NONE:  # the gateway's floors hold all the same
        return {t.name: found for t in topics if (found := out_of_bounds(
            {c.name: c.value for c in t.configs})) is not None}
    held, refused, admitted = holdings(services, rctx.namespace), {}, []
    for t in topics:
        try:
            physical = rctx.namespace.physical(TOPIC, t.name)
        except InvalidName:
            continue  # the walker refuses it
        partitions, replication = _asked(limits, t)
        violation = new_topic(limits, held, t.name, physical, partitions,
                              replication, {c.name: c.value for c in t.configs})
        if violation is not None:
            refused[t.name] = violation
        elif creates and t.name not in rctx.namespace.aliases and \
                physical in held.partitions:
            admitted.append(physical)
    if admitted:
        reserve(services, rctx, held, admitted)
    return refused


def _partitions(topic):
    """Partitions a CreateTopics entry makes: its explicit assignments' count
    (then num_partitions is -1), else as asked (-1: the broker's default)."""
    return len(topic.assignments) if topic.assignments else topic.num_partitions


def _asked(limits, topic):
    """(partitions, replication factor) of a CreateTopics entry: its explicit
    assignments say both; else as asked, made explicit under the limits."""
    if topic.assignments:
        return len(topic.assignments), len(topic.assignments[0].broker_ids)
    return explicit(limits, topic.num_partitions, topic.replication_factor)


def _capped(limits, topic):
    """A topic created as its limits allow: the broker's defaults (-1) and
    the retention caps made explicit (the cluster's defaults might be beyond
    them)."""
    partitions, replication = _asked(limits, topic)
    if not topic.assignments and (partitions, replication) != (
            topic.num_partitions, topic.replication_factor):
        topic = replace(topic, num_partitions=i32(partitions),
                        replication_factor=i16(replication))
    configs = {c.name: c.value for c in topic.configs}
    wanted = capped_defaults(limits, configs)
    if wanted is configs:
        return topic
    make = typing.get_args(typing.get_type_hints(type(topic))["configs"])[0]
    return replace(topic, configs=topic.configs + tuple(
        make(name=k, value=v) for k, v in wanted.items() if k not in configs))


def _refused(rctx, original, walked, violation):
    """A topic refused by the limits: sent as a decoy the broker refuses,
    answered with the limit's error and message."""
    if violation is None:
        return walked
    return replace(walked, name=rctx.decoy_name(TOPIC, original.name,
                                                violation.message, violation.code))


def create_partitions_request(services, rctx, request):
    """Partitions beyond the tenant's limits are refused per topic (after a
    fresh listing, as CreateTopics)."""
    return _listing_first(services, rctx, request, _create_partitions)


def _create_partitions(services, rctx, request):
    walked = walk_request(request, rctx)
    held = services.topology.partitions
    added = sum(max(0, t.count - held.get(t.name, 0)) for t in walked.topics
                if not t.name.startswith("!"))  # a topic not learnt yet: all of it
    if added > PARTITIONS_PER_REQUEST:  # refused whole, as CreateTopics is
        whole = Violation(ErrorCode.policy_violation, TOO_MANY_PARTITIONS)
        return replace(walked, topics=tuple(
            _refused(rctx, o, t, None if t.name.startswith("!") else whole)
            for o, t in zip(request.topics, walked.topics)))
    if request.validate_only:
        broker_work(services, rctx, added, VALIDATED_WORK)
    else:
        rctx.partitions_asked = {t.name: t.count for t in request.topics}
        broker_work(services, rctx, added, PARTITION_WORK)
    limits = limits_for(services, rctx)
    if limits is Limits.NONE:
        return walked
    held = holdings(services, rctx.namespace)
    topics = tuple(
        _refused(rctx, original, t, None if t.name.startswith("!") else
                 more_partitions(limits, held, t.name, t.count))
        for original, t in zip(request.topics, walked.topics))
    if not request.validate_only:  # those allowed count until the answer
        reserve(services, rctx, held, [t.name for t in topics
                                       if t.name in held.partitions])
    return replace(walked, topics=topics)


def create_topics_response(services, rctx, response):
    beyond = 0  # made by the broker's default beyond the one charged
    for t in response.topics:  # created (not only validated): learnt
        asked = (rctx.partitions_asked or {}).get(t.name)
        if t.error_code == 0 and asked is not None:
            made = getattr(t, "num_partitions", asked)  # v5+: what was made
            services.topology.learn_topic(t.name, partitions=made)
            beyond += max(0, made - max(asked, 1))
    broker_work(services, rctx, beyond, PARTITION_WORK)
    released(services, rctx)
    response = walk_response(response, rctx)
    if rctx.rights is not None:
        response = created_topics_shown(rctx.rights, response)
    if not rctx.created:
        return response


    names = [name for name, _ in rctx.created]
    result = typing.get_args(typing.get_type_hints(type(response))["topics"])[0]
    fields = result.__dataclass_fields__

    def merge(outcomes):
        extra = []
        for name, (_, (code, message, partitions)) in zip(names, outcomes):
            alias = rctx.namespace.aliases.get(name)
            values = {"name": name, "error_code": ErrorCode(code),
                      "error_message": message, "topic_config_error_code": i16(0),
                      "num_partitions": i32(partitions), "replication_factor": i16(-1),
                      "configs": (), "topic_id": synthetic_id(alias.physical)
                      if code == 0 and alias is not None else ZERO_UUID}
            extra.append(result(**{k: v for k, v in values.items() if k in fields}))
        return replace(response, topics=response.topics + tuple(extra))
    return defer.DeferredList([d for _, d in rctx.created],
                              fireOnOneErrback=True).addCallback(merge)


def delete_topics_request(services, rctx, request):
    """DeleteTopics of an alias removes the mapping; the physical topic stays."""
    namespace = rctx.namespace
    removed = []

    def alias_of(name, topic_id):
        if name is not None:
            alias = namespace.aliases.get(name)
        else:
            physical = rctx.topic_ids.get(topic_id)
            alias = physical and namespace.alias_for_physical(physical)
        if alias is None or alias.read_only:
            return None  # read-only aliases are refused by the walker (write=True)
        if rctx.rights is not None and not rctx.rights.permits(TOPIC, alias.logical):
            return None  # no DELETE on it: the walker refuses it (as a decoy)
        removed.append((name, topic_id, alias))
        return alias

    if hasattr(request, "topics"):
        kept = tuple(t for t in request.topics if alias_of(t.name, t.topic_id) is None)
        request = replace(request, topics=kept)
    else:
        kept = tuple(n for n in request.topic_names if alias_of(n, None) is None)
        request = replace(request, topic_names=kept)
    rctx.removed_aliases = removed
    for _, _, alias in removed:
        services.forget_alias(namespace, alias.logical)
    walked = walk_request(request, rctx)
    held = services.topology.partitions
    names = [t.name or services.topology.topic_ids.get(t.topic_id) for t in walked.topics] \
        if hasattr(walked, "topics") else list(walked.topic_names)
    broker_work(services, rctx, sum(held.get(n, 1) for n in names), PARTITION_WORK)
    return walked


def delete_topics_response(services, rctx, response):
    for t in response.responses:
        if t.error_code == 0 and t.name:
            services.topology.learn_topic(t.name, exists=False)
    response = walk_response(response, rctx)
    if not rctx.removed_aliases:
        return response

    module = load_payload_module(20, response.__version__, EntityType.response)
    result = module.DeletableTopicResult
    extra = []
    for name, topic_id, alias in rctx.removed_aliases:
        fields = {"name": name or alias.logical, "error_code": ErrorCode.none}
        if "topic_id" in result.__dataclass_fields__:
            fields["topic_id"] = topic_id or uuid.UUID(int=0)
        if "error_message" in result.__dataclass_fields__:
            fields["error_message"] = None
        extra.append(result(**fields))
    return replace(response, responses=response.responses + tuple(extra))
