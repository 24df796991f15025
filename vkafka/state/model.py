# -*- test-case-name: tests.test_admin,tests.test_namespaces -*-
"""What the gateway state means: virtual clusters, accounts, revocations, mappings.

Keys in the store:

- ``vcluster/<vc>`` -> ``{"name", "prefix", "createdAt"}``
- ``account/<vc>/<username>`` -> ``{"vcluster", "username", "createdAt"}``
- ``revocation/<vc>/<username>`` -> ``{"revokedAt"}``; username ``*`` is every account
- ``mapping/<vc>/<logical topic>`` -> ``{"logicalTopicName", "physicalTopicName",
  "readOnly", "concentrated", "partitions"}``
- ``rule/<vc>/<name>`` -> ``{"name", "pattern", "physicalTopicName",
  "physicalTopicNameCompacted", "physicalTopicNameCompactedDeleted"}``
- ``limits/<vc>`` -> ``{"capacity", "topicPolicy", "rates"}``: the JSON form of
  ``limits.Limits`` (no record: no limits)
- ``rights/<vc>`` -> ``{"acls": bool, "superUsers": [username]}``: whether the
  virtual cluster's ACLs are enforced (no record: off, every account may do
  everything) and which accounts bypass them
- ``acl/<vc>/<key>`` -> an ACL's JSON form (``auth.acls.Acl``), under logical
  names; *key* is the ACL's own digest, so adding it twice is one record

Every change, made here or by another gateway, flows through ``apply`` so
all gateways converge on the same view.
"""

import re2
from twisted.internet import defer
from twisted.logger import Logger

from ..auth.acls import MAX_ACLS, OFF, Acl, Authorizer, InvalidAcl
from ..names import (
    GATEWAY_TOPIC_PREFIX, MAX_TOPIC_LENGTH, ConcentrationRule, inside, valid_topic_name,
    valid_vcluster_name)
from .limits import InvalidLimits, Limits
from .policy import Holdings, new_topic

log = Logger()

ALL_ACCOUNTS = "*"
RULE_TARGETS = {"delete": "physicalTopicName", "compact": "physicalTopicNameCompacted",
                "compact,delete": "physicalTopicNameCompactedDeleted"}
"""A concentration rule's physical topic for each cleanup policy."""


def _not_internal(physical):
    """The gateways' own topics (state, usage, audit) and Kafka's (committed
    offsets, transactions) are never mapped into a virtual cluster: through
    __consumer_offsets a tenant read every group's offsets."""
    if physical.startswith(GATEWAY_TOPIC_PREFIX) or physical.startswith("__"):
        raise StateError(400, "bad_field", f"{physical!r} is an internal topic (the "
                         "gateways' or Kafka's own): it is never mapped")


class StateError(Exception):
    """A command that conflicts with the state; ``status`` is the HTTP status;
    ``details`` go into the JSON body too (a 409 names the other virtual cluster)."""

    def __init__(self, status, error, message, details=None):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.details = details or {}


class GatewayState:
    """The state every gateway follows, and the commands the admin API runs."""

    def __init__(self, store, authority, vclusters, clock):
        self.store = store
        self.authority = authority
        self.vclusters = vclusters
        self.clock = clock
        self.clusters = {}
        self._reads = 0
        self._defined = {}
        """name -> the order in which its record was read from the state topic
        (every gateway reads the records in one order): of two overlapping
        virtual clusters created at once, the later withdraws."""
        self.accounts = {}
        self.mappings = {}
        self.revoked_listeners = []
        self.rules = {}
        self.limits = {}
        """vc -> Limits, for the virtual clusters that have some."""
        self.limits_listeners = []
        """``(vc, Limits)`` callables, called as each ``limits/<vc>`` record is
        applied (``Limits.NONE`` when deleted): gateways change limits live."""
        self.acls = {}
        """(vc, key) -> Acl: every virtual cluster's ACLs."""
        self.rights = {}
        """vc -> ``{"acls": bool, "superUsers": [...]}``, for those that have a record."""
        self._authorizers = {}
        """vc -> its Authorizer, made on first use after a change."""
        self.gateways = {}
        """Gateway id -> when it last said it is alive (filters/shares.py)."""
        self.rate_reports = {}
        """(gateway id, vc) -> what that gateway last wanted of the tenant's
        rates (filters/shares.py splits the limits by it)."""
        self.topic_exists = None
        """``physical name -> Deferred[partitions, 0 if missing]``; None skips
        the check (unit tests)."""
        self.create_topic = None
        """``(name, partitions, replication, configs)`` -> Deferred(None or the
        broker's refusal): creates a physical topic a mapping asks for."""
        store.subscribe(self.apply)

    # following the store

    def apply(self, key, value):
        """A record of the state topic (None: deleted), applied to memory."""
        kind, _, rest = key.partition("/")
        handler = self._APPLIERS.get(kind)
        if handler is not None:  # kinds a newer gateway wrote are ignored
            handler(self, rest, value)

    def _apply_vcluster(self, name, value):
        if value is None:
            self.clusters.pop(name, None)
            self._defined.pop(name, None)
            self.vclusters.remove(name)
        else:
            if name not in self.clusters:
                self._defined[name] = self._reads = self._reads + 1
            self.clusters[name] = value
            self.vclusters.define(name, value.get("prefix"))

    def _apply_account(self, rest, value):
        vc, _, username = rest.partition("/")
        if value is None:
            self.accounts.pop((vc, username), None)
        else:
            self.accounts[(vc, username)] = value

    def _apply_revocation(self, rest, value):
        vc, _, username = rest.partition("/")
        if value is not None:
            self.authority.revocations.revoke(vc, username, value["revokedAt"])
            for listener in self.revoked_listeners:
                listener(vc, username)

    def _apply_rule(self, rest, value):
        vc, _, name = rest.partition("/")
        namespace = self.vclusters.namespace(vc)
        if value is None:
            self.rules.pop((vc, name), None)
            namespace.remove_rule(name)
        else:
            self.rules[(vc, name)] = value
            namespace.set_rule(ConcentrationRule(name, value["pattern"], tuple(
                (policy, value[field]) for policy, field in RULE_TARGETS.items()
                if value.get(field))))

    def _apply_mapping(self, rest, value):
        vc, _, logical = rest.partition("/")
        namespace = self.vclusters.namespace(vc)
        if value is None:
            self.mappings.pop((vc, logical), None)
            namespace.remove_alias(logical)
        else:
            self.mappings[(vc, logical)] = value
            namespace.set_alias(logical, value["physicalTopicName"],
                                bool(value.get("readOnly")),
                                bool(value.get("concentrated")),
                                value.get("partitions"))

    def _apply_limits(self, vc, value):
        if value is None:
            self.limits.pop(vc, None)
            limits = Limits.NONE
        else:
            try:  # a newer gateway's fields are left out, not refused
                limits = Limits.from_json(value, ignore_unknown=True)
            except InvalidLimits as e:
                log.warn("limits of {vc} not applied, the previous ones stay: "
                         "{error}", vc=vc, error=str(e))
                return
            self.limits[vc] = limits
        for listener in self.limits_listeners:
            listener(vc, limits)

    def _apply_rights(self, vc, value):
        if isinstance(value, dict):
            self.rights[vc] = value
        else:
            self.rights.pop(vc, None)
        self._authorizers.pop(vc, None)

    def _apply_acl(self, rest, value):
        vc, _, key = rest.partition("/")
        acl = None
        if value is not None:
            try:  # one a newer gateway wrote that this one cannot read: not applied
                acl = Acl.from_json(value)
            except InvalidAcl as e:
                log.warn("ACL {key} of {vc} not applied: {error}", key=key, vc=vc,
                         error=str(e))
        if acl is None:
            self.acls.pop((vc, key), None)
        else:
            self.acls[(vc, key)] = acl
        self._authorizers.pop(vc, None)

    def _apply_rate(self, rest, value):
        gateway, _, vc = rest.partition("/")
        if value is None:
            self.rate_reports.pop((gateway, vc), None)
        elif isinstance(value, dict):
            self.rate_reports[(gateway, vc)] = value

    def _apply_gateway(self, gateway, value):
        if value is None:
            self.gateways.pop(gateway, None)
        elif isinstance(value, dict):
            self.gateways[gateway] = value


    _APPLIERS = {"vcluster": _apply_vcluster, "account": _apply_account,
                 "revocation": _apply_revocation, "rule": _apply_rule,
                 "mapping": _apply_mapping, "limits": _apply_limits,
                 "rate": _apply_rate, "gateway": _apply_gateway,
                 "rights": _apply_rights, "acl": _apply_acl}

    # queries

    def vcluster(self, name):
        found = self.clusters.get(name)
        if found is None:
            raise StateError(404, "not_found", f"virtual cluster {name!r} does not exist")
        return found

    def accounts_of(self, vc):
        return sorted((v for (c, _), v in self.accounts.items() if c == vc),
                      key=lambda a: a["username"])

    def mappings_of(self, vc):
        return sorted((v for (c, _), v in self.mappings.items() if c == vc),
                      key=lambda m: m["logicalTopicName"])

    def limits_of(self, vc):
        """The Limits of *vc* (``Limits.NONE`` if it has none)."""
        return self.limits.get(vc, Limits.NONE)

    def rights_of(self, vc):
        """``{"acls": bool, "superUsers": [...]}`` of *vc* (off by default)."""
        found = self.rights.get(vc) or {}
        return {"acls": bool(found.get("acls")),
                "superUsers": sorted(found.get("superUsers") or ())}

    def acls_of(self, vc):
        """Every ACL of *vc*, sorted."""
        return sorted(acl for (c, _), acl in self.acls.items() if c == vc)

    def authorizer(self, vc):
        """The Authorizer that decides for *vc* now (``acls.OFF`` when its
        ACLs are not enforced)."""
        found = self._authorizers.get(vc)
        if found is None:
            rights = self.rights_of(vc)
            found = OFF if not rights["acls"] else Authorizer(
                True, rights["superUsers"], self.acls_of(vc))
            self._authorizers[vc] = found
        return found

    def authorizer_watch(self, vc, answer):
        """``(attributes, items)`` watches under which ``authorizer(vc)``
        stays *answer* (the compiled read of the produce lane checks them at
        every read, proxy/_watch.h): the cache of authorizers, the same dict
        with that entry.  Any ACL or rights change drops entries from it."""
        return ((self, "_authorizers", self._authorizers),), \
            ((self._authorizers, vc, answer),)

    def describe(self, name):
        cluster = self.vcluster(name)
        return {**cluster,
                "serviceAccounts": [a["username"] for a in self.accounts_of(name)],
                "topicMappings": self.mappings_of(name),
                "limits": self.limits_of(name).to_json(),
                "rights": self.rights_of(name)}

    # commands

    @defer.inlineCallbacks
    def ensure_vcluster(self, name, prefix=None):
        if not valid_vcluster_name(name):
            raise StateError(400, "invalid_name",
                             f"invalid virtual cluster name {name!r}: use 1-64 of "
                             "[a-zA-Z0-9_-], starting with a letter or digit")
        existing = self.clusters.get(name)
        if existing is not None:
            if prefix is not None and prefix != existing["prefix"]:
                raise StateError(409, "conflict",
                                 f"virtual cluster {name!r} exists with prefix "
                                 f"{existing['prefix']!r}")
            return existing
        prefix = name if prefix is None else prefix
        self._check_overlap(name, prefix)
        value = {"name": name, "prefix": prefix, "createdAt": self.clock()}
        yield self.store.put(f"vcluster/{name}", value)
        try:  # read back: another gateway may have created one at the same time
            self._check_overlap(name, prefix, earlier_than=self._defined.get(name))
        except StateError:
            if self.clusters.get(name) == value:
                yield self.store.put(f"vcluster/{name}", None)
            raise
        return value

    def _check_overlap(self, name, prefix, earlier_than=None):
        """A new virtual cluster's namespace overlaps no other's (names.overlap),
        and holds no topic another virtual cluster maps: else a name, and the
        data under it, would change hands.  *earlier_than*: once its own record
        is read back, only the virtual clusters read before it count (a later
        one withdraws itself the same way), and mappings are not checked again."""
        # Every virtual cluster of the state is known there, and so are those
        # this gateway met through tokens only.
        others = self.vclusters.overlapping(prefix, exclude=name)
        if earlier_than is not None:
            others = [o for o in others
                      if self._defined.get(o, -1) < earlier_than]
        if others:
            other = others[0]
            theirs = self.vclusters.prefix_of(other)
            raise StateError(409, "conflict",
                             f"prefix {prefix!r} of {name!r} overlaps virtual cluster "
                             f"{other!r} (prefix {theirs!r}): one's names start with "
                             "the other's, counting '.' and '_' as one (Kafka's "
                             "collision rule); choose another prefix",
                             {"vcluster": other})
        if earlier_than is not None:
            return
        mapped = [(vc, m["physicalTopicName"]) for (vc, _), m in self.mappings.items()]
        mapped += [(vc, r[field]) for (vc, _), r in self.rules.items()
                   for field in RULE_TARGETS.values() if r.get(field)]
        for vc, physical in sorted(mapped):
            if vc != name and inside(prefix, physical):
                raise StateError(409, "conflict",
                                 f"prefix {prefix!r} of {name!r} would hold "
                                 f"{physical!r}, which virtual cluster {vc!r} maps; "
                                 "choose another prefix", {"vcluster": vc})

    @defer.inlineCallbacks
    def create_account(self, vc, username, lifetime):
        """Create the virtual cluster if needed and the account; return a token."""
        if not username or len(username) > 255 or "/" in username or username == "*":
            raise StateError(400, "invalid_name", f"invalid username {username!r}")
        yield self.ensure_vcluster(vc)
        if (vc, username) not in self.accounts:
            yield self.store.put(f"account/{vc}/{username}", {
                "vcluster": vc, "username": username, "createdAt": self.clock()})
        return self.authority.issue(vc, username, lifetime)

    @defer.inlineCallbacks
    def revoke(self, vc, username):
        self.vcluster(vc)
        if username != ALL_ACCOUNTS and (vc, username) not in self.accounts:
            raise StateError(404, "not_found",
                             f"service account {username!r} does not exist in {vc!r}")
        yield self.store.put(f"revocation/{vc}/{username}",
                             {"revokedAt": self.clock()})

    @defer.inlineCallbacks
    def delete_vcluster(self, vc):
        """Revoke every token, remove accounts and mappings, then the cluster."""
        self.vcluster(vc)
        yield self.revoke(vc, ALL_ACCOUNTS)
        for (c, username) in list(self.accounts):
            if c == vc:
                yield self.store.put(f"account/{vc}/{username}", None)
        for (c, logical) in list(self.mappings):
            if c == vc:
                yield self.store.put(f"mapping/{vc}/{logical}", None)
        for (c, name) in list(self.rules):
            if c == vc:
                yield self.store.put(f"rule/{vc}/{name}", None)
        yield self.store.put(f"limits/{vc}", None)  # even one this version refused
        for (c, key) in list(self.acls):
            if c == vc:
                yield self.store.put(f"acl/{vc}/{key}", None)
        yield self.store.put(f"rights/{vc}", None)
        for (gateway, c) in list(self.rate_reports):
            if c == vc:
                yield self.store.put(f"rate/{gateway}/{vc}", None)
        yield self.store.put(f"vcluster/{vc}", None)

    def _check_sharing(self, physical, concentrated, key=None):
        """A physical topic holds concentrated topics or is mapped plainly, never
        both: a plain mapping would show every tenant's tagged records."""
        for other, existing in self.mappings.items():
            if other != key and existing["physicalTopicName"] == physical and \
                    bool(existing.get("concentrated")) != concentrated:
                kind = "concentrated topics" if existing.get("concentrated") else \
                    "a plain mapping"
                raise StateError(409, "conflict",
                                 f"{physical!r} already holds {kind} ({other[0]}/"
                                 f"{other[1]}); a topic is either concentrated or "
                                 "mapped plainly")

    def rules_of(self, vc):
        return sorted((v for (c, _), v in self.rules.items() if c == vc),
                      key=lambda r: r["name"])

    @defer.inlineCallbacks
    def put_rule(self, vc, name, rule):
        """A concentration rule: CreateTopics of a matching name makes a
        concentrated topic in the physical topic of its cleanup policy."""
        try:
            re2.compile(rule["pattern"])
        except re2.error as e:
            raise StateError(400, "bad_field", f"invalid pattern (RE2 syntax): {e}")
        for field in RULE_TARGETS.values():
            physical = rule.get(field)
            if physical is None:
                continue
            _not_internal(physical)
            owner = self.vclusters.owner(physical)
            if owner is not None:
                raise StateError(409, "conflict",
                                 f"{physical!r} is in virtual cluster {owner!r}'s "
                                 "namespace", {"vcluster": owner})
            self._check_sharing(physical, True)
            if self.topic_exists is not None and not (
                    yield self.topic_exists(physical)):
                raise StateError(404, "not_found",
                                 f"physical topic {physical!r} does not exist")
        yield self.ensure_vcluster(vc)
        value = {"name": name, **rule}
        yield self.store.put(f"rule/{vc}/{name}", value)
        return value

    @defer.inlineCallbacks
    def delete_rule(self, vc, name):
        self.vcluster(vc)
        if (vc, name) not in self.rules:
            raise StateError(404, "not_found", f"no concentration rule {name!r} in {vc!r}")
        yield self.store.put(f"rule/{vc}/{name}", None)

    @defer.inlineCallbacks
    def put_mapping(self, vc, logical, mapping):
        if not valid_topic_name(logical):
            raise StateError(400, "invalid_name",
                             f"invalid logical topic name {logical!r}: use 1-"
                             f"{MAX_TOPIC_LENGTH} of [a-zA-Z0-9._-]")
        mapping = dict(mapping)
        create = mapping.pop("create", None)
        physical = mapping["physicalTopicName"]
        _not_internal(physical)
        owner = self.vclusters.owner(physical)
        if owner is not None:
            raise StateError(409, "conflict",
                             f"{physical!r} is in virtual cluster {owner!r}'s namespace; "
                             "map only topics outside every virtual cluster's prefix "
                             "('.' and '_' count as one)", {"vcluster": owner})
        concentrated = bool(mapping.get("concentrated"))
        self._check_sharing(physical, concentrated, (vc, logical))
        for (c, other), existing in self.mappings.items():
            if c == vc and other != logical and existing["physicalTopicName"] == physical \
                    and not (concentrated and existing.get("concentrated")):
                raise StateError(409, "conflict",
                                 f"{physical!r} is already mapped in {vc!r} as {other!r}"
                                 " (only concentrated mappings share a topic)")
        if self.topic_exists is not None:
            partitions = yield self.topic_exists(physical)
            if not partitions and create is not None and self.create_topic is not None:
                partitions = create.get("partitions", 1)
                self._within_policy(vc, logical, physical, create)
                refusal = yield self.create_topic(physical, partitions,
                                                  create.get("replicationFactor"),
                                                  create.get("configs"))
                if refusal is not None:
                    raise StateError(400, "bad_request",
                                     f"cannot create {physical!r}: {refusal}")
            if not partitions:
                raise StateError(404, "not_found",
                                 f"physical topic {physical!r} does not exist; create "
                                 "it on the cluster first, or ask for it with "
                                 "\"create\"")
            if concentrated:
                wanted = mapping.get("partitions") or partitions
                if wanted > partitions:
                    raise StateError(400, "bad_field",
                                     f"a concentrated topic has at most the {partitions} "
                                     f"partitions of {physical!r}, not {wanted}")
                mapping = {**mapping, "partitions": wanted}
        yield self.ensure_vcluster(vc)
        value = {"logicalTopicName": logical, **mapping}
        yield self.store.put(f"mapping/{vc}/{logical}", value)
        return value

    def _within_policy(self, vc, logical, physical, create):
        """A topic the admin API creates for a mapping meets the virtual
        cluster's topic policy and capacity, as a tenant's CreateTopics does."""
        limits = self.limits_of(vc)
        if limits is Limits.NONE:
            return
        held = Holdings({m["physicalTopicName"]: m.get("partitions") or 1
                         for (c, _), m in self.mappings.items() if c == vc})
        violation = new_topic(limits, held, logical, physical,
                              create.get("partitions", 1),
                              create.get("replicationFactor") or -1,
                              create.get("configs") or {})
        if violation is not None:
            raise StateError(400, "policy_violation", violation.message)

    @defer.inlineCallbacks
    def delete_mapping(self, vc, logical):
        self.vcluster(vc)
        if (vc, logical) not in self.mappings:
            raise StateError(404, "not_found",
                             f"no mapping for topic {logical!r} in {vc!r}")
        yield self.store.put(f"mapping/{vc}/{logical}", None)

    @defer.inlineCallbacks
    def put_limits(self, vc, body):
        """Replace every limit of *vc* by those of the JSON form *body*
        (``{}``: none); return the Limits."""
        self.vcluster(vc)
        try:
            limits = Limits.from_json(body)
        except InvalidLimits as e:
            raise StateError(400, "bad_field", str(e),
                             None if e.field is None else {"field": e.field})
        yield self.store.put(f"limits/{vc}", limits.to_json() or None)
        return limits

    @defer.inlineCallbacks
    def delete_limits(self, vc):
        """No limit for *vc* any more (whether it had some or not)."""
        self.vcluster(vc)
        yield self.store.put(f"limits/{vc}", None)

    # rights inside a virtual cluster

    @defer.inlineCallbacks
    def put_rights(self, vc, acls_enabled, super_users=()):
        """Turn *vc*'s ACLs on or off and name its super users (accounts that
        bypass them); return the rights."""
        self.vcluster(vc)
        users = sorted(set(super_users))
        for user in users:
            if not isinstance(user, str) or not user or "/" in user or user == "*":
                raise StateError(400, "bad_field", f"invalid super user {user!r}: "
                                 "name a service account of the virtual cluster")
        value = {"acls": bool(acls_enabled), "superUsers": users}
        yield self.store.put(f"rights/{vc}", value)
        return value

    @defer.inlineCallbacks
    def add_acls(self, vc, acls):
        """Add *acls* (Acl) to *vc*; those it holds already stay one record;
        at most MAX_ACLS per virtual cluster."""
        self.vcluster(vc)
        held = {acl.key() for acl in self.acls_of(vc)}
        if len(held | {acl.key() for acl in acls}) > MAX_ACLS:
            raise StateError(400, "too_many_acls",
                             f"a virtual cluster holds at most {MAX_ACLS} ACLs "
                             f"({len(held)} now)")
        for acl in acls:
            if (vc, acl.key()) not in self.acls:
                yield self.store.put(f"acl/{vc}/{acl.key()}", acl.to_json())

    @defer.inlineCallbacks
    def delete_acls(self, vc, filters):
        """Remove the ACLs of *vc* each AclFilter of *filters* matches; return,
        per filter, the ACLs it removed."""
        self.vcluster(vc)
        held = self.acls_of(vc)  # once: the writes below do not change what matches
        removed = [[acl for acl in held if acl_filter.matches(acl)]
                   for acl_filter in filters]
        gone = set()
        for matched in removed:
            for acl in matched:
                if acl.key() not in gone:
                    gone.add(acl.key())
                    yield self.store.put(f"acl/{vc}/{acl.key()}", None)
        return removed

    @defer.inlineCallbacks
    def delete_account(self, vc, username):
        """Revoke every token of the account, then forget it (its ACLs stay,
        as Kafka's do when a user is removed)."""
        yield self.revoke(vc, username)
        yield self.store.put(f"account/{vc}/{username}", None)

    # declarative admin (vkafka/admin/resources.py)

    @defer.inlineCallbacks
    def ensure_account(self, vc, username):
        """The service account exists in *vc* (404 without the virtual
        cluster); no token is issued and nothing is written if it exists."""
        if not username or len(username) > 255 or "/" in username or username == "*":
            raise StateError(400, "invalid_name", f"invalid username {username!r}")
        self.vcluster(vc)
        if (vc, username) not in self.accounts:
            yield self.store.put(f"account/{vc}/{username}", {
                "vcluster": vc, "username": username, "createdAt": self.clock()})
