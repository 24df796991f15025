# -*- test-case-name: tests.test_walker_table,tests.test_tenant_splice,tests.test_consumer_protocol,tests.test_fields -*-
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

from kio.schema.types import GroupId, TopicName, TransactionalId

from .context import ZERO_UUID, Foreign
from .naming import GROUP, TOPIC, TRANSACTION

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
        elif f.name.endswith("error_message") and base is str:  # a batch's too
            result.append(FieldPlan(f.name, _MESSAGE, None, False))
    return tuple(result)


def rewrite_request(value, ctx):
    """*value* with every logical name made physical and every topic id checked."""
    changes = {}
    for fp in plan(type(value)):
        current = getattr(value, fp.name)
        if current is None:
            continue
        new = _TO_PHYSICAL[fp.role](fp, current, ctx)
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
        if fp.kind == TOPIC and not fp.many:  # its own topic: _learn_topic_id
            if fp.role == _ID:
                learn_id = current
            else:
                learn_name = current
        new = _TO_LOGICAL[fp.role](fp, current, ctx)
        if _changed(new, current, fp):
            changes[fp.name] = new
    if learn_id is not None and learn_id != ZERO_UUID:
        _learn_topic_id(ctx, learn_name, learn_id, changes)
    value = dataclasses.replace(value, **changes) if changes else value
    if ctx.refusals:
        value = _explained(ctx, changes, learn_id, fields, value)
    return value


# One handler per field role and direction: (FieldPlan, the field's value,
# RequestContext) -> its new value.  A tuple field is handled whole, so a
# field costs one call whatever its role.

def _physical_names(fp, current, ctx):
    """Names made physical: one the tenant may not use becomes a decoy."""
    if fp.many:
        return tuple([ctx.to_physical(fp.kind, v) for v in current])
    return ctx.to_physical(fp.kind, current)


def _checked_ids(fp, current, ctx):
    """Topic ids kept if the tenant's, else sent as a random decoy."""
    if fp.many:
        return tuple([ctx.check_topic_id(v) for v in current])
    return ctx.check_topic_id(current)


def _physical_entities(fp, current, ctx):
    """Nested entities rewritten in turn: they carry names too."""
    if fp.many:
        return tuple([rewrite_request(v, ctx) for v in current])
    return rewrite_request(current, ctx)


def _as_is(fp, current, ctx):
    """Left as sent: only the broker's messages, in responses, carry prefixes."""
    return current


def _logical_names(fp, current, ctx):
    """Names made logical.  In a list another tenant's are dropped; a single
    one raises Foreign, so its whole entity is dropped."""
    if fp.many:
        return _kept(ctx.to_logical, current, fp.kind)
    return ctx.to_logical(fp.kind, current)


def _restored_ids(fp, current, ctx):
    """In a list, the client's ids back for decoys and other tenants' ids
    dropped.  A single id waits for its entity's name (_learn_topic_id)."""
    if fp.many:
        return _kept(ctx.restore_topic_id, current)
    return current


def _logical_entities(fp, current, ctx):
    """Nested entities rewritten in turn; in a list, other tenants' dropped."""
    if fp.many:
        return _kept(lambda v: rewrite_response(v, ctx), current)
    return rewrite_response(current, ctx)


def _scrubbed(fp, current, ctx):
    """The broker's error message, without the tenant's prefix in it."""
    return ctx.namespace.scrub(current)


_TO_PHYSICAL = {_NAME: _physical_names, _ID: _checked_ids,
                _NESTED: _physical_entities, _MESSAGE: _as_is}
_TO_LOGICAL = {_NAME: _logical_names, _ID: _restored_ids,
               _NESTED: _logical_entities, _MESSAGE: _scrubbed}


def _learn_topic_id(ctx, learn_name, learn_id, changes):
    """An entity naming its topic both ways teaches the topology that id (so
    later requests by id pass); one named by id alone, or by a decoy, gets the
    client's id back, or raises Foreign if the id is not the tenant's.  An
    empty name counts as no name: it says nothing of whose the id is."""
    if learn_name and not learn_name.startswith("!") and learn_id not in ctx.decoy_ids:
        ctx.topic_ids[learn_id] = learn_name
    if not learn_name or learn_id in ctx.decoy_ids:
        changes["topic_id"] = ctx.restore_topic_id(learn_id)


def _changed(new, current, fp):
    """Whether a field's new value differs: entities by identity (a rewrite
    returns the very entity when nothing in it changed), values by equality."""
    if fp.role != _NESTED:
        return new != current
    if not fp.many:
        return new is not current
    return len(new) != len(current) or any(a is not b for a, b in zip(new, current))


def _kept(fn, values, *args):
    """``fn(*args, v)`` of each of *values*, as a tuple, but for those that
    raise Foreign: another tenant's entities drop out of their list."""
    kept = []
    for v in values:
        try:
            kept.append(fn(*args, v))
        except Foreign:
            pass
    return tuple(kept)


def _explained(ctx, changes, learn_id, fields, value):
    """*value* carrying the reason (and error code) of the refused name or id
    it stands for, if any: the client learns why, not the broker's confusion."""
    reason, code = _refusal(ctx, changes, learn_id, fields, value)
    if code is not None:
        return with_error(value, code, reason)
    if reason is not None and hasattr(value, "error_message"):
        return dataclasses.replace(value, error_message=reason)
    return value


def _refusal(ctx, changes, learn_id, fields, value):
    """(reason, error code) if this entity stands for a refused name or id."""
    for fp in fields:
        if fp.role == _NAME and not fp.many:
            # the name was restored to the client's: look the decoy up by it
            refusal = ctx.refusal_of(fp.kind, getattr(value, fp.name)) \
                if fp.name in changes else None
            if refusal is not None:
                return refusal.reason, refusal.code
    if learn_id is not None and learn_id in ctx.decoy_ids:
        _, reason, code = ctx.decoy_ids[learn_id]
        return reason, code
    return None, None


def with_error(value, code, reason):
    """*value* with every error code in it set to *code* (and the message)."""
    changes = {}
    for f in dataclasses.fields(value):
        current = getattr(value, f.name)
        if f.name in ("error_code", "partition_error_code"):  # AddPartitionsToTxn's
            changes[f.name] = type(current)(code) if current is not None else code
        elif f.name == "error_message" and reason is not None:
            changes["error_message"] = reason
        elif dataclasses.is_dataclass(current):
            changes[f.name] = with_error(current, code, reason)
        elif isinstance(current, tuple) and current and dataclasses.is_dataclass(
                current[0]):
            changes[f.name] = tuple(with_error(v, code, reason) for v in current)
    return dataclasses.replace(value, **changes)
