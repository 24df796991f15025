"""schemathesis against the admin API's served OpenAPI document (no Kafka).

The real admin resource tree runs in a subprocess on a localhost port
(``tests/admin_server.py``, state in memory); schemathesis reads the document
the server serves and checks every operation: no 5xx, and every status,
content type, header and body as documented, plus its negative, stateful and
authentication checks.
"""

import base64
import glob
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
import urllib.request

from twisted.trial import unittest

from vkafka.admin.openapi import document

HERE = os.path.dirname(os.path.abspath(__file__))
PORTS = "0"  # any free port: the server says which
AUTH = "admin:conduktor"
MAX_EXAMPLES = 50
EXCLUDED_CHECKS = {
    # POST .../vcluster/{vc}/username/{user} creates the virtual cluster if
    # needed (the documented contract, as in the demo), so a cluster deleted
    # and then given an account exists again: not a use after free.
    "use_after_free": "an account creation re-creates a deleted cluster by design",
    # A virtual cluster (or account) is also deleted through the declarative
    # path /admin/resources/v1/vclusters/{vcluster}, which schemathesis cannot
    # relate to /admin/vclusters/v1/vcluster/{vcluster}/...: a 404 there after
    # such a DELETE is no lost resource.
    "ensure_resource_availability": "the declarative DELETE is another path to the "
                                    "same virtual cluster",
}
# Rules between fields that a JSON schema cannot state are a 400 for data the
# schema allows: limits with replicationFactorMin above replicationFactorMax,
# a namePattern RE2 refuses, a config key both allowed and forbidden; a usage
# period whose from is not before its to, or beyond the 35 days kept, or a
# date the calendar has not (2026-02-30); an ACL on the CLUSTER resource not
# named kafka-cluster, or PREFIXED '*' (vkafka.auth.acls); resources to apply
# that contradict each other or the state (admin/resources.py).
CONFIG = """
[[operations]]
include-name = "POST /admin/vclusters/v1/vcluster/{vcluster}/limits"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-name = "GET /admin/vclusters/v1/vcluster/{vcluster}/usage"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "404", "429", "5xx"]

[[operations]]
include-name = "PUT /admin/vclusters/v1/vcluster/{vcluster}/acls"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-name = "POST /admin/vclusters/v1/vcluster/{vcluster}/acls"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-name = "PUT /admin/resources/v1/vclusters/{vcluster}/aclset"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-name = "PUT /admin/resources/v1/vclusters/{vcluster}/limits"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-name = "POST /admin/resources/v1/apply"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-name = "GET /admin/vclusters/v1/audit"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "429", "5xx"]

[[operations]]
include-name = "GET /admin/vclusters/v1/usage"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "429", "5xx"]
"""


def start_server(test):
    """The admin server in a subprocess; returns its base URL."""
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "admin_server.py"), "--ports", PORTS,
         "--lifetime", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop():
        server.terminate()
        server.wait(10)
        server.stdout.close()
    test.addCleanup(stop)
    selector = selectors.DefaultSelector()
    selector.register(server.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if selector.select(timeout=deadline - time.monotonic()):
            line = server.stdout.readline()
            if line.startswith("listening on "):
                return line.split()[-1]
            if not line:
                break
    test.fail(f"the admin server did not start; it said: "
              f"{server.stdout.read() if server.poll() is not None else '(nothing)'}")


def fetch(url):
    request = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


class SchemathesisTests(unittest.TestCase):
    def test_admin_api_conforms_to_its_document(self):
        """Every operation: no 5xx, statuses, types, headers and bodies as served."""
        schemathesis = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        if not os.path.exists(schemathesis):
            self.fail(f"schemathesis is missing ({schemathesis}): "
                      "pip install -e '.[test]'")
        base = start_server(self)
        served = fetch(base + "/admin/openapi.json")
        self.assertEqual(served, json.loads(json.dumps(document())))
        operations = sum(1 for item in served["paths"].values()
                         for method in item if method != "parameters")
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "openapi.json")
            with open(path, "w") as f:
                json.dump(served, f)
            config = os.path.join(tmp, "schemathesis.toml")
            with open(config, "w") as f:
                f.write(CONFIG)
            run = subprocess.run(
                [schemathesis, "--config-file", config,
                 "run", path, "--url", base, "--auth", AUTH,
                 "--checks", "all", "--exclude-checks", ",".join(EXCLUDED_CHECKS),
                 "--max-examples", str(MAX_EXAMPLES), "--seed", "1",
                 "--workers", "1",  # one shared state: parallel runs would mix it
                 "--report", "json", "--report-dir", tmp],
                capture_output=True, text=True, timeout=300, cwd=tmp)
            reports = glob.glob(os.path.join(tmp, "json-*.json"))
            self.assertTrue(reports, f"no report; schemathesis said:\n{run.stdout}"
                                     f"{run.stderr}")
            with open(reports[0]) as f:
                report = json.load(f)
        cases = report["test_cases"]
        print(f"schemathesis: {report['operations']['tested']} operations, "
              f"{cases['generated']} test cases, {cases['with_failures']} failing, "
              f"{report['running_time']:.1f} s")
        self.assertEqual((report["failures"], report["errors"], run.returncode),
                         ([], [], 0), run.stdout[-6000:])
        self.assertEqual(report["operations"]["tested"], operations)
        self.assertGreater(cases["generated"], 10 * operations)
