"""Limits of a virtual cluster: the model, the state, the admin API and the CLI."""

import dataclasses
import json
import os
import subprocess
import sys

from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests.test_admin import ADMIN, BASE, VIEWER, Clock, make_api
from tests.test_admin_schemathesis import start_server
from vkafka.admin.openapi import SchemaValidator, document
from vkafka.auth.tokens import TokenAuthority
from vkafka.state.limits import (INT32_MAX, INT64_MAX, Capacity, InvalidLimits, Limits,
                                 Rates, TopicPolicy)
from vkafka.state.model import GatewayState, StateError
from vkafka.state.store import MemoryStore
from vkafka.tenancy.vclusters import VirtualClusters

EXAMPLE = {"capacity": {"topics": 10, "partitions": 100, "partitionsPerTopic": 12,
                        "consumerGroups": 20, "connections": 50,
                        "transactionalIds": 30, "memberStateBytes": 1048576},
           "topicPolicy": {"replicationFactorMin": 1, "replicationFactorMax": 3,
                           "retentionMsMax": 604800000,
                           "retentionBytesMax": 1073741824,
                           "namePattern": "[a-z][a-z0-9.-]*",
                           "configsAllowed": ["cleanup.policy", "retention.ms"],
                           "configsForbidden": ["min.insync.replicas"]},
           "rates": {"produceBytesPerSecond": 2000000, "fetchBytesPerSecond": 4000000,
                     "requestsPerSecond": 500}}

# (JSON, the field at fault, the whole message): each refused by from_json.
BAD = [
    ([], None, "the limits: must be a JSON object, not []"),
    ({"quotas": {}}, "quotas", "quotas: unknown field"),
    ({"capacity": 3}, "capacity", "capacity: must be a JSON object, not 3"),
    ({"capacity": {"topic": 1}}, "capacity.topic", "capacity.topic: unknown field"),
    ({"capacity": {"topics": -1}}, "capacity.topics",
     "capacity.topics: must be an integer from 0 to 2147483647, not -1"),
    ({"capacity": {"topics": "5"}}, "capacity.topics",
     "capacity.topics: must be an integer from 0 to 2147483647, not '5'"),
    ({"capacity": {"topics": 5.0}}, "capacity.topics",
     "capacity.topics: must be an integer from 0 to 2147483647, not 5.0"),
    ({"capacity": {"topics": None}}, "capacity.topics",
     "capacity.topics: must be an integer from 0 to 2147483647, not None"),
    ({"capacity": {"connections": True}}, "capacity.connections",
     "capacity.connections: must be an integer from 0 to 2147483647, not True"),
    ({"capacity": {"partitions": INT32_MAX + 1}}, "capacity.partitions",
     "capacity.partitions: must be an integer from 0 to 2147483647, not 2147483648"),
    ({"capacity": {"partitionsPerTopic": 0}}, "capacity.partitionsPerTopic",
     "capacity.partitionsPerTopic: must be an integer from 1 to 2147483647, not 0"),
    ({"topicPolicy": {"replicationFactorMin": 0}}, "topicPolicy.replicationFactorMin",
     "topicPolicy.replicationFactorMin: must be an integer from 1 to 2147483647, "
     "not 0"),
    ({"topicPolicy": {"replicationFactorMin": 3, "replicationFactorMax": 2}},
     "topicPolicy.replicationFactorMin",
     "topicPolicy.replicationFactorMin: 3 is more than replicationFactorMax 2"),
    ({"topicPolicy": {"retentionMsMax": -1}}, "topicPolicy.retentionMsMax",
     "topicPolicy.retentionMsMax: must be an integer from 1 to "
     "9223372036854775807, not -1"),
    ({"topicPolicy": {"namePattern": "("}}, "topicPolicy.namePattern",
     "topicPolicy.namePattern: invalid regular expression '(' (RE2 syntax): "
     "missing )"),
    ({"topicPolicy": {"namePattern": "(?=a)b"}}, "topicPolicy.namePattern",
     "topicPolicy.namePattern: invalid regular expression '(?=a)b' (RE2 syntax): "
     "invalid perl operator"),  # a lookahead: Python's re takes it, RE2 not
    ({"topicPolicy": {"namePattern": ""}}, "topicPolicy.namePattern",
     "topicPolicy.namePattern: must be a regular expression of 1 to 1000 "
     "characters, not ''"),
    ({"topicPolicy": {"namePattern": "a" * 1001}}, "topicPolicy.namePattern",
     "topicPolicy.namePattern: must be a regular expression of 1 to 1000 "
     f"characters, not '{'a' * 27}...{'a' * 28}'"),  # long values cut short
    ({"topicPolicy": {"configsAllowed": "cleanup.policy"}},
     "topicPolicy.configsAllowed",
     "topicPolicy.configsAllowed: must be a list of at most 1000 topic config keys "
     "([a-zA-Z0-9._-]{1,255}), not 'cleanup.policy'"),
    ({"topicPolicy": {"configsForbidden": ["a b"]}}, "topicPolicy.configsForbidden",
     "topicPolicy.configsForbidden: must be a list of at most 1000 topic config keys "
     "([a-zA-Z0-9._-]{1,255}), not ['a b']"),
    ({"topicPolicy": {"configsAllowed": [f"k{i}" for i in range(1001)]}},
     "topicPolicy.configsAllowed",
     "topicPolicy.configsAllowed: must be a list of at most 1000 topic config keys "
     "([a-zA-Z0-9._-]{1,255}), not ['k0', 'k1', 'k2', 'k3', 'k4', 'k5', ...]"),
    ({"topicPolicy": {"configsAllowed": ["x", "retention.ms", "x"]}},
     "topicPolicy.configsAllowed", "topicPolicy.configsAllowed: 'x' is listed twice"),
    ({"topicPolicy": {"configsAllowed": ["retention.ms"],
                      "configsForbidden": ["retention.ms"]}},
     "topicPolicy.configsForbidden",
     "topicPolicy.configsForbidden: 'retention.ms' is also in configsAllowed"),
    ({"rates": {"requestsPerSecond": 0}}, "rates.requestsPerSecond",
     "rates.requestsPerSecond: must be an integer from 1 to 9223372036854775807, "
     "not 0"),
    ({"rates": {"fetchBytesPerSecond": INT64_MAX + 1}}, "rates.fetchBytesPerSecond",
     "rates.fetchBytesPerSecond: must be an integer from 1 to 9223372036854775807, "
     "not 9223372036854775808"),
]
CROSS_FIELD = {"topicPolicy.replicationFactorMin", "topicPolicy.configsForbidden",
               "topicPolicy.namePattern"}
"""The fields of BAD whose rule the JSON schema cannot state (for some cases)."""


def request_schema():
    """The admin API's validator of ``POST .../limits`` bodies."""
    doc = document()
    path = "/admin/vclusters/v1/vcluster/{vcluster}/limits"
    schema = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return SchemaValidator(schema["schema"])


class LimitsTests(unittest.TestCase):
    def test_example_round_trips(self):
        """The documented example parses into the three parts and back."""
        limits = Limits.from_json(EXAMPLE)
        self.assertEqual(limits.to_json(), EXAMPLE)
        self.assertEqual(limits.capacity, Capacity(10, 100, 12, 20, 50, 30, 1048576))
        self.assertEqual(limits.topic_policy.configs_allowed,
                         ("cleanup.policy", "retention.ms"))
        self.assertEqual(limits.rates, Rates(2000000, 4000000, 500))
        self.assertEqual(Limits.from_json(json.loads(json.dumps(limits.to_json()))),
                         limits)

    def test_absent_is_unlimited(self):
        """No field, an empty part or {}: no limit, and nothing in the JSON."""
        self.assertEqual(Limits.from_json({}), Limits.NONE)
        self.assertEqual(Limits.from_json({"capacity": {}, "rates": {}}), Limits.NONE)
        self.assertEqual(Limits.NONE.to_json(), {})
        for part in (Limits.NONE.capacity, Limits.NONE.topic_policy, Limits.NONE.rates):
            self.assertEqual({getattr(part, f.name) for f in dataclasses.fields(part)},
                             {None})
        partial = Limits.from_json({"rates": {"requestsPerSecond": 7}})
        self.assertEqual(partial.to_json(), {"rates": {"requestsPerSecond": 7}})
        self.assertIsNone(partial.capacity.topics)

    def test_bounds(self):
        """Capacity may be 0 (but a topic has a partition), all else at least 1;
        counts up to int32, sizes, durations and rates up to int64."""
        low = Limits.from_json({
            "capacity": {"topics": 0, "partitions": 0, "partitionsPerTopic": 1,
                         "consumerGroups": 0, "connections": 0},
            "topicPolicy": {"replicationFactorMin": 1, "replicationFactorMax": 1,
                            "retentionMsMax": 1, "retentionBytesMax": 1},
            "rates": {"produceBytesPerSecond": 1, "fetchBytesPerSecond": 1,
                      "requestsPerSecond": 1}})
        self.assertEqual(low.capacity.topics, 0)
        high = Limits.from_json({"capacity": {"partitions": INT32_MAX},
                                 "rates": {"produceBytesPerSecond": INT64_MAX}})
        self.assertEqual((high.capacity.partitions, high.rates.produce_bytes_per_second),
                         (INT32_MAX, INT64_MAX))

    def test_each_bad_case_names_its_field(self):
        """Each refusal is an InvalidLimits (a ValueError) with the dotted
        field and a message saying what is wrong."""
        for data, field, message in BAD:
            with self.assertRaises(InvalidLimits, msg=data) as raised:
                Limits.from_json(data)
            self.assertIsInstance(raised.exception, ValueError)
            self.assertEqual((raised.exception.field, str(raised.exception)),
                             (field, message))

    def test_built_directly_checked_too(self):
        """The rules hold however a Limits is made: frozen, lists become tuples."""
        with self.assertRaises(InvalidLimits) as raised:
            TopicPolicy(replication_factor_min=3, replication_factor_max=2)
        self.assertEqual(raised.exception.field, "topicPolicy.replicationFactorMin")
        self.assertRaises(InvalidLimits, Capacity, topics=-1)
        self.assertRaises(InvalidLimits, Rates, requests_per_second=0)
        policy = TopicPolicy(configs_forbidden=["retention.ms"])
        self.assertEqual(policy.configs_forbidden, ("retention.ms",))
        limits = Limits(topic_policy=policy)
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, limits.capacity,
                          "topics", 1)
        self.assertEqual(len({limits, Limits(topic_policy=policy), Limits.NONE}), 2)

    def test_unknown_fields_ignored_on_request(self):
        """A newer version's fields: refused by default, left out if asked."""
        data = {"capacity": {"topics": 3, "tables": 1}, "quotas": {"x": 1}}
        self.assertRaises(InvalidLimits, Limits.from_json, data)
        self.assertEqual(Limits.from_json(data, ignore_unknown=True).to_json(),
                         {"capacity": {"topics": 3}})

    def test_schema_agrees_with_from_json(self):
        """The API's schema (made from the same fields) accepts the example and
        refuses every bad case but the rules between fields, which only
        from_json checks; it names every field."""
        validator = request_schema()
        self.assertEqual(list(validator.iter_errors(EXAMPLE)), [])
        accepted = set()
        for data, field, _ in BAD:
            if not list(validator.iter_errors(data)):
                accepted.add(field)
        self.assertEqual(accepted, CROSS_FIELD)
        schema = Limits.json_schema()
        self.assertEqual({part: sorted(spec["properties"])
                          for part, spec in schema["properties"].items()},
                         {part: sorted(fields) for part, fields in EXAMPLE.items()})

    def test_governance_documents_every_limit(self):
        """docs/governance.md names each limit by its JSON name."""
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
            __file__))), "docs", "governance.md")
        with open(path) as f:
            text = f.read()
        for part, fields in EXAMPLE.items():
            for name in fields:
                self.assertIn(f"`{part}.{name}`", text)


def make_state(store=None):
    clock = Clock()
    return GatewayState(MemoryStore() if store is None else store,
                        TokenAuthority("z" * 32, clock),
                        VirtualClusters(), clock)


class StateTests(unittest.TestCase):
    def setUp(self):
        self.state = make_state()
        self.store = self.state.store
        self.heard = []
        self.state.limits_listeners.append(lambda vc, limits: self.heard.append(
            (vc, limits.to_json())))
        self.state.ensure_vcluster("lon")

    def test_put_and_delete(self):
        """put_limits writes limits/<vc>, limits_of and describe read it back;
        delete_limits removes the record."""
        limits = self.successResultOf(self.state.put_limits("lon", EXAMPLE))
        self.assertEqual(limits, Limits.from_json(EXAMPLE))
        self.assertEqual(self.store.data["limits/lon"], EXAMPLE)
        self.assertEqual(self.state.limits_of("lon"), limits)
        self.assertEqual(self.state.describe("lon")["limits"], EXAMPLE)
        self.successResultOf(self.state.delete_limits("lon"))
        self.assertNotIn("limits/lon", self.store.data)
        self.assertEqual(self.state.limits_of("lon"), Limits.NONE)
        self.assertEqual(self.state.describe("lon")["limits"], {})
        self.successResultOf(self.state.delete_limits("lon"))  # none: still fine

    def test_put_replaces_and_empty_removes(self):
        """A put replaces every limit; {} leaves no record."""
        self.successResultOf(self.state.put_limits("lon", {"capacity": {"topics": 1}}))
        self.successResultOf(self.state.put_limits("lon", {"rates": {
            "requestsPerSecond": 9}}))
        self.assertEqual(self.state.limits_of("lon").to_json(),
                         {"rates": {"requestsPerSecond": 9}})
        self.successResultOf(self.state.put_limits("lon", {}))
        self.assertNotIn("limits/lon", self.store.data)
        self.assertEqual(self.state.limits_of("lon"), Limits.NONE)

    def test_unknown_vcluster(self):
        """The error of every command on a missing virtual cluster: 404."""
        for command in (lambda: self.state.put_limits("nope", {}),
                        lambda: self.state.delete_limits("nope")):
            failure = self.failureResultOf(command(), StateError)
            self.assertEqual((failure.value.status, failure.value.error,
                              failure.value.message),
                             (404, "not_found", "virtual cluster 'nope' does not exist"))
        self.assertEqual(self.state.limits_of("nope"), Limits.NONE)
        self.assertNotIn("limits/nope", self.store.data)

    def test_bad_limits_are_a_400_naming_the_field(self):
        """Bad limits: 400 bad_field with the field; the old limits stay."""
        self.successResultOf(self.state.put_limits("lon", {"capacity": {"topics": 1}}))
        failure = self.failureResultOf(self.state.put_limits("lon", {
            "topicPolicy": {"replicationFactorMin": 3, "replicationFactorMax": 1}}),
            StateError)
        self.assertEqual((failure.value.status, failure.value.error,
                          failure.value.details),
                         (400, "bad_field", {"field": "topicPolicy.replicationFactorMin"}))
        self.assertIn("more than replicationFactorMax", failure.value.message)
        failure = self.failureResultOf(self.state.put_limits("lon", []), StateError)
        self.assertEqual((failure.value.status, failure.value.details), (400, {}))
        self.assertEqual(self.store.data["limits/lon"], {"capacity": {"topics": 1}})

    def test_listeners_hear_each_change(self):
        """limits_listeners get (vc, limits) for each record, NONE on removal."""
        self.state.put_limits("lon", {"capacity": {"topics": 1}})
        self.state.put_limits("lon", {"capacity": {"topics": 2}})
        self.state.delete_limits("lon")
        self.assertEqual(self.heard, [("lon", {"capacity": {"topics": 1}}),
                                      ("lon", {"capacity": {"topics": 2}}),
                                      ("lon", {})])

    def test_other_gateways_follow_live(self):
        """A second GatewayState on the same store sees each change as it is
        written, and one started later loads the limits (a restart)."""
        other = make_state(self.store)
        heard = []
        other.limits_listeners.append(lambda vc, limits: heard.append((vc, limits)))
        self.state.put_limits("lon", EXAMPLE)
        self.assertEqual(other.limits_of("lon"), Limits.from_json(EXAMPLE))
        self.assertEqual(heard, [("lon", Limits.from_json(EXAMPLE))])
        self.assertEqual(make_state(self.store).limits_of("lon"),
                         Limits.from_json(EXAMPLE))
        self.state.delete_limits("lon")
        self.assertEqual((other.limits_of("lon"), heard[-1]),
                         (Limits.NONE, ("lon", Limits.NONE)))

    def test_unreadable_record_keeps_previous_limits(self):
        """A record this version refuses is logged; the limits before stay and
        no listener hears of it."""
        warnings = []

        def observe(event):
            if event.get("log_namespace") == "vkafka.state.model":
                warnings.append(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.state.put_limits("lon", {"capacity": {"topics": 1}})
        for bad in ({"capacity": {"topics": -1}}, "limits", {"rates": 5}):
            self.store.put("limits/lon", bad)
        self.assertEqual(self.state.limits_of("lon").to_json(),
                         {"capacity": {"topics": 1}})
        self.assertEqual(len(self.heard), 1)
        self.assertEqual([(e["vc"], e["log_level"].name) for e in warnings],
                         [("lon", "warn")] * 3)
        self.assertEqual(warnings[0]["error"],
                         "capacity.topics: must be an integer from 0 to 2147483647, "
                         "not -1")

    def test_newer_fields_are_left_out(self):
        """A newer gateway's record: the limits known here apply."""
        self.store.put("limits/lon", {"capacity": {"topics": 3, "tables": 1},
                                      "quotas": {"x": 1}})
        self.assertEqual(self.state.limits_of("lon").to_json(),
                         {"capacity": {"topics": 3}})

    def test_deleting_the_vcluster_deletes_its_limits(self):
        """No limit survives its virtual cluster: one made again has none."""
        self.state.put_limits("lon", EXAMPLE)
        self.successResultOf(self.state.delete_vcluster("lon"))
        self.assertNotIn("limits/lon", self.store.data)
        self.assertEqual(self.heard[-1], ("lon", {}))
        self.state.ensure_vcluster("lon")
        self.assertEqual(self.state.limits_of("lon"), Limits.NONE)


class AdminTests(unittest.TestCase):
    """The endpoints, through the admin resource tree (StubTreq, no sockets)."""

    URL = f"{BASE}/vcluster/lon/limits"

    def setUp(self):
        self.http, self.state, self.store, _ = make_api()
        self.state.ensure_vcluster("lon")

    @defer.inlineCallbacks
    def call(self, method, url=URL, body=None, auth=ADMIN, raw=None):
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        response = yield self.http.request(method, url, data=data, auth=auth)
        content = yield response.content()
        return response.code, json.loads(content) if content else None

    @defer.inlineCallbacks
    def test_round_trip(self):
        """GET {} , POST the example, GET it back (and in the vcluster's
        description), DELETE, GET {} again."""
        self.assertEqual((yield self.call("GET")), (200, {}))
        self.assertEqual((yield self.call("POST", body=EXAMPLE)), (200, EXAMPLE))
        self.assertEqual((yield self.call("GET")), (200, EXAMPLE))
        self.assertEqual(self.state.limits_of("lon"), Limits.from_json(EXAMPLE))
        code, described = yield self.call("GET", f"{BASE}/vcluster/lon")
        self.assertEqual((code, described["limits"]), (200, EXAMPLE))
        self.assertEqual((yield self.call("DELETE")), (204, None))
        self.assertEqual((yield self.call("GET")), (200, {}))
        self.assertEqual((yield self.call("DELETE")), (204, None))

    @defer.inlineCallbacks
    def test_post_replaces_every_limit(self):
        """The body is all the limits: what it leaves out is no limit any more."""
        yield self.call("POST", body={"capacity": {"topics": 1, "connections": 2}})
        code, answer = yield self.call("POST", body={"capacity": {"connections": 3}})
        self.assertEqual((code, answer), (200, {"capacity": {"connections": 3}}))
        self.assertIsNone(self.state.limits_of("lon").capacity.topics)
        self.assertEqual((yield self.call("POST", body={})), (200, {}))
        self.assertNotIn("limits/lon", self.store.data)

    @defer.inlineCallbacks
    def test_unknown_vcluster_404(self):
        """Each method on a virtual cluster that does not exist: 404 not_found."""
        url = f"{BASE}/vcluster/nope/limits"
        for method, body in (("GET", None), ("POST", {}), ("DELETE", None)):
            code, answer = yield self.call(method, url, body)
            self.assertEqual((code, answer["error"]), (404, "not_found"), method)
            self.assertIn("'nope'", answer["message"])

    @defer.inlineCallbacks
    def test_bad_input_400(self):
        """Bad bodies: 400 with the error code and field, as other endpoints;
        the limits set before stay."""
        yield self.call("POST", body={"rates": {"requestsPerSecond": 5}})
        cases = [
            (None, b"", "bad_json", None),
            (None, b"{nope", "bad_json", None),
            ([], None, "bad_json", None),
            ({"quotas": {}}, None, "unknown_field", "quotas"),
            ({"capacity": {"topic": 1}}, None, "unknown_field", "capacity.topic"),
            ({"capacity": {"topics": "1"}}, None, "bad_field", "capacity.topics"),
            ({"capacity": {"topics": 1.5}}, None, "bad_field", "capacity.topics"),
            ({"capacity": {"topics": -1}}, None, "bad_field", "capacity.topics"),
            ({"capacity": {"partitionsPerTopic": 0}}, None, "bad_field",
             "capacity.partitionsPerTopic"),
            ({"rates": {"fetchBytesPerSecond": 0}}, None, "bad_field",
             "rates.fetchBytesPerSecond"),
            ({"topicPolicy": {"configsAllowed": ["a", "a"]}}, None, "bad_field",
             "topicPolicy.configsAllowed"),
            ({"topicPolicy": {"configsAllowed": ["a b"]}}, None, "invalid_name",
             "topicPolicy.configsAllowed.0"),
            ({"topicPolicy": {"replicationFactorMin": 3, "replicationFactorMax": 2}},
             None, "bad_field", "topicPolicy.replicationFactorMin"),
            ({"topicPolicy": {"namePattern": "(?=x)"}}, None, "bad_field",
             "topicPolicy.namePattern"),
            ({"topicPolicy": {"configsAllowed": ["a"], "configsForbidden": ["a"]}},
             None, "bad_field", "topicPolicy.configsForbidden"),
        ]
        for body, raw, error, field in cases:
            code, answer = yield self.call("POST", body=body, raw=raw)
            self.assertEqual((code, answer["error"], answer.get("field")),
                             (400, error, field), body or raw)
            self.assertTrue(answer["message"])
            if field is not None:  # the message says which field too
                self.assertIn(field.split(".")[1 if "." in field else 0],
                              answer["message"])
        self.assertEqual((yield self.call("GET")), (200, {"rates": {
            "requestsPerSecond": 5}}))

    @defer.inlineCallbacks
    def test_read_only_user(self):
        """A read-only user reads the limits but cannot change them: 403."""
        yield self.call("POST", body={"capacity": {"topics": 4}})
        self.assertEqual((yield self.call("GET", auth=VIEWER)),
                         (200, {"capacity": {"topics": 4}}))
        for method, body in (("POST", {}), ("DELETE", None)):
            code, answer = yield self.call(method, body=body, auth=VIEWER)
            self.assertEqual((code, answer["error"]), (403, "forbidden"))
        self.assertEqual(self.state.limits_of("lon").capacity.topics, 4)

    @defer.inlineCallbacks
    def test_store_unavailable_503(self):
        """The store refusing writes: 503; the limits stay as they were."""
        self.store.available = False
        for method, body in (("POST", EXAMPLE), ("DELETE", None)):
            code, answer = yield self.call(method, body=body)
            self.assertEqual((code, answer["error"]), (503, "unavailable"))
        self.assertEqual((yield self.call("GET")), (200, {}))

    @defer.inlineCallbacks
    def test_change_is_live_on_another_gateway(self):
        """Another gateway following the same store: its limits_of and its
        listeners see each change the API makes."""
        other = make_state(self.store)
        heard = []
        other.limits_listeners.append(lambda vc, limits: heard.append(
            (vc, limits.to_json())))
        yield self.call("POST", body={"capacity": {"connections": 5}})
        self.assertEqual(other.limits_of("lon").capacity.connections, 5)
        yield self.call("DELETE")
        self.assertEqual(other.limits_of("lon"), Limits.NONE)
        self.assertEqual(heard, [("lon", {"capacity": {"connections": 5}}),
                                 ("lon", {})])


class CliTests(unittest.TestCase):
    """``vkafka limits`` against the real admin API on a localhost port."""

    def setUp(self):
        self.base = start_server(self)
        self.tmp = self.mktemp()
        os.makedirs(self.tmp)
        code, _, err = self.vkafka("vcluster", "create", "lon")
        self.assertEqual(code, 0, err)

    def vkafka(self, *args, stdin=None):
        """(exit status, stdout, stderr) of the CLI in a process of its own."""
        run = subprocess.run([sys.executable, "-m", "vkafka.cli", "--admin-url",
                              self.base, "--admin-user", "admin:conduktor", *args],
                             input=stdin, capture_output=True, text=True, timeout=60)
        return run.returncode, run.stdout, run.stderr

    def test_set_get_delete(self):
        """set (argument, file, stdin) prints the limits in force; get shows
        them; delete removes them."""
        code, out, err = self.vkafka("limits", "set", "--vcluster", "lon",
                                     json.dumps({"capacity": {"topics": 3}}))
        self.assertEqual((code, json.loads(out)), (0, {"capacity": {"topics": 3}}), err)
        path = os.path.join(self.tmp, "limits.json")
        with open(path, "w") as f:
            json.dump(EXAMPLE, f)
        code, out, _ = self.vkafka("limits", "set", "--vcluster", "lon", "--file", path)
        self.assertEqual((code, json.loads(out)), (0, EXAMPLE))
        code, out, _ = self.vkafka("limits", "get", "--vcluster", "lon")
        self.assertEqual((code, json.loads(out)), (0, EXAMPLE))
        code, out, _ = self.vkafka("limits", "set", "--vcluster", "lon", "--file", "-",
                                   stdin='{"rates": {"requestsPerSecond": 9}}')
        self.assertEqual((code, json.loads(out)), (0, {"rates": {"requestsPerSecond": 9}}))
        code, out, _ = self.vkafka("limits", "delete", "--vcluster", "lon")
        self.assertEqual((code, out.strip()), (0, "done"))
        code, out, _ = self.vkafka("limits", "get", "--vcluster", "lon")
        self.assertEqual((code, json.loads(out)), (0, {}))

    def test_errors_exit_2_with_the_api_answer(self):
        """Refused limits, an unknown virtual cluster, input that is not JSON:
        exit status 2 and the reason on stderr; nothing changes."""
        code, out, err = self.vkafka("limits", "set", "--vcluster", "lon",
                                     '{"capacity": {"topics": -1}}')
        self.assertEqual((code, out), (2, ""))
        self.assertIn("HTTP 400", err)
        answer = json.loads(err[err.index("{"):])
        self.assertEqual((answer["error"], answer["field"]),
                         ("bad_field", "capacity.topics"))
        code, _, err = self.vkafka("limits", "get", "--vcluster", "nope")
        self.assertEqual(code, 2)
        self.assertIn("HTTP 404", err)
        code, _, err = self.vkafka("limits", "set", "--vcluster", "lon", "{nope")
        self.assertEqual(code, 2)
        self.assertIn("the limits argument is not JSON", err)
        code, _, err = self.vkafka("limits", "set", "--vcluster", "lon")
        self.assertEqual(code, 2)
        self.assertIn("one of the arguments limits --file is required", err)
        code, out, _ = self.vkafka("limits", "get", "--vcluster", "lon")
        self.assertEqual((code, json.loads(out)), (0, {}))
