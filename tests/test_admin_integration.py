"""The admin API over real ports, state shared through Kafka by two gateways."""

import json
import os
import subprocess
import time
from pathlib import Path

import treq
from kio.schema.errors import ErrorCode
from twisted.internet import defer, threads
from twisted.trial import unittest

from . import stack
from .rawclient import RawClient
from .stack import devstack

ADMIN = ("admin", "conduktor")


class SharedStateTests(unittest.TestCase):
    timeout = 300

    def setUp(self):
        stack.ensure_cluster()
        self.topic = stack.unique("_vkafka_state_test").replace("-", "_")
        options = (*devstack.TENANT_OPTIONS, f"--state-topic={self.topic}")
        self.a = stack.GatewayProcess(options).start()
        self.addCleanup(self.a.stop)
        self.b = stack.GatewayProcess(options).start()
        self.addCleanup(self.b.stop)
        self.addCleanup(stack.delete_topics, [self.topic])

    def url(self, gateway, path):
        return f"http://localhost:{gateway.admin_port}/admin/vclusters/v1{path}"

    @defer.inlineCallbacks
    def post(self, gateway, path, body=None):
        response = yield treq.post(self.url(gateway, path), auth=ADMIN,
                                   persistent=False,
                                   data=json.dumps(body or {}).encode(),
                                   headers={b"Content-Type": [b"application/json"]})
        return response.code, (yield response.json())

    @defer.inlineCallbacks
    def get(self, gateway, path):
        response = yield treq.get(self.url(gateway, path), auth=ADMIN,
                                  persistent=False)
        return response.code, (yield response.json())

    def authenticate(self, gateway, vcluster, token):
        raw = RawClient("localhost", gateway.start_port)
        self.addCleanup(raw.close)
        return raw, raw.sasl_plain("sa", token)

    @defer.inlineCallbacks
    def test_token_revocation_and_restart(self):
        """Token from A works on B; revoking on B refuses it on A and closes A's
        open connections; a restarted A has all the state back."""
        vc = stack.unique("adm").replace("-", "")
        code, body = yield self.post(self.a, f"/vcluster/{vc}/username/sa",
                                     {"lifeTimeSeconds": 3600})
        self.assertEqual(code, 200)
        token = body["token"]
        physical = stack.unique("mapped")
        yield threads.deferToThread(stack.create_topic, physical)
        self.addCleanup(stack.delete_topics, [physical])
        code, mapping = yield self.post(self.a, f"/vcluster/{vc}/topics/mapped",
                                        {"physicalTopicName": physical})
        self.assertEqual(code, 200)

        # minted through A, accepted by B
        raw_b, answer = yield threads.deferToThread(self.authenticate, self.b, vc, token)
        self.assertEqual(answer.error_code, ErrorCode.none)
        raw_a, answer = yield threads.deferToThread(self.authenticate, self.a, vc, token)
        self.assertEqual(answer.error_code, ErrorCode.none)

        # A's /metrics, parsed as Prometheus does, has this tenant's series
        from prometheus_client.parser import text_string_to_metric_families
        from .kafka_messages import fetch_request, produce_records, record_batch
        from .test_isolation import metadata
        answer = yield threads.deferToThread(raw_a.request, metadata(), 12)
        self.assertEqual([t.name for t in answer.topics], ["mapped"])
        # 3 records produced and fetched back, on a second connection to A that
        # reaches the partition's leader
        leader = answer.topics[0].partitions[0].leader_id
        port = {b.node_id: b.port for b in answer.brokers}[leader]

        def produce_and_fetch():
            raw = RawClient("localhost", port)
            self.addCleanup(raw.close)
            self.assertEqual(raw.sasl_plain("sa", token).error_code, ErrorCode.none)
            return (raw.request(produce_records("mapped", record_batch(3)), 9),
                    raw.request(fetch_request("mapped", version=12), 12))
        produced, fetched = yield threads.deferToThread(produce_and_fetch)
        self.assertEqual(produced.responses[0].partition_responses[0].error_code,
                         ErrorCode.none)
        self.assertEqual(fetched.responses[0].partitions[0].error_code, ErrorCode.none)
        response = yield treq.get(f"http://localhost:{self.a.admin_port}/metrics",
                                  auth=ADMIN, persistent=False)
        text = yield response.text()
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        series = {(s.name, s.labels.get("vcluster"), s.labels.get("direction")): s.value
                  for s in samples}
        self.assertEqual(series[("vkafka_connections", vc, None)], 2)
        self.assertGreater(series[("vkafka_bytes_total", vc, "in")], 0)
        self.assertGreater(series[("vkafka_bytes_total", vc, "out")], 0)
        self.assertEqual(series[("vkafka_records_total", vc, "in")], 3)
        self.assertEqual(series[("vkafka_records_total", vc, "out")], 3)
        responses = {(s.labels["api"], s.labels["error"]): s.value for s in samples
                     if s.name == "vkafka_responses_total"
                     and s.labels["vcluster"] == vc}
        self.assertEqual(responses, {("Metadata", "none"): 1, ("Produce", "none"): 1,
                                     ("Fetch", "none"): 1})

        # revoked through B: A refuses new logins and closes the open one
        code, _ = yield self.post(self.b, f"/vcluster/{vc}/username/sa/revoke")
        self.assertEqual(code, 200)
        revoked_at = time.monotonic()

        def refused_on_a():
            _, answer = self.authenticate(self.a, vc, token)
            return answer.error_code == ErrorCode.sasl_authentication_failed and \
                "revoked" in answer.error_message
        yield threads.deferToThread(stack.wait_until, refused_on_a,
                                    "gateway A to refuse the revoked token", 10, 0.05)
        # docs/operations.md: a revocation is in force everywhere within a second
        self.assertLess(time.monotonic() - revoked_at, 1.0)
        closed = yield threads.deferToThread(raw_a.closed)
        self.assertTrue(closed)

        # restart A: everything is still there
        self.a.stop()
        self.a.start()
        code, body = yield self.get(self.a, f"/vcluster/{vc}")
        self.assertEqual(code, 200)
        self.assertEqual(body["serviceAccounts"], ["sa"])
        self.assertEqual(body["topicMappings"], [mapping])
        _, answer = yield threads.deferToThread(self.authenticate, self.a, vc, token)
        self.assertEqual(answer.error_code, ErrorCode.sasl_authentication_failed)

    @defer.inlineCallbacks
    def test_errors_over_http(self):
        """Over a real port: 401 without credentials, 400 JSON for bad input."""
        response = yield treq.get(self.url(self.a, ""), persistent=False)
        self.assertEqual(response.code, 401)
        code, body = yield self.post(self.a, "/vcluster/x/username/sa",
                                     {"lifeTimeSeconds": -1})
        self.assertEqual((code, body["error"]), (400, "bad_field"))


class DemoTests(unittest.TestCase):
    """The demo script, verbatim, against gateways on the demo's own ports."""

    def setUp(self):
        stack.ensure_cluster()
        if not all(devstack.running(name) for name, _, _ in devstack.GATEWAYS):
            devstack.start_gateways()
            self.addCleanup(devstack.stop_gateways)
        # A clean slate for london and paris, as on a fresh stack.
        import urllib.request
        for vc in ("london", "paris"):
            request = urllib.request.Request(
                f"http://localhost:8888/admin/vclusters/v1/vcluster/{vc}",
                method="DELETE", headers={"Authorization": "Basic YWRtaW46Y29uZHVrdG9y"})
            try:
                urllib.request.urlopen(request, timeout=10)
            except urllib.error.HTTPError as e:
                self.assertEqual(e.code, 404)

    def test_demo_script(self):
        """compose/demo.sh runs every step with the outputs the demo shows."""
        root = Path(__file__).resolve().parent.parent
        env = dict(os.environ, PATH=f"{stack.BIN}:{os.environ['PATH']}",
                   DEMO_DIR=self.mktemp())
        os.makedirs(env["DEMO_DIR"])
        result = subprocess.run(["bash", str(root / "compose" / "demo.sh")], env=env,
                                capture_output=True, text=True, timeout=600)
        self.assertEqual(result.returncode, 0, result.stdout[-3000:] + result.stderr)
        out = result.stdout
        sections = out.split("## ")
        london = [s for s in sections if s.startswith("Listing topics in `london`")]
        paris = [s for s in sections if s.startswith("Listing topics in `paris`")]
        self.assertEqual(london[0].split("```")[-1].split(), ["londonTopic"])
        self.assertEqual(paris[0].split("```")[-1].split(), ["parisTopic"])
        self.assertIn("londonlondonTopic", sections[-1])
        self.assertIn("parisparisTopic", sections[-1])
        # the mapped topics, as the demo shows them
        self.assertEqual(london[-1].split("```")[-1].split(),
                         ["existingLondonTopic", "existingSharedTopic", "londonTopic"])
        self.assertEqual(paris[-1].split("```")[-1].split(),
                         ["existingSharedTopic", "parisTopic"])
        shared = [s for s in sections if s.startswith("Consuming from `existingShared")]
        self.assertEqual(len(shared), 2)
        for section in shared:
            self.assertIn('"message": "Existing shared message"', section)
        mapping = [s for s in sections if s.startswith("Mapping `existingLondonTopic`")]
        self.assertIn('"logicalTopicName": "existingLondonTopic"', mapping[0])
