"""The rule table: fail closed, and documented from the code."""

from pathlib import Path

from twisted.trial import unittest

from vkafka.protocol.headers import codec_versions
from vkafka.tenancy.rules import markdown_table, passthrough_rules, tenant_rules
from vkafka.tenancy.rules.acls import RULES as ACL_RULES


class RuleTableTests(unittest.TestCase):
    def test_docs_match_code(self):
        """docs/api-rules.md is exactly what the code generates."""
        path = Path(__file__).resolve().parent.parent / "docs" / "api-rules.md"
        self.assertEqual(path.read_text(), markdown_table(),
                         "regenerate: python -m vkafka.tenancy.rules > docs/api-rules.md")

    def test_tenant_table_has_no_admin_apis(self):
        """Quotas, SCRAM, reassignments, elections, log dirs: never for tenants
        (ACLs are answered by the gateway: test_rights.py)."""
        forbidden = {34, 35, 38, 39, 40, 41, 43, 45, 46, 48, 49, 50, 51,
                     52, 53, 54, 55, 56, 57, 58, 62, 63, 64, 67, 71, 72, 76, 77, 78, 79}
        self.assertEqual(forbidden & set(tenant_rules()), set())

    def test_keys_a_broker_hashes_never_repeated(self):
        """A Produce naming one topic 1,600 times took a broker 4.7 s to
        parse (its hashed lists chain equal keys): a decoded request that
        repeats a key of rules/keys.py, or a Produce that names a topic
        twice, is refused; the same names once each pass."""
        import datetime
        from kio.schema.create_topics.v7 import request as ct
        from kio.static.primitive import i16, i32, i32Timedelta
        from vkafka.protocol.headers import HeaderError, parse_request_header
        from vkafka.protocol.produce import rewrite_produce
        from vkafka.tenancy.rules.keys import repeated

        def create(*names):
            return ct.CreateTopicsRequest(topics=tuple(ct.CreatableTopic(
                name=n, num_partitions=i32(1), replication_factor=i16(1),
                assignments=(), configs=()) for n in names),
                timeout=i32Timedelta.parse(datetime.timedelta(seconds=1)),
                validate_only=False)
        self.assertIsNone(repeated(19, create("a", "b")))
        self.assertEqual(repeated(19, create("a", "b", "a")), "topics repeats a")
        from dataclasses import replace  # a Fetch's partitions: a broker's map
        from .kafka_messages import fetch_request
        fetch = fetch_request("t", version=12)
        [topic] = fetch.topics
        [part] = topic.partitions
        other = replace(topic, partitions=(replace(part, partition=i32(1)),))
        self.assertIsNone(repeated(1, replace(fetch, topics=(topic, other))))
        for twice in ((topic, topic), (replace(topic, partitions=(part, part)),)):
            self.assertEqual(repeated(1, replace(fetch, topics=twice)),
                             "topics.partitions repeats t/0")
        from .test_tenant_splice import wide_produce
        raw = wide_produce(2, 7)[4:]
        offset = parse_request_header(raw).body_offset
        rewrite_produce(raw, offset, 9, topic_field=lambda f: None)
        twice = raw.replace(b"topic-00001", b"topic-00000")
        with self.assertRaises(HeaderError):
            rewrite_produce(twice, offset, 9, topic_field=lambda f: None)

    def test_keyed_lists_exist(self):
        """Every list rules/keys.py names is in some offered version of its
        API's request, with its key fields (a misspelt path checks nothing)."""
        import dataclasses
        import typing

        from kio.static.constants import EntityType

        from vkafka.protocol.headers import payload_class
        from vkafka.tenancy.rules.keys import KEYED
        rules = tenant_rules()

        def found(cls, names, fields):
            hints = {f.name: f.type for f in dataclasses.fields(cls)}
            if names[0] not in hints:
                return False
            inner = next(a for a in typing.get_args(hints[names[0]]) if a is not type(None))
            if typing.get_origin(inner) is tuple:
                inner = typing.get_args(inner)[0]
            if len(names) > 1:
                return found(inner, names[1:], fields)
            if not fields:
                return not dataclasses.is_dataclass(inner)
            return all(f in {g.name for g in dataclasses.fields(inner)} for f in fields)

        for api_key, lists in KEYED.items():
            rule = rules[api_key]
            for path, fields in lists:
                self.assertTrue(any(
                    found(payload_class(api_key, v, EntityType.request), path.split("."),
                          fields)
                    for v in range(rule.min_version, rule.max_version + 1)),
                    (rule.name, path, fields))

    def test_answers_per_entry_never_repeated(self):
        """A name the broker answers entry by entry, repeated (a DescribeGroups
        naming one group 400,000 times asked for a 400 MB answer): refused."""
        from kio.schema.consumer_group_describe.v0.request import (
            ConsumerGroupDescribeRequest)
        from kio.schema.describe_groups.v5.request import DescribeGroupsRequest
        from kio.schema.offset_fetch.v9 import request as of
        from kio.static.primitive import i32

        from vkafka.tenancy.rules.keys import repeated
        self.assertIsNone(repeated(15, DescribeGroupsRequest(
            groups=("a", "b"), include_authorized_operations=False)))
        self.assertEqual(repeated(15, DescribeGroupsRequest(
            groups=("a", "b", "a"), include_authorized_operations=False)),
            "groups repeats a")
        self.assertIsNotNone(repeated(69, ConsumerGroupDescribeRequest(
            group_ids=("g", "g"), include_authorized_operations=False)))

        def offset_fetch(*groups, partitions=(0, 1)):
            return of.OffsetFetchRequest(groups=tuple(of.OffsetFetchRequestGroup(
                group_id=g, member_id=None, member_epoch=i32(-1),
                topics=(of.OffsetFetchRequestTopics(
                    name="t", partition_indexes=tuple(map(i32, partitions))),))
                for g in groups), require_stable=False)
        self.assertIsNone(repeated(9, offset_fetch("a", "b")))
        self.assertEqual(repeated(9, offset_fetch("a", "a")), "groups repeats a")
        self.assertEqual(repeated(9, offset_fetch("a", partitions=(0, 0))),
                         "groups.topics.partition_indexes repeats 0")

    def test_brokers_batched_add_partitions_not_offered(self):
        """AddPartitionsToTxn v4+ (KIP-890's batch of many transactional ids,
        CLUSTER_ACTION on a broker): tenants get v0-3, as clients use."""
        self.assertEqual(tenant_rules()[24].max_version, 3)

    def test_every_tenant_row_rewrites(self):
        """Every forwarded tenant API has a response rewrite; all but a few a request one."""
        for key, rule in tenant_rules().items():
            if rule.local or key in ACL_RULES:  # ACL APIs: answered, never forwarded
                continue
            self.assertIsNotNone(rule.rewrite_response, rule.name)
            if key not in (18, 60):  # ApiVersions, DescribeCluster carry no names
                self.assertIsNotNone(rule.rewrite_request, rule.name)

    def test_versions_within_codec(self):
        """No row offers a version the codec cannot parse."""
        for table in (passthrough_rules(), tenant_rules()):
            for key, rule in table.items():
                if rule.local:
                    continue
                low, high = codec_versions(key)
                self.assertTrue(low <= rule.min_version <= rule.max_version <= high)
