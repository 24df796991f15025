"""Topic mappings: existing physical topics in virtual clusters, shared, read-only."""

import json

import treq
from twisted.internet import defer, threads

from . import stack
from .test_tenants import TenantGatewayTestCase

ADMIN = ("admin", "conduktor")


class MappingBase(TenantGatewayTestCase):
    """A tenant gateway and one fresh physical topic with 5 records."""

    def setUp(self):
        self.physical = stack.unique("existing")
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        admin.create_topics([NewTopic(self.physical, 1, 3)])[self.physical].result(30)
        self.addCleanup(stack.delete_topics, [self.physical])
        producer = Producer({"bootstrap.servers": stack.BOOTSTRAP})
        for i in range(5):
            producer.produce(self.physical, value=b"physical-%d" % i)
        self.assertEqual(producer.flush(30), 0)

    @defer.inlineCallbacks
    def admin(self, method, path, body=None):
        url = f"http://localhost:{self.admin_port}/admin/vclusters/v1{path}"
        response = yield treq.request(method, url, auth=ADMIN, persistent=False,
                                      data=None if body is None else
                                      json.dumps(body).encode())
        text = yield response.content()
        return response.code, (json.loads(text) if text else None)

    @defer.inlineCallbacks
    def map(self, vc, logical, read_only=False):
        code, body = yield self.admin("POST", f"/vcluster/{vc}/topics/{logical}", {
            "physicalTopicName": self.physical, "readOnly": read_only,
            "concentrated": False})
        self.assertEqual(code, 200, body)
        return body

    def consume(self, vc, topic, count, group="g"):
        from confluent_kafka import Consumer
        consumer = Consumer(self.confluent_config(
            vc, **{"group.id": group, "auto.offset.reset": "earliest"}))
        consumer.subscribe([topic])
        values = []
        try:
            def drained():
                values.extend(m.value() for m in consumer.consume(100, 1.0)
                              if m.error() is None)
                return len(values) >= count
            stack.wait_until(drained, f"{count} records of {topic}", 60, interval=0)
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        return values

    def topics(self, vc):
        from confluent_kafka.admin import AdminClient
        admin = AdminClient(self.confluent_config(vc))
        return sorted(admin.list_topics(timeout=10).topics)



class MappingTests(MappingBase):
    @defer.inlineCallbacks
    def test_shared_topic_in_two_clusters(self):
        """One physical topic in two virtual clusters: both list and read it, groups apart."""
        london, paris = self.vcluster(), self.vcluster()
        for vc in (london, paris):
            yield self.admin("POST", f"/vcluster/{vc}/username/sa", {})
            yield self.map(vc, "shared")
        listed = yield threads.deferToThread(self.topics, london)
        self.assertEqual(listed, ["shared"])
        for vc in (london, paris):
            values = yield threads.deferToThread(self.consume, vc, "shared", 5)
            self.assertEqual(sorted(values), [b"physical-%d" % i for i in range(5)])
        # each tenant's group "g" committed its own offsets
        for vc in (london, paris):
            out = yield threads.deferToThread(
                stack.cli, "kafka-consumer-groups", "--bootstrap-server",
                self.bootstrap, "--command-config", self.properties(vc),
                "--describe", "--group", "g")
            rows = [line.split() for line in out.splitlines() if line.startswith("g ")]
            self.assertEqual([(r[1], r[3], r[5]) for r in rows], [("shared", "5", "0")])

    @defer.inlineCallbacks
    def test_read_only(self):
        """Read-only: producing gets TOPIC_AUTHORIZATION_FAILED; consuming works."""
        from confluent_kafka import KafkaError, Producer
        vc = self.vcluster()
        yield self.admin("POST", f"/vcluster/{vc}/username/sa", {})
        yield self.map(vc, "ro", read_only=True)

        def produce():
            errors = []
            producer = Producer(self.confluent_config(vc, **{"message.timeout.ms": 10000}))
            producer.produce("ro", value=b"nope",
                             on_delivery=lambda err, msg: errors.append(err))
            producer.flush(30)
            return errors
        errors = yield threads.deferToThread(produce)
        self.assertEqual([e.code() for e in errors],
                         [KafkaError.TOPIC_AUTHORIZATION_FAILED])
        values = yield threads.deferToThread(self.consume, vc, "ro", 5)
        self.assertEqual(len(values), 5)

    @defer.inlineCallbacks
    def test_delete_alias_removes_mapping_only(self):
        """A tenant deleting an aliased topic removes the mapping; the data stays."""
        from confluent_kafka.admin import AdminClient
        vc = self.vcluster()
        yield self.admin("POST", f"/vcluster/{vc}/username/sa", {})
        yield self.map(vc, "alias")

        def delete():
            admin = AdminClient(self.confluent_config(vc))
            admin.delete_topics(["alias"])["alias"].result(30)
        yield threads.deferToThread(delete)
        self.assertIn(self.physical, self.physical_topics())
        code, body = yield self.admin("GET", f"/vcluster/{vc}/topics")
        self.assertEqual(body["topicMappings"], [])
        listed = yield threads.deferToThread(self.topics, vc)
        self.assertEqual(listed, [])

    @defer.inlineCallbacks
    def test_mapping_refusals(self):
        """A missing physical topic: 404; a topic in a tenant's namespace: 409."""
        vc = self.vcluster()
        code, body = yield self.admin("POST", f"/vcluster/{vc}/topics/x", {
            "physicalTopicName": stack.unique("missing")})
        self.assertEqual((code, body["error"]), (404, "not_found"))
        yield self.admin("POST", f"/vcluster/{vc}/username/sa", {})
        code, body = yield self.admin("POST", f"/vcluster/{vc}/topics/y", {
            "physicalTopicName": f"{vc}something"})
        self.assertEqual((code, body["error"]), (409, "conflict"))


class AdminCliTests(MappingBase):
    """`vkafka` subcommands over the admin API (treq), against a real gateway."""

    def vkafka(self, *args, check=True):
        import subprocess
        result = subprocess.run(
            [str(stack.BIN / "vkafka"), f"--admin-url=http://localhost:{self.admin_port}",
             "--admin-user=admin:conduktor", *args],
            capture_output=True, text=True, timeout=60)
        if check:
            self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def test_cli_create_map_revoke(self):
        """create + properties file, map, show, revoke: each as the API does it."""
        vc = self.vcluster()
        props = self.mktemp()
        out = self.vkafka("vcluster", "create", vc, "--username", "sa",
                          "--lifetime", "1h", "--properties", props,
                          "--bootstrap", self.bootstrap).stdout
        self.assertIn("wrote", out)
        self.vkafka("map", vc, "mapped", "--physical", self.physical, "--read-only")
        shown = self.vkafka("vcluster", "show", vc).stdout
        self.assertIn('"physicalTopicName": "%s"' % self.physical, shown)
        listed = stack.cli("kafka-topics", "--bootstrap-server", self.bootstrap,
                           "--command-config", props, "--list").split()
        self.assertEqual(listed, ["mapped"])
        self.vkafka("revoke", vc, "sa")
        refused = stack.run_cli("kafka-topics", "--bootstrap-server", self.bootstrap,
                                "--command-config", props, "--list", timeout=120)
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertIn("token has been revoked", refused.stdout + refused.stderr)
        self.assertNotIn("mapped", refused.stdout)
        missing = self.vkafka("vcluster", "show", "no-such-vc", check=False)
        self.assertEqual(missing.returncode, 2)
        self.assertIn("404", missing.stderr)
