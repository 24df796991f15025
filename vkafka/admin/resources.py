# -*- test-case-name: tests.test_resources -*-
"""Declarative admin: whole resources, the difference between what is wanted
and what the state holds, and applying it.

A resource is a document ``{"kind", "vcluster", "name", "spec"}``:

- ``VirtualCluster`` *name*: ``spec`` ``{"prefix", "acls", "superUsers"}``
  (its prefix, whether its ACLs are enforced, the accounts that bypass them)
- ``ServiceAccount`` *vcluster*/*name*: no spec (a token is issued by
  ``POST /admin/vclusters/v1/vcluster/{vc}/username/{name}``, never stored)
- ``TopicMapping`` *vcluster*/*name* (the logical topic): ``spec``
  ``{"physicalTopicName", "readOnly", "concentrated", "partitions", "create"}``
- ``AclSet`` *vcluster*: ``spec`` ``{"acls": [...]}``, every ACL of the
  virtual cluster (several documents of one virtual cluster are merged)
- ``Limits`` *vcluster*: ``spec`` the limits (``docs/governance.md``)

The same code serves the resource endpoints (``PUT``/``GET``/``DELETE``
``/admin/resources/v1/...``), the apply endpoint and so ``vkafka apply``/``get``:
``plan`` compares, ``execute`` writes only what differs, so applying the same
resources twice writes nothing the second time.
"""

from dataclasses import dataclass, field

from twisted.internet import defer

from ..auth.acls import Acl, AclFilter, InvalidAcl
from ..names import overlap
from ..state.limits import InvalidLimits, Limits
from ..state.model import StateError

from .schemas import NAMED, RESOURCE_SCHEMA, SPECS, TOPIC, USERNAME, VCLUSTER


def _bad(message, where=None):
    return StateError(400, "bad_field", message,
                      {} if where is None else {"field": where})


def _validate(schema, value, where):
    """*value* against one of this module's *schema*; StateError 400 naming the
    field (as the admin API's own checks do)."""
    from .openapi import InvalidRequest, SchemaValidator, _first, _refusal
    e = _first(SchemaValidator(schema).iter_errors(value))
    if e is not None:
        refusal = _refusal(e)
        if isinstance(refusal, InvalidRequest):
            at = _join(where, refusal.field)
            raise StateError(400, refusal.error if refusal.error != "bad_json"
                             else "bad_field",
                             f"{where}: {refusal.message}" if where else refusal.message,
                             {} if not at else {"field": at})


def _join(*parts):
    return ".".join(str(p) for p in parts if p not in (None, ""))


def acls_from_json(items, where="acls"):
    """Acl objects from their JSON forms; 400 naming the first refused one."""
    out = []
    for i, item in enumerate(items):
        try:
            out.append(Acl.from_json(item))
        except InvalidAcl as e:
            raise _bad(f"{_join(where, i)}: {e}", _join(where, i))
    return out


def _normal_limits(spec, where="spec"):
    try:
        return Limits.from_json(spec).to_json()
    except InvalidLimits as e:
        at = _join(where, e.field)
        raise StateError(400, "bad_field", f"{where}: {e}" if where else str(e),
                         {"field": at} if at else {})


@dataclass(frozen=True)
class Resource:
    kind: str
    vcluster: str
    name: str = ""
    spec: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self):
        return (self.kind, self.vcluster, self.name)

    def to_json(self):
        out = {"kind": self.kind}
        if self.kind == "VirtualCluster":
            out["name"] = self.vcluster
        else:
            out["vcluster"] = self.vcluster
            if self.kind in NAMED:
                out["name"] = self.name
        if self.kind != "ServiceAccount":
            out["spec"] = self.spec
        return out

    def label(self):
        if self.kind == "VirtualCluster":
            return f"VirtualCluster {self.vcluster}"
        if self.kind in NAMED:
            return f"{self.kind} {self.vcluster}/{self.name}"
        return f"{self.kind} {self.vcluster}"


def resource(kind, vcluster, name="", spec=None, where=""):
    """A Resource whose spec is checked and put in its normal form (defaults
    filled, lists sorted): two resources that mean the same compare equal."""
    spec = {} if spec is None else spec
    _validate(SPECS[kind], spec, where)
    if kind == "VirtualCluster":
        spec = {**({"prefix": spec["prefix"]} if "prefix" in spec else {}),
                "acls": bool(spec.get("acls", False)),
                "superUsers": sorted(set(spec.get("superUsers", ())))}
    elif kind == "ServiceAccount":
        spec = {}
    elif kind == "TopicMapping":
        concentrated = bool(spec.get("concentrated", False))
        spec = {"physicalTopicName": spec["physicalTopicName"],
                "readOnly": bool(spec.get("readOnly", False)),
                "concentrated": concentrated,
                **({"partitions": spec["partitions"]}
                   if concentrated and "partitions" in spec else {}),
                **({"create": spec["create"]} if "create" in spec else {})}
    elif kind == "AclSet":
        acls = acls_from_json(spec["acls"], _join(where, "acls"))
        spec = {"acls": [a.to_json() for a in sorted(set(acls))]}
    else:
        spec = _normal_limits(spec, where)
    return Resource(kind, vcluster, name, spec)


def parse(documents):
    """Resources from the JSON documents of a file or a request (``kind``,
    ``name``, ``vcluster``, ``spec``); AclSets of one virtual cluster merged;
    400 naming the document (``resources.<i>``) at fault."""
    found, order = {}, []
    for i, doc in enumerate(documents):
        where = f"resources.{i}"
        _validate(RESOURCE_SCHEMA, doc, where)
        kind = doc["kind"]
        if kind == "VirtualCluster":
            if "vcluster" in doc:
                raise _bad(f"{where}: a VirtualCluster has a name, no vcluster",
                           f"{where}.vcluster")
            vc, name = doc.get("name"), ""
            _validate(VCLUSTER, vc, f"{where}.name")
        else:
            vc, name = doc.get("vcluster"), doc.get("name", "")
            if vc is None:
                raise _bad(f"{where}: a {kind} needs vcluster", f"{where}.vcluster")
            if kind in NAMED:
                _validate(USERNAME if kind == "ServiceAccount" else TOPIC, name,
                          f"{where}.name")
            elif "name" in doc:
                raise _bad(f"{where}: a {kind} has no name (one per virtual "
                           "cluster)", f"{where}.name")
        item = resource(kind, vc, name, doc.get("spec"), f"{where}.spec")
        if item.key in found:
            if kind != "AclSet":
                raise StateError(400, "duplicate", f"{where}: {item.label()} is "
                                 "named twice", {"field": where})
            merged = {Acl.from_json(a) for a in
                      found[item.key].spec["acls"] + item.spec["acls"]}
            item = Resource(kind, vc, "", {"acls": [a.to_json()
                                                    for a in sorted(merged)]})
        else:
            order.append(item.key)
        found[item.key] = item
    return [found[key] for key in order]


def current(state, vc):
    """What the state holds of *vc*, as resources (no AclSet without ACLs, no
    Limits without limits: their absence means none)."""
    cluster = state.vcluster(vc)
    rights = state.rights_of(vc)
    out = [Resource("VirtualCluster", vc, "", {
        "prefix": cluster["prefix"], "acls": rights["acls"],
        "superUsers": rights["superUsers"]})]
    out += [Resource("ServiceAccount", vc, a["username"], {})
            for a in state.accounts_of(vc)]
    for m in state.mappings_of(vc):
        concentrated = bool(m.get("concentrated"))
        out.append(Resource("TopicMapping", vc, m["logicalTopicName"], {
            "physicalTopicName": m["physicalTopicName"],
            "readOnly": bool(m.get("readOnly")), "concentrated": concentrated,
            **({"partitions": m["partitions"]}
               if concentrated and m.get("partitions") else {})}))
    acls = state.acls_of(vc)
    if acls:
        out.append(Resource("AclSet", vc, "", {"acls": [a.to_json() for a in acls]}))
    limits = state.limits_of(vc).to_json()
    if limits:
        out.append(Resource("Limits", vc, "", limits))
    return out


def current_one(state, kind, vc, name=""):
    """The resource the state holds under (kind, vc, name), or None."""
    if vc not in state.clusters:
        return None
    for item in current(state, vc):
        if item.key == (kind, vc, name):
            return item
    if kind == "AclSet":  # an empty set is a set
        return Resource("AclSet", vc, "", {"acls": []})
    if kind == "Limits":
        return Resource("Limits", vc, "", {})
    return None


def _same(before, after):
    if before.kind == "VirtualCluster":
        return before.spec["acls"] == after.spec["acls"] and \
            before.spec["superUsers"] == after.spec["superUsers"] and \
            after.spec.get("prefix", before.spec["prefix"]) == before.spec["prefix"]
    if before.kind == "TopicMapping":
        wanted = {k: v for k, v in after.spec.items() if k != "create"}
        held = dict(before.spec)
        if wanted.get("concentrated") and "partitions" not in wanted:
            held.pop("partitions", None)  # the physical topic's: whatever it has
        return held == wanted
    return before.spec == after.spec


PAST = {"create": "created", "change": "changed", "delete": "deleted"}


@dataclass
class Change:
    action: str  # create, change, delete
    resource: Resource
    before: Resource | None = None

    def to_json(self):
        out = {"action": self.action, "kind": self.resource.kind,
               **{k: v for k, v in self.resource.to_json().items()
                  if k in ("name", "vcluster")}}
        if self.resource.kind == "VirtualCluster":
            out["vcluster"] = self.resource.vcluster
        if self.action == "change":
            out["before"], out["after"] = self.before.spec, self.resource.spec
        out["summary"] = self.summary()
        return out

    def summary(self):
        """One line: what this change does."""
        text = f"{self.resource.label()}"
        if self.resource.kind == "AclSet" and self.action != "delete":
            before = {Acl.from_json(a) for a in (self.before.spec["acls"]
                                                 if self.before else ())}
            after = {Acl.from_json(a) for a in self.resource.spec["acls"]}
            text += f" (+{len(after - before)} -{len(before - after)} ACLs)"
        elif self.action == "change":
            fields = _changed_fields(self.before, self.resource)
            text += f" ({', '.join(fields)})" if fields else ""
        return text


def _changed_fields(before, after):
    """The spec fields a change changes (a VirtualCluster's prefix left out,
    a concentrated mapping's partitions left out: kept as they are)."""
    kept = set()
    if after.kind == "VirtualCluster":
        kept.add("prefix")
    if after.kind == "TopicMapping" and after.spec.get("concentrated"):
        kept.add("partitions")
    return sorted(k for k in set(before.spec) | set(after.spec)
                  if k != "create" and before.spec.get(k) != after.spec.get(
                      k, before.spec.get(k) if k in kept else None))


def diff(state, wanted):
    """The Change that makes the state hold the resource *wanted*, or None."""
    before = current_one(state, wanted.kind, wanted.vcluster, wanted.name)
    if before is None:
        if wanted.kind != "VirtualCluster":
            state.vcluster(wanted.vcluster)  # 404 if it does not exist
        return Change("create", wanted)
    if wanted.kind == "VirtualCluster" and \
            wanted.spec.get("prefix", before.spec["prefix"]) != before.spec["prefix"]:
        raise StateError(409, "conflict", f"virtual cluster {wanted.vcluster!r} "
                         f"exists with prefix {before.spec['prefix']!r}; a prefix "
                         "cannot change (delete the virtual cluster and create it "
                         "again)")
    if _same(before, wanted):
        return None
    if empty(before):
        return Change("create", wanted, before)
    if empty(wanted):
        return Change("delete", wanted, before)
    return Change("change", wanted, before)


def empty(item):
    """An AclSet without ACLs, Limits without limits: as if there were none."""
    return (item.kind == "AclSet" and not item.spec["acls"]) or \
        (item.kind == "Limits" and not item.spec)


def removal(state, kind, vc, name=""):
    """The Change that removes a resource, or None if there is nothing to remove."""
    before = current_one(state, kind, vc, name)
    if before is None or empty(before):
        return None
    gone = {"AclSet": {"acls": []}, "Limits": {}}.get(kind, before.spec)
    return Change("delete", Resource(kind, vc, name, gone), before)


def plan(state, resources, prune=True):
    """The changes that make the state hold *resources* (parsed).

    The virtual clusters named by a VirtualCluster resource are managed: with
    *prune*, what they hold that *resources* do not name is removed (accounts,
    mappings, every ACL if no AclSet names them, every limit if no Limits
    does).  Other virtual clusters are never removed; resources of a virtual
    cluster that is not managed are applied if it exists (404 if not), and
    nothing else in it is touched.  Concentration rules are not resources:
    they stay as they are.
    """
    changes, wanted = [], {item.key for item in resources}
    managed = [item.vcluster for item in resources if item.kind == "VirtualCluster"]
    for item in resources:
        if item.kind != "VirtualCluster" and item.vcluster not in managed:
            state.vcluster(item.vcluster)
        change = None
        if item.kind == "VirtualCluster" or item.vcluster not in managed \
                or item.vcluster in state.clusters:
            change = diff(state, item)
        else:  # its virtual cluster is created by this plan
            change = None if empty(item) else Change("create", item)
        if change is not None:
            changes.append(change)
    for vc in managed:
        if prune and vc in state.clusters:
            for item in current(state, vc):
                if item.key not in wanted:
                    change = removal(state, item.kind, vc, item.name)
                    if change is not None:
                        changes.append(change)
    _check_new_prefixes(state, changes)
    return sorted(changes, key=_step)


def _check_new_prefixes(state, changes):
    """A virtual cluster to create overlaps none other, held or also to be
    created (409 before any write)."""
    new = []
    for change in changes:
        item = change.resource
        if item.kind == "VirtualCluster" and change.action == "create":
            prefix = item.spec.get("prefix", item.vcluster)
            state._check_overlap(item.vcluster, prefix)
            for other, theirs in new:
                if overlap(prefix, theirs):
                    raise StateError(409, "conflict", f"prefix {prefix!r} of "
                                     f"{item.vcluster!r} overlaps virtual cluster "
                                     f"{other!r} (prefix {theirs!r}), also created "
                                     "here ('.' and '_' count as one); choose "
                                     "another prefix", {"vcluster": other})
            new.append((item.vcluster, prefix))


_STEPS = {("create", "VirtualCluster"): 0, ("create", "ServiceAccount"): 1,
          ("create", "TopicMapping"): 2, ("change", "TopicMapping"): 2,
          ("create", "Limits"): 3, ("change", "Limits"): 3,
          ("create", "AclSet"): 4, ("change", "AclSet"): 4,
          ("change", "VirtualCluster"): 5,
          ("delete", "AclSet"): 6, ("delete", "Limits"): 7,
          ("delete", "TopicMapping"): 8, ("delete", "ServiceAccount"): 9}


def _step(change):
    """Apply order: virtual clusters and accounts first, ACLs before their
    enforcement is switched on (rights, step 5), removals last."""
    return _STEPS[(change.action, change.resource.kind)], change.resource.key


RIGHTS_STEP = _STEPS[("change", "VirtualCluster")]


@defer.inlineCallbacks
def execute(state, changes):
    """Write *changes* (from ``plan`` or ``diff``), in order; each writes only
    what differs.  A virtual cluster is created first, its rights set at the
    rights step, once its ACLs are in place."""
    ordered = sorted(changes, key=_step)
    rights = [c.resource for c in ordered if c.resource.kind == "VirtualCluster"]
    for change in ordered:
        if rights and _step(change)[0] >= RIGHTS_STEP:
            yield _put_rights(state, rights)
            rights = []
        yield _execute(state, change)
    yield _put_rights(state, rights)


@defer.inlineCallbacks
def _put_rights(state, clusters):
    for item in clusters:
        wanted = {"acls": item.spec["acls"], "superUsers": item.spec["superUsers"]}
        if state.rights_of(item.vcluster) != wanted:
            yield state.put_rights(item.vcluster, wanted["acls"], wanted["superUsers"])


@defer.inlineCallbacks
def _execute(state, change):
    item, vc = change.resource, change.resource.vcluster
    if item.kind == "VirtualCluster":
        if change.action == "create":
            yield state.ensure_vcluster(vc, item.spec.get("prefix"))
    elif item.kind == "ServiceAccount":
        if change.action == "delete":
            yield state.delete_account(vc, item.name)
        else:
            yield state.ensure_account(vc, item.name)
    elif item.kind == "TopicMapping":
        if change.action == "delete":
            yield state.delete_mapping(vc, item.name)
        else:
            yield state.put_mapping(vc, item.name, item.spec)
    elif item.kind == "Limits":
        if change.action == "delete" or not item.spec:
            yield state.delete_limits(vc)
        else:
            yield state.put_limits(vc, item.spec)
    else:
        yield replace_acls(state, vc, acls_from_json(item.spec["acls"]))


@defer.inlineCallbacks
def replace_acls(state, vc, acls):
    """Make *acls* the whole ACL set of *vc*: those missing are added first,
    then those not wanted removed; nothing is written if it holds them already.
    Return (added, removed) counts."""
    state.vcluster(vc)
    held = set(state.acls_of(vc))
    wanted = set(acls)
    added = sorted(wanted - held)
    removed = sorted(held - wanted)
    if added:
        yield state.add_acls(vc, added)
    if removed:
        yield state.delete_acls(vc, [exact(acl) for acl in removed])
    return len(added), len(removed)


def exact(acl):
    """The AclFilter that matches *acl* only."""
    return AclFilter(acl.resource_type, acl.name, acl.pattern_type, acl.principal,
                     acl.host, acl.operation, acl.permission)
