"""Builders of real Kafka messages (encoded with kio) for unit tests."""

import datetime
import struct

from kio.schema.errors import ErrorCode
from kio.static.primitive import i16, i32, i32Timedelta

from vkafka.protocol.codec import encode_body, encode_request
from vkafka.protocol.framing import frame

NO_THROTTLE = i32Timedelta.parse(datetime.timedelta(0))


def response_frame(correlation_id, body, flexible=True):
    header = struct.pack(">i", correlation_id) + (b"\x00" if flexible else b"")
    return frame(header + encode_body(body))


def request_frame(body, version, correlation_id, client_id="test"):
    return frame(encode_request(body, version, correlation_id, client_id))


def metadata_request():
    from kio.schema.metadata.v12.request import MetadataRequest
    return MetadataRequest(topics=None, allow_auto_topic_creation=False,
                           include_topic_authorized_operations=False)


def metadata_response(brokers):
    from kio.schema.metadata.v12.response import (
        MetadataResponse, MetadataResponseBroker)
    return MetadataResponse(
        throttle_time=NO_THROTTLE,
        brokers=tuple(MetadataResponseBroker(node_id=i32(n), host=h, port=i32(p))
                      for n, h, p in brokers),
        cluster_id="c1", controller_id=i32(1), topics=(),
    )


def api_versions_response(ranges):
    from kio.schema.api_versions.v3.response import ApiVersion, ApiVersionsResponse
    return ApiVersionsResponse(
        error_code=ErrorCode.none, throttle_time=NO_THROTTLE,
        api_keys=tuple(ApiVersion(api_key=i16(k), min_version=i16(lo),
                                  max_version=i16(hi)) for k, lo, hi in ranges),
    )


def produce_request(acks, version=9):
    from kio.schema.produce.v9.request import ProduceRequest
    assert version == 9
    return ProduceRequest(transactional_id=None, acks=i16(acks),
                          timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
                          topic_data=())


def produce_response_with_endpoints(endpoints):
    from kio.schema.produce.v10.response import NodeEndpoint, ProduceResponse
    return ProduceResponse(
        responses=(), throttle_time=NO_THROTTLE,
        node_endpoints=tuple(NodeEndpoint(node_id=i32(n), host=h, port=i32(p))
                             for n, h, p in endpoints))


def find_coordinator_request(keys):
    from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
    return FindCoordinatorRequest(key_type=0, coordinator_keys=tuple(keys))


def find_coordinator_response(coordinators):
    from kio.schema.find_coordinator.v4.response import (
        Coordinator, FindCoordinatorResponse)
    return FindCoordinatorResponse(
        throttle_time=NO_THROTTLE,
        coordinators=tuple(Coordinator(key=k, node_id=i32(n), host=h, port=i32(p),
                                       error_code=ErrorCode(e), error_message=None)
                           for k, n, h, p, e in coordinators))


def record_batch(count, value=b"v" * 20, producer=-1):
    """One v2 record batch (with its CRC, as a broker checks it) of *count*
    records, from *producer* (-1: a producer without idempotence)."""
    import io

    from kio.records.schema import NewRecordBatch, Record
    from kio.records.writers import write_batch
    from kio.static.primitive import i8, i64

    now = datetime.datetime.now(datetime.timezone.utc)
    records = tuple(Record(attributes=i8(0), timestamp=now, offset=i64(i), key=None,
                           value=value, headers=()) for i in range(count))
    buffer = io.BytesIO()
    write_batch(buffer, NewRecordBatch(producer_id=i64(producer),
                                       producer_epoch=i16(-1 if producer < 0 else 0),
                                       base_sequence=i32(-1 if producer < 0 else 0),
                                       attributes=i16(0),
                                       records=records))
    return buffer.getvalue()


def empty_records(count):
    """An uncompressed v2 batch of *count* empty records (~9 bytes each), the
    last a millisecond later than the others: a ListOffsets by its time
    reads them all (``compressed`` packs them in a few bytes each)."""
    import struct
    import time

    from crc32c import crc32c

    def varint(n):
        n, out = (n << 1) ^ (n >> 63), bytearray()
        while n > 0x7f:
            out.append(n & 0x7f | 0x80)
            n >>= 7
        return bytes(out) + bytes((n,))
    records = bytearray()
    for i in range(count):
        record = b"\x00" + varint(int(i == count - 1)) + varint(i) + b"\x01\x00\x00"
        records += varint(len(record)) + record
    now = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhii", 0, count - 1, now, now + 1, -1, -1, -1,
                            count) + records
    return struct.pack(">qiibI", 0, 9 + len(after_crc), -1, 2,
                       crc32c(after_crc)) + after_crc


def compressed(batch, codec, packed=None):
    """*batch* (``record_batch``) with its records compressed by *codec* (1
    gzip, 3 lz4, 4 zstd) or replaced by *packed* bytes, its attributes,
    length and CRC made to match (a broker checks them)."""
    import gzip
    import struct

    import lz4.frame
    import zstandard
    from crc32c import crc32c
    if packed is None:
        packed = {1: gzip.compress, 3: lz4.frame.compress,
                  4: zstandard.ZstdCompressor().compress}[codec](batch[61:])
    head = bytearray(batch[:61])
    struct.pack_into(">i", head, 8, 49 + len(packed))
    head[22] = (head[22] & ~7) | codec
    body = bytes(head[21:]) + packed
    struct.pack_into(">I", head, 17, crc32c(body))
    return bytes(head[:21]) + body


def produce_records(topic, records, acks=-1, version=9, partitions=(0,)):
    """A Produce request of *records* bytes to partition 0 of *topic* (a name,
    or a topic id from v13), or to each of *partitions* (named as often as
    they come)."""
    import importlib
    m = importlib.import_module(f"kio.schema.produce.v{version}.request")
    key = {"topic_id": topic} if version >= 13 else {"name": topic}
    return m.ProduceRequest(
        transactional_id=None, acks=i16(acks),
        timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
        topic_data=(m.TopicProduceData(partition_data=tuple(
            m.PartitionProduceData(index=i32(index), records=records)
            for index in partitions), **key),))


def fetch_request(topic, offset=0, version=12):
    """A Fetch request of partition 0 of *topic* (a name, or a topic id from v13)
    from *offset*."""
    import importlib

    from kio.static.primitive import i8, i64
    m = importlib.import_module(f"kio.schema.fetch.v{version}.request")
    fields = m.FetchPartition.__dataclass_fields__
    partition = {"partition": i32(0), "fetch_offset": i64(offset),
                 "partition_max_bytes": i32(1 << 20)}
    for name, value in (("current_leader_epoch", i32(-1)),
                        ("log_start_offset", i64(-1)),
                        ("last_fetched_epoch", i32(-1))):
        if name in fields:
            partition[name] = value
    request = {"max_wait": i32Timedelta.parse(datetime.timedelta(milliseconds=500)),
               "min_bytes": i32(1), "max_bytes": i32(1 << 20),
               "isolation_level": i8(0),
               "topics": (m.FetchTopic(partitions=(m.FetchPartition(**partition),),
                                       **({"topic_id": topic} if version >= 13
                                          else {"topic": topic})),)}
    request_fields = m.FetchRequest.__dataclass_fields__
    for name, value in (("replica_id", i32(-1)), ("session_id", i32(0)),
                        ("session_epoch", i32(-1)), ("forgotten_topics_data", ()),
                        ("rack_id", "")):
        if name in request_fields:
            request[name] = value
    return m.FetchRequest(**{k: v for k, v in request.items() if k in request_fields})
