# -*- test-case-name: tests.test_naming -*-
"""The one naming rule: logical <-> physical names of topics, groups and transactional ids
(and the client ids brokers see).

physical = virtual cluster prefix + logical name, no separator, as in the
demo's product (``london`` + ``londonTopic`` -> ``londonlondonTopic``).  The
prefix defaults to the virtual cluster's name.  No other module
concatenates prefixes.

Namespaces never overlap: two virtual clusters whose prefixes, with ``.``
read as ``_`` (Kafka's collision rule for topic names), start one another
(``team``/``teamA``, ``acme``/``acme.eu``) cannot both be served, since one
admin action would otherwise move names, and data, from one to the other
(``vkafka.names.overlap``; enforced by tenancy/vclusters.py and state/model.py).
A namespace caught in an overlap anyway is *unavailable*: it owns nothing.
Ownership among the rest is still by longest prefix, as a second guard.
"""

import re
from dataclasses import dataclass, field

from ..names import GATEWAY_TOPIC_PREFIX, MAX_TOPIC_LENGTH, TOPIC_CHARS

TOPIC = "topic"
GROUP = "group"
TRANSACTION = "transactional id"

MAX_ID_LENGTH = 255
"""Bytes of a group or transactional id as the broker gets it (prefix
included).  Kafka takes 32,767; each id is broker heap for days, listed in
every ListGroups or ListTransactions answer (all tenants' ids, before the
gateway filters them), so 900 ids of 32 KB had every tenant's ListGroups
over the answer limit (audit 22)."""


class InvalidName(ValueError):
    """A logical name that cannot be mapped; the message tells the client why."""

    def __init__(self, kind, name, why):
        super().__init__(f"{kind} {name!r}: {why}")
        self.kind, self.name, self.why = kind, name, why


CLIENT_ID_SEPARATOR = "/"
"""Between the virtual cluster and the client's own id in the client id a
broker sees; never in a virtual cluster's name (``names.VCLUSTER_NAME``)."""
MAX_CLIENT_ID = 512
"""Bytes of the client id a broker gets (the virtual cluster's name
included); a longer one is cut there.  The group coordinator keeps it for
every member, and makes a classic member's id of it: 1,200 JoinGroups with
30 KB client ids took 73 MB of a broker's heap for the session timeout
(audit 22c).  Java's default ids (``consumer-<group>-<n>``) fit."""


def broker_client_id(vcluster, client_id):
    """The client id a broker sees for a tenant's client, as bytes:
    ``<vcluster>/<the client's own>`` (*client_id*: the client's bytes, None
    for a null one), cut to MAX_CLIENT_ID bytes (on a UTF-8 character's
    boundary).  A broker keys client-id quotas, request metrics, logs and
    classic group member ids by it: one tenant's clients never share
    another's, nor the gateway's own (``vkafka-state-*``).  The virtual
    cluster's name, not its prefix: the tenant knows its name already."""
    shown = vcluster.encode() + CLIENT_ID_SEPARATOR.encode() + (client_id or b"")
    if len(shown) > MAX_CLIENT_ID:
        cut = MAX_CLIENT_ID
        while cut and 0x80 <= shown[cut] < 0xC0:  # inside a character: before it
            cut -= 1
        shown = shown[:cut]
    return shown


def tenant_client_id(vcluster, shown):
    """A client id as a broker shows it (group members), as the client sent
    it; one that is not the virtual cluster's (a member that joined the
    group without the gateway) is shown empty."""
    if shown is None:
        return None
    head = vcluster + CLIENT_ID_SEPARATOR
    return shown[len(head):] if shown.startswith(head) else ""


def overlap_reason(vcluster):
    """What a client of an overlapping virtual cluster is told (no other name)."""
    return (f"virtual cluster {vcluster} is unavailable: its names overlap another "
            "virtual cluster's; ask the operator")


_COLLISION = re.compile(r"collides with existing topic: ([A-Za-z0-9._-]+)")
"""Kafka's CreateTopics refusal quotes the physical topic it collides with."""


@dataclass
class Prefixes:
    """Every known virtual cluster prefix, for ownership by longest prefix."""

    known: set = field(default_factory=set)
    _cache: dict = field(default_factory=dict)
    generation: int = 0
    """Bumped by every change: what was decided by prefix is stale."""

    def add(self, prefix):
        if prefix not in self.known:
            self.known.add(prefix)
            self._cache.clear()
            self.generation += 1

    def discard(self, prefix):
        if prefix in self.known:
            self.known.discard(prefix)
            self._cache.clear()
            self.generation += 1

    def longer_than(self, prefix):
        """Prefixes that extend *prefix*: their names are not *prefix*'s."""
        found = self._cache.get(prefix)
        if found is None:
            found = self._cache[prefix] = tuple(
                p for p in self.known if len(p) > len(prefix) and p.startswith(prefix))
        return found


@dataclass(frozen=True)
class Alias:
    """A logical topic mapped onto an existing physical topic (admin API).

    A *concentrated* alias shares its physical topic (*target*) with other
    logical topics: the rest of the gateway sees it under a virtual physical
    name (*physical*, made by the prefix rule), and only the concentration
    layer (tenancy/concentration/) knows the topic the broker has.
    """
    logical: str
    physical: str
    read_only: bool = False
    target: str | None = None
    partitions: int | None = None

    @property
    def concentrated(self):
        return self.target is not None


class HotNames:
    """Name fields the produce path already rewrote without a refusal, a
    decoy or a concentrated topic, as bytes: the client's field -> the
    broker's (``to_broker``) and back (``to_client``), one table per
    encoding (classic, flexible); and topic ids (their 16 bytes) known to be
    the tenant's: ``ids`` a Produce may write (its check passed), ``read``
    those a Fetch named and may read (a read-only mapping's among them: a
    Produce does not take these).
    A producer names the same few topics in every request, so after the
    first the rename is one dictionary lookup, nothing decoded or checked
    again; a consumer the same ids in every Fetch, each answer naming them
    again.  Only for requests without ACLs (those are decided each time)."""

    __slots__ = ("to_broker", "to_client", "ids", "read")
    LIMIT = 4096
    """Entries a table takes (a client naming ever new topics costs no more
    memory than this; names beyond it are decided each time)."""

    def __init__(self):
        self.to_broker = ({}, {})
        self.to_client = ({}, {})
        self.ids = set()
        self.read = set()

    def owns_id(self, raw):
        """Whether the 16-byte topic id *raw* is known here to be the
        tenant's (either table: an id a Produce may write it may read)."""
        return raw in self.ids or raw in self.read


class Namespace:
    """One virtual cluster's view of names: maps logical <-> physical.

    Topics follow the prefix rule unless an alias maps the logical name onto
    an existing physical topic; an aliased logical name hides the prefixed
    topic of the same name.
    """

    def __init__(self, name, prefix, prefixes):
        self.name = name
        self.prefix = prefix
        self.prefixes = prefixes
        prefixes.add(prefix)
        self.aliases = {}   # logical -> Alias
        self.aliased = {}   # physical -> Alias
        self.rules = {}     # name -> ConcentrationRule
        self.version = 0
        """Bumped by every mapping or rule change (cached answers depend on them)."""
        self.unavailable = None
        """Why this namespace is not served (it overlaps another), or None.  While
        set it owns no name at all: an overlap has no right answer."""
        self._memo = self._memo_stamp = None
        self._scrub = re.compile(
            _COLLISION.pattern + "|"
            r"(?<![A-Za-z0-9._-])" + re.escape(prefix)
            + r"(?=[A-Za-z0-9_-]|[^\s'\"][^\s'\"])"
        ) if prefix else None
        """The prefix of a name: followed by a name's character, or (group and
        transactional ids may hold any) by two that are not a space or a quote
        ("london." ending a sentence is not a name)."""
        self._mapped_stamp = None

    def memo(self):
        """The produce path's memory of plain decisions (``HotNames``), valid
        while no mapping, rule or prefix changes and the namespace is served:
        any change starts an empty one, so nothing decided before it is used
        after it."""
        stamp = (self.version, self.prefixes.generation, self.unavailable)
        if stamp != self._memo_stamp:
            self._memo, self._memo_stamp = HotNames(), stamp
        return self._memo

    def memo_watch(self):
        """``(object, attribute, value)`` for each part of the last memo()'s
        stamp: while each attribute is still that very object, memo() would
        give the same memo (the compiled read of the produce lane checks
        them at every read, proxy/_lane.c)."""
        version, generation, unavailable = self._memo_stamp
        return ((self, "version", version), (self.prefixes, "generation", generation),
                (self, "unavailable", unavailable))

    @property
    def passthrough(self):
        return self.prefix == ""

    def set_alias(self, logical, physical, read_only=False, concentrated=False,
                  partitions=None):
        self.remove_alias(logical)
        if concentrated:
            if not isinstance(partitions, int) or partitions < 0:
                partitions = 0  # a mapping without a count (hand-written state): none
            alias = Alias(logical, self.prefix + logical, read_only, physical,
                          partitions)
        else:
            alias = Alias(logical, physical, read_only)
        self.aliases[logical] = alias
        self.aliased[alias.physical] = alias
        self.version += 1

    def remove_alias(self, logical):
        old = self.aliases.pop(logical, None)
        if old is not None:
            self.aliased.pop(old.physical, None)
            self.version += 1

    def set_rule(self, rule):
        self.rules[rule.name] = rule
        self.version += 1

    def remove_rule(self, name):
        if self.rules.pop(name, None) is not None:
            self.version += 1

    def rule_for(self, logical):
        """The first concentration rule (by name) whose pattern matches."""
        for name in sorted(self.rules):
            if self.rules[name].matches(logical):
                return self.rules[name]
        return None

    def concentrated(self):
        """Virtual name -> Alias of this tenant's concentrated topics."""
        return {a.physical: a for a in self.aliases.values() if a.concentrated}

    def alias_for_physical(self, physical):
        return self.aliased.get(physical)

    def shared(self, logical):
        """True for a writable mapping of a plain topic: a topic outside this
        tenant's namespace, which others (other virtual clusters, clients of
        the cluster itself) may write too."""
        alias = self.aliases.get(logical)
        return alias is not None and not alias.read_only and not alias.concentrated

    def read_only(self, kind, logical):
        """True for a read-only alias: no produce, delete or config change."""
        alias = self.aliases.get(logical) if kind == TOPIC else None
        return alias is not None and alias.read_only

    def physical(self, kind, logical):
        """The physical name for *logical*.

        :raises InvalidName: if it is not a valid name, is too long once
            prefixed, or would belong to another virtual cluster.
        """
        if logical is None:
            return None
        if self.unavailable is not None:
            raise InvalidName(kind, logical, self.unavailable)
        if not logical:
            raise InvalidName(kind, logical, "empty name")
        if kind == TOPIC and logical in self.aliases:
            return self.aliases[logical].physical
        physical = self.prefix + logical
        if kind == TOPIC:
            self._check_topic(kind, logical, physical)
        elif len(physical.encode()) > MAX_ID_LENGTH:
            raise InvalidName(kind, logical, f"too long: at most "
                              f"{MAX_ID_LENGTH - len(self.prefix.encode())} bytes "
                              f"in this virtual cluster")
        for other in self.prefixes.longer_than(self.prefix):
            if physical.startswith(other):
                raise InvalidName(kind, logical,
                                  "collides with another virtual cluster's names")
        return physical

    def _check_topic(self, kind, logical, physical):
        """Kafka's own rules for topic names, checked here so that a name the
        broker would refuse, or an internal topic's, never reaches it."""
        if not TOPIC_CHARS.match(logical) or logical in (".", ".."):
            raise InvalidName(kind, logical,
                              "topic names use only [a-zA-Z0-9._-]")
        if len(physical) > MAX_TOPIC_LENGTH:
            raise InvalidName(
                kind, logical, f"longer than "
                f"{MAX_TOPIC_LENGTH - len(self.prefix)} characters in this "
                f"virtual cluster")
        if physical.startswith(GATEWAY_TOPIC_PREFIX) or physical.startswith("__"):
            raise InvalidName(kind, logical, "reserved for internal topics")

    def logical(self, kind, physical):
        """The logical name of *physical*, or None if it is not this tenant's."""
        if physical is None or self.unavailable is not None:
            return None
        if kind == TOPIC:
            alias = self.aliased.get(physical)
            if alias is not None:
                return alias.logical
        if not physical.startswith(self.prefix):
            return None
        if kind == TOPIC and (physical.startswith(GATEWAY_TOPIC_PREFIX)
                              or physical.startswith("__")):
            return None
        for other in self.prefixes.longer_than(self.prefix):
            if physical.startswith(other):
                return None
        logical = physical[len(self.prefix):]
        if kind == TOPIC and logical in self.aliases:
            return None  # hidden by an alias of the same logical name
        return logical or None

    def owns(self, kind, physical):
        return self.logical(kind, physical) is not None

    def scrub(self, message):
        """A broker's message with this tenant's prefix removed from the names
        in it, mapped topics named by their logical names (their physical
        topics are outside the namespace, maybe another tenant's mapping too),
        and the topic a new one collides with named only if it is this
        tenant's (Kafka names it physically, and it may be another tenant's)."""
        if not message:
            return message
        if self._scrub is not None:
            message = self._scrub.sub(self._scrubbed, message)
        if self.aliases:
            pattern, logical = self._mapped()
            message = pattern.sub(lambda m: logical[m.group(0)], message)
        return message

    def _mapped(self):
        """(a pattern matching the physical topics this tenant's mappings
        stand for, as whole names; physical -> a logical name), kept until a
        mapping changes."""
        if self._mapped_stamp != self.version:
            logical = {}
            for alias in self.aliases.values():
                logical.setdefault(alias.target or alias.physical, alias.logical)
            names = "|".join(re.escape(p) for p in sorted(logical, key=len,
                                                            reverse=True))
            self._mapped_pattern = re.compile(
                rf"(?<![A-Za-z0-9._-])(?:{names})(?![A-Za-z0-9._-])")
            self._mapped_logical, self._mapped_stamp = logical, self.version
        return self._mapped_pattern, self._mapped_logical

    def _scrubbed(self, match):
        collided = match.group(1)
        if collided is None:
            return ""  # this tenant's prefix
        logical = self.logical(TOPIC, collided)
        if logical is None:
            return "collides with an existing topic"
        return f"collides with existing topic: {logical}"
