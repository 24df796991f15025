# -*- test-case-name: tests.test_limits -*-
"""The limits of a virtual cluster: its capacity, its topic policy, its rates.

Stored in the state as ``limits/<vc>`` with the JSON form (camelCase,
nested, an absent field is no limit)::

    {"capacity": {"topics": 10, "partitions": 100, "partitionsPerTopic": 12,
                  "consumerGroups": 20, "transactionalIds": 20, "connections": 50,
                  "memberStateBytes": 33554432},
     "topicPolicy": {"replicationFactorMin": 1, "replicationFactorMax": 3,
                     "retentionMsMax": 604800000, "retentionBytesMax": 1073741824,
                     "namePattern": "[a-z][a-z0-9.-]*",
                     "configsAllowed": ["cleanup.policy"],
                     "configsForbidden": ["min.insync.replicas"]},
     "rates": {"produceBytesPerSecond": 2000000, "fetchBytesPerSecond": 4000000,
               "requestsPerSecond": 500}}

Each field's rules and description live on the field (its metadata): the
checks made when a ``Limits`` is built, from JSON or not, and the JSON
schema the admin API's OpenAPI document serves are both read from there.
What the gateway does with each limit is in docs/governance.md.
"""

import re
import reprlib
from dataclasses import dataclass, field, fields, is_dataclass
from typing import ClassVar, Optional, Tuple

import re2

INT32_MAX = 2 ** 31 - 1  # Kafka's counts (partitions, replicas) are int32 or less
INT64_MAX = 2 ** 63 - 1  # and its sizes, durations and rates int64
PATTERN_MAX = 1000
KEYS_MAX = 1000  # config keys in a list
CONFIG_KEY = "[a-zA-Z0-9._-]{1,255}"
"""A topic config key as a limit names it (Kafka's are lowercase, dotted)."""

_RE2 = re2.Options()
_RE2.max_mem = 8 << 20  # as tenancy.patterns: bounded memory per pattern
_RE2.log_errors = False


class InvalidLimits(ValueError):
    """Limits that break a rule; ``field`` is the dotted JSON name at fault."""

    def __init__(self, field, message):
        super().__init__(f"{field or 'the limits'}: {message}")
        self.field = field


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_shown = _repr.repr
"""A value as an error message quotes it: long ones cut short."""


def _camel(name):
    first, *rest = name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def _integer(minimum, maximum):
    def check(value, where):
        if not isinstance(value, int) or isinstance(value, bool) or \
                not minimum <= value <= maximum:
            raise InvalidLimits(where, f"must be an integer from {minimum} to "
                                       f"{maximum}, not {_shown(value)}")
        return value
    return check, {"type": "integer", "minimum": minimum, "maximum": maximum}


def _regex(value, where):
    if not isinstance(value, str) or not 1 <= len(value) <= PATTERN_MAX:
        raise InvalidLimits(where, f"must be a regular expression of 1 to "
                                   f"{PATTERN_MAX} characters, not {_shown(value)}")
    try:
        re2.compile(value, options=_RE2)
    except re2.error as e:
        reason = e.args[0] if e.args else b""  # "what: the part of the pattern"
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        reason = reason.partition(": ")[0]
        raise InvalidLimits(where, f"invalid regular expression {_shown(value)} "
                                   f"(RE2 syntax): {reason}") from None
    return value


def _keys(value, where):
    if not isinstance(value, (list, tuple)) or len(value) > KEYS_MAX or not all(
            isinstance(key, str) and re.fullmatch(CONFIG_KEY, key, re.ASCII)
            for key in value):
        raise InvalidLimits(where, f"must be a list of at most {KEYS_MAX} topic "
                                   f"config keys ({CONFIG_KEY}), not {_shown(value)}")
    repeated = sorted({key for key in value if value.count(key) > 1})
    if repeated:
        raise InvalidLimits(where, f"{repeated[0]!r} is listed twice")
    return tuple(value)


_REGEX = (_regex, {"type": "string", "minLength": 1, "maxLength": PATTERN_MAX})
_KEYS = (_keys, {"type": "array", "uniqueItems": True, "maxItems": KEYS_MAX,
                 "items": {"type": "string", "pattern": f"^{CONFIG_KEY}$"}})


def _limit(rule, description):
    """A field that is no limit when None; *rule* is (check, JSON schema)."""
    check, schema = rule
    return field(default=None, metadata={
        "check": check, "schema": {**schema, "description": description}})


def _count(minimum, description):
    return _limit(_integer(minimum, INT32_MAX), description)


def _amount(description):
    return _limit(_integer(1, INT64_MAX), description)


def _part(cls, description):
    """A field holding one part of the limits (a ``_Part``), none by default."""
    return field(default=cls(), metadata={"description": description})


def _to_json(value):
    """The JSON form of a Limits or a part: camelCase, Nones and empty parts left out."""
    out = {}
    for f in fields(value):
        item = getattr(value, f.name)
        if is_dataclass(item):
            item = _to_json(item) or None
        if item is not None:
            out[_camel(f.name)] = list(item) if isinstance(item, tuple) else item
    return out


def _from_json(cls, data, where, ignore_unknown):
    if not isinstance(data, dict):
        raise InvalidLimits(where, f"must be a JSON object, not {_shown(data)}")
    known = {_camel(f.name): f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown and not ignore_unknown:
        raise InvalidLimits(".".join(filter(None, (where, unknown[0]))),
                            "unknown field")
    values = {}
    for key, f in known.items():
        if key in data:
            value = data[key]
            if is_dataclass(f.default):
                value = _from_json(type(f.default), value, key, ignore_unknown)
            elif value is None:  # null is no JSON way to say "no limit": refused
                f.metadata["check"](value, cls.where(f.name))
            values[f.name] = value
    return cls(**values)


def _schema(cls):
    """The JSON schema of *cls*'s JSON form (what ``from_json`` accepts)."""
    return {"type": "object", "additionalProperties": False, "properties": {
        _camel(f.name): {**_schema(type(f.default)),
                         "description": f.metadata["description"]}
        if is_dataclass(f.default) else f.metadata["schema"]
        for f in fields(cls)}}


class _Part:
    """One part of the limits: every field is checked when it is made."""

    KEY: ClassVar[str]
    """The part's name in the JSON form."""

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:  # frozen: set the checked (normalised) value
                object.__setattr__(self, f.name,
                                   f.metadata["check"](value, self.where(f.name)))
        self._check()

    def _check(self):
        """Rules between fields, after each field's own."""

    @classmethod
    def where(cls, name):
        """The dotted JSON name of field *name*: ``topicPolicy.namePattern``."""
        return f"{cls.KEY}.{_camel(name)}"


@dataclass(frozen=True)
class Capacity(_Part):
    """How much the virtual cluster holds at most."""

    KEY = "capacity"
    topics: Optional[int] = _count(0, "Topics the virtual cluster holds at most")
    partitions: Optional[int] = _count(0, "Partitions over all its topics")
    partitions_per_topic: Optional[int] = _count(1, "Partitions of any one topic")
    consumer_groups: Optional[int] = _count(
        0, "Consumer groups it holds at most (absent: the gateway's default, 10000)")
    connections: Optional[int] = _count(
        0, "Concurrent client connections to the virtual cluster in total, over "
           "every gateway (not per gateway)")
    transactional_ids: Optional[int] = _count(
        0, "Transactional ids it holds at most (absent: the gateway's default, 10000)")
    member_state_bytes: Optional[int] = _amount(
        "Bytes of group member state it keeps on the brokers through each gateway "
        "(each of its N workers: an Nth): classic members' metadata and "
        "assignments, KIP-848 members' subscriptions (absent: the gateway's "
        "default, 33554432)")


@dataclass(frozen=True)
class TopicPolicy(_Part):
    """What a topic of the virtual cluster may be."""

    KEY = "topicPolicy"
    replication_factor_min: Optional[int] = _count(1, "Smallest replication factor")
    replication_factor_max: Optional[int] = _count(
        1, "Largest replication factor (at least replicationFactorMin)")
    retention_ms_max: Optional[int] = _amount(
        "Largest retention.ms (infinite retention, -1, is beyond it)")
    retention_bytes_max: Optional[int] = _amount(
        "Largest retention.bytes (unlimited, -1, is beyond it)")
    name_pattern: Optional[str] = _limit(_REGEX, "RE2 regular expression that a "
                                                 "logical topic name must match whole")
    configs_allowed: Optional[Tuple[str, ...]] = _limit(
        _KEYS, "The topic config keys a tenant may set (absent: any)")
    configs_forbidden: Optional[Tuple[str, ...]] = _limit(
        _KEYS, "Topic config keys a tenant may not set")

    def _check(self):
        low, high = self.replication_factor_min, self.replication_factor_max
        if low is not None and high is not None and low > high:
            raise InvalidLimits(self.where("replication_factor_min"),
                                f"{low} is more than replicationFactorMax {high}")
        both = sorted(set(self.configs_allowed or ()) & set(self.configs_forbidden or ()))
        if both:
            raise InvalidLimits(self.where("configs_forbidden"),
                                f"{both[0]!r} is also in configsAllowed")


@dataclass(frozen=True)
class Rates(_Part):
    """Throughput the virtual cluster gets at most, per second."""

    KEY = "rates"
    produce_bytes_per_second: Optional[int] = _amount("Bytes produced per second")
    fetch_bytes_per_second: Optional[int] = _amount("Bytes fetched per second")
    requests_per_second: Optional[int] = _amount("Requests per second, of any kind")


@dataclass(frozen=True)
class Limits:
    """Every limit of one virtual cluster; a None field is no limit."""

    capacity: Capacity = _part(Capacity, Capacity.__doc__)
    topic_policy: TopicPolicy = _part(TopicPolicy, TopicPolicy.__doc__)
    rates: Rates = _part(Rates, Rates.__doc__)

    NONE: ClassVar["Limits"]
    """No limit at all: a virtual cluster without a ``limits/<vc>`` record."""

    @classmethod
    def from_json(cls, data, ignore_unknown=False):
        """The Limits of the JSON form *data*, or InvalidLimits saying which
        field is wrong and why.  *ignore_unknown*: leave out fields this
        version does not know (a newer gateway's) instead of refusing them."""
        return _from_json(cls, data, None, ignore_unknown)

    def to_json(self):
        """The JSON form: only the limits set (``{}`` for ``Limits.NONE``)."""
        return _to_json(self)

    @classmethod
    def json_schema(cls):
        """The JSON schema of the JSON form (types and ranges; the rules
        between fields, and RE2's syntax, only ``from_json`` checks)."""
        return _schema(cls)


Limits.NONE = Limits()
