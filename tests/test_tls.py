"""TLS end to end: certificates made here, a Kafka broker with a listener per
security protocol, gateways with SSL/SASL_SSL listeners and secured backends,
and SNI routing, through confluent-kafka and the Java CLI."""

import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from kio.schema.metadata.v12.request import MetadataRequest
from twisted.trial import unittest

from vkafka.auth.tokens import TokenAuthority

from . import stack
from .certs import ThrowawayCA
from .rawclient import RawClient
from .stack import devstack

GATEWAY_USER, GATEWAY_PASSWORD = "vkafka", devstack.SECURE_USERS["vkafka"]
SNI_NAMES = ["bootstrap.vkafka.test"] + [f"broker{n}.vkafka.test" for n in devstack.NODES]


def wait_health(gateway, status, text, timeout=60):
    """Poll /health until it answers *status* with *text* in its body."""
    def check():
        if not gateway.answering():
            return None
        answer = devstack.health(gateway.admin_port)
        return answer if answer and answer[0] == status and \
            text in json.dumps(answer[1]) else None
    return stack.wait_until(check, f"/health {status} with {text!r}", timeout)


class SecureBrokerTests(unittest.TestCase):
    """One secure broker for the class; each test starts the gateways it needs."""

    timeout = 400

    @classmethod
    def setUpClass(cls):
        devstack.require_java()
        cls.dir = Path(tempfile.mkdtemp(prefix="vkafka-tls-"))
        cls.ca = ThrowawayCA(cls.dir)
        # The broker's certificate names localhost only (not 127.0.0.1), so a
        # connection by IP fails the host name check.
        _, _, keystore = cls.ca.issue("broker", ["localhost"])
        cls.gw_cert, cls.gw_key, _ = cls.ca.issue(
            "gateway", ["localhost", "127.0.0.1", "*.vkafka.test"])
        cls.secure = stack.secure_broker(keystore, cls.ca.ca_file, cls.dir / "broker")

    @classmethod
    def tearDownClass(cls):
        devstack.stop_secure_broker(cls.dir / "broker")
        shutil.rmtree(cls.dir, ignore_errors=True)

    def servers(self, protocol):
        return f"--bootstrap-servers=localhost:{self.secure[protocol]}"

    def gateway(self, *options, ready=True):
        gateway = stack.GatewayProcess(options)
        if ready:
            gateway.start()
        else:
            gateway.spawn()
        self.addCleanup(gateway.stop)
        return gateway

    def client_tls(self):
        return ("--security-protocol=SASL_SSL", "--multi-tenancy=true",
                f"--token-secret={devstack.DEMO_SECRET}",
                f"--ssl-certificate={self.gw_cert}", f"--ssl-key={self.gw_key}",
                "--admin-users=admin:conduktor", "--admin-allow-plain=true")

    def test_sasl_ssl_gateway_to_ssl_broker(self):
        """client -SASL_SSL-> gateway -SSL-> broker: confluent-kafka and the Java
        CLI produce and consume a tenant's topic; the broker holds it prefixed."""
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        gateway = self.gateway(
            self.servers("SSL"), *self.client_tls(),
            "--backend-security-protocol=SSL", f"--backend-ssl-ca-file={self.ca.ca_file}")
        vc = stack.unique("tls").replace("-", "")
        token = TokenAuthority(devstack.DEMO_SECRET).issue(vc, "sa", 3600)
        config = {"bootstrap.servers": gateway.bootstrap, "security.protocol": "SASL_SSL",
                  "ssl.ca.location": str(self.ca.ca_file), "sasl.mechanism": "PLAIN",
                  "sasl.username": "sa", "sasl.password": token}
        admin = AdminClient(config)
        admin.create_topics([NewTopic("orders", 3, 1)])["orders"].result(30)
        producer = Producer({**config, "acks": "all", "enable.idempotence": True})
        for i in range(1000):
            producer.produce("orders", key=str(i % 7), value=f"tls-{i}")
        self.assertEqual(producer.flush(30), 0)
        consumer = Consumer({**config, "group.id": "g", "auto.offset.reset": "earliest"})
        consumer.subscribe(["orders"])
        try:
            got = stack.drain(consumer, 1000, "1,000 records over TLS")
        finally:
            consumer.close()
        self.assertEqual(sorted(m.value().decode() for m in got),
                         sorted(f"tls-{i}" for i in range(1000)))

        # The physical topic on the broker carries the tenant's prefix.
        direct = AdminClient({"bootstrap.servers": f"localhost:{self.secure['PLAINTEXT']}"})
        self.assertIn(stack.physical_topic(vc, "orders"),
                      direct.list_topics(timeout=10).topics)

        # The Java CLI, with a PEM trust store.
        props = self.dir / f"{vc}.properties"
        props.write_text(
            "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n"
            "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
            f"required username='sa' password='{token}';\n"
            f"ssl.truststore.type=PEM\nssl.truststore.location={self.ca.ca_file}\n")
        lines = "".join(f"java-{i}\n" for i in range(200))
        stack.cli("kafka-console-producer", "--bootstrap-server", gateway.bootstrap,
                  "--producer.config", str(props), "--topic", "orders", input=lines)
        out = stack.cli("kafka-console-consumer", "--bootstrap-server", gateway.bootstrap,
                        "--consumer.config", str(props), "--topic", "orders",
                        "--from-beginning", "--max-messages", "1200",
                        "--timeout-ms", "60000")
        values = out.split()
        self.assertEqual(len(values), 1200)
        self.assertEqual(sum(v.startswith("java-") for v in values), 200)

    def test_sasl_backends(self):
        """The gateway logs in to SASL_PLAINTEXT and SASL_SSL brokers with its
        own credentials; clients (passthrough) produce and consume through it."""
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        for backend in ("SASL_PLAINTEXT", "SASL_SSL"):
            with self.subTest(backend=backend):
                gateway = self.gateway(
                    self.servers(backend),
                    f"--backend-security-protocol={backend}",
                    f"--backend-ssl-ca-file={self.ca.ca_file}",
                    f"--backend-sasl-username={GATEWAY_USER}",
                    f"--backend-sasl-password={GATEWAY_PASSWORD}")
                topic = stack.unique(backend.lower().replace("_", ""))
                config = {"bootstrap.servers": gateway.bootstrap}
                admin = AdminClient(config)
                admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
                producer = Producer(config)
                for i in range(300):
                    producer.produce(topic, value=f"{backend}-{i}")
                self.assertEqual(producer.flush(30), 0)
                consumer = Consumer({**config, "group.id": topic,
                                     "auto.offset.reset": "earliest"})
                consumer.subscribe([topic])
                try:
                    got = stack.drain(consumer, 300, f"300 records via {backend}")
                finally:
                    consumer.close()
                self.assertEqual(len({m.value() for m in got}), 300)
                gateway.stop()

    def test_wrong_backend_password_not_ready(self):
        """Credentials the broker refuses: /health is 503 naming the SASL refusal."""
        gateway = self.gateway(
            self.servers("SASL_PLAINTEXT"),
            "--backend-security-protocol=SASL_PLAINTEXT",
            f"--backend-sasl-username={GATEWAY_USER}", "--backend-sasl-password=wrong",
            ready=False)
        _, body = wait_health(gateway, 503, "SASL_AUTHENTICATION_FAILED")
        self.assertIn("refused the gateway's SASL/PLAIN login", body["reason"])

    def test_broker_host_name_verified(self):
        """A broker certificate that does not name the address connected to is
        refused (service-identity); turning the check off accepts the chain."""
        servers = f"--bootstrap-servers=127.0.0.1:{self.secure['SSL']}"
        ca = f"--backend-ssl-ca-file={self.ca.ca_file}"
        gateway = self.gateway(servers, "--backend-security-protocol=SSL", ca, ready=False)
        _, body = wait_health(gateway, 503, f"127.0.0.1:{self.secure['SSL']}:")
        self.assertRegex(body["reason"], r"(?i)certificate|verif|hostname")
        gateway.stop()
        self.gateway(servers, "--backend-security-protocol=SSL", ca,
                     "--backend-ssl-check-hostname=false")

    def test_untrusted_client_certificate_chain_refused_by_clients(self):
        """A client that does not trust the gateway's CA fails the TLS handshake."""
        gateway = self.gateway(
            self.servers("SSL"), *self.client_tls(),
            "--backend-security-protocol=SSL", f"--backend-ssl-ca-file={self.ca.ca_file}")
        context = ssl.create_default_context()  # system CAs: not our test CA
        with self.assertRaises(ssl.SSLCertVerificationError):
            RawClient("localhost", gateway.start_port, tls=context)


class SniRoutingTests(unittest.TestCase):
    """One TLS port for the 3-broker cluster, brokers chosen by SNI host name."""

    timeout = 300
    extra = ()
    """More gateway options (tests/test_workers.py: ``--workers=2``)."""

    def setUp(self):
        stack.ensure_cluster()
        self.dir = Path(tempfile.mkdtemp(prefix="vkafka-sni-"))
        self.ca = ThrowawayCA(self.dir)
        cert, key, _ = self.ca.issue("gateway", ["*.vkafka.test", "localhost"])
        self.gateway = stack.GatewayProcess((
            "--security-protocol=SSL", f"--ssl-certificate={cert}", f"--ssl-key={key}",
            "--routing=sni", "--advertised-host=bootstrap.vkafka.test",
            "--sni-host-pattern=broker{id}.vkafka.test", *self.extra)).start()
        self.addCleanup(self.gateway.stop)

    def test_metadata_advertises_sni_names(self):
        """Every broker is advertised as its SNI name on the one TLS port."""
        context = ssl.create_default_context(cafile=str(self.ca.ca_file))
        raw = RawClient("127.0.0.1", self.gateway.start_port, tls=context,
                        server_hostname="bootstrap.vkafka.test")
        self.addCleanup(raw.close)
        answer = raw.request(MetadataRequest(topics=[], allow_auto_topic_creation=False,
                                             include_topic_authorized_operations=False),
                             12)
        self.assertEqual(sorted((b.host, b.port) for b in answer.brokers),
                         [(f"broker{n}.vkafka.test", self.gateway.start_port)
                          for n in devstack.NODES])

    def test_confluent_kafka_through_sni(self):
        """A 3-partition RF3 topic (leaders on all brokers) produced and consumed
        by confluent-kafka through the one port: only right routing delivers.

        The client runs in a private mount namespace whose /etc/hosts maps the
        SNI names to 127.0.0.1, so the machine's own files stay untouched."""
        topic = stack.unique("sni")
        stack.create_topic(topic, partitions=3)
        self.addCleanup(stack.delete_topics, [topic])
        hosts = self.dir / "hosts"
        hosts.write_text("127.0.0.1 localhost\n" +
                         "".join(f"127.0.0.1 {n}\n" for n in SNI_NAMES))
        script = self.dir / "client.py"
        script.write_text(textwrap.dedent(f"""
            import time
            from confluent_kafka import Consumer, Producer
            config = {{"bootstrap.servers": "bootstrap.vkafka.test:{self.gateway.start_port}",
                       "security.protocol": "SSL", "ssl.ca.location": {str(self.ca.ca_file)!r}}}
            p = Producer({{**config, "acks": "all"}})
            for i in range(600):
                p.produce({topic!r}, key=str(i), value=f"sni-{{i}}")
            assert p.flush(60) == 0, "unflushed records"
            c = Consumer({{**config, "group.id": "sni", "auto.offset.reset": "earliest"}})
            c.subscribe([{topic!r}])
            seen, parts = set(), set()
            deadline = time.monotonic() + 60
            while len(seen) < 600 and time.monotonic() < deadline:
                for m in c.consume(500, 1.0):
                    if m.error() is None:
                        seen.add(m.value()); parts.add(m.partition())
            c.close()
            print(len(seen), sorted(parts))
        """))
        command = f"mount --bind {hosts} /etc/hosts && exec {sys.executable} {script}"
        try:
            result = subprocess.run(["unshare", "-m", "sh", "-c", command],
                                    capture_output=True, text=True, timeout=180)
        except FileNotFoundError:
            raise AssertionError("unshare (util-linux) is missing: the SNI test needs "
                                 "it to give the client its own /etc/hosts")
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        self.assertEqual(result.stdout.split("\n")[0], "600 [0, 1, 2]")
        self.assertNotIn("Traceback", self.gateway.log())



class AdminTlsTests(unittest.TestCase):
    """The admin port over HTTPS with the gateway's certificate."""

    timeout = 120

    def test_health_and_metrics_over_https(self):
        import urllib.error
        import urllib.request
        stack.ensure_cluster()
        directory = Path(tempfile.mkdtemp(prefix="vkafka-admin-tls-"))
        ca = ThrowawayCA(directory)
        cert, key, _ = ca.issue("gateway", ["localhost"])
        gateway = stack.GatewayProcess((
            "--admin-tls=true", f"--ssl-certificate={cert}", f"--ssl-key={key}",
            "--admin-users=admin:conduktor", "--admin-allow-plain=true")).spawn()
        self.addCleanup(gateway.stop)
        context = ssl.create_default_context(cafile=str(ca.ca_file))
        admin = f"https://localhost:{gateway.admin_port}"

        def healthy():
            if not gateway.answering():
                return False
            try:
                with urllib.request.urlopen(f"{admin}/health",
                                            context=context, timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        stack.wait_until(healthy, "/health over HTTPS", 60)
        self.assertIn("vkafka_connections", stack.scrape(
            f"{admin}/metrics", context=context))
        with self.assertRaises(urllib.error.HTTPError) as refused:  # no credentials
            urllib.request.urlopen(f"{admin}/metrics",
                                   context=context, timeout=5)
        self.assertEqual(refused.exception.code, 401)
        # plain HTTP is not served on that port
        self.assertIsNone(devstack.health(gateway.admin_port))
