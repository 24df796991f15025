# -*- test-case-name: tests.test_consumer_protocol -*-
"""Topic names inside group membership bytes: the embedded consumer protocol.

JoinGroup's protocol metadata, SyncGroup's assignments and DescribeGroups'
member metadata and assignments are plain bytes in the Kafka schema.  With
protocol type "consumer" they are ConsumerProtocolSubscription and
ConsumerProtocolAssignment messages (an int16 version, then the message), and
those name topics.  The broker reads them (Kafka 4.x group coordinator):

- a classic member joining a KIP-848 consumer group: its subscription's
  topics and owned partitions become its subscription there, and SyncGroup
  returns the assignment the broker computed, serialized with physical names;
- a classic "consumer" group converted online to a consumer group (a KIP-848
  member joins it): every member's subscription and last assignment;
- a classic "consumer" group's subscribed topics (offset expiry).

Forwarded as bytes, a tenant could thus subscribe to another tenant's
physical topic and be assigned its partitions.  So requests get physical
names, responses logical ones (other tenants' topics dropped), as the walker
does for typed fields.

Which bytes are consumer protocol:

- JoinGroup carries the protocol type in every version, and a group's type is
  its members' (the broker refuses a member of another type:
  INCONSISTENT_GROUP_PROTOCOL).  The broker reads metadata only of groups of
  type "consumer"; other types ("connect", "sr", ...) are never read by it,
  only handed to the group's own members, all of one tenant: opaque, safe.
- SyncGroup names the type only from v5, and it may be null; when present
  the broker checks it against the group's (classic and consumer groups).
  When absent, the group may be a "consumer" one, and the request may come
  on another connection than the JoinGroup (so no memory of it is trusted):
  every assignment Java's reader could read as a ConsumerProtocolAssignment
  is treated as one; what it cannot read, the broker cannot either, so it
  is forwarded as it came.

Reading as Java does (ConsumerProtocol): a version above the newest known is
read as the newest (fields are only ever appended) and trailing bytes are
ignored; invalid UTF-8 in a string is replaced, not refused.  ``_skim``
mirrors that, so "the broker could read it" is decided without kio's stricter
string decoding.

Requests fail closed: metadata of type "consumer" that cannot be read at a
version kio knows (0-3 in kio 0.6.5), or that names a topic the tenant may not
name (invalid, reserved, another virtual cluster's namespace), refuses the
whole request: the group id becomes the walker's decoy, the protocols or
assignments are emptied, and the answer is INCONSISTENT_GROUP_PROTOCOL (no
JoinGroup/SyncGroup response has an error message; the reason is logged).
What is forwarded is re-encoded from what was checked: trailing bytes are
dropped.  SyncGroup assignments that are empty (no assignment) pass as they
are.  Names of concentrated topics stay their virtual names (the broker
knows no such topic; the concentration layer has no group APIs).

Responses: names made logical, other tenants' topics dropped, re-encoded at
the version they came in (at most the newest known); bytes of type
"consumer" that cannot be read become an empty message.
"""

import dataclasses
import importlib
import io
import struct
import types
import typing
from functools import lru_cache

from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i32
from twisted.logger import Logger

from .members import budget as member_budget
from .naming import GROUP, TOPIC, InvalidName
from .walker import rewrite_request as walk_request

log = Logger()

PROTOCOL_TYPE = "consumer"
REFUSAL_CODE = ErrorCode.inconsistent_group_protocol
"""What a refused JoinGroup or SyncGroup answers: the code a broker gives a
member whose protocols the group cannot use; Java clients raise it to the
application instead of rejoining forever."""

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


class Unreadable(ValueError):
    """Bytes that are not a consumer protocol message the gateway can check."""


class Refused(ValueError):
    """A request whose consumer protocol bytes must not reach the broker."""


@dataclasses.dataclass(frozen=True)
class Format:
    """One consumer protocol message: kio's class per version."""

    name: str
    classes: dict

    @property
    def highest(self):
        return max(self.classes)

    def empty(self):
        """The message at version 0 with nothing in it."""
        cls = self.classes[0]
        values = {f.name: () for f in dataclasses.fields(cls)
                  if typing.get_origin(typing.get_type_hints(cls)[f.name]) is tuple}
        return encode(cls(**values, user_data=None))


def _load(package, name):
    classes, version = {}, 0
    while True:
        try:
            module = importlib.import_module(f"kio.schema.{package}.v{version}.data")
        except ModuleNotFoundError:
            return Format(name, classes)
        classes[version] = getattr(module, name)
        version += 1


SUBSCRIPTION = _load("consumer_protocol_subscription", "ConsumerProtocolSubscription")
ASSIGNMENT = _load("consumer_protocol_assignment", "ConsumerProtocolAssignment")


# --- reading and writing -----------------------------------------------------

@lru_cache(maxsize=None)
def _shape(cls):
    """(field name, base type, a tuple, nullable, kafka type) in wire order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        hint, nullable = hints[f.name], False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
            nullable = True
        many = typing.get_origin(hint) is tuple
        base = typing.get_args(hint)[0] if many else hint
        out.append((f.name, base, many, nullable, f.metadata.get("kafka_type")))
    return tuple(out)


def _int(fmt, data, pos):
    if pos + fmt.size > len(data):
        raise Unreadable("truncated")
    return fmt.unpack_from(data, pos)[0], pos + fmt.size


def _skim(cls, data, pos):
    """Where Java's reader of *cls* stops in *data*; raises Unreadable where it
    fails.  Strings are not decoded: Java replaces invalid UTF-8."""
    for name, base, many, nullable, kafka_type in _shape(cls):
        if many:
            count, pos = _int(_INT32, data, pos)
            if count < 0:
                if not nullable:
                    raise Unreadable(f"{name}: a null array")
                continue
            if count > len(data) - pos:
                raise Unreadable(f"{name}: {count} elements announced")
            for _ in range(count):
                pos = _skim_value(base, nullable=False, kafka_type=kafka_type,
                                  data=data, pos=pos, name=name)
        else:
            pos = _skim_value(base, nullable, kafka_type, data, pos, name)
    return pos


def _skim_value(base, nullable, kafka_type, data, pos, name):
    if dataclasses.is_dataclass(base):
        return _skim(base, data, pos)
    if kafka_type in ("string", "bytes"):
        size, pos = _int(_INT16 if kafka_type == "string" else _INT32, data, pos)
        if size < 0:
            if not nullable:
                raise Unreadable(f"{name}: a null {kafka_type}")
            return pos
        if pos + size > len(data):
            raise Unreadable(f"{name}: {size} bytes announced")
        return pos + size
    sizes = {"int8": 1, "int16": 2, "int32": 4, "int64": 8}
    if kafka_type not in sizes:
        raise Unreadable(f"{name}: unexpected type {kafka_type}")
    if pos + sizes[kafka_type] > len(data):
        raise Unreadable("truncated")
    return pos + sizes[kafka_type]


def read(fmt, data):
    """(version on the wire, message) as Java's ConsumerProtocol reads *data*
    (a newer version read as the newest known, trailing bytes ignored), or
    None if Java could not read it.

    :raises Unreadable: if Java could read it but kio cannot (not UTF-8, a
        negative length Java reads as null): nothing the gateway can check.
    """
    try:
        version, _ = _int(_INT16, data, 0)
        if version < 0:
            return None
        cls = fmt.classes[min(version, fmt.highest)]
        _skim(cls, data, 2)
    except Unreadable:
        return None
    try:
        message, _ = entity_reader(cls)(data, 2)
    except Exception as e:  # kio raises several types for bad bytes
        raise Unreadable(f"{fmt.name} v{version}: {e}") from e
    return version, message


def encode(message):
    """The version-prefixed bytes of *message*."""
    buffer = io.BytesIO()
    buffer.write(_INT16.pack(message.__version__))
    entity_writer(type(message))(buffer, message)
    return buffer.getvalue()


def rename(message, topic):
    """*message* with each topic name replaced by ``topic(name)``; entries for
    which it returns None are dropped."""
    changes = {}
    for name, base, many, _, _ in _shape(type(message)):
        value = getattr(message, name)
        if name == "topics":
            changes[name] = tuple(n for n in map(topic, value or ()) if n is not None)
        elif many and dataclasses.is_dataclass(base):  # (topic, partitions) lists
            kept = []
            for entry in value or ():
                new = topic(entry.topic)
                if new is not None:
                    kept.append(dataclasses.replace(
                        entry, topic=new, partitions=entry.partitions or ()))
            changes[name] = tuple(kept)
    return dataclasses.replace(message, **changes)


# --- requests: physical names, or refused --------------------------------------

def _physical(rctx):
    def topic(name):
        before, concentrated = rctx.refusals, rctx.concentrated
        physical = rctx.to_physical(TOPIC, name, rights=False)  # as Kafka: no ACL
        # Group metadata is not records: the concentration layer stays out.
        rctx.concentrated = concentrated
        if rctx.refusals != before:
            try:
                rctx.namespace.physical(TOPIC, name)
                why = "it may not be named here"
            except InvalidName as e:
                why = str(e)
            raise Refused(f"the consumer protocol names topic {name!r}: {why}")
        return physical
    return topic


MAX_SUBSCRIBED_NAMES = 1000
"""Topic names one member may subscribe to by name, by a KIP-848 heartbeat
or a classic "consumer" subscription (which the broker turns into the same
list when the group is a KIP-848 one).  The group coordinator keeps each
member's list, names of topics that do not exist included (~265 bytes of
heap a name: four members of 50,000 names took 53 MB; audits 22, 22b).
More topics: subscribe by pattern."""
MAX_PROTOCOLS = 16
"""Protocols (assignors) one classic member may offer (a Java consumer offers
two by default)."""
MAX_MEMBER_STRING = 255
"""Bytes of a string a member sends for the coordinator to keep (member,
instance and rack ids, assignor and protocol names): 30 KB ones were broker
heap for as long as the member lived (audit 22b)."""


def too_much_for_a_member(request, fields):
    """Why the member state *request* asks the coordinator to keep is too
    much (its *fields* longer than MAX_MEMBER_STRING bytes, or more than
    MAX_SUBSCRIBED_NAMES topic names), or None."""
    for name in fields:
        value = getattr(request, name, None)
        if value is not None and len(value.encode()) > MAX_MEMBER_STRING:
            return f"{name} of {len(value.encode())} bytes: at most {MAX_MEMBER_STRING}"
    names = getattr(request, "subscribed_topic_names", None)
    if names is not None and len(names) > MAX_SUBSCRIBED_NAMES:
        return (f"a subscription to {len(names)} topic names: at most "
                f"{MAX_SUBSCRIBED_NAMES} (subscribe by pattern)")
    return None


def reason_cut(entity):
    """*entity* (a JoinGroup, a LeaveGroup member) with its reason cut to
    MAX_MEMBER_STRING bytes: the broker writes it to its log."""
    reason = getattr(entity, "reason", None)
    if reason is None or len(reason.encode()) <= MAX_MEMBER_STRING:
        return entity
    cut = reason.encode()[:MAX_MEMBER_STRING].decode("utf-8", "ignore")
    return dataclasses.replace(entity, reason=cut)


def leave_group_request(services, rctx, request):
    """LeaveGroup: names walked; members' reasons cut (``reason_cut``)."""
    request = walk_request(request, rctx)
    members = getattr(request, "members", None)
    if getattr(services, "members", None) is not None:
        services.members.left(rctx.namespace.name, request.group_id, [
            m.member_id for m in members] if members is not None else [request.member_id])
    if not members:
        return request
    return dataclasses.replace(request, members=tuple(map(reason_cut, members)))


def heartbeat_request(services, rctx, request):
    """Heartbeat: names walked; the member is alive (members.py)."""
    request = walk_request(request, rctx)
    if getattr(services, "members", None) is not None:
        services.members.seen(rctx.namespace.name, request.group_id, request.member_id)
    return request


def to_physical(fmt, data, rctx, strict=True):
    """*data* with physical topic names.  *strict*: it must be *fmt* (protocol
    type "consumer"); otherwise bytes Java cannot read pass as they are.

    :raises Refused: if it must not reach the broker.
    """
    try:
        found = read(fmt, data)
    except Unreadable as e:
        raise Refused(f"unreadable consumer protocol: {e}") from e
    if found is None:
        if strict:
            raise Refused(f"the metadata is not a {fmt.name}")
        return data
    version, message = found
    if version > fmt.highest:
        raise Refused(f"{fmt.name} v{version} is newer than the gateway "
                      f"reads (0-{fmt.highest})")
    topics = getattr(message, "topics", ())
    if fmt is SUBSCRIPTION and len(topics) > MAX_SUBSCRIBED_NAMES:
        raise Refused(f"a subscription to {len(topics)} topic names: at most "
                      f"{MAX_SUBSCRIBED_NAMES} (subscribe by pattern)")
    return encode(rename(message, _physical(rctx)))


# --- responses: logical names, others' dropped ------------------------------

def to_logical(fmt, data, rctx, strict=True):
    """*data* with logical topic names, other tenants' topics dropped.
    *strict*: it must be *fmt*, else it becomes an empty one; otherwise bytes
    Java cannot read pass as they are (the tenant's own: see the module)."""
    if not data:
        return data
    try:
        found = read(fmt, data)
    except Unreadable:
        return fmt.empty()
    if found is None:
        return fmt.empty() if strict else data
    namespace = rctx.namespace
    renamed = rename(found[1], lambda name: namespace.logical(TOPIC, name))
    return encode(renamed)


# --- the rows -----------------------------------------------------------------

@dataclasses.dataclass
class Exchange:
    """What a JoinGroup or SyncGroup request left for its response."""

    protocol_type: str | None
    member_id: str
    refused: str | None = None
    code: ErrorCode = REFUSAL_CODE
    """The refusal's error code."""
    group: str = ""
    """The physical group (member state is counted under it: members.py)."""
    member_state: int = 0
    """Bytes of metadata the member asks the coordinator to keep."""
    session: float = 0.0
    """The member's session timeout, seconds."""
    assignments: dict | None = None
    """SyncGroup: member -> bytes of the assignment the leader gives it."""


def _refuse(rctx, request, group, reason, code=REFUSAL_CODE, **emptied):
    """*request* aimed at the walker's decoy group, with its bytes emptied: the
    broker refuses it without creating or joining anything."""
    log.info("refused {api} for group {group!r}: {reason}",
             api=type(request).__name__, group=group, reason=reason)
    rctx.group_protocol.refused = reason
    rctx.group_protocol.code = code
    decoy = rctx.decoy_name(GROUP, group, reason, code)
    return dataclasses.replace(request, group_id=decoy, **emptied)


def join_group_request(services, rctx, request):
    """JoinGroup: names walked; "consumer" subscriptions made physical."""
    group = request.group_id
    request = walk_request(request, rctx)
    rctx.group_protocol = Exchange(request.protocol_type, request.member_id)
    # Not the member id: the broker makes it (of the client id, naming.
    # MAX_CLIENT_ID) and refuses one it did not make.
    too_much = too_much_for_a_member(request, ("group_instance_id",))
    if too_much is None and len(request.protocols) > MAX_PROTOCOLS:
        too_much = f"{len(request.protocols)} protocols: at most {MAX_PROTOCOLS}"
    if too_much is None:
        too_much = next((f"protocol name of {len(p.name.encode())} bytes: at most "
                         f"{MAX_MEMBER_STRING}" for p in request.protocols
                         if len(p.name.encode()) > MAX_MEMBER_STRING), None)
    if too_much is not None:
        return _refuse(rctx, request, group, too_much, protocols=())
    request = reason_cut(request)
    if request.protocol_type == PROTOCOL_TYPE:
        try:
            request = dataclasses.replace(request, protocols=tuple(dataclasses.replace(
                p, metadata=to_physical(SUBSCRIPTION, p.metadata, rctx))
                for p in request.protocols))
        except Refused as e:
            return _refuse(rctx, request, group, str(e), protocols=())
    return _member_state_bounded(services, rctx, group, request)


def _member_state_bounded(services, rctx, group, request):
    """A JoinGroup whose member would keep its virtual cluster's member state
    on the coordinators past the bound (members.py): refused,
    POLICY_VIOLATION.  Else what it asks to keep is noted for its answer."""
    members = getattr(services, "members", None)
    if members is None or rctx.group_protocol.refused is not None:
        return request
    exchange = rctx.group_protocol
    exchange.group = request.group_id
    exchange.member_state = sum(len(p.metadata) for p in request.protocols) + \
        len((getattr(request, "group_instance_id", None) or "").encode())
    exchange.session = request.session_timeout.total_seconds()
    vc = rctx.namespace.name
    too_much = members.beyond(vc, request.group_id, request.member_id,
                              exchange.member_state, member_budget(services, vc))
    if too_much is None:
        return request
    return _refuse(rctx, request, group, too_much, ErrorCode.policy_violation,
                   protocols=())


def _consumer(*types):
    return PROTOCOL_TYPE in types


def join_group_response(services, rctx, response):
    """JoinGroup: the members' subscriptions (the leader's) made logical; a
    refused request answered with the refusal."""
    exchange = rctx.group_protocol
    if exchange.refused is not None:
        return dataclasses.replace(response, error_code=exchange.code,
                                   generation_id=i32(-1), leader="",
                                   member_id=exchange.member_id, members=())
    if exchange.group and response.error_code == ErrorCode.none:
        services.members.joined(rctx.namespace.name, exchange.group,
                                response.member_id, exchange.member_state,
                                exchange.session)
    if not _consumer(exchange.protocol_type, getattr(response, "protocol_type", None)):
        return response
    return dataclasses.replace(response, members=tuple(
        dataclasses.replace(m, metadata=to_logical(SUBSCRIPTION, m.metadata, rctx))
        for m in response.members))


def sync_group_request(services, rctx, request):
    """SyncGroup: names walked; assignments made physical (see the module for
    which ones)."""
    group = request.group_id
    request = walk_request(request, rctx)
    declared = getattr(request, "protocol_type", None)
    rctx.group_protocol = Exchange(declared, request.member_id)
    # Another type than the group's: the broker refuses it.  Not "consumer":
    # opaque bytes, only the members read them.
    if declared is None or declared == PROTOCOL_TYPE:
        try:
            request = dataclasses.replace(request, assignments=tuple(
                dataclasses.replace(a, assignment=to_physical(
                    ASSIGNMENT, a.assignment, rctx, strict=declared is not None))
                if a.assignment else a for a in request.assignments))
        except Refused as e:
            return _refuse(rctx, request, group, str(e), assignments=())
    members = getattr(services, "members", None)
    if members is None:
        return request
    vc = rctx.namespace.name
    members.seen(vc, request.group_id, request.member_id)
    if not request.assignments:
        return request
    sizes = {a.member_id: len(a.assignment) for a in request.assignments}
    too_much = members.assignments_beyond(vc, request.group_id, sizes,
                                          member_budget(services, vc))
    if too_much is not None:
        return _refuse(rctx, request, group, too_much, ErrorCode.policy_violation,
                       assignments=())
    rctx.group_protocol.group = request.group_id
    rctx.group_protocol.assignments = sizes
    return request


def sync_group_response(services, rctx, response):
    """SyncGroup: the member's assignment made logical."""
    exchange = rctx.group_protocol
    if exchange.refused is not None:
        return dataclasses.replace(response, error_code=exchange.code, assignment=b"")
    if exchange.assignments and response.error_code == ErrorCode.none:
        services.members.assigned(rctx.namespace.name, exchange.group,
                                  exchange.assignments)
    answered = getattr(response, "protocol_type", None)
    known = [t for t in (exchange.protocol_type, answered) if t is not None]
    if known and not _consumer(*known):
        return response
    return dataclasses.replace(response, assignment=to_logical(
        ASSIGNMENT, response.assignment, rctx, strict=bool(known)))


def describe_groups_response(services, rctx, response):
    """DescribeGroups: "consumer" groups' member subscriptions and assignments
    made logical (the broker shows what the members sent it)."""
    groups = []
    for g in response.groups:
        if g.protocol_type == PROTOCOL_TYPE and g.members:
            g = dataclasses.replace(g, members=tuple(dataclasses.replace(
                m, member_metadata=to_logical(SUBSCRIPTION, m.member_metadata, rctx),
                member_assignment=to_logical(ASSIGNMENT, m.member_assignment, rctx))
                for m in g.members))
        groups.append(g)
    return dataclasses.replace(response, groups=tuple(groups))
