"""Namespaces that cannot overlap, against the real cluster with a raw client:
an admin action cannot move a tenant's topic into another virtual cluster."""

import base64
import json
import urllib.error
import urllib.request

from kio.schema.errors import ErrorCode
from kio.static.primitive import i16, i32

from . import stack
from .kafka_messages import fetch_request, produce_records, record_batch
from .rawclient import RawClient
from .test_isolation import SECONDS, metadata
from .test_tenants import TenantGatewayTestCase, token

RECORD = b"team's own record"


class OverlapIntegrationTests(TenantGatewayTestCase):
    def admin(self, method, path, body=None):
        """(status, JSON body) of an admin API call as admin:conduktor."""
        request = urllib.request.Request(
            f"http://localhost:{self.admin_port}/admin/vclusters/v1{path}",
            method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": "Basic " + base64.b64encode(
                ":".join(stack.ADMIN_AUTH).encode()).decode()})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        return status, (json.loads(text) if text else None)

    def login(self, vcluster, password, port=None):
        raw = RawClient("localhost", port or self.start_port)
        self.addCleanup(raw.close)
        return raw, raw.sasl_plain("sa", password)

    def test_overlapping_vcluster_refused_topic_stays(self):
        """team has topic "Aorders" with a record; creating teamA (whose
        "orders" would be team's topic) is 409 naming team, a token for teamA
        is refused at login, and team still lists and reads its topic."""
        from kio.schema.create_topics.v7.request import CreatableTopic, CreateTopicsRequest
        team = self.vcluster()
        status, body = self.admin("POST", f"/vcluster/{team}/username/sa",
                                  {"lifeTimeSeconds": 600})
        self.assertEqual(status, 200, body)
        team_token = body["token"]
        self.addCleanup(self.admin, "DELETE", f"/vcluster/{team}")
        raw, answer = self.login(team, team_token)
        self.assertEqual(answer.error_code, ErrorCode.none, answer.error_message)
        [created] = raw.request(CreateTopicsRequest(topics=(CreatableTopic(
            name="Aorders", num_partitions=i32(1), replication_factor=i16(1),
            assignments=(), configs=()),), timeout=SECONDS, validate_only=False),
            7).topics
        self.assertEqual(created.error_code, ErrorCode.none, created.error_message)
        self.addCleanup(stack.delete_topics, [f"{team}Aorders"])

        def leader_port():
            found = raw.request(metadata(["Aorders"]), 12)
            leader = found.topics[0].partitions[0].leader_id if \
                found.topics[0].partitions else -1
            return {b.node_id: b.port for b in found.brokers}.get(leader)
        leader, answer = self.login(team, team_token,
                                    stack.wait_until(leader_port, "a leader"))
        produced = leader.request(produce_records("Aorders", record_batch(
            1, value=RECORD)), 9)
        self.assertEqual(produced.responses[0].partition_responses[0].error_code,
                         ErrorCode.none)

        for path in (f"/vcluster/{team}A", f"/vcluster/{team}A/username/sa"):
            status, body = self.admin("POST", path, {})
            self.assertEqual((status, body["error"], body["vcluster"]),
                             (409, "conflict", team), path)
        status, body = self.admin("GET", f"/vcluster/{team}A")
        self.assertEqual(status, 404)

        _, answer = self.login(f"{team}A", token(f"{team}A"))  # minted locally
        self.assertEqual(answer.error_code, ErrorCode.sasl_authentication_failed)
        self.assertIn(f"virtual cluster {team}A is unavailable", answer.error_message)
        self.assertNotIn(f"{team} ", answer.error_message)

        listed = raw.request(metadata(), 12)
        self.assertEqual([t.name for t in listed.topics], ["Aorders"])
        fetched = leader.request(fetch_request("Aorders", version=12), 12)
        partition = fetched.responses[0].partitions[0]
        self.assertEqual((fetched.responses[0].topic, partition.error_code),
                         ("Aorders", ErrorCode.none))
        self.assertIn(RECORD, bytes(partition.records))
