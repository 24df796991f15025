"""compose/: the Docker Compose file mirrors the demo and only uses real settings."""

from pathlib import Path

import yaml
from twisted.trial import unittest

from vkafka.tap import SETTINGS, Options

ROOT = Path(__file__).resolve().parent.parent


class ComposeTests(unittest.TestCase):
    def setUp(self):
        self.compose = yaml.safe_load((ROOT / "compose" / "docker-compose.yaml").read_text())
        self.services = self.compose["services"]

    def test_demo_topology(self):
        """3 KRaft brokers on 29092-29094 and the demo's two gateways and ports."""
        self.assertEqual(sorted(self.services),
                         ["gateway1", "gateway2", "kafka1", "kafka2", "kafka3"])
        for n, port in ((1, 29092), (2, 29093), (3, 29094)):
            kafka = self.services[f"kafka{n}"]
            self.assertEqual(kafka["environment"]["KAFKA_NODE_ID"], n)
            self.assertIn("controller", kafka["environment"]["KAFKA_PROCESS_ROLES"])
            self.assertEqual(kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"],
                             "false")
            self.assertEqual(kafka["ports"], [f"{port}:{port}"])
        self.assertEqual(self.services["gateway1"]["ports"],
                         ["6969:6969", "6970:6970", "6971:6971", "8888:8888"])
        self.assertEqual(self.services["gateway2"]["ports"],
                         ["7969:7969", "7970:7970", "7971:7971", "8889:8888"])

    def test_gateway_environment_is_valid(self):
        """Every gateway variable is a real setting, and the set parses as options."""
        known = {env for _, env, _, _, _ in SETTINGS}
        for name in ("gateway1", "gateway2"):
            env = {k: str(v) for k, v in self.services[name]["environment"].items()}
            self.assertEqual(set(env) - known, set(), name)
            self.assertEqual(env["GATEWAY_SECURITY_PROTOCOL"], "SASL_PLAINTEXT")
            self.assertEqual(env["GATEWAY_FEATURE_FLAGS_MULTI_TENANCY"], "true")
            options = Options(env)
            options.parseOptions([])
            self.assertEqual(options["start-port"],
                             7969 if name == "gateway2" else 6969)
        self.assertEqual(self.services["gateway1"]["environment"]
                         ["GATEWAY_CLUSTER_ID"],
                         self.services["gateway2"]["environment"]
                         ["GATEWAY_CLUSTER_ID"])  # one gateway cluster
        self.assertEqual(self.services["gateway1"]["environment"]
                         ["GATEWAY_USER_POOL_SECRET_KEY"],
                         self.services["gateway2"]["environment"]
                         ["GATEWAY_USER_POOL_SECRET_KEY"])

    def test_dockerfile_copies_what_exists(self):
        """Every path the Dockerfile copies exists (setup.py among them: the
        compiled walks), and it runs the twistd plugin."""
        text = (ROOT / "compose" / "Dockerfile").read_text()
        copied = []
        for line in text.splitlines():
            if line.startswith("COPY ") and "--from=" not in line:  # not a stage's
                for path in line.split()[1:-1]:
                    self.assertTrue((ROOT / path).exists(), path)
                    copied.append(path)
        self.assertIn("setup.py", copied)
        self.assertIn('"vkafka"]', text)
