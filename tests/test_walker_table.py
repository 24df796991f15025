"""The name walker, one fixture row per API it rewrites (Kroxylicious-style).

Each row of ``CASES`` is one API over a range of versions with one message
shape: the request acme's client sends (logical names), the names the broker
must get (``sent``), a broker response naming acme's and other tenants'
entities (physical names), and the names acme's client must read back
(``answered``; everything of globex and acmeeu dropped).  Each row is played
at the lowest and highest version of its range, in memory: the messages are
built from the row (a helper fills every field the row leaves out), encoded
and decoded as on the wire, and passed through ``walker.rewrite_request`` and
``walker.rewrite_response`` with a ``RequestContext``, as the gateway does.

From each row the tests also derive: refused names (invalid ones, and names
that fall into another virtual cluster's prefix) that must reach the broker
as decoys and come back as the client's own name with the reason; another
tenant's physical names, which must stay inside acme's namespace; read-only
aliases, refused by the APIs that change topics; answers by topic id with
an empty name, dropped unless the id is acme's; and names that cannot be
dropped from a response, which reject it.

Only the walker is played: what a rule adds around it (JoinGroup's and
InitProducerId's empty decoys, OffsetCommit's generation, DescribeTopicPartitions'
paging, Metadata's all-topics listing) is tested with those rules.

Names: acme's prefix is "acme"; "acmeeu" is a longer prefix inside it (the
longest-prefix guard: VirtualClusters would not serve both, and the walker
must still never hand acme's clients acmeeu's names); "globex" is a third.
"""

import dataclasses
import datetime
import types
import typing
import uuid
from functools import lru_cache

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.types import GroupId, TopicName, TransactionalId
from kio.static.constants import EntityType

from vkafka.protocol.codec import decode_body, encode_body
from vkafka.protocol.headers import codec_versions, payload_class
from vkafka.tenancy.fields import TABLE, F, field_paths
from vkafka.tenancy.naming import GROUP, TOPIC, TRANSACTION, InvalidName, Namespace, Prefixes
from vkafka.tenancy.rules import tenant_rules
from vkafka.tenancy.context import (
    OWNER, READ_ONLY_REASON, SHARED_OWNER_REASON, SHARED_TXN_REASON, Foreign,
    RequestContext)
from vkafka.tenancy.walker import (
    rewrite_request, rewrite_response)

TOPIC_ID = "topic id"
ACME_ID = uuid.UUID("00000000-0000-4000-8000-00000000ac3e")
GLOBEX_ID = uuid.UUID("00000000-0000-4000-8000-0000000610be")
UNKNOWN_ID = uuid.UUID("00000000-0000-4000-8000-00000000dead")
TOPIC_IDS = {ACME_ID: "acmeorders", GLOBEX_ID: "globexorders"}
"""The topic ids the gateway knows (``context`` gives it this map); no decoy
id may be one of them."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One API at *versions* (lowest, highest) with one message shape."""

    api: str
    key: int
    versions: tuple
    request: dict   # what acme's client sends: field -> value (entities as dicts)
    sent: dict      # field path -> the names and topic ids the broker gets
    response: dict  # what the broker answers, physical names of every tenant
    answered: dict  # field path -> the names and topic ids acme's client reads
    write: bool | str = False  # changes topics: read-only aliases refused (OWNER: shared too)
    undroppable: dict = None   # a response with a foreign name nothing can drop

    def __str__(self):
        return self.api


# Pieces several rows share, spelled out once.
GROUP_ONLY = dict(  # a request naming a group, an answer naming nothing
    request={"group_id": "readers"}, sent={"group_id": ["acmereaders"]},
    response={}, answered={})
GROUP_AND_TOPIC = dict(  # a group's offsets of one topic
    request={"group_id": "readers", "topics": [{"name": "orders"}]},
    sent={"group_id": ["acmereaders"], "topics.name": ["acmeorders"]})
TOPICS_ANSWER = dict(  # per-topic results: acme's and globex's
    response={"topics": [{"name": "acmeorders"}, {"name": "globexorders"}]},
    answered={"topics.name": ["orders"]})

CASES = [
    Case("Produce", 0, (3, 12), write=True,
         request={"transactional_id": "tx1",
                  "topic_data": [{"name": "orders", "partition_data": [{}]}]},
         sent={"transactional_id": ["acmetx1"], "topic_data.name": ["acmeorders"]},
         response={"responses": [{"name": "acmeorders", "partition_responses": [{}]},
                                 {"name": "globexorders"}]},
         answered={"responses.name": ["orders"]}),
    Case("Produce by topic id", 0, (13, 13), write=True,
         request={"transactional_id": "tx1",
                  "topic_data": [{"topic_id": ACME_ID, "partition_data": [{}]}]},
         sent={"transactional_id": ["acmetx1"], "topic_data.topic_id": [ACME_ID]},
         response={"responses": [{"topic_id": ACME_ID, "partition_responses": [{}]},
                                 {"topic_id": GLOBEX_ID}]},
         answered={"responses.topic_id": [ACME_ID]}),
    Case("Fetch", 1, (4, 6),
         request={"topics": [{"topic": "orders", "partitions": [{}]}]},
         sent={"topics.topic": ["acmeorders"]},
         response={"responses": [{"topic": "acmeorders"}, {"topic": "globexorders"}]},
         answered={"responses.topic": ["orders"]}),
    Case("Fetch in a session", 1, (7, 12),
         request={"topics": [{"topic": "orders"}],
                  "forgotten_topics_data": [{"topic": "archive"}]},
         sent={"topics.topic": ["acmeorders"], "forgotten_topics_data.topic": ["acmearchive"]},
         response={"responses": [{"topic": "acmeorders"}, {"topic": "globexorders"}]},
         answered={"responses.topic": ["orders"]}),
    Case("Fetch by topic id", 1, (13, 18),
         request={"topics": [{"topic_id": ACME_ID}],
                  "forgotten_topics_data": [{"topic_id": ACME_ID}]},
         sent={"topics.topic_id": [ACME_ID], "forgotten_topics_data.topic_id": [ACME_ID]},
         response={"responses": [{"topic_id": ACME_ID}, {"topic_id": GLOBEX_ID}]},
         answered={"responses.topic_id": [ACME_ID]}),
    Case("ListOffsets", 2, (1, 11),
         request={"topics": [{"name": "orders", "partitions": [{}]}]},
         sent={"topics.name": ["acmeorders"]},
         response={"topics": [{"name": "acmeorders"}, {"name": "globexorders"},
                              {"name": "acmeeuorders"}]},
         answered={"topics.name": ["orders"]}),
    Case("Metadata", 3, (0, 9),
         request={"topics": [{"name": "orders"}]},
         sent={"topics.name": ["acmeorders"]}, **TOPICS_ANSWER),
    Case("Metadata by topic id", 3, (10, 13),
         request={"topics": [{"name": "orders"}, {"topic_id": ACME_ID}]},
         sent={"topics.name": ["acmeorders"], "topics.topic_id": [ACME_ID]},
         response={"topics": [{"name": "acmeorders", "topic_id": ACME_ID},
                              {"name": "globexorders", "topic_id": GLOBEX_ID}]},
         answered={"topics.name": ["orders"], "topics.topic_id": [ACME_ID]}),
    Case("OffsetCommit", 8, (2, 9), **GROUP_AND_TOPIC, **TOPICS_ANSWER),
    Case("OffsetCommit by topic id", 8, (10, 10),
         request={"group_id": "readers", "topics": [{"topic_id": ACME_ID}]},
         sent={"group_id": ["acmereaders"], "topics.topic_id": [ACME_ID]},
         response={"topics": [{"topic_id": ACME_ID}, {"topic_id": GLOBEX_ID}]},
         answered={"topics.topic_id": [ACME_ID]}),
    Case("OffsetFetch", 9, (1, 7), **GROUP_AND_TOPIC, **TOPICS_ANSWER),
    Case("OffsetFetch of groups", 9, (8, 9),
         request={"groups": [{"group_id": "readers", "topics": [{"name": "orders"}]}]},
         sent={"groups.group_id": ["acmereaders"], "groups.topics.name": ["acmeorders"]},
         response={"groups": [
             {"group_id": "acmereaders",
              "topics": [{"name": "acmeorders"}, {"name": "globexorders"}]},
             {"group_id": "globexreaders", "topics": [{"name": "globexorders"}]}]},
         answered={"groups.group_id": ["readers"], "groups.topics.name": ["orders"]}),
    Case("OffsetFetch by topic id", 9, (10, 10),
         request={"groups": [{"group_id": "readers", "topics": [{"topic_id": ACME_ID}]}]},
         sent={"groups.group_id": ["acmereaders"], "groups.topics.topic_id": [ACME_ID]},
         response={"groups": [
             {"group_id": "acmereaders",
              "topics": [{"topic_id": ACME_ID}, {"topic_id": GLOBEX_ID}]},
             {"group_id": "globexreaders", "topics": [{"topic_id": GLOBEX_ID}]}]},
         answered={"groups.group_id": ["readers"], "groups.topics.topic_id": [ACME_ID]}),
    Case("JoinGroup", 11, (0, 9), **GROUP_ONLY),
    Case("Heartbeat", 12, (0, 4), **GROUP_ONLY),
    Case("LeaveGroup", 13, (0, 5), **GROUP_ONLY),
    Case("SyncGroup", 14, (0, 5), **GROUP_ONLY),
    Case("DescribeGroups", 15, (0, 6),
         request={"groups": ["readers"]},
         sent={"groups": ["acmereaders"]},
         response={"groups": [{"group_id": "acmereaders"}, {"group_id": "globexreaders"},
                              {"group_id": "acmeeureaders"}]},
         answered={"groups.group_id": ["readers"]}),
    Case("ListGroups", 16, (0, 5),
         request={}, sent={},
         response={"groups": [{"group_id": "acmereaders"}, {"group_id": "globexreaders"},
                              {"group_id": "acmeeureaders"}, {"group_id": "acme"}]},
         answered={"groups.group_id": ["readers"]}),
    Case("CreateTopics", 19, (2, 6),
         request={"topics": [{"name": "orders", "num_partitions": 1}]},
         sent={"topics.name": ["acmeorders"]}, **TOPICS_ANSWER),
    Case("CreateTopics with ids", 19, (7, 7),
         request={"topics": [{"name": "orders", "num_partitions": 1}]},
         sent={"topics.name": ["acmeorders"]},
         response={"topics": [{"name": "acmeorders", "topic_id": ACME_ID},
                              {"name": "globexorders", "topic_id": GLOBEX_ID}]},
         answered={"topics.name": ["orders"], "topics.topic_id": [ACME_ID]}),
    Case("DeleteTopics", 20, (1, 5), write=True,
         request={"topic_names": ["orders"]},
         sent={"topic_names": ["acmeorders"]},
         response={"responses": [{"name": "acmeorders"}, {"name": "globexorders"}]},
         answered={"responses.name": ["orders"]}),
    Case("DeleteTopics by topic id", 20, (6, 6), write=True,
         request={"topics": [{"name": "orders"}, {"topic_id": ACME_ID}]},
         sent={"topics.name": ["acmeorders"], "topics.topic_id": [ACME_ID]},
         response={"responses": [
             {"name": "acmeorders", "topic_id": ACME_ID, "error_message": "acmeorders?"},
             {"name": "globexorders", "topic_id": GLOBEX_ID}]},
         answered={"responses.name": ["orders"], "responses.topic_id": [ACME_ID]}),
    Case("DeleteRecords", 21, (0, 2), write=OWNER,
         request={"topics": [{"name": "orders", "partitions": [{"offset": 5}]}]},
         sent={"topics.name": ["acmeorders"]},
         response={"topics": [{"name": "acmeorders", "partitions": [{}]},
                              {"name": "globexorders", "partitions": [{}]}]},
         answered={"topics.name": ["orders"]}),
    Case("InitProducerId", 22, (0, 6),
         request={"transactional_id": "tx1"},
         sent={"transactional_id": ["acmetx1"]}, response={}, answered={}),
    Case("OffsetForLeaderEpoch", 23, (2, 4),
         request={"topics": [{"topic": "orders", "partitions": [{}]}]},
         sent={"topics.topic": ["acmeorders"]},
         response={"topics": [{"topic": "acmeorders"}, {"topic": "globexorders"}]},
         answered={"topics.topic": ["orders"]}),
    Case("AddPartitionsToTxn", 24, (0, 3), write=True,
         request={"v3_and_below_transactional_id": "tx1",
                  "v3_and_below_topics": [{"name": "orders", "partitions": [0]}]},
         sent={"v3_and_below_transactional_id": ["acmetx1"],
               "v3_and_below_topics.name": ["acmeorders"]},
         response={"results_by_topic_v3_and_below": [
             {"name": "acmeorders", "results_by_partition": [{}]},
             {"name": "globexorders", "results_by_partition": [{}]}]},
         answered={"results_by_topic_v3_and_below.name": ["orders"]}),
    Case("AddPartitionsToTxn batched", 24, (4, 5), write=True,
         request={"transactions": [{"transactional_id": "tx1",
                                    "topics": [{"name": "orders"}]}]},
         sent={"transactions.transactional_id": ["acmetx1"],
               "transactions.topics.name": ["acmeorders"]},
         response={"results_by_transaction": [
             {"transactional_id": "acmetx1",
              "topic_results": [{"name": "acmeorders", "results_by_partition": [{}]},
                                {"name": "globexorders"}]},
             {"transactional_id": "globextx1", "topic_results": [{"name": "globexorders"}]}]},
         answered={"results_by_transaction.transactional_id": ["tx1"],
                   "results_by_transaction.topic_results.name": ["orders"]}),
    Case("AddOffsetsToTxn", 25, (0, 4),
         request={"transactional_id": "tx1", "group_id": "readers"},
         sent={"transactional_id": ["acmetx1"], "group_id": ["acmereaders"]},
         response={}, answered={}),
    Case("EndTxn", 26, (0, 5),
         request={"transactional_id": "tx1", "committed": True},
         sent={"transactional_id": ["acmetx1"]}, response={}, answered={}),
    Case("TxnOffsetCommit", 28, (0, 5),
         request={"transactional_id": "tx1", "group_id": "readers",
                  "topics": [{"name": "orders"}]},
         sent={"transactional_id": ["acmetx1"], "group_id": ["acmereaders"],
               "topics.name": ["acmeorders"]}, **TOPICS_ANSWER),
    Case("CreatePartitions", 37, (0, 3), write=OWNER,
         request={"topics": [{"name": "orders", "count": 3}]},
         sent={"topics.name": ["acmeorders"]},
         response={"results": [{"name": "acmeorders", "error_message": "acmeorders: 3"},
                               {"name": "globexorders", "error_message": "globexorders"}]},
         answered={"results.name": ["orders"]}),
    Case("DeleteGroups", 42, (0, 2),
         request={"groups_names": ["readers"]},
         sent={"groups_names": ["acmereaders"]},
         response={"results": [{"group_id": "acmereaders"}, {"group_id": "globexreaders"}]},
         answered={"results.group_id": ["readers"]}),
    Case("OffsetDelete", 47, (0, 0), **GROUP_AND_TOPIC, **TOPICS_ANSWER),
    Case("DescribeProducers", 61, (0, 0),
         request={"topics": [{"name": "orders", "partition_indexes": [0]}]},
         sent={"topics.name": ["acmeorders"]},
         response={"topics": [
             {"name": "acmeorders", "partitions": [{"error_message": "in acmeorders"}]},
             {"name": "globexorders", "partitions": [{}]}]},
         answered={"topics.name": ["orders"]}),
    Case("DescribeTransactions", 65, (0, 0),
         request={"transactional_ids": ["tx1"]},
         sent={"transactional_ids": ["acmetx1"]},
         response={"transaction_states": [
             {"transactional_id": "acmetx1",
              "topics": [{"topic": "acmeorders"}, {"topic": "globexorders"}]},
             {"transactional_id": "globextx1", "topics": [{"topic": "globexorders"}]}]},
         answered={"transaction_states.transactional_id": ["tx1"],
                   "transaction_states.topics.topic": ["orders"]}),
    Case("ListTransactions", 66, (0, 2),
         request={}, sent={},
         response={"transaction_states": [{"transactional_id": "acmetx1"},
                                          {"transactional_id": "globextx1"}]},
         answered={"transaction_states.transactional_id": ["tx1"]}),
    Case("ConsumerGroupHeartbeat", 68, (0, 1),
         request={"group_id": "readers", "subscribed_topic_names": ["orders"],
                  "topic_partitions": [{"topic_id": ACME_ID}]},
         sent={"group_id": ["acmereaders"], "subscribed_topic_names": ["acmeorders"],
               "topic_partitions.topic_id": [ACME_ID]},
         response={"assignment": {"topic_partitions": [{"topic_id": ACME_ID},
                                                       {"topic_id": GLOBEX_ID}]}},
         answered={"assignment.topic_partitions.topic_id": [ACME_ID]}),
    Case("ConsumerGroupDescribe", 69, (0, 1),
         request={"group_ids": ["readers"]},
         sent={"group_ids": ["acmereaders"]},
         response={"groups": [
             {"group_id": "acmereaders", "members": [{
                 "subscribed_topic_names": ["acmeorders", "globexorders"],
                 "assignment": {"topic_partitions": [
                     {"topic_id": ACME_ID, "topic_name": "acmeorders"},
                     {"topic_id": GLOBEX_ID, "topic_name": "globexorders"}]},
                 "target_assignment": {"topic_partitions": [
                     {"topic_id": GLOBEX_ID, "topic_name": "globexorders"},
                     {"topic_id": ACME_ID, "topic_name": "acmeorders"}]}}]},
             {"group_id": "globexreaders"}]},
         answered={"groups.group_id": ["readers"],
                   "groups.members.subscribed_topic_names": ["orders"],
                   "groups.members.assignment.topic_partitions.topic_id": [ACME_ID],
                   "groups.members.assignment.topic_partitions.topic_name": ["orders"],
                   "groups.members.target_assignment.topic_partitions.topic_id": [ACME_ID],
                   "groups.members.target_assignment.topic_partitions.topic_name":
                       ["orders"]}),
    Case("DescribeTopicPartitions", 75, (0, 0),
         request={"topics": [{"name": "orders"}], "cursor": {"topic_name": "orders"}},
         sent={"topics.name": ["acmeorders"], "cursor.topic_name": ["acmeorders"]},
         response={"topics": [{"name": "acmeorders", "topic_id": ACME_ID},
                              {"name": "globexorders", "topic_id": GLOBEX_ID}],
                   "next_cursor": {"topic_name": "acmeorders"}},
         answered={"topics.name": ["orders"], "topics.topic_id": [ACME_ID],
                   "next_cursor.topic_name": ["orders"]},
         undroppable={"next_cursor": {"topic_name": "globexorders"}}),
]

REQUIRED = {2, 8, 9, 11, 12, 13, 15, 16, 21, 22, 23, 24, 25, 26, 28, 37, 42, 47, 61,
            65, 75}
"""The APIs this table must cover at least; it covers every API offered to
tenants whose messages carry names (the test at the end checks)."""


# --- messages built from rows -------------------------------------------------

_KINDS = {TopicName: TOPIC, GroupId: GROUP, TransactionalId: TRANSACTION}
_MOMENT = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def _peel(hint):
    """(type, a tuple of them, may be None) of a kio field's type hint."""
    many = nullable = False
    while True:
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            nullable, hint = True, args[0]
        elif origin is tuple:
            many, hint = True, typing.get_args(hint)[0]
        else:
            return hint, many, nullable


@lru_cache(maxsize=None)
def _fields(cls):
    """(field name, peeled type, a tuple, nullable, name kind or None, has no
    default) of each field of *cls*."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        base, many, nullable = _peel(hints[f.name])
        kind = _KINDS.get(base)
        if base is uuid.UUID and f.name == "topic_id":
            kind = TOPIC_ID
        required = f.default is dataclasses.MISSING and \
            f.default_factory is dataclasses.MISSING
        found.append((f.name, base, many, nullable, kind, required))
    return tuple(found)


def build(cls, spec):
    """The kio entity *cls* with *spec*'s values (entities given as dicts),
    every other field its default, or else a zero of its type."""
    known = {name for name, *_ in _fields(cls)}
    assert set(spec) <= known, f"{cls.__name__} has no {set(spec) - known}"
    values = {}
    for name, base, many, nullable, _, required in _fields(cls):
        if name in spec:
            given = spec[name]
            values[name] = tuple(_value(base, v) for v in given) if many \
                else _value(base, given)
        elif required:
            values[name] = () if many else None if nullable else _zero(base)
    return cls(**values)


def _value(base, given):
    if dataclasses.is_dataclass(base):
        return build(base, given)
    if issubclass(base, int) and not isinstance(given, bool):
        return base(given)
    return given


def _zero(base):
    if dataclasses.is_dataclass(base):
        return build(base, {})
    for kind, zero in ((bool, False), (int, 0), (str, ""), (bytes, b""),
                       (datetime.timedelta, datetime.timedelta(0))):
        if issubclass(base, kind):
            return base(zero) if kind is int else zero
    if issubclass(base, datetime.datetime):
        return _MOMENT
    if base is uuid.UUID:
        return uuid.UUID(int=0)
    raise TypeError(f"no zero value for {base}")


def on_the_wire(value, key, version, side):
    """*value* encoded and decoded again, as the gateway reads it."""
    return decode_body(key, version, side, encode_body(value), 0)


def request_of(case, version):
    cls = payload_class(case.key, version, EntityType.request)
    return on_the_wire(build(cls, case.request), case.key, version, EntityType.request)


def response_of(case, version, spec=None):
    cls = payload_class(case.key, version, EntityType.response)
    value = build(cls, case.response if spec is None else spec)
    return on_the_wire(value, case.key, version, EntityType.response)


# --- names in messages ---------------------------------------------------------

def rename(value, change, path=""):
    """*value* with ``change(kind, path, name)`` for each name and topic id in it."""
    changes = {}
    for name, base, many, _, kind, _ in _fields(type(value)):
        current, here = getattr(value, name), path + name
        if current is None or not (kind or dataclasses.is_dataclass(base)):
            continue
        one = (lambda v: change(kind, here, v)) if kind else \
            (lambda v: rename(v, change, here + "."))
        changes[name] = tuple(map(one, current)) if many else one(current)
    return dataclasses.replace(value, **changes)


def occurrences(value):
    """[(kind, path, name)] of every name and topic id in *value*, in order."""
    found = []
    rename(value, lambda kind, path, v: found.append((kind, path, v)) or v)
    return found


def names(value):
    """Field path -> the names (and topic ids) at it, in order."""
    found = {}
    for _, path, v in occurrences(value):
        found.setdefault(path, []).append(v)
    return found


def name_paths(key, version, side):
    """The paths the field table classifies as names or topic ids."""
    classes = getattr(TABLE[key], side)
    return {p for p in field_paths(key, version, side)
            if classes.get(p) in (F.TOPIC_NAME, F.GROUP_ID, F.TRANSACTIONAL_ID, F.TOPIC_ID)}


# --- the tenants and the round trip -------------------------------------------

def tenants():
    """acme and globex, and acmeeu's longer prefix, known to each other."""
    prefixes = Prefixes()
    acme = Namespace("acme", "acme", prefixes)
    Namespace("acmeeu", "acmeeu", prefixes)
    return acme, Namespace("globex", "globex", prefixes)


def context(acme, write=False):
    """A request's context; the topology knows acme's "orders" (whatever topic
    it maps to now: an alias moves it) by ACME_ID, globex's by GLOBEX_ID."""
    return RequestContext(acme, {**TOPIC_IDS, ACME_ID: acme.physical(TOPIC, "orders")},
                          write)


def literal(kind, logical):
    """How the rows' responses spell acme's *logical* name (or topic id)."""
    return logical if kind == TOPIC_ID else "acme" + logical


def broker_answer(case, version, swaps):
    """The row's response with its names swapped as *swaps* says
    ((kind, name) -> name): decoys, or an alias's physical topic."""
    return rename(response_of(case, version), lambda kind, _, v: swaps.get((kind, v), v))


def refused_round_trip(case, version, acme, client_name, write=False):
    """Acme's client sends the row's request with ``client_name(kind, name)``
    for each of its names; the broker answers the row's response under the
    names it got.  (request context, the client's request, what the broker
    got, what the client reads)."""
    rctx = context(acme, write)
    mine = request_of(case, version)
    asked = rename(mine, lambda kind, _, v: client_name(kind, v))
    sent = rewrite_request(asked, rctx)
    decoys = {}
    for (kind, _, logical), (_, _, decoy) in zip(occurrences(mine), occurrences(sent)):
        decoys.setdefault((kind, literal(kind, logical)), decoy)
    answer = rewrite_response(broker_answer(case, version, decoys), rctx)
    return rctx, asked, sent, answer


def as_refused(value, refused, code=None):
    """The answer *value* (acme's, logical) as the client reads it when the
    names in *refused* ((kind, name) -> (the client's name, why)) were
    refused: the client's names; in each entity standing for one, the reason
    as its error message and *code* (if any) in every error code in it."""
    changes, why = {}, None
    for name, base, many, _, kind, _ in _fields(type(value)):
        current = getattr(value, name)
        if current is None or not (kind or dataclasses.is_dataclass(base)):
            continue
        if kind:
            items = [refused.get((kind, v), (v, None))[0]
                     for v in (current if many else (current,))]
            if not many and (kind, current) in refused:
                why = why or refused[(kind, current)][1]
        else:
            items = [as_refused(v, refused, code) for v in (current if many else (current,))]
        changes[name] = tuple(items) if many else items[0]
    value = dataclasses.replace(value, **changes)
    if why is not None and code is not None:
        return _with_error(value, code, why)
    if why is not None and "error_message" in {n for n, *_ in _fields(type(value))}:
        return dataclasses.replace(value, error_message=why)
    return value


def _with_error(value, code, why):
    changes = {}
    for name, base, many, *_ in _fields(type(value)):
        current = getattr(value, name)
        if name in ("error_code", "partition_error_code"):  # AddPartitionsToTxn's
            changes[name] = ErrorCode(code)
        elif name == "error_message":
            changes[name] = why
        elif dataclasses.is_dataclass(base) and current is not None:
            items = [_with_error(v, code, why) for v in (current if many else (current,))]
            changes[name] = tuple(items) if many else items[0]
    return dataclasses.replace(value, **changes)


def reason(acme, kind, name):
    try:
        acme.physical(kind, name)
    except InvalidName as e:
        return str(e)
    raise AssertionError(f"{kind} {name!r} is valid in {acme.name}")


# Refused names: the client's name for each of its names in the row's request.
NAMERS = {
    "invalid": lambda kind, name: (
        UNKNOWN_ID if kind == TOPIC_ID else f"{name}?" if kind == TOPIC else ""),
    "in acmeeu's prefix": lambda kind, name: (
        GLOBEX_ID if kind == TOPIC_ID else f"eu{name}"),
}


def endpoints(cases):
    """pytest parameters: each case at the lowest and highest version of its range."""
    return [pytest.param(case, version, id=f"{case.api}-v{version}")
            for case in cases for version in sorted(set(case.versions))]


def assert_nothing_foreign(answer, asked=None):
    """Not a name nor a topic id of globex or acmeeu anywhere in *answer*
    (but for what the client itself *asked*: its own words come back), and
    no physical name of acme either (error messages scrubbed too)."""
    shown = repr(answer)
    assert "globex" not in shown and "acme" not in shown
    assert str(GLOBEX_ID) not in shown or str(GLOBEX_ID) in repr(asked)


def names_topics(case):
    """Whether the row's request names a topic (by name or id)."""
    return any(kind in (TOPIC, TOPIC_ID) for kind, _, _ in occurrences(
        request_of(case, case.versions[0])))


# --- the tests -----------------------------------------------------------------

@pytest.mark.parametrize("case, version", endpoints(CASES))
def test_request_names_made_physical(case, version):
    """The broker gets acme's prefix on every name, topic ids it knows, and
    nothing else changed."""
    acme, _ = tenants()
    rctx = context(acme, case.write)
    asked = request_of(case, version)
    sent = rewrite_request(asked, rctx)
    assert names(sent) == case.sent
    assert rctx.refusals == 0 and not rctx.decoy_names and not rctx.decoy_ids
    back = rename(sent, lambda kind, _, v: v if kind == TOPIC_ID else acme.logical(kind, v))
    assert back == asked
    assert on_the_wire(sent, case.key, version, EntityType.request) == sent


@pytest.mark.parametrize("case, version", endpoints(CASES))
def test_response_names_made_logical_others_dropped(case, version):
    """Acme's client reads its own names, logical; globex's and acmeeu's
    entities are gone (and nothing of theirs shows anywhere)."""
    acme, _ = tenants()
    rctx = context(acme, case.write)
    rewrite_request(request_of(case, version), rctx)
    answer = rewrite_response(response_of(case, version), rctx)
    assert names(answer) == case.answered
    assert_nothing_foreign(answer)
    assert on_the_wire(answer, case.key, version, EntityType.response) == answer


@pytest.mark.parametrize("case, version", endpoints(CASES))
def test_other_tenants_physical_names_stay_in_acme(case, version):
    """Globex's physical names, sent by acme's client, are names in acme's
    namespace like any other: the broker gets "acmeglobex...", never globex's."""
    acme, globex = tenants()
    asked = rename(request_of(case, version), lambda kind, _, v: (
        v if kind == TOPIC_ID else globex.physical(kind, v)))
    sent = rewrite_request(asked, context(acme, case.write))
    expected = {}
    for kind, path, v in occurrences(asked):
        expected.setdefault(path, []).append(v if kind == TOPIC_ID else "acme" + v)
    assert names(sent) == expected
    for kind, _, v in occurrences(sent):
        assert kind == TOPIC_ID or globex.logical(kind, v) is None


@pytest.mark.parametrize("namer", NAMERS)
@pytest.mark.parametrize("case, version", endpoints(CASES))
def test_refused_names_sent_as_decoys(case, version, namer):
    """A name acme may not use reaches the broker as a decoy nobody owns (a
    topic id as an id nobody has); the answer under the decoy comes back
    with the client's own name and, where the entity has an error message,
    the reason; the broker's error codes are kept."""
    acme, globex = tenants()
    client_name = NAMERS[namer]
    rctx, asked, sent, answer = refused_round_trip(case, version, acme, client_name)
    for (kind, _, theirs), (_, path, decoy) in zip(occurrences(asked), occurrences(sent)):
        if kind == TOPIC_ID:
            assert decoy not in TOPIC_IDS and decoy != theirs, path
        else:
            assert decoy.startswith("!vkafka-refused-"), (path, decoy)
            assert not any(ns.owns(kind, decoy) for ns in (acme, globex)), path
    assert rctx.refusals == sum(kind != TOPIC_ID for kind, _, _ in occurrences(asked))
    refused = {(kind, name): (client_name(kind, name),
                              None if kind == TOPIC_ID else
                              reason(acme, kind, client_name(kind, name)))
               for kind, _, name in occurrences(request_of(case, version))}
    normal = rewrite_response(response_of(case, version), context(acme))
    assert answer == as_refused(normal, refused)
    assert_nothing_foreign(answer, asked)
    assert on_the_wire(answer, case.key, version, EntityType.response) == answer


@pytest.mark.parametrize("case, version", endpoints(c for c in CASES if names_topics(c)))
def test_read_only_alias(case, version):
    """acme's "orders" as a read-only alias of "shared.orders": APIs that only
    read go to the aliased topic (by name or by its id); APIs that change
    topics send decoys and answer TOPIC_AUTHORIZATION_FAILED with the reason."""
    acme, _ = tenants()
    acme.set_alias("orders", "shared.orders", read_only=True)
    if not case.write:
        rctx = context(acme)
        sent = rewrite_request(request_of(case, version), rctx)
        assert names(sent) == {p: ["shared.orders" if v == "acmeorders" else v
                                   for v in vs] for p, vs in case.sent.items()}
        answer = rewrite_response(broker_answer(
            case, version, {(TOPIC, "acmeorders"): "shared.orders"}), rctx)
        assert names(answer) == case.answered
        return
    rctx, _, sent, answer = refused_round_trip(
        case, version, acme, lambda kind, name: name, write=True)
    topics = [v for kind, _, v in occurrences(sent) if kind in (TOPIC, TOPIC_ID)]
    assert topics and all(v not in TOPIC_IDS if isinstance(v, uuid.UUID)
                          else v.startswith("!vkafka-refused-") for v in topics)
    assert rctx.refusals == len(topics)
    why = READ_ONLY_REASON.format("orders")
    refused = {(TOPIC, "orders"): ("orders", why), (TOPIC_ID, ACME_ID): (ACME_ID, why)}
    normal = rewrite_response(response_of(case, version), context(tenants()[0]))
    assert answer == as_refused(normal, refused, ErrorCode.topic_authorization_failed)
    assert answer != normal


@pytest.mark.parametrize("case, version", endpoints(c for c in CASES if c.write))
def test_writable_alias(case, version):
    """acme's "orders" as a writable alias of "shared.orders", a topic other
    virtual clusters write too: APIs that change it as its owner would
    (DeleteRecords, CreatePartitions) and transactions (AddPartitionsToTxn:
    its markers) are refused with the reason; a plain write goes to it."""
    acme, _ = tenants()
    acme.set_alias("orders", "shared.orders")
    transaction = case.key == 24
    if case.write is not OWNER and not transaction:
        rctx = context(acme, case.write)
        sent = rewrite_request(request_of(case, version), rctx)
        assert rctx.refusals == 0
        assert {v for kind, _, v in occurrences(sent) if kind in (TOPIC, TOPIC_ID)} \
            <= {"shared.orders", ACME_ID}
        return
    rctx = context(acme, case.write)
    rctx.transactional = transaction
    sent = rewrite_request(request_of(case, version), rctx)
    topics = [v for kind, _, v in occurrences(sent) if kind in (TOPIC, TOPIC_ID)]
    assert topics and all(v not in TOPIC_IDS if isinstance(v, uuid.UUID)
                          else v.startswith("!vkafka-refused-") for v in topics)
    reason = (SHARED_TXN_REASON if transaction else SHARED_OWNER_REASON).format("orders")
    reasons = {refusal.reason for _, refusal in rctx.all_refusals()} | {
        why for _, why, _ in rctx.decoy_ids.values()}
    assert reasons == {reason}


def named_by_id(case):
    """The paths of the row's response entities that carry a topic name and
    its topic id side by side."""
    found = occurrences(response_of(case, case.versions[0]))
    with_ids = {path.rpartition(".")[0] for kind, path, _ in found if kind == TOPIC_ID}
    return {path for kind, path, _ in found
            if kind == TOPIC and path.rpartition(".")[0] in with_ids}


@pytest.mark.parametrize("case, version", endpoints(c for c in CASES if named_by_id(c)))
def test_foreign_topic_id_with_an_empty_name_dropped(case, version):
    """An entity answering by topic id with an empty name (as an answer by id
    may be spelled) is acme's only if its id is: globex's entity, its name
    emptied, is dropped as it is with its name."""
    acme, _ = tenants()
    paths = named_by_id(case)
    answer = rewrite_response(rename(response_of(case, version), lambda kind, path, v: (
        "" if path in paths and v.startswith("globex") else v)), context(acme))
    assert names(answer) == case.answered
    assert_nothing_foreign(answer)


@pytest.mark.parametrize("case, version", endpoints(
    c for c in CASES if c.undroppable))
def test_foreign_name_that_cannot_be_dropped_rejects_the_response(case, version):
    """A foreign name outside any list (a paging cursor) cannot be dropped:
    the whole response is refused (the gateway closes the connection)."""
    acme, _ = tenants()
    with pytest.raises(Foreign):
        rewrite_response(response_of(case, version, case.undroppable), context(acme))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rows_name_every_name_field(case):
    """At every version of its range, a row fills each field the field table
    classifies as a name or topic id, in its request and its response."""
    for version in range(case.versions[0], case.versions[1] + 1):
        assert set(names(request_of(case, version))) == \
            name_paths(case.key, version, "request"), version
        assert set(names(response_of(case, version))) == \
            name_paths(case.key, version, "response"), version


def test_rows_cover_every_api_with_names_and_version():
    """Every API offered to tenants whose messages carry names or topic ids
    has rows, and each API's rows cover the versions kio models, once each;
    write flags are the tenant table's."""
    keys = {case.key for case in CASES}
    tenant = tenant_rules()
    with_names = {key for key, rule in tenant.items() if key in TABLE and any(
        name_paths(key, v, side) for v in range(rule.min_version, rule.max_version + 1)
        for side in ("request", "response"))}
    assert REQUIRED <= keys
    assert with_names == keys
    for key in keys:
        covered = sorted(v for case in CASES if case.key == key
                         for v in range(case.versions[0], case.versions[1] + 1))
        low, high = codec_versions(key)
        assert covered == list(range(low, high + 1)), key
        assert {case.write for case in CASES if case.key == key} == {tenant[key].write}


def test_writable_alias_configs_refused():
    """Changing a writable alias's configs (retention of a topic others
    write too) is the operator's: the resource goes as a decoy, refused."""
    from kio.schema.incremental_alter_configs.v1 import request as m
    from kio.static.primitive import i8
    from vkafka.tenancy.rules.configs import configs_request
    from vkafka.tenancy.services import Services
    acme, _ = tenants()
    acme.set_alias("orders", "shared.orders")
    rctx = context(acme, OWNER)
    out = configs_request(False)(Services(None, None, {}), rctx,
                                 m.IncrementalAlterConfigsRequest(
        validate_only=False, resources=(m.AlterConfigsResource(
            resource_type=i8(2), resource_name="orders", configs=(m.AlterableConfig(
                name="retention.ms", config_operation=i8(0), value="1"),)),)))
    [sent] = out.resources
    assert sent.resource_name.startswith("!vkafka-refused-")
    assert [r.reason for _, r in rctx.all_refusals()] == [
        SHARED_OWNER_REASON.format("orders")]


def test_refusals_looked_up_by_name():
    """An answer naming thousands of refused names finds each one's reason by
    (kind, logical name), not by searching every refusal (quadratic: 11,000
    names held the loop 15 s); a decoy made after a lookup is found too."""
    from vkafka.tenancy.context import RequestContext
    from vkafka.tenancy.vclusters import VirtualClusters
    rctx = RequestContext(VirtualClusters().namespace("acme"), {})
    for i in range(3000):
        rctx.decoy_name(TOPIC, f"bad{i}", f"reason {i}", 17)
    assert rctx.refusal_of(TOPIC, "bad2999").reason == "reason 2999"
    assert rctx.refusal_of(GROUP, "bad1") is None
    assert rctx._by_logical is not None  # built once, kept
    rctx.decoy_name(GROUP, "g", "no", 30)
    assert rctx.refusal_of(GROUP, "g").code == 30
