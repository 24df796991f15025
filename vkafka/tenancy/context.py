# -*- test-case-name: tests.test_walker_table,tests.test_tenant_splice -*-
"""One request's rewrite context: what its request rewrite left for its response.

The walker (walker.py) and the rules (rules/) map names through it: a name
the tenant may not use becomes a decoy whose refusal (reason, error code) is
remembered here and put back in the response; topic ids are checked against
the topics the gateway knows.  Each API's rule has a named field here for
what its response needs.
"""

import dataclasses
import uuid
from types import MappingProxyType

from .naming import TOPIC, InvalidName

ZERO_UUID = uuid.UUID(int=0)
_NONE = MappingProxyType({})  # no concentrated topics: no dict per request
TOPIC_AUTHORIZATION_FAILED = 29
READ_ONLY_REASON = ("topic {!r} is read-only in this virtual cluster (a read-only "
                    "mapping: no account may WRITE, ALTER or DELETE it)")
SHARED_TXN_REASON = ("topic {!r} is mapped from outside this virtual cluster: "
                     "transactions cannot write to it (its producer ids are "
                     "not the virtual cluster's alone)")
SHARED_OWNER_REASON = ("topic {!r} is mapped from outside this virtual cluster: "
                       "only the cluster's operator deletes its records or "
                       "changes its configs or partitions (others read and "
                       "write it too)")
OWNER = "owner"
"""A rule's ``write`` for APIs that change a topic as its owner does
(DeleteRecords, config changes, CreatePartitions): refused on a writable
mapping too, a topic other virtual clusters share."""
_NO_TOPICS = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a name in a request was not forwarded: the client's own name, our
    explanation and the Kafka error code to answer with (None: the broker's)."""
    logical: str
    reason: str | None
    code: int | None = None


class Rejected(Exception):
    """A request or response the tenant rules will not pass, nor answer in
    Kafka's terms: the connection is closed with this reason.  Only these
    (and malformed bytes) close a connection quietly; any other exception is
    a bug and surfaces."""


class Foreign(Exception):
    """Raised inside a response walk: this entity is not the tenant's."""


class RequestContext:
    """What one request's rewrite left for its response: decoys and reasons."""

    __slots__ = ("namespace", "topic_ids", "decoy_names", "decoy_ids", "refusals",
                 "write", "concentrated", "concentration", "answer", "check_first",
                 "on_answer", "produced", "sessions", "topics_asked", "created",
                 "coordinator_kind", "config_refusals", "id_pattern",
                 "removed_aliases", "group_protocol", "partitions_asked", "offsets_asked",
                 "reserved", "rights",
                 "unplaced_ids", "making_session", "session_named", "shared",
                 "transactional", "asked_at", "_by_logical")

    def __init__(self, namespace, topic_ids, write=False):
        self.namespace = namespace
        self.topic_ids = topic_ids
        self.decoy_names = {}  # (kind, decoy) -> Refusal (ids: a list of them)
        self.decoy_ids = {}    # decoy uuid -> (client's uuid, reason, error code)
        self.refusals = 0
        self.concentrated = _NONE
        """Virtual name -> Alias of the concentrated topics this request names
        (filled by ``note_concentrated``)."""
        self.concentration = None
        """What the concentration layer left for the response (an Exchange)."""
        self.answer = None
        """A response body the gateway sends itself instead of forwarding
        (a cached Metadata answer)."""
        self.check_first = None
        """(check, its arguments, then): a pure *check* of the request's bytes
        run before it goes on, in the codec thread, and ``then(its result)``
        on the loop, which may set ``answer`` or raise Rejected (a Produce's
        compressed batches, rules/records.py)."""
        self.on_answer = None
        """Called with the rewritten response body, to keep it for reuse."""
        self.produced = None
        """(acks, records) of a Produce request, read while it was rewritten."""
        self.write = write
        """The request changes topics: read-only aliases are refused."""
        self.sessions = None
        """Fetch: the connection's FetchSessions (tenancy/sessions.py)."""
        self.making_session = None
        """Fetch: a full fetch (epoch 0) that would make a broker session: True
        (room held for it until its answer), False (no room: it goes on
        sessionless); None for any other fetch."""
        self.session_named = 0
        """Fetch: the connection's own session the request went on with."""
        # What one API's request rewrite leaves for its response (rules.py):
        self.topics_asked = None
        """Metadata, DescribeTopicPartitions: how an all-topics request went
        out: "by-name" (the tenant's topics by name) or "listing" (every topic,
        to learn the listing)."""
        self.created = None
        """CreateTopics: [(logical name, Deferred)] created by a concentration rule."""
        self.coordinator_kind = None
        """FindCoordinator: the key type (0 group, 1 transaction)."""
        self.config_refusals = None
        """Describe/Alter configs: decoy resource name -> (resource type, reason,
        error code) of the resources refused."""
        self.id_pattern = None
        """ListTransactions: the tenant's transactional id pattern (RE2)."""
        self.removed_aliases = None
        """DeleteTopics: [(name, topic id, alias)] whose mapping was removed."""
        self.group_protocol = None
        """JoinGroup, SyncGroup: the consumer-protocol Exchange."""
        self.rights = None
        """The request's Rights (rights.py) when its virtual cluster's ACLs
        are on: every name is checked against them."""
        self.partitions_asked = None
        """CreateTopics (physical names), CreatePartitions (logical): topic ->
        the partition count asked for, unless only validated."""
        self.offsets_asked = None
        """OffsetFetch: the request as the client sent it, for an answer
        without partitions (rules/groups.asked_again)."""
        self.reserved = None
        """CreateTopics, CreatePartitions under a capacity limit: the physical
        topics admitted, counted as held until the answer (rules/common.py)."""
        self.unplaced_ids = 0
        """Topic ids the request names that are not the tenant's topics by
        this gateway's listing (unknown here, or another tenant's): decoys."""
        self.shared = _NO_TOPICS
        """Physical names of the writable mapped topics the request names:
        topics outside the tenant's namespace, which others may write too."""
        self.transactional = False
        """Produce with a transactional id, AddPartitionsToTxn: a transaction
        writes to the topics it names."""
        self.asked_at = None
        """ListOffsets by time: when it went on (the loop's clock); its answer
        charges the wait (rules/records.py ``lookups_charged``)."""

    # requests

    def to_physical(self, kind, logical, rights=True, whole=False):
        """*logical* as the broker's name, or a decoy if refused; *rights*
        False where Kafka checks no ACL (names inside consumer-protocol
        bytes: the consumer checks them by its own Metadata); *whole*: a
        name whose refusal refuses the request (rights.py)."""
        if rights and self.rights is not None:
            refused = self.rights.refusal(kind, logical, whole)
            if refused is not None:
                return self.decoy_name(kind, logical, *refused)
        if kind == TOPIC and self.write:
            refused = self._mapping_refusal(logical)
            if refused is not None:
                return self.decoy_name(kind, logical, *refused)
        try:
            physical = self.namespace.physical(kind, logical)
        except InvalidName as e:
            return self.decoy_name(kind, logical, str(e))
        if kind == TOPIC:
            self._note_alias(logical, physical)
        return physical

    def _mapping_refusal(self, logical):
        """(reason, code) when this request (it writes) may not touch the
        mapped topic *logical*: a read-only mapping; a writable one, which
        other virtual clusters share, to a transaction or as its owner."""
        if self.namespace.read_only(TOPIC, logical):
            return READ_ONLY_REASON.format(logical), TOPIC_AUTHORIZATION_FAILED
        if (self.transactional or self.write == OWNER) and \
                self.namespace.shared(logical):
            return (SHARED_TXN_REASON if self.transactional else
                    SHARED_OWNER_REASON).format(logical), TOPIC_AUTHORIZATION_FAILED
        return None

    def _note_alias(self, logical, physical):
        """A mapped topic: concentrated ones go through their layer; writable
        ones are noted (``shared``)."""
        alias = self.namespace.aliases.get(logical)
        if alias is None:
            return
        if alias.concentrated:
            self.note_concentrated({physical: alias})
        elif not alias.read_only:
            if self.shared is _NO_TOPICS:
                self.shared = set()
            self.shared.add(physical)

    def note_concentrated(self, aliases):
        """Send this request through the concentration layer for *aliases*
        (virtual name -> Alias)."""
        if aliases:
            if self.concentrated is _NONE:
                self.concentrated = {}
            self.concentrated.update(aliases)

    def decoy_name(self, kind, logical, reason, code=None):
        """A name no tenant can produce, standing for a refused one.

        Topics: a name with '!', which Kafka never accepts as a topic name.
        Group and transactional ids: '!vkafka-refused-<random>!', unique to
        this request (no tenant prefix starts with '!'), so two tenants'
        refused requests never meet on one physical group or transaction.
        Where an unknown id would make the broker create state (a join, a
        simple offset commit, a new transactional producer), the rule turns
        it into a request the broker refuses (``empty_decoy``)."""
        refusal = Refusal(logical, reason, code)
        if kind == TOPIC:
            decoy = f"!vkafka-refused-{len(self.decoy_names)}"
        else:
            decoy = f"!vkafka-refused-{uuid.uuid4().hex}!"
        self.decoy_names[(kind, decoy)] = refusal
        self.refusals += 1
        self._by_logical = None
        return decoy

    def empty_decoy(self, kind, decoy):
        """The decoy *decoy* as the empty string, which JoinGroup,
        ConsumerGroupHeartbeat and InitProducerId refuse (INVALID_GROUP_ID,
        INVALID_REQUEST) where any other unknown id would be created."""
        refusal = self.decoy_names.pop((kind, decoy))
        self.decoy_names.setdefault((kind, ""), []).append(refusal)
        self._by_logical = None
        return ""

    def refusal(self, kind, name):
        """The Refusal a decoy *name* of *kind* stands for, or None (refused
        ids made empty are handed out in turn: responses list entries in
        request order)."""
        found = self.decoy_names.get((kind, name))
        if isinstance(found, list):
            if len(found) > 1:
                found.append(found.pop(0))
                return found[-1]
            return found[0]
        return found

    def all_refusals(self):
        """(kind, Refusal) of every refused name."""
        for (kind, _), found in self.decoy_names.items():
            for refusal in (found if isinstance(found, list) else (found,)):
                yield kind, refusal

    def refusal_of(self, kind, logical):
        """The (first) Refusal of the refused name *logical* of *kind*, or None:
        looked up, not searched (a response naming 11,000 refused topics
        searched every refusal for each, 15 s of the loop)."""
        index = getattr(self, "_by_logical", None)
        if index is None:
            index = self._by_logical = {}
            for kind_of, refusal in self.all_refusals():
                index.setdefault((kind_of, refusal.logical), refusal)
        return index.get((kind, logical))

    def check_topic_id(self, topic_id):
        if topic_id is None or topic_id == ZERO_UUID:
            return topic_id
        physical = self.topic_ids.get(topic_id)
        logical = None if physical is None else self.namespace.logical(TOPIC, physical)
        if logical is not None:
            refusal = None if self.rights is None else \
                self.rights.refusal(TOPIC, logical)
            if refusal is None and self.write:
                refusal = self._mapping_refusal(logical)
            if refusal is None:
                self._note_alias(logical, physical)
                return topic_id
            if self.rights is not None and not self.rights.allows(
                    "DESCRIBE", TOPIC, logical):
                logical = None  # as Kafka: an id one may not describe is unknown
        if logical is None:  # the refusal would name the topic, or tell it exists
            refusal = (None, None)
            self.unplaced_ids += 1
        decoy = uuid.uuid4()
        self.decoy_ids[decoy] = (topic_id, *refusal)
        if refusal[1] is not None:
            self.refusals += 1
        return decoy

    # responses

    def owns_topic_id(self, raw):
        """Whether the 16-byte topic id *raw* names one of the tenant's topics:
        one its requests named and had checked (the namespace's memo, while
        no mapping changes), or looked up."""
        raw = bytes(raw)
        if self.namespace.memo().owns_id(raw):
            return True
        physical = self.topic_ids.get(uuid.UUID(bytes=raw))
        return physical is not None and self.namespace.owns(TOPIC, physical)

    def check_streamed_id(self, raw):
        """FetchStream's check: a foreign topic id stops the response before
        any of that topic's bytes are forwarded."""
        if not self.owns_topic_id(raw):
            raise Rejected("a fetch response names a topic that is not the "
                             "tenant's")

    def to_logical(self, kind, physical):
        if physical is None:
            return physical
        refused = self.refusal(kind, physical)
        if refused is not None:
            return refused.logical
        if physical == "" and kind == TOPIC:
            return physical  # no topic (a Metadata answer by id)
        logical = self.namespace.logical(kind, physical)
        if logical is None or (self.rights is not None and
                               not self.rights.sees(kind, logical)):
            raise Foreign(physical)
        return logical

    def restore_topic_id(self, topic_id):
        if topic_id is None or topic_id == ZERO_UUID:
            return topic_id
        original = self.decoy_ids.get(topic_id)
        if original is not None:
            return original[0]
        physical = self.topic_ids.get(topic_id)
        if physical is None or not self.namespace.owns(TOPIC, physical):
            raise Foreign(topic_id)
        if self.rights is not None and not self.rights.sees(
                TOPIC, self.namespace.logical(TOPIC, physical)):
            raise Foreign(topic_id)
        return topic_id
