"""Concentrated topics: several logical topics in one physical topic, through
a real gateway, with confluent-kafka, the Java CLI and a compacted topic."""

import base64
import datetime
import json
import time
import urllib.request

from twisted.trial import unittest

from vkafka.auth.tokens import TokenAuthority

from . import stack
from .stack import devstack

AUTHORITY = TokenAuthority(devstack.DEMO_SECRET)
SEGMENT_MS = 1000
"""segment.ms of the compacted topic: a record timestamped more than this
after its segment's first rolls the segment (then the cleaner may compact it)."""


def admin(method, path, body=None):
    """An admin API call to the class's gateway: (status, JSON body)."""
    port = ConcentratedTopicTests.gateway.admin_port
    request = urllib.request.Request(
        f"http://localhost:{port}/admin/vclusters/v1{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"admin:conduktor").decode()})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _metadata(version, names):
    """A Metadata request of *version* for topics *names* (None: all topics)."""
    import importlib
    import uuid
    m = importlib.import_module(f"kio.schema.metadata.v{version}.request")
    fields = {"topic_id": uuid.UUID(int=0)} if version >= 10 else {}
    extra = {}
    if version >= 4:
        extra["allow_auto_topic_creation"] = False
    if 8 <= version <= 10:
        extra["include_cluster_authorized_operations"] = False
    if version >= 8:
        extra["include_topic_authorized_operations"] = False
    topics = None if names is None else tuple(
        m.MetadataRequestTopic(name=n, **fields) for n in names)
    return m.MetadataRequest(topics=topics, **extra)


def _offered(client, api_key):
    """The newest version of *api_key* the gateway offers *client*."""
    from kio.schema.api_versions.v3.request import ApiVersionsRequest
    answer = client.request(ApiVersionsRequest(client_software_name="tests",
                                               client_software_version="1"), 3)
    [offered] = [k for k in answer.api_keys if k.api_key == api_key]
    return offered.max_version


class ConcentratedTopicTests(unittest.TestCase):
    timeout = 400

    @classmethod
    def setUpClass(cls):
        from confluent_kafka.admin import AdminClient, NewTopic
        stack.ensure_cluster()
        cls.state_topic = stack.unique("_vkafka_state_conc").replace("-", "_")
        cls.gateway = stack.GatewayProcess((
            *devstack.TENANT_OPTIONS, f"--state-topic={cls.state_topic}")).start()
        cls.physical = stack.unique("concentrated")
        cls.compacted = stack.unique("concentrated-compact")
        direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        futures = direct.create_topics([
            NewTopic(cls.physical, 3, 3),
            NewTopic(cls.compacted, 1, 3, config={
                "cleanup.policy": "compact", "segment.ms": str(SEGMENT_MS),
                "min.cleanable.dirty.ratio": "0.001", "min.compaction.lag.ms": "0",
                "delete.retention.ms": "0"})])
        for future in futures.values():
            future.result(30)

    def setUp(self):
        self.vc = stack.unique("conc").replace("-", "")
        self.token = AUTHORITY.issue(self.vc, "sa", 3600)

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()
        stack.delete_topics([cls.physical, cls.compacted, cls.state_topic])

    def config(self, **extra):
        return {"bootstrap.servers": self.gateway.bootstrap,
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": "sa", "sasl.password": self.token, **extra}

    def concentrate(self, logical, physical, partitions=None):
        body = {"physicalTopicName": physical, "concentrated": True}
        if partitions:
            body["partitions"] = partitions
        code, answer = admin("POST", f"/vcluster/{self.vc}/topics/{logical}", body)
        self.assertEqual(code, 200, answer)
        return answer

    def produce(self, topic, values, keys=None, timestamp=0):
        """Records of *topic*, timestamped *timestamp* (ms; 0: now)."""
        from confluent_kafka import Producer
        producer = Producer(self.config(acks="all"))
        for i, value in enumerate(values):
            producer.produce(topic, value=value, key=None if keys is None else keys[i],
                             timestamp=timestamp)
        self.assertEqual(producer.flush(30), 0)

    def consume(self, topic, count, group):
        from confluent_kafka import Consumer, KafkaError, KafkaException
        consumer = Consumer(self.config(**{"group.id": group,
                                           "auto.offset.reset": "earliest"}))
        consumer.subscribe([topic])
        try:
            got = stack.drain(consumer, count, f"{count} records of {topic}")
            # nothing more arrives: the other logical topics' records stay out
            extra = [m for m in consumer.consume(100, 2.0) if m.error() is None]
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as e:  # auto-commit got there first: nothing new
                if e.args[0].code() != KafkaError._NO_OFFSET:
                    raise
        finally:
            consumer.close()
        return got + extra

    def java_properties(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                    "sasl.jaas.config=org.apache.kafka.common.security.plain."
                    f"PlainLoginModule required username='sa' password='{self.token}';\n")
        return path

    def test_three_logical_topics_in_one(self):
        """orders, payments, clicks in one 3-partition topic: each consumer
        group gets exactly its topic's records (confluent-kafka and the Java
        CLI), untagged; kafka-consumer-groups shows offsets and lag per topic."""
        for logical in ("orders", "payments", "clicks"):
            self.assertEqual(self.concentrate(logical, self.physical)["partitions"], 3)
        listing = stack.cli("kafka-topics", "--bootstrap-server", self.gateway.bootstrap,
                            "--command-config", self.java_properties(), "--list")
        self.assertEqual([t for t in listing.split() if not t.startswith("_")],
                         ["clicks", "orders", "payments"])

        self.produce("orders", [b"order-%d" % i for i in range(300)],
                     [b"k%d" % (i % 10) for i in range(300)])
        self.produce("payments", [b"payment-%d" % i for i in range(200)])
        props = self.java_properties()
        stack.cli("kafka-console-producer", "--bootstrap-server", self.gateway.bootstrap,
                  "--producer.config", props, "--topic", "clicks",
                  input="".join(f"click-{i}\n" for i in range(150)))

        orders = self.consume("orders", 300, "g-orders")
        self.assertEqual(sorted(m.value() for m in orders),
                         sorted(b"order-%d" % i for i in range(300)))
        self.assertEqual({m.key() for m in orders}, {b"k%d" % i for i in range(10)})
        self.assertEqual({m.topic() for m in orders}, {"orders"})
        self.assertFalse(any(m.headers() for m in orders))
        payments = self.consume("payments", 200, "g-payments")
        self.assertEqual(sorted(m.value() for m in payments),
                         sorted(b"payment-%d" % i for i in range(200)))

        out = stack.cli("kafka-console-consumer", "--bootstrap-server",
                        self.gateway.bootstrap, "--consumer.config", props,
                        "--topic", "clicks", "--group", "g-clicks", "--from-beginning",
                        "--max-messages", "150", "--timeout-ms", "30000")
        self.assertEqual(sorted(out.split()), sorted(f"click-{i}" for i in range(150)))

        # Offsets and lag per logical topic, as the stock tool shows them: the
        # log end is the physical partition's; the committed offset is past
        # every record of the topic, and lag = end - current. The orders group
        # read everything through this gateway: lag 0 (librdkafka commits the
        # offset after its last record; the gateway moves a commit over other
        # topics' records it has seen). The console consumer stops at 150
        # records, maybe before reading some partition (docs/concentration.md).
        ends = self.physical_ends()
        for group, topic in (("g-clicks", "clicks"), ("g-orders", "orders")):
            last = self.last_offsets(stack.physical_topic(self.vc, topic))
            described = stack.cli("kafka-consumer-groups", "--bootstrap-server",
                                  self.gateway.bootstrap, "--command-config", props,
                                  "--describe", "--group", group)
            rows = [line.split() for line in described.splitlines()
                    if line.startswith(group)]
            self.assertEqual({r[1] for r in rows}, {topic}, described)
            partitions = {int(r[2]) for r in rows}
            self.assertLessEqual(set(last), partitions, described)  # all it read
            self.assertLessEqual(partitions, {0, 1, 2}, described)
            for row in rows:
                partition, current, end, lag = (int(row[2]), int(row[3]), int(row[4]),
                                                int(row[5]))
                self.assertEqual((end, lag), (ends[partition], end - current), described)
                if partition in last:  # every record of the topic was consumed
                    self.assertLessEqual(last[partition] + 1, current, described)
                    self.assertLessEqual(current, end, described)
                if topic == "orders":  # read to the end through this gateway
                    self.assertEqual((current, lag), (end, 0), described)
        self.assertNotIn("Traceback", self.gateway.log())

    def physical_ends(self):
        from confluent_kafka import Consumer, TopicPartition
        consumer = Consumer({"bootstrap.servers": stack.BOOTSTRAP, "group.id": "peek"})
        try:
            return {p: consumer.get_watermark_offsets(
                TopicPartition(self.physical, p), timeout=10)[1] for p in range(3)}
        finally:
            consumer.close()

    def last_offsets(self, tag):
        """Per partition, the physical offset of the last record tagged *tag*."""
        from confluent_kafka import Consumer
        ends = self.physical_ends()
        consumer = Consumer({"bootstrap.servers": stack.BOOTSTRAP,
                             "group.id": stack.unique("peek"),
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([self.physical])
        last, seen = {}, {}
        try:
            def done():
                for m in consumer.consume(500, 1.0):
                    if m.error() is None:
                        seen[m.partition()] = m.offset()
                        if (b"vkafka.topic", tag.encode()) in (m.headers() or []):
                            last[m.partition()] = m.offset()
                return all(seen.get(p, -1) + 1 >= ends[p] for p in ends)
            stack.wait_until(done, "the physical topic read to its end", 60, interval=0)
        finally:
            consumer.close()
        return last

    def test_partitions_bounded_by_physical(self):
        """A concentrated topic may have fewer partitions, never more."""
        code, body = admin("POST", f"/vcluster/{self.vc}/topics/toomany", {
            "physicalTopicName": self.physical, "concentrated": True, "partitions": 4})
        self.assertEqual(code, 400, body)
        self.assertIn("at most the 3 partitions", body["message"])
        self.concentrate("narrow", self.physical, partitions=2)
        from confluent_kafka.admin import AdminClient
        topics = AdminClient(self.config()).list_topics(timeout=10).topics
        self.assertEqual(sorted(topics["narrow"].partitions), [0, 1])

    def test_refused_produce_fails_fast_with_its_reason(self):
        """A producer compressing with lz4 (refused on concentrated topics) is
        answered per partition with UNSUPPORTED_COMPRESSION_TYPE (the reason
        in the error message, which librdkafka does not show): its delivery
        fails at once, not after retrying until the delivery timeout; the
        same producer's other topic is written."""
        from confluent_kafka import KafkaError, Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        self.concentrate("squeezed", self.physical)
        client = AdminClient(self.config())
        client.create_topics([NewTopic("plain", 1, 3)])["plain"].result(30)
        reports = []
        producer = Producer(self.config(**{
            "compression.type": "lz4", "acks": "all", "delivery.timeout.ms": 120000}))
        for topic in ("squeezed", "plain"):
            producer.produce(topic, b"v" * 10000,  # compressible: lz4 is used
                             on_delivery=lambda e, m: reports.append((m.topic(), e)))
        self.assertEqual(producer.flush(60), 0)
        errors = dict(reports)
        self.assertIsNone(errors["plain"])
        self.assertEqual(errors["squeezed"].code(),
                         KafkaError.UNSUPPORTED_COMPRESSION_TYPE)

    def test_produce_over_the_decode_limit_fails_fast(self):
        """A request to a concentrated topic over --max-decoded-request (a
        2 MB record, the producer's limits raised): answered
        MESSAGE_TOO_LARGE at once, the connection kept, the producer's
        records to another topic written after it."""
        from confluent_kafka import KafkaError, Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        self.concentrate("bulky", self.physical)
        client = AdminClient(self.config())
        client.create_topics([NewTopic("after", 1, 3)])["after"].result(30)
        reports = []
        producer = Producer(self.config(**{
            "acks": "all", "message.max.bytes": 4_000_000,
            "delivery.timeout.ms": 120000, "linger.ms": 0}))
        producer.produce("bulky", b"v" * 2_000_000,
                         on_delivery=lambda e, m: reports.append((m.topic(), e)))
        self.assertEqual(producer.flush(60), 0)
        producer.produce("after", b"small",
                         on_delivery=lambda e, m: reports.append((m.topic(), e)))
        self.assertEqual(producer.flush(60), 0)
        errors = dict(reports)
        self.assertEqual(errors["bulky"].code(), KafkaError.MSG_SIZE_TOO_LARGE)
        self.assertIsNone(errors["after"])
        self.assertNotIn("gateway decodes", self.gateway.log())  # never closed

    def test_compaction_keeps_logical_topics_apart(self):
        """Two logical topics in one compacted topic, the same keys in both:
        after compaction each keeps its own latest value per key."""
        self.concentrate("kv1", self.compacted)
        self.concentrate("kv2", self.compacted)
        self.produce("kv1", [b"a1", b"b1", b"a2"], [b"a", b"b", b"a"])
        self.produce("kv2", [b"A1", b"A2"], [b"a", b"a"])
        # Timestamped past segment.ms after the records above, this record
        # rolls their segment as it arrives (no waiting for the clock): the
        # cleaner may compact it, and the roll record is the only one after.
        self.produce("kv2", [b"roll"], [b"roll"],
                     timestamp=int(time.time() * 1000) + SEGMENT_MS + 1)

        held = []

        def compacted():
            from confluent_kafka import Consumer
            consumer = Consumer({"bootstrap.servers": stack.BOOTSTRAP,
                                 "group.id": stack.unique("peek"),
                                 "auto.offset.reset": "earliest"})
            consumer.subscribe([self.compacted])
            try:
                seen = stack.drain(consumer, 1, "the compacted topic", 30)
                seen += [m for m in consumer.consume(100, 2.0) if m.error() is None]
            finally:
                consumer.close()
            held[:] = [(m.key(), m.value()) for m in seen]
            return len(seen) <= 4 and seen
        try:
            stack.wait_until(compacted, "compaction of the physical topic", 120,
                             interval=2)
        except AssertionError as e:
            self.fail(f"{e}: it still holds {len(held)} records (6: the segment was "
                      f"not rolled or not cleaned): {held}")

        kv1 = self.consume("kv1", 2, stack.unique("c1"))
        kv2 = self.consume("kv2", 2, stack.unique("c2"))
        self.assertEqual(sorted((m.key(), m.value()) for m in kv1),
                         [(b"a", b"a2"), (b"b", b"b1")])
        self.assertEqual(sorted((m.key(), m.value()) for m in kv2),
                         [(b"a", b"A2"), (b"roll", b"roll")])

    def test_unsupported_apis_refused_with_kafka_errors(self):
        """APIs the concentration layer has no rule for never reach the shared
        topic: the client gets a Kafka error that says why."""
        from confluent_kafka import KafkaException, TopicPartition
        from confluent_kafka.admin import (AdminClient, AlterConfigOpType,
                                           ConfigEntry, ConfigResource, NewTopic)
        self.concentrate("guarded", self.physical)
        client = AdminClient(self.config())
        future = client.delete_records([TopicPartition("guarded", 0, 1)],
                                       request_timeout=15)
        with self.assertRaises(KafkaException) as caught:
            list(future.values())[0].result(30)
        self.assertIn("INVALID_REQUEST", str(caught.exception))  # no message field
        resource = ConfigResource("topic", "guarded", incremental_configs=[ConfigEntry(
            "retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
        with self.assertRaises(KafkaException) as caught:
            client.incremental_alter_configs([resource])[resource].result(30)
        self.assertIn("not changeable per logical topic", str(caught.exception))
        with self.assertRaises(KafkaException) as caught:
            client.create_topics([NewTopic("guarded", 1, 1)])["guarded"].result(30)
        self.assertIn("TOPIC_ALREADY_EXISTS", str(caught.exception))
        # the physical topic is untouched: no records deleted, retention unchanged
        direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        physical = ConfigResource("topic", self.physical)
        configs = direct.describe_configs([physical])[physical].result(30)
        self.assertNotEqual(configs["retention.ms"].value, "1000")

    def raw(self, vc, port=None):
        """A raw protocol client of *vc* through the class's gateway."""
        from kio.schema.errors import ErrorCode

        from .rawclient import RawClient
        client = RawClient("localhost", port or self.gateway.start_port)
        self.addCleanup(client.close)
        answer = client.sasl_plain("sa", AUTHORITY.issue(vc, "sa", 3600))
        self.assertEqual(answer.error_code, ErrorCode.none, answer.error_message)
        return client

    def test_list_offsets_by_time_reveal_no_other_topic(self):
        """ListOffsets by time, or for the largest timestamp, on a concentrated
        topic would find another logical topic's record in the shared partition
        and give away its offset and timestamp: answered
        UNSUPPORTED_FOR_MESSAGE_FORMAT (no offset for that time), every version;
        LATEST and EARLIEST (the shared ends) are answered."""
        import importlib

        from kio.schema.errors import ErrorCode
        from kio.static.primitive import i32, i32Timedelta, i64
        other = stack.unique("concother").replace("-", "")
        code, body = admin("POST", f"/vcluster/{other}/topics/theirs", {
            "physicalTopicName": self.physical, "concentrated": True})
        self.assertEqual(code, 200, body)
        self.concentrate("mine", self.physical)
        chosen = int(time.time() * 1000) - 424_242  # a timestamp the other tenant chose
        vc, self.vc = self.vc, other
        self.token = AUTHORITY.issue(other, "sa", 3600)
        from confluent_kafka import Producer
        producer = Producer(self.config(acks="all"))
        producer.produce("theirs", value=b"private", partition=0, timestamp=chosen)
        self.assertEqual(producer.flush(30), 0)
        self.vc = vc
        answer = self.raw(vc).request(_metadata(12, ["mine"]), 12)
        [leader] = [p.leader_id for p in answer.topics[0].partitions
                    if p.partition_index == 0]
        [port] = [b.port for b in answer.brokers if b.node_id == leader]
        client = self.raw(vc, port)  # the gateway's port for the leader
        for version in range(1, _offered(client, 2) + 1):
            m = importlib.import_module(f"kio.schema.list_offsets.v{version}.request")
            for asked in (0, chosen - 1, -3, -1, -2):
                if asked == -3 and version < 7:
                    continue
                extra = {"current_leader_epoch": i32(-1)} if version >= 4 else {}
                request = m.ListOffsetsRequest(
                    replica_id=i32(-1), topics=(m.ListOffsetsTopic(
                        name="mine", partitions=(m.ListOffsetsPartition(
                            partition_index=i32(0), timestamp=i64(asked), **extra),)),),
                    **({"isolation_level": 0} if version >= 2 else {}),
                    **({"timeout": i32Timedelta.parse(datetime.timedelta(seconds=5))}
                       if version >= 10 else {}))
                [answered] = client.request(request, version).topics
                [partition] = answered.partitions
                seen = (answered.name, partition.error_code, partition.timestamp)
                if asked in (-1, -2):
                    self.assertEqual(seen, ("mine", ErrorCode.none, -1), (version, asked))
                    self.assertGreaterEqual(partition.offset, 0)
                else:
                    self.assertEqual(
                        seen + (partition.offset,),
                        ("mine", ErrorCode.unsupported_for_message_format, -1, -1),
                        (version, asked))

    def test_metadata_every_version(self):
        """Metadata of a concentrated topic, by name and all topics, at every
        version (before v10 an answer has no topic ids to give)."""
        from kio.schema.errors import ErrorCode
        self.concentrate("listed", self.physical)
        client = self.raw(self.vc)
        for version in range(0, _offered(client, 3) + 1):
            for names in (["listed"], None):
                if names is None and version == 0:
                    continue  # v0 has no null list: [] means all topics
                topics = client.request(_metadata(version, names), version).topics
                self.assertEqual([(t.name, t.error_code) for t in topics
                                  if not t.name.startswith("_")],
                                 [("listed", ErrorCode.none)], version)
        self.assertNotIn("Traceback", self.gateway.log())

    def test_physical_topic_created_when_asked(self):
        """A mapping to a missing topic is 404, unless "create" asks for it;
        a creation the broker refuses is a 400 with the broker's reason."""
        from confluent_kafka.admin import AdminClient, ConfigResource
        physical = stack.unique("created")
        self.addCleanup(stack.delete_topics, [physical])
        path = f"/vcluster/{self.vc}/topics/made"
        code, body = admin("POST", path, {"physicalTopicName": physical,
                                          "concentrated": True})
        self.assertEqual(code, 404, body)
        self.assertIn('"create"', body["message"])
        code, body = admin("POST", path, {"physicalTopicName": physical,
                                          "concentrated": True, "create": {
                                              "partitions": 2, "configs": {
                                                  "cleanup.policy": "nonsense"}}})
        self.assertEqual(code, 400, body)
        self.assertIn("INVALID_CONFIG", body["message"])
        code, body = admin("POST", path, {"physicalTopicName": physical,
                                          "concentrated": True, "create": {
                                              "partitions": 2, "configs": {
                                                  "cleanup.policy": "compact"}}})
        self.assertEqual((code, body["partitions"]), (200, 2), body)
        direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        self.assertEqual(len(direct.list_topics(physical, timeout=10)
                             .topics[physical].partitions), 2)
        resource = ConfigResource("topic", physical)
        configs = direct.describe_configs([resource])[resource].result(30)
        self.assertEqual(configs["cleanup.policy"].value, "compact")
        self.produce("made", [b"x"], [b"k"])
        self.assertEqual([m.value() for m in self.consume("made", 1, "g-made")], [b"x"])

    def test_concentration_rules_make_topics(self):
        """With a rule, CreateTopics of a matching name (the Java CLI here)
        makes a concentrated topic in the physical topic of its cleanup policy;
        keys other than cleanup.policy are refused; other names are created."""
        code, body = admin("POST", f"/vcluster/{self.vc}/concentration-rules/events", {
            "pattern": "events-.*", "physicalTopicName": self.physical,
            "physicalTopicNameCompacted": self.compacted})
        self.assertEqual(code, 200, body)
        props = self.java_properties()

        def create(topic, *extra, check=True):
            return stack.cli("kafka-topics", "--bootstrap-server", self.gateway.bootstrap,
                             "--command-config", props, "--create", "--topic", topic,
                             *extra, check=check)
        self.assertIn("Created topic events-a.", create("events-a", "--partitions", "2"))
        create("events-b", "--config", "cleanup.policy=compact")
        refused = stack.run_cli("kafka-topics", "--bootstrap-server", self.gateway.bootstrap,
                                "--command-config", props, "--create", "--topic",
                                "events-c", "--config", "retention.ms=1000")
        self.assertEqual(refused.returncode, 1, refused.stdout)
        self.assertIn("only cleanup.policy can be set", refused.stdout + refused.stderr)
        self.assertNotIn("Created topic", refused.stdout)
        create("other")
        self.addCleanup(stack.delete_topics, [stack.physical_topic(self.vc, "other")])

        code, body = admin("GET", f"/vcluster/{self.vc}/topics")
        mappings = {m["logicalTopicName"]: (m["physicalTopicName"], m["partitions"])
                    for m in body["topicMappings"]}
        self.assertEqual(mappings, {"events-a": (self.physical, 2),
                                    "events-b": (self.compacted, 1)})
        listing = stack.cli("kafka-topics", "--bootstrap-server", self.gateway.bootstrap,
                            "--command-config", props, "--list")
        self.assertEqual([t for t in listing.split() if not t.startswith("_")],
                         ["events-a", "events-b", "other"])
        self.produce("events-a", [b"e%d" % i for i in range(20)],
                     [b"%d" % i for i in range(20)])
        got = self.consume("events-a", 20, "g-events")
        self.assertEqual(sorted(m.value() for m in got), sorted(b"e%d" % i for i in range(20)))
        self.assertEqual({m.partition() for m in got} <= {0, 1}, True)
