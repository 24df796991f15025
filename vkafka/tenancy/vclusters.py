# -*- test-case-name: tests.test_naming -*-
"""The virtual clusters a gateway knows, and each one's namespace.

Known are the virtual clusters of the shared state (``define``) and those
this gateway met implicitly, through a token naming a virtual cluster the
state does not have (``namespace``).  Any two known ones that overlap
(names.overlap) are both unavailable: the gateway will not guess which one
a name belongs to.  A newcomer that would overlap a known one is refused
before it becomes known (``unavailable``), so a token cannot take a served
virtual cluster down.
"""

import bisect
from collections import Counter

from twisted.logger import Logger

from ..names import folded, inside, overlap, valid_vcluster_name
from .naming import Namespace, Prefixes, overlap_reason

log = Logger()


class VirtualClusters:
    """Virtual cluster name -> Namespace; every prefix is known for ownership."""

    def __init__(self):
        self.prefixes = Prefixes()
        self._namespaces = {}
        self._known = {}          # name -> prefix, every known virtual cluster
        self._by_folded = {}      # folded prefix -> names
        self._folded = []         # the distinct folded prefixes, sorted
        self._exact = Counter()   # prefix -> how many known names have it
        self._overlaps = {}       # name -> names it overlaps (only if any)
        self.unavailable_listeners = []
        """Called with (name, reason) when a known virtual cluster becomes
        unavailable: the gateway closes its connections."""

    def define(self, name, prefix=None):
        """Declare a virtual cluster, optionally with a prefix other than its name."""
        if not valid_vcluster_name(name):
            raise ValueError(f"invalid virtual cluster name {name!r}")
        prefix = name if prefix is None else prefix
        if self._known.get(name) != prefix:
            existing = self._namespaces.pop(name, None)
            if existing is not None:  # held by open connections: owns nothing now
                self._set_unavailable(existing, f"virtual cluster {name} changed "
                                      "its prefix; reconnect")
            self._forget(name)
            self._learn(name, prefix)
        return self.namespace(name)

    def remove(self, name):
        """A virtual cluster deleted from the state: no longer known here."""
        existing = self._namespaces.pop(name, None)
        if existing is not None:
            self._set_unavailable(existing, f"virtual cluster {name} was deleted")
        self._forget(name)

    def namespace(self, name):
        """*name*'s namespace; an unknown name becomes known (implicitly).

        Callers serving a client ask ``unavailable`` first: a newcomer that
        overlaps a known virtual cluster makes both unavailable here.
        """
        namespace = self._namespaces.get(name)
        if namespace is None:
            if name not in self._known:
                self._learn(name, name)
            prefix = self._known[name]
            namespace = self._namespaces[name] = Namespace(name, prefix, self.prefixes)
            namespace.unavailable = self._reason(name)
        return namespace

    def unavailable(self, name):
        """Why the gateway will not serve *name* now, or None: it overlaps a
        known virtual cluster (or, unknown yet, would overlap one)."""
        if name in self._known:
            return self._reason(name)
        return overlap_reason(name) if self.overlapping(name) else None

    def conflicts(self, name):
        """The known virtual clusters *name* overlaps, sorted (for operators)."""
        if name in self._known:
            return sorted(self._overlaps.get(name, ()))
        return self.overlapping(name)

    def overlapping(self, prefix, exclude=None):
        """The known virtual clusters (but *exclude*) whose prefixes overlap
        *prefix* (names.overlap), sorted.  Candidates come from an index:
        those its folded form starts with, and those starting with it (a run
        of the sorted folded prefixes)."""
        key = folded(prefix)
        found = set()
        for end in range(len(key) + 1):
            found.update(self._by_folded.get(key[:end], ()))
        at = bisect.bisect_left(self._folded, key)
        while at < len(self._folded) and self._folded[at].startswith(key):
            found.update(self._by_folded[self._folded[at]])
            at += 1
        found.discard(exclude)
        return sorted(n for n in found if overlap(prefix, self._known[n]))

    def prefix_of(self, name):
        """The prefix of a known virtual cluster, else None."""
        return self._known.get(name)

    def owner(self, physical):
        """The known virtual cluster whose namespace holds *physical*, or would
        hold a name colliding with it in Kafka ('.' = '_'); the longest prefix."""
        best = None
        for name, prefix in self._known.items():
            if prefix and inside(prefix, physical) and (
                    best is None or len(prefix) > len(best[1])):
                best = (name, prefix)
        return best and best[0]

    def names(self):
        return sorted(self._known)

    # the overlap index

    def _reason(self, name):
        return overlap_reason(name) if self._overlaps.get(name) else None

    def _learn(self, name, prefix):
        others = self.overlapping(prefix, exclude=name)
        self._known[name] = prefix
        key = folded(prefix)
        names = self._by_folded.get(key)
        if names is None:
            names = self._by_folded[key] = set()
            bisect.insort(self._folded, key)
        names.add(name)
        self._exact[prefix] += 1
        self.prefixes.add(prefix)
        for other in others:
            self._overlaps.setdefault(name, set()).add(other)
            self._overlaps.setdefault(other, set()).add(name)
            log.error("virtual clusters {a} (prefix {pa!r}) and {b} (prefix {pb!r}) "
                      "overlap ('.' and '_' count as one): neither is served until "
                      "one of them is deleted", a=other, pa=self._known[other],
                      b=name, pb=prefix, overlap=[other, name])
        for each in [name, *others]:
            self._refresh(each)

    def _forget(self, name):
        prefix = self._known.pop(name, None)
        if prefix is None:
            return
        key = folded(prefix)
        names = self._by_folded[key]
        names.discard(name)
        if not names:
            del self._by_folded[key]
            self._folded.pop(bisect.bisect_left(self._folded, key))
        self._exact[prefix] -= 1
        if not self._exact[prefix]:
            del self._exact[prefix]
            self.prefixes.discard(prefix)
        for other in self._overlaps.pop(name, ()):
            left = self._overlaps.get(other)
            left.discard(name)
            if not left:
                del self._overlaps[other]
                log.info("virtual cluster {vc} overlaps no other any more: served "
                         "again", vc=other)
            self._refresh(other)

    def _refresh(self, name):
        namespace = self._namespaces.get(name)
        if namespace is not None:
            self._set_unavailable(namespace, self._reason(name))

    def _set_unavailable(self, namespace, reason):
        if namespace.unavailable == reason:
            return
        namespace.unavailable = reason
        namespace.version += 1  # cached views of it are stale
        if reason is not None:
            for listener in self.unavailable_listeners:
                listener(namespace.name, reason)
