"""Topic mappings: existing physical topics in virtual clusters, shared, read-only."""

import json

import treq
from twisted.internet import defer, threads

from . import stack
from .test_tenants import TenantGatewayTestCase

ADMIN = ("admin", "conduktor")


def _batch(value, producer_id, epoch, sequence):
    """One record batch of *value* as a producer with that id would send it."""
    import datetime
    import io

    from kio.records.schema import NewRecordBatch, Record
    from kio.records.writers import write_batch
    from kio.static.primitive import i8, i16, i32, i64
    out = io.BytesIO()
    write_batch(out, NewRecordBatch(
        producer_id=i64(producer_id), producer_epoch=i16(epoch),
        base_sequence=i32(sequence), attributes=i16(0), records=(Record(
            attributes=i8(0), timestamp=datetime.datetime.now(datetime.timezone.utc),
            offset=i64(0), key=None, value=value, headers=()),)))
    return out.getvalue()


def _produce(client, version, where, records, transactional_id=None):
    """A raw Produce of *records* to partition 0 of the topic *where* names."""
    import datetime
    import importlib

    from kio.static.primitive import i16, i32, i32Timedelta
    m = importlib.import_module(f"kio.schema.produce.v{version}.request")
    return client.request(m.ProduceRequest(
        transactional_id=transactional_id, acks=i16(-1),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=10)),
        topic_data=(m.TopicProduceData(partition_data=(m.PartitionProduceData(
            index=i32(0), records=records),), **where),)), version)


def _batch_producer(client):
    """(producer id, epoch, last sequence) in the header of the last batch of
    partition 0 of "shared" that names a producer, fetched as any reader may."""
    from vkafka.protocol import batches

    from .kafka_messages import fetch_request
    [topic] = client.request(fetch_request("shared", version=12), 12).responses
    records = topic.partitions[0].records
    found = None
    for offset, size in batches.whole_batches(records, 0, len(records))[0]:
        fields = batches.HEADER.unpack_from(records, offset)
        if fields[9] >= 0:  # producer id, epoch, base sequence, record count
            found = (fields[9], fields[10], fields[11] + fields[12] - 1)
    return found


def _producers(client, topic):
    """(producer id, epoch, last sequence) of partition 0's producers."""
    from kio.schema.describe_producers.v0.request import (
        DescribeProducersRequest, TopicRequest)
    from kio.static.primitive import i32
    [answered] = client.request(DescribeProducersRequest(topics=(TopicRequest(
        name=topic, partition_indexes=(i32(0),)),)), 0).topics
    return [(p.producer_id, p.producer_epoch, p.last_sequence)
            for p in answered.partitions[0].active_producers]


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

    def raw(self, vc, port=None):
        from .rawclient import RawClient
        from .test_tenants import token
        client = RawClient("localhost", port or self.start_port)
        self.addCleanup(client.close)
        self.assertEqual(client.sasl_plain("sa", token(vc)).error_code, 0)
        return client

    def leader_client(self, vc, topic):
        """A raw client of *vc* on the gateway port of *topic*'s partition 0
        leader, and the topic's id."""
        from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
        import uuid
        answer = self.raw(vc).request(MetadataRequest(
            topics=(MetadataRequestTopic(topic_id=uuid.UUID(int=0), name=topic),),
            allow_auto_topic_creation=False, include_topic_authorized_operations=False),
            12)
        [found] = answer.topics
        [leader] = [p.leader_id for p in found.partitions if p.partition_index == 0]
        [port] = [b.port for b in answer.brokers if b.node_id == leader]
        return self.raw(vc, port), found.topic_id

    @defer.inlineCallbacks
    def test_shared_topic_producer_ids_not_taken(self):
        """A writable mapping is a topic others write too (here an idempotent
        producer of the cluster itself).  A tenant sending that producer's id,
        epoch and next sequence (read off its batches: DescribeProducers lists
        none) in its own batches neither takes the producer's next record nor
        fences it: batches to a mapped topic go without producer ids.  A
        transactional Produce to it is refused (TOPIC_AUTHORIZATION_FAILED,
        saying why)."""
        from confluent_kafka import Producer
        vc = self.vcluster()
        yield self.admin("POST", f"/vcluster/{vc}/username/sa", {})
        yield self.map(vc, "shared")
        victim = Producer({"bootstrap.servers": stack.BOOTSTRAP,
                           "enable.idempotence": True})
        victim.produce(self.physical, value=b"victim-0", partition=0)
        self.assertEqual(victim.flush(30), 0)
        client, topic_id = self.leader_client(vc, "shared")
        self.assertEqual(_producers(client, "shared"), [])  # never the tenant's
        pid, epoch, last = _batch_producer(client)  # read off the victim's batch
        for version, where, batch in (
                (9, {"name": "shared"}, _batch(b"spoof-9", pid, epoch, last + 1)),
                (13, {"topic_id": topic_id}, _batch(b"spoof-13", pid, epoch, last + 1)),
                (9, {"name": "shared"}, _batch(b"fence", pid, epoch + 1, 0))):
            [answer] = _produce(client, version, where, batch).responses
            self.assertEqual(answer.partition_responses[0].error_code, 0, version)
        victim.produce(self.physical, value=b"victim-1", partition=0)
        self.assertEqual(victim.flush(30), 0)  # not fenced, not a duplicate
        values = yield threads.deferToThread(self.consume, vc, "shared", 9)
        self.assertEqual(sorted(v for v in values if not v.startswith(b"physical")),
                         [b"fence", b"spoof-13", b"spoof-9", b"victim-0", b"victim-1"])

        [answer] = _produce(client, 9, {"name": "shared"}, _batch(b"txn", 7, 0, 0),
                            transactional_id="t1").responses
        refused = answer.partition_responses[0]
        self.assertEqual(refused.error_code, 29)  # TOPIC_AUTHORIZATION_FAILED
        self.assertIn("mapped from outside this virtual cluster", refused.error_message)

    @defer.inlineCallbacks
    def test_physical_name_never_in_messages(self):
        """CreateTopics of a mapped name: the broker's TOPIC_ALREADY_EXISTS
        names the physical topic (outside the namespace, maybe another
        tenant's mapping too); the tenant reads its logical name."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic
        vc = self.vcluster()
        yield self.admin("POST", f"/vcluster/{vc}/username/sa", {})
        yield self.map(vc, "mapped", read_only=True)

        def create():
            admin = AdminClient(self.confluent_config(vc))
            with self.assertRaises(KafkaException) as caught:
                admin.create_topics([NewTopic("mapped", 1, 1)])["mapped"].result(30)
            return str(caught.exception)
        message = yield threads.deferToThread(create)
        self.assertIn("TOPIC_ALREADY_EXISTS", message)
        self.assertIn("'mapped'", message)
        self.assertNotIn(self.physical, message)

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
