"""Declarative admin (vkafka/admin/resources.py, `vkafka apply`/`get`): the
plan of what differs, applying it, idempotence, pruning; state in memory."""

import json

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.trial import unittest

from vkafka import cli
from vkafka.admin import resources
from vkafka.admin.app import admin_root
from vkafka.admin.resources import parse, plan
from vkafka.auth.acls import Acl
from vkafka.auth.tokens import TokenAuthority
from vkafka.state.model import GatewayState, StateError
from vkafka.state.store import MemoryStore
from vkafka.tenancy.vclusters import VirtualClusters

from .test_admin import ADMIN, VIEWER, Clock, make_checker

RES = "http://gw/admin/resources/v1"
V1 = "http://gw/admin/vclusters/v1"

FILE = """
kind: VirtualCluster
name: london
spec: {acls: true, superUsers: [ops]}
---
kind: ServiceAccount
vcluster: london
name: orders
---
- kind: ServiceAccount
  vcluster: london
  name: ops
- kind: AclSet
  vcluster: london
  spec:
    acls:
    - {resourceType: TOPIC, patternType: PREFIXED, name: orders-, principal: "User:orders",
       operation: WRITE, permission: ALLOW}
- kind: AclSet
  vcluster: london
  spec:
    acls:
    - {resourceType: GROUP, name: "*", principal: "User:orders", operation: READ,
       permission: ALLOW}
---
kind: TopicMapping
vcluster: london
name: shared
spec: {physicalTopicName: existing-shared, readOnly: true}
---
kind: Limits
vcluster: london
spec: {capacity: {topics: 10}}
---
kind: VirtualCluster
name: paris
spec: {prefix: fr_}
"""


class CountingStore(MemoryStore):
    """A MemoryStore that remembers every write."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def put(self, key, value):
        self.writes.append((key, value))
        return super().put(key, value)


def make_state():
    clock = Clock()
    store = CountingStore()
    state = GatewayState(store, TokenAuthority("z" * 32, clock), VirtualClusters(),
                         clock)
    return state, store


def documents(text=FILE):
    return cli.load_resources(text, "test")


class PlanTests(unittest.TestCase):
    def setUp(self):
        self.state, self.store = make_state()

    def apply(self, docs, prune=True):
        changes = plan(self.state, parse(docs), prune)
        failures = []
        resources.execute(self.state, changes).addErrback(failures.append)
        self.assertEqual(failures, [])
        return changes

    def labels(self, changes):
        return [f"{c.action} {c.resource.label()}" for c in changes]

    def test_first_apply_creates_in_order(self):
        """Virtual clusters, then accounts, mappings, limits, ACLs, and only
        then their enforcement (rights): no moment with ACLs on and missing."""
        changes = self.apply(documents())
        self.assertEqual(self.labels(changes), [
            "create VirtualCluster london", "create VirtualCluster paris",
            "create ServiceAccount london/ops", "create ServiceAccount london/orders",
            "create TopicMapping london/shared", "create Limits london",
            "create AclSet london"])
        keys = [key for key, _ in self.store.writes]
        self.assertLess(max(i for i, k in enumerate(keys) if k.startswith("acl/")),
                        keys.index("rights/london"))
        self.assertEqual(self.state.rights_of("london"),
                         {"acls": True, "superUsers": ["ops"]})
        self.assertEqual(len(self.state.acls_of("london")), 2)  # both sets merged
        self.assertEqual(self.state.vclusters.prefix_of("paris"), "fr_")
        self.assertEqual(self.state.limits_of("london").to_json(),
                         {"capacity": {"topics": 10}})

    def test_second_apply_writes_nothing(self):
        """The same resources again: no change planned, no record written."""
        self.apply(documents())
        before = len(self.store.writes)
        self.assertEqual(self.apply(documents()), [])
        self.assertEqual(len(self.store.writes), before)

    def test_get_round_trips(self):
        """What `vkafka get` prints, applied, changes nothing."""
        self.apply(documents())
        printed = cli.dump_resources([item.to_json() for vc in ("london", "paris")
                                      for item in resources.current(self.state, vc)])
        self.assertEqual(plan(self.state, parse(documents(printed))), [])
        self.assertIn("kind: AclSet", printed)
        self.assertNotIn("createdAt", printed)

    def test_prune_removes_what_the_file_does_not_name(self):
        """In a managed virtual cluster, what the file leaves out goes; the
        virtual clusters it does not name are untouched."""
        self.apply(documents())
        self.assertTrue(self.state.create_account("other", "sa", 60).called)
        smaller = [d for d in documents() if d.get("name") not in ("orders", "shared")
                   and d["kind"] != "Limits"]
        changes = self.apply(smaller)
        self.assertEqual(self.labels(changes), [
            "delete Limits london", "delete TopicMapping london/shared",
            "delete ServiceAccount london/orders"])
        self.assertEqual([a["username"] for a in self.state.accounts_of("london")],
                         ["ops"])
        self.assertIn("other", self.state.clusters)
        # the account removed has its tokens revoked
        self.assertIn("revocation/london/orders", [k for k, _ in self.store.writes])

    def test_no_prune_removes_nothing(self):
        self.apply(documents())
        changes = self.apply([documents()[0]], prune=False)
        self.assertEqual(changes, [])
        self.assertEqual(len(self.state.accounts_of("london")), 2)

    def test_acl_set_left_out_removes_every_acl(self):
        self.apply(documents())
        changes = self.apply([d for d in documents() if d["kind"] != "AclSet"])
        self.assertEqual(self.labels(changes), ["delete AclSet london"])
        self.assertEqual(self.state.acls_of("london"), [])

    def test_changes_are_reported_with_their_fields(self):
        self.apply(documents())
        docs = documents()
        docs[0]["spec"]["acls"] = False
        docs[5]["spec"]["readOnly"] = False
        docs[6]["spec"] = {"capacity": {"topics": 10}, "rates": {
            "requestsPerSecond": 100}}
        changes = self.apply(docs)
        self.assertEqual([c.summary() for c in changes], [
            "TopicMapping london/shared (readOnly)", "Limits london (rates)",
            "VirtualCluster london (acls)"])
        docs[6]["spec"] = {"rates": {"requestsPerSecond": 100}}
        self.assertEqual([c.to_json()["summary"] for c in self.apply(docs)],
                         ["Limits london (capacity)"])
        self.assertEqual(changes[2].to_json()["before"]["acls"], True)
        self.assertFalse(self.state.rights_of("london")["acls"])

    def test_acl_set_change_adds_then_removes(self):
        self.apply(documents())
        docs = documents()
        docs[4]["spec"]["acls"][0]["operation"] = "DESCRIBE"
        changes = self.apply(docs)
        self.assertEqual([c.summary() for c in changes],
                         ["AclSet london (+1 -1 ACLs)"])
        self.assertEqual({a.operation for a in self.state.acls_of("london")
                          if a.resource_type == "GROUP"}, {"DESCRIBE"})

    def test_prefix_cannot_change(self):
        """409 before any write: a prefix is for life."""
        self.apply(documents())
        docs = documents()
        docs[-1]["spec"]["prefix"] = "paris"
        before = len(self.store.writes)
        e = self.assertRaises(StateError, plan, self.state, parse(docs))
        self.assertEqual(e.status, 409)
        self.assertEqual(len(self.store.writes), before)

    def test_overlapping_new_prefix_refused_before_any_write(self):
        e = self.assertRaises(StateError, plan, self.state, parse(
            documents() + [{"kind": "VirtualCluster", "name": "london2"}]))
        self.assertEqual((e.status, self.store.writes), (409, []))

    def test_child_of_an_unknown_virtual_cluster(self):
        """A resource of a virtual cluster neither in the file nor in the
        state: 404 naming it."""
        e = self.assertRaises(StateError, plan, self.state, parse(
            [{"kind": "ServiceAccount", "vcluster": "nowhere", "name": "a"}]))
        self.assertEqual(e.status, 404)

    def test_child_of_an_unmanaged_virtual_cluster_is_applied_alone(self):
        """A virtual cluster that exists but is not named: its resources given
        are applied, nothing else in it is removed."""
        self.apply(documents())
        changes = self.apply([{"kind": "ServiceAccount", "vcluster": "london",
                               "name": "new"}])
        self.assertEqual(self.labels(changes), ["create ServiceAccount london/new"])
        self.assertEqual(len(self.state.accounts_of("london")), 3)

    def test_bad_documents_name_the_field(self):
        cases = [
            ([{"kind": "Nope"}], "resources.0.kind"),
            ([{"kind": "ServiceAccount", "name": "a"}], "resources.0.vcluster"),
            ([{"kind": "VirtualCluster", "name": "a", "vcluster": "a"}],
             "resources.0.vcluster"),
            ([{"kind": "VirtualCluster", "name": "bad.name"}], "resources.0.name"),
            ([{"kind": "Limits", "vcluster": "a", "name": "x"}], "resources.0.name"),
            ([{"kind": "VirtualCluster", "name": "a", "spec": {"acl": True}}],
             "resources.0.spec.acl"),
            ([{"kind": "AclSet", "vcluster": "a", "spec": {"acls": [{
                "resourceType": "CLUSTER", "name": "x", "principal": "User:a",
                "operation": "ALTER", "permission": "ALLOW"}]}}],
             "resources.0.spec.acls.0"),
            ([{"kind": "Limits", "vcluster": "a", "spec": {"capacity": {"topics": -1}}}],
             "resources.0.spec.capacity.topics"),
            ([{"kind": "VirtualCluster", "name": "a"}, {"kind": "VirtualCluster",
                                                         "name": "a"}], "resources.1"),
        ]
        for docs, field in cases:
            e = self.assertRaises(StateError, parse, docs)
            self.assertEqual((e.status, e.details.get("field")), (400, field), docs)

    def test_concentrated_mapping_without_partitions_is_stable(self):
        """A concentrated mapping's partitions default to the physical topic's:
        left out of the file, they are no change."""
        self.state.topic_exists = lambda name: defer.succeed(4)
        docs = [{"kind": "VirtualCluster", "name": "lyon"},
                {"kind": "TopicMapping", "vcluster": "lyon", "name": "c",
                 "spec": {"physicalTopicName": "conc", "concentrated": True}}]
        self.apply(docs)
        self.assertEqual(self.state.mappings_of("lyon")[0]["partitions"], 4)
        self.assertEqual(self.apply(docs), [])


class ResourceEndpointTests(unittest.TestCase):
    """PUT/GET/DELETE of each resource over HTTP: idempotent."""

    def setUp(self):
        self.state, self.store = make_state()
        root = admin_root(self.state, make_checker(),
                          lambda: (None, {"brokers": [1]}))
        self.http = StubTreq(root)

    @defer.inlineCallbacks
    def call(self, method, url, body=None, auth=ADMIN):
        response = yield self.http.request(
            method, url, auth=auth, data=None if body is None else json.dumps(body))
        content = yield response.content()
        return response.code, json.loads(content) if content else None

    @defer.inlineCallbacks
    def test_each_put_twice_writes_once(self):
        acl = {"resourceType": "TOPIC", "name": "t", "principal": "User:a",
               "operation": "READ", "permission": "ALLOW"}
        for url, body in [(f"{RES}/vclusters/lyon", {"acls": True}),
                          (f"{RES}/vclusters/lyon/serviceaccounts/a", {}),
                          (f"{RES}/vclusters/lyon/topicmappings/t",
                           {"physicalTopicName": "p"}),
                          (f"{RES}/vclusters/lyon/aclset", {"acls": [acl]}),
                          (f"{RES}/vclusters/lyon/limits",
                           {"capacity": {"topics": 2}})]:
            code, first = yield self.call("PUT", url, body)
            self.assertEqual((code, first["result"]), (200, "created"), url)
            writes = len(self.store.writes)
            code, second = yield self.call("PUT", url, body)
            self.assertEqual((code, second["result"]), (200, "unchanged"), url)
            self.assertEqual(len(self.store.writes), writes, url)
            self.assertEqual(second["resource"], first["resource"])
            code, got = yield self.call("GET", url)
            self.assertEqual((code, got), (200, first["resource"]))
        code, answer = yield self.call("PUT", f"{RES}/vclusters/lyon",
                                       {"acls": False})
        self.assertEqual((code, answer["result"]), (200, "changed"))
        code, answer = yield self.call("PUT", f"{RES}/vclusters/lyon/aclset",
                                       {"acls": []})
        self.assertEqual((code, answer["result"]), (200, "deleted"))

    @defer.inlineCallbacks
    def test_delete_is_idempotent(self):
        yield self.call("PUT", f"{RES}/vclusters/lyon", {})
        yield self.call("PUT", f"{RES}/vclusters/lyon/serviceaccounts/a", {})
        for url in (f"{RES}/vclusters/lyon/serviceaccounts/a",
                    f"{RES}/vclusters/lyon/limits", f"{RES}/vclusters/lyon"):
            for _ in range(2):
                code, _ = yield self.call("DELETE", url)
                self.assertEqual(code, 204, url)
            code, _ = yield self.call("GET", url)
            self.assertEqual(code, 404, url)

    @defer.inlineCallbacks
    def test_apply_endpoint_dry_run_changes_nothing(self):
        body = {"resources": documents(), "dryRun": True}
        code, answer = yield self.call("POST", f"{RES}/apply", body)
        self.assertEqual((code, answer["dryRun"], len(answer["changes"])),
                         (200, True, 7))
        self.assertEqual(self.store.writes, [])
        code, answer = yield self.call("POST", f"{RES}/apply", {**body, "dryRun": False})
        self.assertEqual((code, len(answer["changes"])), (200, 7))
        code, listed = yield self.call("GET", RES)
        code, answer = yield self.call("POST", f"{RES}/apply",
                                       {"resources": listed["resources"]})
        self.assertEqual((code, answer["changes"], answer["unchanged"]), (200, [], 7))

    @defer.inlineCallbacks
    def test_read_only_users_may_plan(self):
        """A read-only user (a CI job, say) gets the plan of a dry run, and a
        403 for the apply itself."""
        body = {"resources": documents(), "dryRun": True}
        code, answer = yield self.call("POST", f"{RES}/apply", body, auth=VIEWER)
        self.assertEqual((code, len(answer["changes"])), (200, 7))
        code, answer = yield self.call("POST", f"{RES}/apply", {**body, "dryRun": False},
                                       auth=VIEWER)
        self.assertEqual((code, answer["error"]), (403, "forbidden"))
        code, answer = yield self.call("PUT", f"{RES}/vclusters/x", {}, auth=VIEWER)
        self.assertEqual(code, 403)
        self.assertEqual(self.store.writes, [])

    @defer.inlineCallbacks
    def test_a_deleted_account_leaves_the_others(self):
        """DELETE .../username/{u}: its tokens refused, the others' still good."""
        _, a = yield self.call("POST", f"{V1}/vcluster/lyon/username/a", {})
        _, b = yield self.call("POST", f"{V1}/vcluster/lyon/username/b", {})
        code, _ = yield self.call("DELETE", f"{V1}/vcluster/lyon/username/a")
        self.assertEqual(code, 204)
        self.assertRaises(Exception, self.state.authority.verify, "a", a["token"])
        self.state.authority.verify("b", b["token"])
        code, listed = yield self.call("GET", f"{V1}/vcluster/lyon/username")
        self.assertEqual([x["username"] for x in listed["serviceAccounts"]], ["b"])
        code, body = yield self.call("DELETE", f"{V1}/vcluster/lyon/username/*")
        self.assertEqual((code, body["error"]), (404, "not_found"))
        self.state.authority.verify("b", b["token"])  # "*" revoked nobody

    @defer.inlineCallbacks
    def test_rights_and_acls_v1(self):
        yield self.call("POST", f"{V1}/vcluster/lyon", {})
        code, rights = yield self.call("GET", f"{V1}/vcluster/lyon/rights")
        self.assertEqual((code, rights), (200, {"acls": False, "superUsers": []}))
        code, rights = yield self.call("PUT", f"{V1}/vcluster/lyon/rights",
                                       {"acls": True, "superUsers": ["b", "a", "a"]})
        self.assertEqual(rights, {"acls": True, "superUsers": ["a", "b"]})
        writes = len(self.store.writes)
        yield self.call("PUT", f"{V1}/vcluster/lyon/rights",
                        {"acls": True, "superUsers": ["a", "b"]})
        self.assertEqual(len(self.store.writes), writes)
        read = {"resourceType": "TOPIC", "name": "t", "principal": "User:a",
                "operation": "READ", "permission": "ALLOW"}
        write = {**read, "operation": "WRITE", "patternType": "PREFIXED"}
        code, listed = yield self.call("POST", f"{V1}/vcluster/lyon/acls",
                                       {"acls": [read]})
        self.assertEqual((code, len(listed["acls"])), (200, 1))
        code, listed = yield self.call("PUT", f"{V1}/vcluster/lyon/acls",
                                       {"acls": [read, write]})
        self.assertEqual(len(listed["acls"]), 2)
        writes = len(self.store.writes)
        yield self.call("PUT", f"{V1}/vcluster/lyon/acls", {"acls": [write, read]})
        self.assertEqual(len(self.store.writes), writes)
        code, answer = yield self.call(
            "DELETE", f"{V1}/vcluster/lyon/acls?operation=WRITE&patternType=PREFIXED")
        self.assertEqual((code, [a["operation"] for a in answer["deleted"]]),
                         (200, ["WRITE"]))
        code, listed = yield self.call("GET", f"{V1}/vcluster/lyon/acls")
        self.assertEqual([Acl.from_json(a) for a in listed["acls"]],
                         [Acl.from_json(read)])
        code, answer = yield self.call("DELETE", f"{V1}/vcluster/lyon/acls?nope=1")
        self.assertEqual((code, answer["error"]), (400, "unknown_field"))


class CliTests(unittest.TestCase):
    def test_load_resources_forms(self):
        """Several documents, lists, empty documents; not a mapping: an error."""
        self.assertEqual(len(documents()), 8)
        self.assertEqual(cli.load_resources("---\n---\n", "f"), [])
        self.assertRaises(cli.CliError, cli.load_resources, "- 1\n", "f")
        self.assertRaises(cli.CliError, cli.load_resources, "a: [", "f")

    def test_report(self):
        answer = {"dryRun": False, "unchanged": 1, "changes": [
            {"action": "create", "kind": "VirtualCluster", "vcluster": "lyon",
             "name": "lyon", "summary": "VirtualCluster lyon"},
            {"action": "create", "kind": "ServiceAccount", "vcluster": "lyon",
             "name": "a", "summary": "ServiceAccount lyon/a"},
            {"action": "change", "kind": "Limits", "vcluster": "lyon",
             "before": {"capacity": {"topics": 1}}, "after": {},
             "summary": "Limits lyon (capacity)"},
            {"action": "delete", "kind": "TopicMapping", "vcluster": "lyon",
             "name": "t", "summary": "TopicMapping lyon/t"}]}
        text = cli.describe_changes(answer)
        self.assertEqual(text.splitlines()[:5], [
            "created VirtualCluster lyon", "created ServiceAccount lyon/a",
            "changed Limits lyon (capacity)", "deleted TopicMapping lyon/t",
            "4 change(s), 1 resource(s) unchanged"])
        self.assertIn("vkafka vcluster create lyon --username a", text)
        dry = cli.describe_changes({**answer, "dryRun": True})
        self.assertTrue(dry.startswith("would create VirtualCluster lyon"))
        self.assertIn("dry run: nothing changed", dry)
        self.assertEqual(cli.describe_changes({"dryRun": False, "unchanged": 3,
                                               "changes": []}),
                         "no change: the gateways hold these resources already")
