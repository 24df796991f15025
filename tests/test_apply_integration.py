"""`vkafka apply` and `vkafka get` against two real gateways that share their
state (and audit log) through the Kafka dev cluster.

The gateways are the test's own (``stack.GatewayProcess``, free ports, a
state topic and an audit topic of their own), so the run never meets
another run's virtual clusters; every wait polls with a deadline.
"""

import subprocess
import sys

from kio.schema.errors import ErrorCode
from twisted.trial import unittest

from . import stack
from .rawclient import RawClient
from .stack import devstack


def admin(gateway, method, path, body=None):
    """An admin API call: (status, JSON body or None)."""
    return stack.admin(gateway.admin_port, method, path, body)


def resources_file(vcs, physical):
    """3 virtual clusters, 2 accounts each with their ACLs, ACLs enforced, a
    super user, a mapping and limits: the file a team would keep in git."""
    docs = []
    for i, vc in enumerate(vcs):
        docs.append(f"""
kind: VirtualCluster
name: {vc}
spec:
  acls: true
  superUsers: [admin{i}]
---
kind: ServiceAccount
vcluster: {vc}
name: producer{i}
---
kind: ServiceAccount
vcluster: {vc}
name: consumer{i}
---
kind: AclSet
vcluster: {vc}
spec:
  acls:
  - {{resourceType: TOPIC, patternType: PREFIXED, name: orders-, principal: "User:producer{i}",
     operation: WRITE, permission: ALLOW}}
  - {{resourceType: TOPIC, patternType: PREFIXED, name: orders-, principal: "User:consumer{i}",
     operation: READ, permission: ALLOW}}
  - {{resourceType: GROUP, name: "readers-{i}", principal: "User:consumer{i}",
     operation: READ, permission: ALLOW}}
""")
    docs.append(f"""
kind: TopicMapping
vcluster: {vcs[0]}
name: shared
spec: {{physicalTopicName: {physical}, readOnly: true}}
---
kind: Limits
vcluster: {vcs[1]}
spec: {{capacity: {{topics: 20, partitions: 100}}}}
""")
    return "---".join(docs)


class ApplyIntegrationTests(unittest.TestCase):
    timeout = 600

    @classmethod
    def setUpClass(cls):
        stack.ensure_cluster()
        cls.topics = [stack.unique(f"_vkafka_{kind}_apply").replace("-", "_")
                      for kind in ("state", "audit")]
        options = (*devstack.TENANT_OPTIONS, f"--state-topic={cls.topics[0]}",
                   f"--audit-topic={cls.topics[1]}")
        cls.a = stack.GatewayProcess(options).start()
        try:
            cls.b = stack.GatewayProcess(options).start()
        except BaseException:
            cls.a.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.a.stop()
        cls.b.stop()
        stack.delete_topics(cls.topics)

    def vkafka(self, gateway, *args):
        """The `vkafka` command line against *gateway*'s admin API: stdout."""
        run = subprocess.run(
            [sys.executable, "-m", "vkafka.cli", "--admin-url",
             f"http://localhost:{gateway.admin_port}",
             "--admin-user", ":".join(stack.ADMIN_AUTH), *args],
            capture_output=True, text=True, timeout=120, cwd=str(stack.ROOT))
        self.assertEqual(run.returncode, 0, run.stderr)
        return run.stdout

    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_apply_twice_get_round_trip_both_gateways(self):
        run = stack.unique("ap").replace("-", "")
        vcs = [f"{run}x{i}" for i in range(3)]
        physical = stack.unique("apply-shared")
        stack.create_topic(physical)
        self.addCleanup(stack.delete_topics, [physical])
        for vc in vcs:
            self.addCleanup(admin, self.a, "DELETE", f"/resources/v1/vclusters/{vc}")
        path = self.write(resources_file(vcs, physical))

        # a dry run first: the plan, and nothing changed
        planned = self.vkafka(self.a, "apply", "-f", path, "--dry-run")
        self.assertIn(f"would create VirtualCluster {vcs[0]}", planned)
        self.assertEqual(admin(self.a, "GET", f"/vclusters/v1/vcluster/{vcs[0]}")[0],
                         404)

        first = self.vkafka(self.a, "apply", "-f", path)
        lines = first.splitlines()
        created = [line for line in lines if line.startswith("created ")]
        # 3 clusters, 6 accounts, 3 ACL sets, 1 mapping, 1 limits
        self.assertEqual(len(created), 14, first)
        self.assertIn(f"created ServiceAccount {vcs[2]}/consumer2", lines)
        self.assertIn("14 change(s), 0 resource(s) unchanged", lines)
        self.assertIn("service accounts have no token yet", first)

        second = self.vkafka(self.a, "apply", "-f", path)
        self.assertEqual(second.strip(),
                         "no change: the gateways hold these resources already")

        # gateway B follows the state: the same resources, the same rights
        expected = self.vkafka(self.a, "get", *vcs)
        stack.wait_until(lambda: self.vkafka(self.b, "get", *vcs) == expected,
                         "gateway B to hold what A applied", 30, 0.2)
        status, rights = admin(self.b, "GET", f"/vclusters/v1/vcluster/{vcs[1]}/rights")
        self.assertEqual((status, rights), (200, {"acls": True,
                                                  "superUsers": ["admin1"]}))
        status, acls = admin(self.b, "GET", f"/vclusters/v1/vcluster/{vcs[1]}/acls")
        self.assertEqual(len(acls["acls"]), 3)

        # round trip: what `get` prints (through B) applied through A: no change
        printed = self.write(self.vkafka(self.b, "get", *vcs))
        again = self.vkafka(self.a, "apply", "-f", printed)
        self.assertEqual(again.strip(),
                         "no change: the gateways hold these resources already")

        # declared accounts get tokens from the v1 endpoint; they log in on B
        tokens = {}
        for account in ("producer0", "consumer0"):
            status, body = admin(self.a, "POST",
                                 f"/vclusters/v1/vcluster/{vcs[0]}/username/{account}",
                                 {"lifeTimeSeconds": 600})
            self.assertEqual(status, 200)
            tokens[account] = body["token"]

        def login(gateway, account="producer0"):
            raw = RawClient("localhost", gateway.start_port)
            try:
                return raw.sasl_plain(account, tokens[account]).error_code
            finally:
                raw.close()
        self.assertEqual(login(self.b), ErrorCode.none)

        # the file without producer0: pruned, its token refused on B, the
        # other accounts stay
        smaller = resources_file(vcs, physical).replace(f"""---
kind: ServiceAccount
vcluster: {vcs[0]}
name: producer0
""", "")
        dry = self.vkafka(self.a, "apply", "-f", self.write(smaller), "--dry-run")
        self.assertEqual(dry.splitlines()[0],
                         f"would delete ServiceAccount {vcs[0]}/producer0")
        pruned = self.vkafka(self.a, "apply", "-f", self.write(smaller))
        self.assertEqual(pruned.splitlines()[0],
                         f"deleted ServiceAccount {vcs[0]}/producer0")
        stack.wait_until(lambda: login(self.b) == ErrorCode.sasl_authentication_failed,
                         "gateway B to refuse the deleted account's token", 30, 0.2)
        status, listed = admin(self.b, "GET", f"/vclusters/v1/vcluster/{vcs[0]}/username")
        self.assertEqual([a["username"] for a in listed["serviceAccounts"]],
                         ["consumer0"])
        self.assertEqual(login(self.b, "consumer0"), ErrorCode.none)

        # the audit log: A's writes, read by B from the audit topic
        def audited():
            status, answer = admin(self.b, "GET", "/vclusters/v1/audit?type=admin"
                                   "&limit=1000")
            return [e for e in answer["events"]
                    if e["path"] == "/admin/resources/v1/apply" and e["status"] == 200
                    and e["gateway"] != self.b_id()]
        events = stack.wait_until(lambda: len(audited()) >= 4 and audited(),
                                  "gateway B to read A's audit events", 30, 0.2)
        changes = [c for e in events for c in (e.get("details") or {}).get(
            "changes", ())]
        self.assertIn(f"create VirtualCluster {vcs[0]}", changes)
        self.assertIn(f"delete ServiceAccount {vcs[0]}/producer0", changes)
        for gateway in (self.a, self.b):
            self.assertNotIn("Traceback", gateway.log())

    def b_id(self):
        """Gateway B's id in audit events (host:start port)."""
        import socket
        return f"{socket.gethostname()}:{self.b.start_port}"
