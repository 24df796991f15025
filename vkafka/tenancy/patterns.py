# -*- test-case-name: tests.test_patterns -*-
"""Tenant patterns, evaluated by the gateway over the tenant's own names.

A pattern a tenant sends is never handed to the broker: wrapping it in the
tenant's prefix (``prefix(?:pattern)``) can be escaped (``)|(``) and breaks
every anchored pattern (``^orders.*$``).  Instead the gateway matches it
itself, with the broker's semantics (RE2, as the broker's RE2J: linear time
whatever the pattern, and a whole-name match), against the tenant's
*logical* names, and sends the broker only what it computed: for KIP-848
subscriptions an exact, anchored alternation of the matching physical names.
"""

import hashlib
from collections import OrderedDict

import re2

NOTHING = "^!$"
"""A broker regex that matches no topic ('!' is never in a topic name)."""

INVALID = "("
"""A broker regex the broker refuses (INVALID_REGULAR_EXPRESSION): sent for a
pattern RE2 refused, so the client gets the broker's own answer."""

MAX_PATTERN = 16 * 1024
"""Characters of a tenant's pattern the gateway takes (an alternation of
hundreds of topic names fits); a longer one is answered as an invalid one.
Never sent to a broker, a pattern was otherwise held to the request size
alone, a megabyte each."""


_OPTIONS = re2.Options()
_OPTIONS.max_mem = 256 << 10
"""Memory per compiled pattern, which bounds its program: RE2 is linear in
the text, but when its DFA runs out of room it steps through the whole
program for each character.  At 8 MiB, 1,500 branches like ``.*a.{9}b``
took 0.2 s per topic name; at 256 KiB such a pattern is refused (pattern
too large) and what compiles costs a few ms per name at worst, while an
alternation of 900 topic names still compiles and runs in microseconds."""
_OPTIONS.log_errors = False  # a tenant's bad pattern is answered, not logged


class InvalidPattern(ValueError):
    """A pattern RE2 cannot compile (or too large)."""


def compile_pattern(pattern):
    """*pattern* compiled with RE2; raises InvalidPattern."""
    if len(pattern) > MAX_PATTERN:
        raise InvalidPattern(f"a pattern of more than {MAX_PATTERN} characters")
    try:
        return re2.compile(pattern, options=_OPTIONS)
    except re2.error as e:
        raise InvalidPattern(f"invalid regular expression: {e}") from None


def fullmatch(pattern, names):
    """The names among *names* the whole of which *pattern* matches."""
    compiled = compile_pattern(pattern)
    return [n for n in names if compiled.fullmatch(n) is not None]


def alternation(physical_names):
    """An anchored RE2 pattern matching exactly *physical_names* (topic
    names: only '.' needs escaping), or NOTHING."""
    if not physical_names:
        return NOTHING
    return "^(?:" + "|".join(n.replace(".", "\\.") for n in sorted(physical_names)) + ")$"


def names_of(alternation_pattern):
    """The names an ``alternation`` holds (None if it is not one of ours)."""
    if alternation_pattern == NOTHING:
        return []
    if not (alternation_pattern.startswith("^(?:") and alternation_pattern.endswith(")$")):
        return None
    return [n.replace("\\.", ".") for n in alternation_pattern[4:-2].split("|")]


def short(text):
    """*text*, or a digest of it when long: what a table keeps of a name the
    tenant chose (a group or member id, a pattern) so its size is bounded."""
    if len(text) <= 256:
        return text
    return "#" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def member_key(tenant, group, member):
    """The key of a KIP-848 member's subscription."""
    return tenant, short(group), short(member)


class RegexSubscriptions:
    """KIP-848 members subscribed by regex, per (tenant, group, member).

    Clients send ``SubscribedTopicRegex`` only when it changes, so the
    gateway remembers each member's pattern and, on each of its heartbeats,
    sends a new alternation when the tenant's matching topics changed: a
    topic created later that matches is assigned at the member's next
    heartbeat after the gateway learns of it.
    """

    LIMIT = 10_000
    """Members remembered per tenant (its oldest forgotten first): one tenant's
    made-up member ids never push out another tenant's members."""
    PATTERN_BYTES = 8 << 20
    """Characters of the patterns remembered per tenant (oldest forgotten first)."""
    MATCH_BYTES = 32 << 20
    """Characters of the alternations kept for all tenants (then all dropped):
    each may name every topic of its tenant."""

    def __init__(self):
        self._members = {}  # tenant -> OrderedDict: key -> [pattern, last sent]
        self._sizes = {}    # tenant -> characters of its patterns remembered
        self._matches = {}  # (tenant, short(pattern), made of) -> alternation
        self._matched = 0   # characters of the alternations in _matches

    def subscribe(self, key, pattern):
        tenant = key[0]
        self.forget(key)
        members = self._members.setdefault(tenant, OrderedDict())
        members[key] = [pattern, None]
        size = self._sizes[tenant] = self._sizes.get(tenant, 0) + len(pattern)
        while len(members) > self.LIMIT or size > self.PATTERN_BYTES:
            _, (dropped, _) = members.popitem(last=False)
            size = self._sizes[tenant] = size - len(dropped)

    def forget(self, key):
        entry = self._members.get(key[0], {}).pop(key, None)
        if entry is not None:
            self._sizes[key[0]] -= len(entry[0])

    def pattern(self, key):
        entry = self._members.get(key[0], {}).get(key)
        return None if entry is None else entry[0]

    def broker_regex(self, key, made_of, topics):
        """(the alternation to send for *key*'s pattern over the tenant's
        topics, whether it differs from the last one sent); None if *key*
        subscribed by no pattern here.  *topics()*: the tenant's topics,
        logical -> physical; *made_of*: a key that changes with them."""
        entry = self._members.get(key[0], {}).get(key)
        if entry is None:
            return None
        pattern = entry[0]
        cache_key = (key[0], short(pattern), made_of)  # one tenant's, never another's
        regex = self._matches.get(cache_key)
        if regex is None:
            try:
                names = topics()
                regex = alternation([names[n] for n in fullmatch(pattern, names)])
            except InvalidPattern:
                regex = INVALID
            if len(self._matches) > 10_000 or self._matched > self.MATCH_BYTES:
                self._matches.clear()
                self._matched = 0
            self._matches[cache_key] = regex
            self._matched += len(regex)
        changed = regex != entry[1]
        entry[1] = regex
        return regex, changed
