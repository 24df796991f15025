# -*- test-case-name: tests.test_state_kafka -*-
"""The Kafka-backed store: one compacted topic that every gateway follows.

Each gateway writes with Produce (acks=all) and reads the topic from offset 0
with long-polling Fetch requests, on the gateway's own reactor.  Keys are
strings, values JSON (None is a tombstone).  A write's Deferred fires once
this gateway's reader has applied it, so an admin call answers only after
its change is in force here.  Other gateways' readers wait in a long poll
the broker answers as soon as the write is committed (2-13 ms here);
``poll_ms`` only bounds how often an idle reader asks again: each empty round
costs the reactor ~0.5 ms, and a gateway follows three such topics (state,
usage, audit), so it is 5 s, well inside the 15 s after which a silent broker
is taken for wedged.  A reader's first fetch does not ask the broker to
wait: an empty topic is loaded at once, not after a long poll (and only the
first: a reader that never catches up, on records it cannot read, must not
ask again and again without a pause).
"""

import datetime
import io
import json

from kio.records.readers import read_batch
from kio.records.schema import NewRecordBatch, Record
from kio.records.writers import write_batch
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64
from twisted.internet import defer, task
from twisted.logger import Logger

from ..client import Connector, Unreachable, create_topic, default_replication, refusal
from .store import StoreUnavailable

STATE_TOPIC = "_vkafka_state"

WRITE_ATTEMPTS = 2
"""A write is tried again once, on the leader looked up anew, when the first
try's broker moved leadership away or did not answer: the state topic's
leader changes with every broker restart, and a write is a key's whole
value (written twice, it reads the same)."""
RETRIED = frozenset({ErrorCode.not_leader_or_follower, ErrorCode.leader_not_available,
                     ErrorCode.request_timed_out, ErrorCode.not_enough_replicas})


def _ms(value):
    return i32Timedelta.parse(datetime.timedelta(milliseconds=value))


def encode_record(key, value):
    now = datetime.datetime.now(datetime.timezone.utc)
    record = Record(attributes=i8(0), timestamp=now, offset=i64(0),
                    key=key.encode(), headers=(),
                    value=None if value is None else json.dumps(value).encode())
    buffer = io.BytesIO()
    write_batch(buffer, NewRecordBatch(producer_id=i64(-1), producer_epoch=i16(-1),
                                       base_sequence=i32(-1), attributes=i16(0),
                                       records=(record,)))
    return buffer.getvalue()


def decode_records(data):
    """(offset, key, value) of every whole record in fetched bytes."""
    out = []
    view = memoryview(data or b"")
    pos = 0
    while len(view) - pos >= 12:
        length = int.from_bytes(view[pos + 8:pos + 12], "big")
        if pos + 12 + length > len(view):
            break  # a partial batch at the end of a fetch
        batch, size = read_batch(view, pos)
        pos += size
        for record in batch.records:
            if record.key is None:
                continue
            value = None if record.value is None else json.loads(record.value)
            out.append((record.offset, record.key.decode(), value))
    return out


class KafkaStore:
    """Gateway state in a compacted Kafka topic, followed by every gateway."""

    log = Logger()

    def __init__(self, reactor, topology, endpoint_factory, topic=STATE_TOPIC,
                 poll_ms=5000, configs=None, keep=True):
        self.reactor = reactor
        self.topology = topology
        self.endpoint_factory = endpoint_factory
        # A state read waits 5 s at the broker, a write 5 s, the topic's
        # creation 10 s: a broker silent for 15 s is wedged.
        self.connector = Connector(reactor, endpoint_factory, "vkafka-state", timeout=15)
        self.topic = topic
        self.poll_ms = poll_ms
        self.configs = {"cleanup.policy": "compact", **(configs or {})}
        """The topic's configs, should this store create it."""
        self.keep = keep
        """Keep each key's value in ``data``; False: the subscribers only keep
        what they need (the usage topic, vkafka/usage/ledger.py)."""
        self.data = {}
        self.subscribers = []
        self.offset = 0
        self.high_watermark = None
        self.ready = defer.Deferred()
        self.last_error = "state not loaded yet"
        self._waiters = []
        self._running = False
        self._leader = None
        self._writer = None

    # reading

    def subscribe(self, callback):
        self.subscribers.append(callback)
        for key, value in self.data.items():
            callback(key, value)

    def start(self):
        self._running = True
        self._loop = self._follow()
        self._loop.addErrback(lambda f: self.log.failure("state reader died", f))

    def stop(self):
        self._running = False
        for conn in (self._writer, getattr(self, "_reader", None)):
            if conn is not None:
                conn.close()

    @defer.inlineCallbacks
    def _follow(self):
        delay = 0.2
        while self._running:
            try:
                leader = yield self._find_leader(create=True)
                reader = self._reader = yield self.connector.open(
                    *leader, client_id="vkafka-state-reader")
                if not self._running:
                    reader.close()  # stopped while it connected
                delay = 0.2
                while self._running:
                    yield self._fetch_once(reader)
            except Exception as e:
                if not self._running:
                    return
                self.last_error = f"state topic {self.topic}: {e}"
                self._leader = None
                self.log.warn("{error}; retrying in {delay:.1f}s",
                              error=self.last_error, delay=delay)
                yield task.deferLater(self.reactor, delay, lambda: None)
                delay = min(delay * 2, 5.0)

    @defer.inlineCallbacks
    def _fetch_once(self, reader):
        from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic

        response = yield reader.request(FetchRequest(
            max_wait=_ms(0 if self.high_watermark is None else self.poll_ms),
            min_bytes=i32(1), max_bytes=i32(16 << 20),
            topics=(FetchTopic(topic=self.topic, partitions=(FetchPartition(
                partition=i32(0), fetch_offset=i64(self.offset),
                partition_max_bytes=i32(16 << 20)),)),),
            forgotten_topics_data=()), 12)
        [topic] = response.responses
        [part] = topic.partitions
        if part.error_code == ErrorCode.offset_out_of_range:
            self.offset = max(part.log_start_offset, 0)
            return
        if part.error_code != ErrorCode.none:
            raise RuntimeError(f"fetch error {part.error_code.name}")
        for offset, key, value in decode_records(part.records):
            if offset < self.offset:
                continue
            self._apply(key, value)
            self.offset = offset + 1
        self.high_watermark = part.high_watermark
        self.last_error = None
        if not self.ready.called and self.offset >= part.high_watermark:
            if self.keep:
                self.log.info("state loaded: {n} entries from {topic}",
                              n=len(self.data), topic=self.topic)
            else:
                self.log.info("{topic} read up to offset {offset}", topic=self.topic,
                              offset=self.offset)
            self.ready.callback(None)
        self._wake()

    def _apply(self, key, value):
        if not self.keep:
            pass
        elif value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        for callback in self.subscribers:
            try:
                callback(key, value)
            except Exception:
                self.log.failure("state subscriber failed on {key}", key=key)

    def _wake(self):
        """Fire the writes read back by now.  A write whose wait timed out
        (its Deferred already failed) is dropped: firing it again raised
        AlreadyCalledError before the list was replaced, so the reader failed
        on every fetch after it and every later write with it."""
        ready = [d for offset, d in self._waiters if self.offset > offset]
        self._waiters = [(offset, d) for offset, d in self._waiters
                         if self.offset <= offset and not d.called]
        for d in ready:
            if not d.called:
                d.callback(None)

    # writing

    @defer.inlineCallbacks
    def put(self, key, value):
        """Write *key* = *value*; fires once applied here.  StoreUnavailable if not."""
        from kio.schema.produce.v9.request import (
            PartitionProduceData, ProduceRequest, TopicProduceData)

        request = ProduceRequest(
            acks=i16(-1), timeout=_ms(5000), topic_data=(TopicProduceData(
                name=self.topic, partition_data=(PartitionProduceData(
                    index=i32(0), records=encode_record(key, value)),)),))
        for attempt in range(WRITE_ATTEMPTS):
            try:
                writer = yield self._writer_connection()
                response = yield writer.request(request, 9)
            except StoreUnavailable:
                raise
            except Exception as e:
                self._leader = None
                if attempt + 1 < WRITE_ATTEMPTS:
                    continue
                raise StoreUnavailable(f"cannot write gateway state: {e}")
            [part] = response.responses[0].partition_responses
            if part.error_code == ErrorCode.none:
                break
            self._leader = None
            if self._writer is not None:
                self._writer.close()
            if part.error_code not in RETRIED or attempt + 1 == WRITE_ATTEMPTS:
                raise StoreUnavailable(
                    f"cannot write gateway state: {part.error_code.name}")
        d = defer.Deferred()
        self._waiters.append((part.base_offset, d))
        self._wake()
        timeout = self.reactor.callLater(
            10, lambda: d.called or d.errback(StoreUnavailable(
                "write accepted but not read back within 10s")))
        yield d
        if timeout.active():
            timeout.cancel()

    @defer.inlineCallbacks
    def _writer_connection(self):
        if self._writer is not None and self._writer.connected:
            return self._writer
        leader = yield self._find_leader(create=False)
        writer = yield self.connector.open(*leader, client_id="vkafka-state-writer")
        self._writer = writer
        return writer

    # topic and leader

    @defer.inlineCallbacks
    def _find_leader(self, create):
        if self._leader is not None:
            return self._leader
        try:
            self._leader = yield self.connector.first(
                self.topology.upstream_candidates(None),
                lambda conn: self._ask_leader(conn, create))
        except Unreachable as e:
            raise StoreUnavailable(str(e.last) if e.last else str(e))
        return self._leader

    @defer.inlineCallbacks
    def _ask_leader(self, conn, create):
        """The state topic's leader (created first if *create* and missing),
        asked on *conn* until the topic has one."""
        from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic

        for _ in range(50):
            meta = yield conn.request(MetadataRequest(
                topics=(MetadataRequestTopic(topic_id=None, name=self.topic),),
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False), 12)
            self.topology.learn((b.node_id, b.host, b.port) for b in meta.brokers)
            [topic] = meta.topics
            if topic.error_code == ErrorCode.unknown_topic_or_partition:
                if not create:
                    raise StoreUnavailable(f"{self.topic} does not exist")
                yield self._create_topic(conn, len(meta.brokers))
            elif topic.error_code == ErrorCode.none and topic.partitions:
                leader = topic.partitions[0].leader_id
                if leader in self.topology.brokers:
                    return self.topology.brokers[leader]
            yield task.deferLater(self.reactor, 0.2, lambda: None)
        raise StoreUnavailable(f"{self.topic} has no leader")

    @defer.inlineCallbacks
    def _create_topic(self, conn, brokers):
        replication = default_replication(brokers)
        result = yield create_topic(conn, self.topic, 1, replication, {
            **self.configs, "min.insync.replicas": str(min(2, replication))})
        if result.error_code not in (ErrorCode.none, ErrorCode.topic_already_exists):
            raise StoreUnavailable(f"cannot create {self.topic}: {refusal(result)}")
        self.log.info("created topic {topic} (replication {r})",
                      topic=self.topic, r=replication)
