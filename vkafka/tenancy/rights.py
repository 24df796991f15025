# -*- test-case-name: tests.test_rights -*-
"""One request's rights: the ACLs of its virtual cluster applied to its names.

The rule table says what each API needs of each kind of name it carries
(``Needs``, rules/rights.py); the request context asks this object about
every name it maps (``RequestContext.to_physical``, ``check_topic_id``) and
every name a listing answer shows (``to_logical``).  A refused name becomes
a decoy like any other refused name, and its entity gets Kafka's own code:
TOPIC_, GROUP_, TRANSACTIONAL_ID_ or CLUSTER_AUTHORIZATION_FAILED.  Where
Kafka refuses a whole request for one name (a group of a commit, the
transactional id of a produce), every name of the request becomes a decoy
and every error code of the answer that code (``whole``).

Made only for virtual clusters whose ACLs are on: with them off the context
carries None and costs one attribute test per name.
"""

from dataclasses import dataclass

from ..auth.acls import CLUSTER_NAME
from .naming import GROUP, TOPIC, TRANSACTION

RESOURCE_TYPE = {TOPIC: "TOPIC", GROUP: "GROUP", TRANSACTION: "TRANSACTIONAL_ID"}
CODES = {TOPIC: 29, GROUP: 30, TRANSACTION: 53, "cluster": 31}
"""TOPIC_, GROUP_, TRANSACTIONAL_ID_, CLUSTER_AUTHORIZATION_FAILED."""


@dataclass(frozen=True)
class Needs:
    """What one API needs for each kind of name it carries (None: that kind
    has no place in this API's requests; one there anyway is refused)."""
    topic: str | None = None
    group: str | None = None
    transaction: str | None = None
    whole: tuple = ()
    """Kinds whose refusal refuses the whole request, as Kafka does."""
    lists: tuple = ()
    """Kinds the answer lists: entries the principal cannot DESCRIBE dropped."""
    create_on_cluster: bool = False
    """CreateTopics: CREATE on the cluster allows every topic."""
    cluster: str | None = None
    """A cluster operation the request needs (ACL APIs, broker configs)."""
    cluster_sees_all: bool = False
    """ListGroups: DESCRIBE on the cluster lists every group."""

    def of(self, kind):
        return {TOPIC: self.topic, GROUP: self.group,
                TRANSACTION: self.transaction}.get(kind)

    def summary(self):
        """How docs/api-rules.md states these needs."""
        parts = [f"{label} {op}" for label, op in (
            ("topic", self.topic), ("group", self.group),
            ("transactional id", self.transaction), ("cluster", self.cluster)) if op]
        if self.create_on_cluster:
            parts[-1:] = [parts[-1] + " (or CREATE on the cluster)"] if parts else []
        if self.lists:
            parts.append("the answer lists only the " + " and ".join(
                f"{kind}s" for kind in self.lists) + " the principal may DESCRIBE"
                + (" (all of them with DESCRIBE on the cluster)"
                   if self.cluster_sees_all else ""))
        return ", ".join(parts) or "none"


NOTHING = Needs()


class Rights:
    """The decisions for one request of one principal."""

    __slots__ = ("authorizer", "principal", "host", "needs", "refused", "audit",
                 "vcluster", "api")

    def __init__(self, authorizer, username, host, needs, audit=None, vcluster=None,
                 api=None):
        self.authorizer = authorizer
        self.principal = f"User:{username}"
        self.host = host or "*"
        self.needs = needs
        self.audit = audit
        """Told of each refusal (sampled there), if set."""
        self.vcluster, self.api = vcluster, api
        self.refused = None
        """(reason, code) once a name refused the whole request."""

    def allows(self, operation, kind, logical):
        return self.authorizer.allowed(self.principal, self.host, operation,
                                       RESOURCE_TYPE[kind], logical)

    def on_cluster(self, operation):
        return self.authorizer.allowed(self.principal, self.host, operation,
                                       "CLUSTER", CLUSTER_NAME)

    def any_of(self, operation, kind):
        """Kafka's by-resource-type check (an idempotent producer's WRITE)."""
        return self.authorizer.allowed_any(self.principal, self.host, operation,
                                           RESOURCE_TYPE[kind])

    def refusal(self, kind, logical, whole=False):
        """(reason, code) if *logical* may not be used here, else None; a
        refused *whole* name (the top-level group or transactional id of an
        API that names it in ``Needs.whole``) refuses every name after it."""
        if self.refused is not None:
            return self.refused
        if self.permits(kind, logical):
            return None
        operation = self.needs.of(kind)
        found = (self.reason(operation or "any operation", kind, logical),
                 CODES[kind])
        self.tell(operation, RESOURCE_TYPE[kind], logical)
        if whole and kind in self.needs.whole:
            self.refused = found
        return found

    def permits(self, kind, logical):
        """Whether ``refusal`` lets *logical* through, nothing told: for a rule
        that acts on a name itself (an alias it removes, a topic a
        concentration rule creates) before the walk, which refuses the rest."""
        if self.refused is not None:
            return False
        operation = self.needs.of(kind)
        return operation is not None and (
            self.allows(operation, kind, logical) or
            (self.needs.create_on_cluster and self.on_cluster(operation)))

    def tell(self, operation, resource_type, name):
        """A refusal for the audit log (which samples them)."""
        if self.audit is not None:
            self.audit.refused(self.vcluster, self.principal, operation,
                               resource_type, name, self.api, host=self.host)

    def reason(self, operation, kind, logical):
        return (f"not authorized: {self.principal} may not {operation} "
                f"{kind} {logical!r}")

    def sees(self, kind, logical):
        """Whether a listing answer may show *logical* (DESCRIBE)."""
        if kind not in self.needs.lists:
            return True
        if kind == GROUP and self.needs.cluster_sees_all and self.on_cluster("DESCRIBE"):
            return True
        return self.allows("DESCRIBE", kind, logical)

    def precheck(self, request, plan):
        """Refuse a decoded request whole before its walk if a name of a
        *whole* kind at its top level is refused: then every name of it
        becomes a decoy, not only those after that name."""
        for fp in plan:
            if fp.kind not in self.needs.whole or fp.role != "name":
                continue
            value = getattr(request, fp.name)
            for name in (value if fp.many else (value,)) if value else ():
                if self.refusal(fp.kind, name, whole=True) is not None:
                    return


NOT_ASKED = -2147483648
"""An authorized-operations field the client did not ask for (INT32_MIN)."""
OPERATIONS_OF = {
    "TOPIC": ("READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE",
              "DESCRIBE_CONFIGS", "ALTER_CONFIGS"),
    "GROUP": ("READ", "DELETE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS"),
    "CLUSTER": ("CREATE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE",
                "ALTER", "DESCRIBE"),
}
"""The operations Kafka reports in authorized-operations bit fields, by type."""


class Unrestricted:
    """The rights of every account of a virtual cluster whose ACLs are off:
    whatever the gateway itself lets a tenant do.  The broker reports the
    operations of the gateway's own account (a super user's, on the cluster),
    which say nothing of the tenant's: not ALTER_CONFIGS on the cluster
    (broker configs are read-only to tenants), nor writing a read-only
    mapping."""

    principal = host = None
    CLUSTER = frozenset(("CREATE", "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE", "ALTER",
                         "DESCRIBE"))
    READ_ONLY = frozenset(("READ", "DESCRIBE", "DESCRIBE_CONFIGS"))

    def __init__(self, namespace):
        self.namespace = namespace
        self.authorizer = self

    def allowed(self, principal, host, operation, resource_type, name):
        if resource_type == "CLUSTER":
            return operation in self.CLUSTER
        if resource_type == "TOPIC" and self.namespace.read_only(TOPIC, name):
            return operation in self.READ_ONLY
        return True


def operations_bits(rights, resource_type, name):
    """The authorized-operations bit field of the principal on a resource."""
    from ..auth.acls import OPERATIONS
    bits = 0
    for operation in OPERATIONS_OF[resource_type]:
        if rights.authorizer.allowed(rights.principal, rights.host, operation,
                                     resource_type, name):
            bits |= 1 << OPERATIONS[operation]
    return bits


def authorized_operations(rights, response):
    """*response* with the authorized-operations fields (Metadata,
    DescribeCluster, DescribeTopicPartitions, DescribeGroups,
    ConsumerGroupDescribe) the tenant principal's, not the gateway's own
    principal's as the broker computed them."""
    import dataclasses
    changes = {}
    if getattr(response, "cluster_authorized_operations", NOT_ASKED) != NOT_ASKED:
        changes["cluster_authorized_operations"] = type(
            response.cluster_authorized_operations)(
                operations_bits(rights, "CLUSTER", CLUSTER_NAME))
    for field, kind, name, bits in (("topics", "TOPIC", "name", "topic_authorized_operations"),
                                    ("groups", "GROUP", "group_id", "authorized_operations")):
        items = getattr(response, field, None)
        if items and any(getattr(i, bits, NOT_ASKED) != NOT_ASKED for i in items):
            changes[field] = tuple(
                i if getattr(i, bits, NOT_ASKED) == NOT_ASKED or not getattr(i, name)
                else dataclasses.replace(i, **{bits: type(getattr(i, bits))(
                    operations_bits(rights, kind, getattr(i, name)))}) for i in items)
    return dataclasses.replace(response, **changes) if changes else response


def created_topics_shown(rights, response):
    """CreateTopics: a created topic the principal may not DESCRIBE_CONFIGS
    is answered without its id, counts and configs, and
    ``topic_config_error_code`` TOPIC_AUTHORIZATION_FAILED, as Kafka does."""
    import dataclasses
    import uuid
    hidden = {"topic_config_error_code": CODES[TOPIC], "num_partitions": -1,
              "replication_factor": -1}
    topics = []
    for t in response.topics:
        if t.error_code == 0 and not rights.allows("DESCRIBE_CONFIGS", TOPIC, t.name):
            fields = {f.name for f in dataclasses.fields(t)}
            changes = {k: type(getattr(t, k))(v) for k, v in hidden.items()
                       if k in fields}
            changes.update({k: v for k, v in (("configs", ()), (
                "topic_id", uuid.UUID(int=0))) if k in fields})
            t = dataclasses.replace(t, **changes)
        topics.append(t)
    return dataclasses.replace(response, topics=tuple(topics))


def described_groups_shown(rights, response):
    """ConsumerGroupDescribe: a group whose members' assignments name a topic
    the principal may not DESCRIBE is answered TOPIC_AUTHORIZATION_FAILED,
    without its members, as Kafka does."""
    import dataclasses
    groups = []
    for g in response.groups:
        names = {tp.topic_name for m in g.members
                 for a in (m.assignment, m.target_assignment)
                 for tp in a.topic_partitions if tp.topic_name}
        hidden = sorted(n for n in names if not rights.allows("DESCRIBE", TOPIC, n))
        if hidden and g.error_code == 0:
            g = dataclasses.replace(
                g, error_code=type(g.error_code)(CODES[TOPIC]), members=(),
                error_message=f"not authorized: {rights.principal} may not "
                              f"DESCRIBE topics of this group's assignments")
        groups.append(g)
    return dataclasses.replace(response, groups=tuple(groups))
