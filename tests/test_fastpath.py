"""The Fetch fast path: a structural scan agrees with a full decode."""

import datetime
import uuid

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i32Timedelta, i64
from twisted.trial import unittest

from vkafka.protocol.codec import encode_body
from vkafka.protocol.fastpath import fetch_top_level_tags_empty


def fetch_response(version, endpoints=(), records=b"r" * 300):
    import importlib
    m = importlib.import_module(f"kio.schema.fetch.v{version}.response")
    partition = m.PartitionData(
        partition_index=i32(0), error_code=ErrorCode.none, high_watermark=i64(5),
        last_stable_offset=i64(5), log_start_offset=i64(0), aborted_transactions=(
            m.AbortedTransaction(producer_id=i64(1), first_offset=i64(2)),),
        preferred_read_replica=i32(-1), records=records)
    topic_kw = {"topic_id": uuid.uuid4()} if version >= 13 else {"topic": "t"}
    topic = m.FetchableTopicResponse(partitions=(partition, partition), **topic_kw)
    kw = {}
    if version >= 16:
        kw["node_endpoints"] = tuple(m.NodeEndpoint(node_id=i32(n), host="h",
                                                    port=i32(1)) for n in endpoints)
    return encode_body(m.FetchResponse(
        throttle_time=i32Timedelta.parse(datetime.timedelta(0)),
        error_code=ErrorCode.none, session_id=i32(0), responses=(topic, topic), **kw))


class FetchScanTests(unittest.TestCase):
    def test_no_node_endpoints(self):
        """Without node_endpoints the scan says: pass as bytes (v12 to v18)."""
        for version in (12, 13, 16, 17, 18):
            self.assertTrue(fetch_top_level_tags_empty(fetch_response(version), 0,
                                                       version), version)

    def test_node_endpoints_detected(self):
        """node_endpoints present: the scan says the response must be rewritten."""
        for version in (16, 17, 18):
            body = fetch_response(version, endpoints=(2,))
            self.assertFalse(fetch_top_level_tags_empty(body, 0, version))

    def test_null_records_and_truncation(self):
        """Null records scan fine; a truncated response raises, never passes."""
        body = fetch_response(17, records=None)
        self.assertTrue(fetch_top_level_tags_empty(body, 0, 17))
        with self.assertRaises(Exception):
            fetch_top_level_tags_empty(body[:-5], 0, 17)
