"""The Kafka-backed store over the internal client, against fake brokers in memory."""

import dataclasses

from kio.schema.create_topics.v7.response import CreatableTopicResult, CreateTopicsResponse
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import response as fetch
from kio.schema.metadata.v12.response import MetadataResponsePartition, MetadataResponseTopic
from kio.static.primitive import i16, i32, i64
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from vkafka.proxy.topology import Topology
from vkafka.state.kafka import KafkaStore, encode_record
from vkafka.state.store import StoreUnavailable

from .kafka_messages import NO_THROTTLE, metadata_response, response_frame
from .test_client import FakeBroker

BROKERS = [(1, "kafka1", 9092), (2, "kafka2", 9092)]


class Cluster:
    """Fake brokers by address: each connection gets a FakeBroker answering
    with ``self.answer``; refused addresses fail to connect."""

    def __init__(self):
        self.refused = set()
        self.connections = []
        self.topic_exists = False
        self.created = []
        self.records = b""
        self.produce_errors = []
        """Errors the next Produce answers get (then: none)."""
        self.produced = 0
        self.fetch_waits = []
        """The max_wait (ms) of each Fetch asked."""

    def endpoint(self, reactor, host, port):
        cluster = self

        class Endpoint:
            def connect(self, factory):
                if (host, port) in cluster.refused:
                    return defer.fail(ConnectionRefusedError(f"{host}:{port}"))
                proto = factory.buildProtocol(None)
                broker = FakeBroker(cluster.answer)
                broker.makeConnection(StringTransport())
                transport = StringTransport()
                cluster.connections.append(((host, port), proto, broker, transport))
                proto.makeConnection(transport)
                return defer.succeed(proto)
        return Endpoint()

    def pump(self):
        """Deliver the bytes written so far, both ways, until quiet."""
        moved = True
        while moved:
            moved = False
            for _, proto, broker, transport in list(self.connections):
                if transport.value():
                    data, _ = transport.value(), transport.clear()
                    broker.dataReceived(data)
                    moved = True
                if broker.transport.value():
                    data, _ = broker.transport.value(), broker.transport.clear()
                    proto.dataReceived(data)
                    moved = True

    def answer(self, header, body):
        if header.api_key == 3:
            partitions = (MetadataResponsePartition(
                error_code=ErrorCode.none, partition_index=i32(0), leader_id=i32(2),
                leader_epoch=i32(0), replica_nodes=(), isr_nodes=(),
                offline_replicas=()),) if self.topic_exists else ()
            topic = MetadataResponseTopic(
                error_code=ErrorCode.none if self.topic_exists
                else ErrorCode.unknown_topic_or_partition,
                name=body.topics[0].name, topic_id=None, is_internal=False,
                partitions=partitions)
            return response_frame(header.correlation_id, dataclasses.replace(
                metadata_response(BROKERS), topics=(topic,)))
        if header.api_key == 19:
            self.created.append(body.topics[0])
            self.topic_exists = True
            return response_frame(header.correlation_id, CreateTopicsResponse(
                throttle_time=NO_THROTTLE, topics=(CreatableTopicResult(
                    name=body.topics[0].name, topic_id=None, error_code=ErrorCode.none,
                    error_message=None, num_partitions=i32(1),
                    replication_factor=i16(2), configs=None),)))
        if header.api_key == 1:
            self.fetch_waits.append(body.max_wait.total_seconds() * 1000)
        if header.api_key == 1 and self.records is not None:
            records, self.records = self.records, None  # later polls are held
            return response_frame(header.correlation_id, fetch.FetchResponse(
                throttle_time=NO_THROTTLE, error_code=ErrorCode.none,
                session_id=i32(0), responses=(fetch.FetchableTopicResponse(
                    topic=body.topics[0].topic, partitions=(fetch.PartitionData(
                        partition_index=i32(0), error_code=ErrorCode.none,
                        high_watermark=i64(1 if records else 0),
                        last_stable_offset=i64(0), log_start_offset=i64(0),
                        aborted_transactions=None, preferred_read_replica=i32(-1),
                        records=records or None),)),)))
        if header.api_key == 0:
            from kio.schema.produce.v9 import response as produce
            error = self.produce_errors.pop(0) if self.produce_errors else ErrorCode.none
            self.produced += 1
            return response_frame(header.correlation_id, produce.ProduceResponse(
                throttle_time=NO_THROTTLE, responses=(produce.TopicProduceResponse(
                    name=body.topic_data[0].name, partition_responses=(
                        produce.PartitionProduceResponse(
                            index=i32(0), error_code=error, base_offset=i64(5),
                            log_append_time=None, log_start_offset=i64(0),
                            record_errors=(), error_message=None),)),)))
        return None  # Fetch long polls are held, like a broker's


class KafkaStoreTests(unittest.TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.cluster = Cluster()
        self.topology = Topology([("boot1", 9092), ("boot2", 9092)], "gw", 6969, 2, 1)
        self.store = KafkaStore(self.reactor, self.topology, self.cluster.endpoint)
        self.addCleanup(self.store.stop)

    def test_creates_the_topic_then_follows_its_leader(self):
        """First bootstrap server refused, the second has no state topic: the
        store creates it (compacted, replication 2 of 2 brokers), waits for a
        leader, then reads from broker 2, the leader."""
        self.cluster.refused.add(("boot1", 9092))
        self.cluster.records = encode_record("vcluster/a", {"name": "a"})
        self.store.start()
        self.cluster.pump()
        [created] = self.cluster.created
        self.assertEqual((created.name, created.replication_factor),
                         ("_vkafka_state", 2))
        self.assertEqual({c.name: c.value for c in created.configs},
                         {"cleanup.policy": "compact", "min.insync.replicas": "2"})
        self.reactor.advance(0.2)  # the next Metadata, once created
        self.cluster.pump()
        self.assertEqual([c[0] for c in self.cluster.connections],
                         [("boot2", 9092), ("kafka2", 9092)])
        self.successResultOf(self.store.ready)
        self.assertEqual(self.store.data, {"vcluster/a": {"name": "a"}})
        self.assertTrue(self.cluster.connections[0][3].disconnecting)  # admin conn

    def test_first_fetch_does_not_wait_later_ones_do(self):
        """The first read of the topic asks the broker not to wait (an empty
        topic loads at once); every later one is a long poll of poll_ms (5 s:
        an idle reader asks again rarely; a write still ends it at once)."""
        self.cluster.topic_exists = True
        self.cluster.records = b""  # an empty topic
        self.store.start()
        for _ in range(3):
            self.cluster.pump()
        self.successResultOf(self.store.ready)
        self.assertEqual(self.cluster.fetch_waits, [0, 5000])

    def test_no_broker_reachable(self):
        """Every server refused: writes fail with StoreUnavailable naming why."""
        self.cluster.refused.update({("boot1", 9092), ("boot2", 9092)})
        failure = self.failureResultOf(self.store.put("k", 1), StoreUnavailable)
        self.assertIn("boot2:9092", str(failure.value))


    def test_write_tried_again_on_the_new_leader(self):
        """A write the leader refuses as no longer its own (or does not answer
        in time) is tried again once, on the leader looked up anew; a refusal
        of another kind, or a second one, fails it: StoreUnavailable."""
        self.cluster.topic_exists = True
        self.cluster.produce_errors = [ErrorCode.not_leader_or_follower]
        written = self.store.put("k", 1)
        for _ in range(3):
            self.cluster.pump()
        self.assertEqual(self.cluster.produced, 2)
        self.assertNoResult(written)  # accepted: waits to be read back
        self.store.offset = 6
        self.store._wake()
        self.successResultOf(written)
        self.cluster.produce_errors = [ErrorCode.not_leader_or_follower] * 2
        twice = self.store.put("k", 2)
        for _ in range(3):
            self.cluster.pump()
        self.assertIn("not_leader_or_follower",
                      str(self.failureResultOf(twice, StoreUnavailable).value))
        self.cluster.produce_errors = [ErrorCode.topic_authorization_failed]
        refused = self.store.put("k", 3)
        for _ in range(3):
            self.cluster.pump()
        self.failureResultOf(refused, StoreUnavailable)
        self.assertEqual(self.cluster.produced, 5)


class WaitersTests(unittest.TestCase):
    def test_a_write_read_back_too_late_breaks_nothing(self):
        """A write not read back within 10 s fails; once the reader passes it,
        the store goes on: later writes are confirmed, nothing raises."""
        from twisted.internet import defer, task

        from vkafka.state.kafka import KafkaStore, StoreUnavailable
        clock = task.Clock()
        store = KafkaStore(clock, topology=None, endpoint_factory=None)
        late = defer.Deferred()
        store._waiters.append((41, late))
        clock.callLater(10, lambda: late.called or late.errback(StoreUnavailable("x")))
        clock.advance(10)
        self.failureResultOf(late, StoreUnavailable)
        store.offset = 42  # the reader catches up
        store._wake()
        self.assertEqual(store._waiters, [])
        fresh = defer.Deferred()
        store._waiters.append((42, fresh))
        store.offset = 43
        store._wake()
        self.assertIsNone(self.successResultOf(fresh))
