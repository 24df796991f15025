# -*- test-case-name: tests.test_admin,tests.test_namespaces -*-
"""The store interface: a key -> JSON value map that every gateway follows.

Writes return a Deferred that fires once the write has been applied to this
gateway's own view (read-your-writes); every change, local or from another
gateway, is passed to the subscribers in log order.
"""

from twisted.internet import defer


class StoreUnavailable(Exception):
    """The store cannot take writes now (the backing cluster is unreachable)."""


class MemoryStore:
    """An in-memory store for unit tests: writes apply at once."""

    def __init__(self):
        self.data = {}
        self.subscribers = []
        self.ready = defer.succeed(None)
        self.last_error = None
        self.available = True

    def subscribe(self, callback):
        self.subscribers.append(callback)
        for key, value in self.data.items():
            callback(key, value)

    def put(self, key, value):
        """Set *key* to *value* (None deletes it)."""
        if not self.available:
            return defer.fail(StoreUnavailable("store unavailable (test)"))
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        for callback in self.subscribers:
            callback(key, value)
        return defer.succeed(None)

    def start(self):
        pass

    def stop(self):
        pass
