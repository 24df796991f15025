# -*- test-case-name: tests.test_naming -*-
"""The virtual clusters a gateway knows, and each one's namespace."""

from .naming import Namespace, Prefixes, valid_vcluster_name


class VirtualClusters:
    """Virtual cluster name -> Namespace; every prefix is known for ownership."""

    def __init__(self):
        self.prefixes = Prefixes()
        self._namespaces = {}
        self._configured = {}

    def define(self, name, prefix=None):
        """Declare a virtual cluster, optionally with a prefix other than its name."""
        if not valid_vcluster_name(name):
            raise ValueError(f"invalid virtual cluster name {name!r}")
        prefix = name if prefix is None else prefix
        self._configured[name] = prefix
        existing = self._namespaces.get(name)
        if existing is not None and existing.prefix != prefix:
            del self._namespaces[name]
        self.prefixes.add(prefix)
        return self.namespace(name)

    def namespace(self, name):
        namespace = self._namespaces.get(name)
        if namespace is None:
            prefix = self._configured.get(name, name)
            namespace = self._namespaces[name] = Namespace(name, prefix, self.prefixes)
        return namespace

    def owner(self, physical):
        """The virtual cluster whose prefix owns *physical*, or None."""
        best = None
        for name in set(self._configured) | set(self._namespaces):
            prefix = self._configured.get(name, name)
            if prefix and physical.startswith(prefix) and (
                    best is None or len(prefix) > len(best[1])):
                best = (name, prefix)
        return best and best[0]

    def names(self):
        return sorted(set(self._configured) | set(self._namespaces))
