# -*- test-case-name: tests.test_fields -*-
"""The words of the field table: which APIs (``ApiKey``), what a field is
(``Field``, ``F`` for short) and one API's classes (``Row``).

Apart from the package __init__ so that the row modules (rows_*.py) and the
__init__ that joins them can both import these without importing each other.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from types import MappingProxyType


class ApiKey(IntEnum):
    """The API keys the tenant table offers (kio's names)."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_ACLS = 29
    CREATE_ACLS = 30
    DELETE_ACLS = 31
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    SASL_AUTHENTICATE = 36
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    INCREMENTAL_ALTER_CONFIGS = 44
    OFFSET_DELETE = 47
    DESCRIBE_CLUSTER = 60
    DESCRIBE_PRODUCERS = 61
    DESCRIBE_TRANSACTIONS = 65
    LIST_TRANSACTIONS = 66
    CONSUMER_GROUP_HEARTBEAT = 68
    CONSUMER_GROUP_DESCRIBE = 69
    DESCRIBE_TOPIC_PARTITIONS = 75


class Field(Enum):
    """What a field is; each value is the sentence docs/api-rules.md shows."""

    TOPIC_NAME = "a topic name"
    GROUP_ID = "a consumer group id"
    TRANSACTIONAL_ID = "a transactional id"
    TOPIC_ID = "a topic id (uuid)"
    BROKER = ("the cluster's own shape: broker ids, hosts, ports, racks, node "
              "endpoints, cluster id, controller id, and what selects which "
              "brokers are listed")
    RESOURCE = ("a resource named by a kind and a name (config resources, "
                "coordinator keys): the kind field says whether the name is a "
                "topic, group, transaction or broker, so both halves are one class")
    PATTERN = "a tenant's pattern, evaluated by the gateway (or confined by it)"
    CONNECTION_STATE = ("state the broker hands out and the client sends back: "
                        "fetch sessions, paging cursors, member ids, member and "
                        "group epochs, generation ids, producer ids and epochs")
    BROKER_PARSED = ("bytes the broker interprets: consumer protocol subscriptions "
                     "and assignments (protocol type \"consumer\"), which name topics")
    OPAQUE_BYTES = ("bytes or text nobody interprets: record batches, SASL auth "
                    "bytes, offset metadata, free-text reasons")
    CLIENT = ("what a client says about itself, or where the broker saw it connect "
              "from: client id and host, rack, software name and version")
    CONFIG = "a config name, value or documentation"
    ACL = ("a part of an ACL (resource kind, name and pattern, principal, host, "
           "operation, permission): answered by the gateway from the virtual "
           "cluster's own ACLs, under logical names; never forwarded")
    ERROR = "an error code or message"
    SCALAR = ("a harmless scalar: counts, timeouts, partition indexes, offsets, "
              "epochs of partitions, flags, states, protocol and feature names")


F = Field  # short, for the table


@dataclass(frozen=True)
class Row:
    """One API's field classes: field path -> Field, request and response."""

    request: Mapping[str, Field]
    response: Mapping[str, Field]

    def __post_init__(self):
        object.__setattr__(self, "request", MappingProxyType(dict(self.request)))
        object.__setattr__(self, "response", MappingProxyType(dict(self.response)))
