# -*- test-case-name: tests.test_tenant_splice,tests.test_consumer_protocol,tests.test_fields -*-
"""Generic rewriting of decoded Kafka messages by the names they carry.

kio types every topic name, group id and transactional id field
(``TopicName``, ``GroupId``, ``TransactionalId``), and topic ids are
``uuid`` fields named ``topic_id``.  So one walker, driven by the schema's
types, rewrites requests to physical names and responses back to logical
names for every API, instead of a hand-written handler per API and version.

Requests: a name that cannot be mapped (invalid, too long, another tenant's)
and a topic id that is not the tenant's are replaced by *decoys*: a topic
name with a character Kafka refuses, a random topic id.  The broker then
answers with its own per-API error (INVALID_TOPIC_EXCEPTION,
UNKNOWN_TOPIC_ID, ...) and touches nothing; the response walk puts the
client's own name or id back and our explanation in the error message.

Responses: entities that name something the tenant does not own are dropped
from their list (that is how listing APIs are filtered); names are mapped
back to logical; broker error messages are scrubbed of the prefix.
"""

import dataclasses
import types
import typing
import uuid
from functools import lru_cache
from types import MappingProxyType

from kio.schema.types import GroupId, TopicName, TransactionalId

from .naming import GROUP, TOPIC, TRANSACTION, InvalidName

ZERO_UUID = uuid.UUID(int=0)
_NONE = MappingProxyType({})  # no concentrated topics: no dict per request
TOPIC_AUTHORIZATION_FAILED = 29
READ_ONLY_REASON = "topic {!r} is read-only in this virtual cluster"
_KINDS = {TopicName: TOPIC, GroupId: GROUP, TransactionalId: TRANSACTION}
_NAME, _ID, _NESTED, _MESSAGE = "name", "id", "nested", "message"


@dataclasses.dataclass(frozen=True, slots=True)
class FieldPlan:
    name: str
    role: str          # _NAME, _ID, _NESTED or _MESSAGE
    kind: str | None   # TOPIC, GROUP, TRANSACTION for names
    many: bool         # a tuple of values


def _unwrap(hint):
    """(base type, is a tuple) of a field's type hint, Optional removed."""
    many = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
        origin = typing.get_origin(hint)
    if origin is tuple:
        many = True
        hint = typing.get_args(hint)[0]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = [a for a in typing.get_args(hint) if a is not type(None)][0]
    return hint, many


@lru_cache(maxsize=None)
def plan(cls):
    """The fields of *cls* that the walker must visit (empty: skip the subtree)."""
    hints = typing.get_type_hints(cls)
    result = []
    for f in dataclasses.fields(cls):
        base, many = _unwrap(hints[f.name])
        if base in _KINDS:
            result.append(FieldPlan(f.name, _NAME, _KINDS[base], many))
        elif base is uuid.UUID and f.name == "topic_id":
            result.append(FieldPlan(f.name, _ID, TOPIC, many))
        elif dataclasses.is_dataclass(base) and plan(base):
            result.append(FieldPlan(f.name, _NESTED, None, many))
        elif f.name == "error_message" and base is str:
            result.append(FieldPlan(f.name, _MESSAGE, None, False))
    return tuple(result)


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a name in a request was not forwarded: the client's own name, our
    explanation and the Kafka error code to answer with (None: the broker's)."""
    logical: str
    reason: str | None
    code: int | None = None


class Rejected(Exception):
    """A request or response the tenant rules will not pass, nor answer in
    Kafka's terms: the connection is closed with this reason.  Only these
    (and malformed bytes) close a connection quietly; any other exception is
    a bug and surfaces."""


class Foreign(Exception):
    """Raised inside a response walk: this entity is not the tenant's."""


class RequestContext:
    """What one request's rewrite left for its response: decoys and reasons."""

    __slots__ = ("namespace", "topic_ids", "decoy_names", "decoy_ids", "refusals",
                 "custom", "write", "concentrated", "concentration", "answer",
                 "on_answer", "produced", "sessions")

    def __init__(self, namespace, topic_ids, write=False):
        self.namespace = namespace
        self.topic_ids = topic_ids
        self.decoy_names = {}  # (kind, decoy) -> Refusal (ids: a list of them)
        self.decoy_ids = {}    # decoy uuid -> (client's uuid, reason, error code)
        self.refusals = 0
        self.custom = None
        self.concentrated = _NONE
        """Virtual name -> Alias of the concentrated topics this request names
        (filled by ``note_concentrated``)."""
        self.concentration = None
        """What the concentration layer left for the response (an Exchange)."""
        self.answer = None
        """A response body the gateway sends itself instead of forwarding
        (a cached Metadata answer)."""
        self.on_answer = None
        """Called with the rewritten response body, to keep it for reuse."""
        self.produced = None
        """(acks, records) of a Produce request, read while it was rewritten."""
        self.write = write
        """The request changes topics: read-only aliases are refused."""
        self.sessions = None
        """Fetch: the connection's FetchSessions (tenancy/sessions.py)."""

    # requests

    def to_physical(self, kind, logical):
        if self.write and self.namespace.read_only(kind, logical):
            return self.decoy_name(kind, logical, READ_ONLY_REASON.format(logical),
                                   TOPIC_AUTHORIZATION_FAILED)
        try:
            physical = self.namespace.physical(kind, logical)
        except InvalidName as e:
            return self.decoy_name(kind, logical, str(e))
        if kind == TOPIC:
            self._note_concentrated(logical, physical)
        return physical

    def _note_concentrated(self, logical, physical):
        alias = self.namespace.aliases.get(logical)
        if alias is not None and alias.concentrated:
            self.note_concentrated({physical: alias})

    def note_concentrated(self, aliases):
        """Send this request through the concentration layer for *aliases*
        (virtual name -> Alias)."""
        if aliases:
            if self.concentrated is _NONE:
                self.concentrated = {}
            self.concentrated.update(aliases)

    def decoy_name(self, kind, logical, reason, code=None):
        """A name no tenant can produce, standing for a refused one.

        Topics: a name with '!', which Kafka never accepts as a topic name.
        Group and transactional ids: '!vkafka-refused-<random>!', unique to
        this request (no tenant prefix starts with '!'), so two tenants'
        refused requests never meet on one physical group or transaction.
        Where an unknown id would make the broker create state (a join, a
        simple offset commit, a new transactional producer), the rule turns
        it into a request the broker refuses (``empty_decoy``)."""
        refusal = Refusal(logical, reason, code)
        if kind == TOPIC:
            decoy = f"!vkafka-refused-{len(self.decoy_names)}"
        else:
            decoy = f"!vkafka-refused-{uuid.uuid4().hex}!"
        self.decoy_names[(kind, decoy)] = refusal
        self.refusals += 1
        return decoy

    def empty_decoy(self, kind, decoy):
        """The decoy *decoy* as the empty string, which JoinGroup,
        ConsumerGroupHeartbeat and InitProducerId refuse (INVALID_GROUP_ID,
        INVALID_REQUEST) where any other unknown id would be created."""
        refusal = self.decoy_names.pop((kind, decoy))
        self.decoy_names.setdefault((kind, ""), []).append(refusal)
        return ""

    def refusal(self, kind, name):
        """The Refusal a decoy *name* of *kind* stands for, or None (refused
        ids made empty are handed out in turn: responses list entries in
        request order)."""
        found = self.decoy_names.get((kind, name))
        if isinstance(found, list):
            if len(found) > 1:
                found.append(found.pop(0))
                return found[-1]
            return found[0]
        return found

    def all_refusals(self):
        """(kind, Refusal) of every refused name."""
        for (kind, _), found in self.decoy_names.items():
            for refusal in (found if isinstance(found, list) else (found,)):
                yield kind, refusal

    def check_topic_id(self, topic_id):
        if topic_id is None or topic_id == ZERO_UUID:
            return topic_id
        physical = self.topic_ids.get(topic_id)
        logical = None if physical is None else self.namespace.logical(TOPIC, physical)
        if logical is not None:
            if not (self.write and self.namespace.read_only(TOPIC, logical)):
                self._note_concentrated(logical, physical)
                return topic_id
            refusal = (READ_ONLY_REASON.format(logical), TOPIC_AUTHORIZATION_FAILED)
        else:
            refusal = (None, None)
        decoy = uuid.uuid4()
        self.decoy_ids[decoy] = (topic_id, *refusal)
        if refusal[1] is not None:
            self.refusals += 1
        return decoy

    # responses

    def owns_topic_id(self, raw):
        """Whether the 16-byte topic id *raw* names one of the tenant's topics."""
        physical = self.topic_ids.get(uuid.UUID(bytes=bytes(raw)))
        return physical is not None and self.namespace.owns(TOPIC, physical)

    def check_streamed_id(self, raw):
        """FetchStream's check: a foreign topic id stops the response before
        any of that topic's bytes are forwarded."""
        if not self.owns_topic_id(raw):
            raise Rejected("a fetch response names a topic that is not the "
                             "tenant's")

    def to_logical(self, kind, physical):
        if physical is None:
            return physical
        refused = self.refusal(kind, physical)
        if refused is not None:
            return refused.logical
        if physical == "" and kind == TOPIC:
            return physical  # no topic (a Metadata answer by id)
        logical = self.namespace.logical(kind, physical)
        if logical is None:
            raise Foreign(physical)
        return logical

    def restore_topic_id(self, topic_id):
        if topic_id is None or topic_id == ZERO_UUID:
            return topic_id
        original = self.decoy_ids.get(topic_id)
        if original is not None:
            return original[0]
        physical = self.topic_ids.get(topic_id)
        if physical is None or not self.namespace.owns(TOPIC, physical):
            raise Foreign(topic_id)
        return topic_id


def rewrite_request(value, ctx):
    """*value* with every logical name made physical and every topic id checked."""
    changes = {}
    for fp in plan(type(value)):
        current = getattr(value, fp.name)
        if current is None:
            continue
        if fp.role == _NAME:
            new = (tuple(ctx.to_physical(fp.kind, v) for v in current) if fp.many
                   else ctx.to_physical(fp.kind, current))
        elif fp.role == _ID:
            new = (tuple(ctx.check_topic_id(v) for v in current) if fp.many
                   else ctx.check_topic_id(current))
        elif fp.role == _NESTED:
            new = (tuple(rewrite_request(v, ctx) for v in current) if fp.many
                   else rewrite_request(current, ctx))
        else:
            continue
        if _changed(new, current, fp):
            changes[fp.name] = new
    return dataclasses.replace(value, **changes) if changes else value


def rewrite_response(value, ctx):
    """*value* with names made logical; entities of other tenants dropped.

    :raises Foreign: if *value* itself names something not the tenant's.
    """
    changes = {}
    fields = plan(type(value))
    learn_name = learn_id = None
    for fp in fields:
        current = getattr(value, fp.name)
        if current is None:
            continue
        if fp.role == _NAME:
            if fp.kind == TOPIC and not fp.many:
                learn_name = current
            if fp.many:
                new = []
                for v in current:
                    try:
                        new.append(ctx.to_logical(fp.kind, v))
                    except Foreign:
                        pass
                new = tuple(new)
            else:
                new = ctx.to_logical(fp.kind, current)
        elif fp.role == _ID:
            if not fp.many:
                learn_id = current
            new = (tuple(_keep(ctx.restore_topic_id, current)) if fp.many
                   else current)  # single ids are restored below
        elif fp.role == _NESTED:
            if fp.many:
                new = tuple(_keep(lambda v: rewrite_response(v, ctx), current))
            else:
                new = rewrite_response(current, ctx)
        else:  # _MESSAGE
            new = ctx.namespace.scrub(current)
        if _changed(new, current, fp):
            changes[fp.name] = new
    if learn_id is not None and learn_id != ZERO_UUID:
        if learn_name and not learn_name.startswith("!") and learn_id not in ctx.decoy_ids:
            ctx.topic_ids[learn_id] = learn_name
        if learn_name is None or learn_id in ctx.decoy_ids:
            changes["topic_id"] = ctx.restore_topic_id(learn_id)
    value = dataclasses.replace(value, **changes) if changes else value
    if ctx.refusals:
        reason, code = _refusal(ctx, changes, learn_id, fields, value)
        if code is not None:
            value = _with_error(value, code, reason)
        elif reason is not None and hasattr(value, "error_message"):
            value = dataclasses.replace(value, error_message=reason)
    return value


def _changed(new, current, fp):
    if fp.role != _NESTED:
        return new != current
    if not fp.many:
        return new is not current
    return len(new) != len(current) or any(a is not b for a, b in zip(new, current))


def _keep(fn, values):
    for v in values:
        try:
            yield fn(v)
        except Foreign:
            pass


def _refusal(ctx, changes, learn_id, fields, value):
    """(reason, error code) if this entity stands for a refused name or id."""
    for fp in fields:
        if fp.role == _NAME and not fp.many:
            # the name was restored to the client's: look the decoy up by it
            for kind, refusal in ctx.all_refusals():
                if kind == fp.kind and refusal.logical == getattr(value, fp.name) \
                        and fp.name in changes:
                    return refusal.reason, refusal.code
    if learn_id is not None and learn_id in ctx.decoy_ids:
        _, reason, code = ctx.decoy_ids[learn_id]
        return reason, code
    return None, None


def _with_error(value, code, reason):
    """*value* with every error code in it set to *code* (and the message)."""
    changes = {}
    for f in dataclasses.fields(value):
        current = getattr(value, f.name)
        if f.name == "error_code":
            changes["error_code"] = type(current)(code) if current is not None else code
        elif f.name == "error_message" and reason is not None:
            changes["error_message"] = reason
        elif dataclasses.is_dataclass(current):
            changes[f.name] = _with_error(current, code, reason)
        elif isinstance(current, tuple) and current and dataclasses.is_dataclass(
                current[0]):
            changes[f.name] = tuple(_with_error(v, code, reason) for v in current)
    return dataclasses.replace(value, **changes)
