# -*- test-case-name: tests.test_concentration -*-
"""What the request and the response side of the concentration layer both
use: the Exchange one leaves for the other, the refusal they raise, the
synthetic topic ids and the Kafka error codes.  Kept apart so neither side
imports the other."""

import dataclasses
import uuid

from ..context import Rejected

INVALID_CONFIG, INVALID_REQUEST, TOPIC_ALREADY_EXISTS = 40, 42, 36
UNKNOWN_TOPIC_OR_PARTITION, MESSAGE_TOO_LARGE, INVALID_RECORD = 3, 10, 87
UNKNOWN_TOPIC_ID = 100
_SYNTHETIC = uuid.UUID("6b61666b-612d-7669-7274-75616c746f70")  # uuid5 namespace
_IDENT = ("name", "topic", "topic_id")


class Refused(Rejected, ValueError):
    """A request this layer will not send on a concentrated topic's behalf.
    A Produce is answered with ``code`` for its concentrated topics' partitions
    (filters/tenant.py); any other request closes the connection."""

    def __init__(self, message, code=INVALID_REQUEST):
        super().__init__(message)
        self.code = code


def synthetic_id(virtual):
    """The topic id a concentrated logical topic is known by (stable everywhere)."""
    return uuid.uuid5(_SYNTHETIC, virtual)


def ident(entity):
    """(field, value) naming the topic of *entity*: its name, else its id
    (API versions name topics by different fields)."""
    found = None, None
    for name in _IDENT:
        if hasattr(entity, name):
            value = getattr(entity, name)
            if value is not None:
                return name, value
            found = found if found[0] else (name, None)
    return found


class Exchange:
    """What one request's concentration rewrite leaves for its response."""

    __slots__ = ("by_physical", "by_time", "records", "bytes")

    def __init__(self):
        self.by_physical = {}  # physical name or id -> [(virtual, alias)]
        self.by_time = set()   # ListOffsets: (virtual, partition) asked by time
        self.records = 0       # Produce: records tagged so far (records.MAX_RECORDS)
        self.bytes = 0         # and their bytes, tagged (records.MAX_BYTES)

    def use(self, physical, virtual, alias):
        """Note that *virtual* went out as *physical*, so the response is
        given back under it; returns every logical topic *physical* stands
        for in this request."""
        users = self.by_physical.setdefault(physical, [])
        if (virtual, alias) not in users:
            users.append((virtual, alias))
        return users


def with_group_topics(message, rewrite):
    """OffsetFetch *message* with its topic lists rewritten by *rewrite*:
    from version 8 they are per group, before that one list."""
    if hasattr(message, "groups"):
        return dataclasses.replace(message, groups=tuple(
            dataclasses.replace(g, topics=rewrite(g.topics)) for g in message.groups))
    return dataclasses.replace(message, topics=rewrite(message.topics))
