# -*- test-case-name: tests.test_acls -*-
"""Kafka ACLs inside one virtual cluster, with Kafka's own semantics.

An ACL names a resource by its *logical* name (the tenant never sees a
prefix), a principal ``User:<service account>`` of the same virtual cluster
(or ``User:*``), a host (``*`` or an address), an operation and ALLOW or
DENY.  Decisions follow Kafka's StandardAuthorizer: super users may do
anything; a matching DENY wins; a matching ALLOW of the operation (or ALL)
allows, and READ, WRITE, DELETE or ALTER imply DESCRIBE, ALTER_CONFIGS
implies DESCRIBE_CONFIGS; no matching ACL denies.  ``allowed_any`` is
Kafka's by-resource-type check (KIP-679: an idempotent producer needs WRITE
on some topic).  Pure: no I/O, so the gateway and its tests share it.
"""

import hashlib
import itertools
import json
from dataclasses import dataclass

# The wire codes of Kafka's enums (org.apache.kafka.common.acl / resource).
OPERATIONS = {"UNKNOWN": 0, "ANY": 1, "ALL": 2, "READ": 3, "WRITE": 4,
              "CREATE": 5, "DELETE": 6, "ALTER": 7, "DESCRIBE": 8,
              "CLUSTER_ACTION": 9, "DESCRIBE_CONFIGS": 10, "ALTER_CONFIGS": 11,
              "IDEMPOTENT_WRITE": 12, "CREATE_TOKENS": 13, "DESCRIBE_TOKENS": 14,
              "TWO_PHASE_COMMIT": 15}
RESOURCE_TYPES = {"UNKNOWN": 0, "ANY": 1, "TOPIC": 2, "GROUP": 3, "CLUSTER": 4,
                  "TRANSACTIONAL_ID": 5, "DELEGATION_TOKEN": 6, "USER": 7}
PATTERN_TYPES = {"UNKNOWN": 0, "ANY": 1, "MATCH": 2, "LITERAL": 3, "PREFIXED": 4}
PERMISSIONS = {"UNKNOWN": 0, "ANY": 1, "DENY": 2, "ALLOW": 3}


def name_of(table, code):
    """The name of wire *code* in one of the tables above ("UNKNOWN" if none)."""
    return next((name for name, c in table.items() if c == int(code)), "UNKNOWN")


SUPPORTED_TYPES = ("TOPIC", "GROUP", "TRANSACTIONAL_ID", "CLUSTER")
"""What a virtual cluster's ACLs can name (delegation tokens and users are
the operator's, never a tenant's)."""
SUPPORTED_OPERATIONS = ("ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER",
                        "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS",
                        "IDEMPOTENT_WRITE")
MAX_ACLS = 1000
"""ACLs one virtual cluster may hold: the state every gateway keeps in memory
and reads at start stays small whatever a tenant sends."""
MAX_NAME, MAX_PRINCIPAL, MAX_HOST = 1000, 256, 256
"""Characters of an ACL's resource name, principal and host (a topic name
has at most 249): a thousand ACLs of a megabyte each were a gigabyte in
every gateway's memory, and a decision's cost grew with their length."""
CLUSTER_NAME = "kafka-cluster"
WILDCARD = "*"
WILDCARD_PRINCIPAL = "User:*"
IMPLIED_BY = {"DESCRIBE": ("DESCRIBE", "READ", "WRITE", "DELETE", "ALTER", "ALL"),
              "DESCRIBE_CONFIGS": ("DESCRIBE_CONFIGS", "ALTER_CONFIGS", "ALL")}
"""The ALLOWed operations that grant an operation (default: itself or ALL)."""


class InvalidAcl(ValueError):
    """An ACL a virtual cluster cannot hold; the message says why."""


@dataclass(frozen=True, order=True)
class Acl:
    resource_type: str   # TOPIC, GROUP, TRANSACTIONAL_ID, CLUSTER
    pattern_type: str    # LITERAL, PREFIXED
    name: str            # logical; "*" (literal) is every resource
    principal: str       # "User:<service account>" or "User:*"
    host: str            # "*" or an address
    operation: str
    permission: str      # ALLOW, DENY

    @classmethod
    def checked(cls, resource_type, pattern_type, name, principal, host, operation,
                permission):
        """An Acl, or InvalidAcl saying which part a virtual cluster refuses."""
        acl = cls(str(resource_type).upper(), str(pattern_type).upper(), name,
                  principal, host or WILDCARD, str(operation).upper(),
                  str(permission).upper())
        acl.check()
        return acl

    def check(self):
        if self.resource_type not in SUPPORTED_TYPES:
            raise InvalidAcl(f"resource type {self.resource_type} is not supported "
                             f"in a virtual cluster (use one of "
                             f"{', '.join(SUPPORTED_TYPES)})")
        if self.pattern_type not in ("LITERAL", "PREFIXED"):
            raise InvalidAcl(f"pattern type {self.pattern_type}: use LITERAL or "
                             "PREFIXED")
        if not isinstance(self.name, str) or not self.name:
            raise InvalidAcl("the resource name must not be empty")
        for what, value, most in (("resource name", self.name, MAX_NAME),
                                  ("principal", self.principal, MAX_PRINCIPAL),
                                  ("host", self.host, MAX_HOST)):
            if isinstance(value, str) and len(value) > most:
                raise InvalidAcl(f"the {what} has {len(value)} characters, "
                                 f"more than {most}")
        if self.resource_type == "CLUSTER" and self.name != CLUSTER_NAME:
            raise InvalidAcl(f"the cluster resource is named {CLUSTER_NAME!r}")
        if self.pattern_type == "PREFIXED" and self.name == WILDCARD:
            raise InvalidAcl("a PREFIXED pattern cannot be '*' (use LITERAL '*')")
        if self.operation not in SUPPORTED_OPERATIONS:
            raise InvalidAcl(f"operation {self.operation} is not supported in a "
                             f"virtual cluster (use one of "
                             f"{', '.join(SUPPORTED_OPERATIONS)})")
        if self.permission not in ("ALLOW", "DENY"):
            raise InvalidAcl(f"permission {self.permission}: use ALLOW or DENY")
        kind, sep, user = (self.principal or "").partition(":")
        if kind != "User" or not sep or not user or "/" in user:
            raise InvalidAcl(f"principal {self.principal!r}: use User:<service "
                             "account> of this virtual cluster, or User:*")
        if not isinstance(self.host, str) or not self.host:
            raise InvalidAcl("the host must be '*' or an address")

    def key(self):
        """A stable id: the same ACL added twice is one record."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def to_json(self):
        return {"resourceType": self.resource_type, "patternType": self.pattern_type,
                "name": self.name, "principal": self.principal, "host": self.host,
                "operation": self.operation, "permission": self.permission}

    @classmethod
    def from_json(cls, body):
        """An Acl from its JSON form; InvalidAcl if a field is missing or bad."""
        if not isinstance(body, dict):
            raise InvalidAcl("an ACL is an object")
        try:
            return cls.checked(body["resourceType"], body.get("patternType", "LITERAL"),
                               body["name"], body["principal"], body.get("host", "*"),
                               body["operation"], body["permission"])
        except KeyError as e:
            raise InvalidAcl(f"an ACL needs {e.args[0]!r}")

    def matches_resource(self, resource_type, name):
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == "LITERAL":
            return self.name == name or self.name == WILDCARD
        return name.startswith(self.name)

    def applies_to(self, principal, host):
        return self.principal in (principal, WILDCARD_PRINCIPAL) and \
            self.host in (host, WILDCARD)


@dataclass(frozen=True)
class AclFilter:
    """What DescribeAcls and DeleteAcls select, in Kafka's terms: None (ANY)
    matches every value; pattern type MATCH selects the ACLs that would apply
    to the named resource (literal, ``*`` and prefixes of it)."""
    resource_type: str = "ANY"
    name: str | None = None
    pattern_type: str = "ANY"
    principal: str | None = None
    host: str | None = None
    operation: str = "ANY"
    permission: str = "ANY"

    def matches(self, acl):
        return (self.resource_type in ("ANY", acl.resource_type)
                and self._pattern(acl)
                and self.principal in (None, acl.principal)
                and self.host in (None, acl.host)
                and self.operation in ("ANY", acl.operation)
                and self.permission in ("ANY", acl.permission))

    def _pattern(self, acl):
        if self.pattern_type == "MATCH":
            return self.name is None or acl.matches_resource(acl.resource_type,
                                                              self.name)
        if self.pattern_type not in ("ANY", acl.pattern_type):
            return False
        return self.name is None or self.name == acl.name


class Authorizer:
    """One virtual cluster's decisions: ACLs on or off, its super users and
    ACLs.  A decision looks at the ACLs that can match only (literal ones by
    name, prefixed ones by the prefix lengths present, and ``*``), so its cost
    does not grow with the number of ACLs; decisions are remembered too (a
    bounded memo: a tenant naming endless resources costs no more memory)."""

    MEMO = 10_000
    MEMO_NAME = 256
    """Decisions on longer names are not remembered: the memo's size stays
    bounded in bytes too (a Produce may name a topic of megabytes)."""
    _generations = itertools.count()

    def __init__(self, enabled=False, super_users=(), acls=()):
        self.generation = next(self._generations)
        """Differs for every Authorizer made: answers kept for one are not
        reused under another (metadata_cache.py)."""
        self.enabled = enabled
        self.super_users = frozenset(super_users)
        self.acls = tuple(sorted(set(acls)))
        self._by_type = {}
        self._index = {}  # type -> (literal name -> [acl], prefix -> [acl], lengths)
        for acl in self.acls:
            self._by_type.setdefault(acl.resource_type, []).append(acl)
            literal, prefixed, _ = self._index.setdefault(acl.resource_type,
                                                          ({}, {}, []))
            (literal if acl.pattern_type == "LITERAL" else prefixed).setdefault(
                acl.name, []).append(acl)
        for rtype, (literal, prefixed, _) in self._index.items():
            self._index[rtype] = (literal, prefixed,
                                  sorted({len(p) for p in prefixed}))
        self._memo = {}

    def allowed(self, principal, host, operation, resource_type, name):
        """Whether *principal* from *host* may do *operation* on the resource."""
        if not self.enabled:
            return True
        key = (principal, host, operation, resource_type, name)
        found = self._memo.get(key)
        if found is None:
            found = self._decide(principal, host, operation, resource_type, name)
            if len(name) <= self.MEMO_NAME:
                if len(self._memo) >= self.MEMO:
                    self._memo.clear()
                self._memo[key] = found
        return found

    def _candidates(self, resource_type, name):
        """The ACLs of the type whose pattern can match *name*."""
        index = self._index.get(resource_type)
        if index is None:
            return
        literal, prefixed, lengths = index
        yield from literal.get(name, ())
        if name != WILDCARD:
            yield from literal.get(WILDCARD, ())
        for length in lengths:
            if length > len(name):
                break
            yield from prefixed.get(name[:length], ())

    def _decide(self, principal, host, operation, resource_type, name):
        if principal[len("User:"):] in self.super_users:
            return True
        granting = IMPLIED_BY.get(operation, (operation, "ALL"))
        allow = False
        for acl in self._candidates(resource_type, name):
            if not acl.applies_to(principal, host):
                continue
            if acl.permission == "DENY" and acl.operation in (operation, "ALL"):
                return False
            if acl.permission == "ALLOW" and acl.operation in granting:
                allow = True
        return allow

    def allowed_any(self, principal, host, operation, resource_type):
        """Kafka's authorizeByResourceType: some resource of the type allows
        *operation* (ALL counts, implications do not) and no DENY covers it."""
        if not self.enabled or principal[len("User:"):] in self.super_users:
            return True
        denied_literal, denied_prefix, allowed = set(), set(), []
        for acl in self._by_type.get(resource_type, ()):
            if not (acl.applies_to(principal, host)
                    and acl.operation in (operation, "ALL")):
                continue
            if acl.permission == "DENY":
                if acl.pattern_type == "LITERAL" and acl.name == WILDCARD:
                    return False
                (denied_literal if acl.pattern_type == "LITERAL"
                 else denied_prefix).add(acl.name)
            else:
                allowed.append(acl)
        if any(a.pattern_type == "LITERAL" and a.name == WILDCARD for a in allowed):
            return True
        for acl in allowed:
            if acl.pattern_type == "LITERAL" and acl.name in denied_literal:
                continue
            if not any(acl.name.startswith(prefix) for prefix in denied_prefix):
                return True
        return False


OFF = Authorizer()
"""Every virtual cluster without ACLs: every account may do everything."""
