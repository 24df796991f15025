"""The field table: every field offered to tenants is classified, or not offered."""

from dataclasses import replace
from types import SimpleNamespace

from kio.schema.index import api_key_map

from twisted.trial import unittest

from tests.kafka_messages import api_versions_response
from vkafka.protocol.headers import codec_versions
from vkafka.tenancy import fields
from vkafka.tenancy.fields import (
    TABLE, ApiKey, Field, classified, field_paths, offered_range, unclassified)
from vkafka.tenancy.rules import tenant_rules
from vkafka.tenancy.rules.addresses import rewrite_api_versions


def without(api_key, side, path):
    """A copy of TABLE lacking one field's classification."""
    row = TABLE[api_key]
    kept = {p: c for p, c in getattr(row, side).items() if p != path}
    assert len(kept) == len(getattr(row, side)) - 1, path
    return {**TABLE, api_key: replace(row, **{side: kept})}


def all_paths(api_key, side):
    low, high = codec_versions(api_key)
    return {p for v in range(low, high + 1) for p in field_paths(api_key, v, side)}


def offered_by_api_versions(rules):
    """api key -> (min, max) in an ApiVersions answer rewritten with *rules*,
    from a broker offering every version kio models."""
    broker = api_versions_response(
        [(k, *codec_versions(k)) for k in sorted(api_key_map)])
    answer = rewrite_api_versions(SimpleNamespace(rules=rules), None, broker)
    return {a.api_key: (a.min_version, a.max_version) for a in answer.api_keys}


class OfferedTests(unittest.TestCase):
    def test_offered_versions_fully_classified(self):
        """Every version tenant_rules() offers has each field of its request and
        response classified: the fail-closed check holds for what is offered."""
        for key, rule in tenant_rules().items():
            for version in range(rule.min_version, rule.max_version + 1):
                self.assertEqual(unclassified(key, version), [], (key, version))

    def test_table_covers_every_codec_version(self):
        """The table classifies every version kio models for these APIs, so the
        cap takes nothing away from clients today."""
        for key in ApiKey:
            self.assertEqual(offered_range(key, *codec_versions(key)),
                             codec_versions(key), key.name)

    def test_api_keys_are_the_tenant_table(self):
        """ApiKey names exactly the tenant table's keys, with kio's names."""
        self.assertEqual(set(ApiKey), set(tenant_rules()))
        for key in ApiKey:
            self.assertEqual(key.name, api_key_map[key].upper())

    def test_no_stale_paths(self):
        """Every classified path exists in some version kio models: a typo or a
        renamed field would otherwise classify nothing."""
        for key, row in TABLE.items():
            for side in ("request", "response"):
                stale = set(getattr(row, side)) - all_paths(key, side)
                self.assertEqual(stale, set(), (key.name, side))

    def test_values_are_fields(self):
        """Every entry maps to a Field (no None or stray string slipped in)."""
        for row in TABLE.values():
            for side in (row.request, row.response):
                for path, field in side.items():
                    self.assertIsInstance(field, Field, path)


class FailClosedTests(unittest.TestCase):
    def test_missing_field_caps_versions(self):
        """Metadata's topics.topic_authorized_operations exists from v8: without
        its class, v8 and later are not offered, v0-7 still are."""
        table = without(ApiKey.METADATA, "response", "topics.topic_authorized_operations")
        self.assertEqual(unclassified(ApiKey.METADATA, 8, table),
                         ["topics.topic_authorized_operations"])
        self.assertEqual(unclassified(ApiKey.METADATA, 7, table), [])
        self.assertEqual(offered_range(ApiKey.METADATA, 0, 13, table), (0, 7))
        self.assertEqual(offered_range(ApiKey.METADATA, 0, 13), (0, 13))

    def test_missing_field_caps_api_versions_answer(self):
        """The cap reaches clients: the rewritten ApiVersions answer offers
        Metadata up to v7, and Fetch (rack_id from v11) up to v10."""
        rules = tenant_rules()
        self.assertEqual(offered_by_api_versions(rules)[3], (0, 13))
        table = without(ApiKey.METADATA, "response", "topics.topic_authorized_operations")
        self.assertEqual(offered_by_api_versions(classified(rules, table))[3], (0, 7))
        table = without(ApiKey.FETCH, "request", "rack_id")
        offered = offered_by_api_versions(classified(rules, table))
        self.assertEqual(offered[1], (4, 10))
        self.assertEqual(offered[3], (0, 13))  # other APIs untouched

    def test_missing_first_version_field_drops_api(self):
        """A field of the lowest offered version unclassified: the API is not
        offered at all, and ApiVersions no longer lists it."""
        table = without(ApiKey.HEARTBEAT, "request", "group_id")
        self.assertIsNone(offered_range(ApiKey.HEARTBEAT, 0, 4, table))
        rules = classified(tenant_rules(), table)
        self.assertNotIn(ApiKey.HEARTBEAT, rules)
        self.assertNotIn(12, offered_by_api_versions(rules))

    def test_api_without_row_is_dropped(self):
        """An API the table lacks has every field unclassified (a new rule row
        is not offered until its fields are classified)."""
        table = {k: v for k, v in TABLE.items() if k != ApiKey.DELETE_GROUPS}
        self.assertEqual(sorted(unclassified(ApiKey.DELETE_GROUPS, 0, table)),
                         ["groups_names", "results.error_code", "results.group_id",
                          "throttle_time"])
        self.assertNotIn(ApiKey.DELETE_GROUPS, classified(tenant_rules(), table))

    def test_unmodelled_versions_not_offered(self):
        """A version kio does not model cannot be checked, so it ends the range."""
        self.assertRaises(LookupError, unclassified, ApiKey.METADATA, 99)
        self.assertEqual(offered_range(ApiKey.METADATA, 0, 99), (0, 13))


class EnforcementTests(unittest.TestCase):
    """Classes the generic name walker cannot handle have a rule of their own:
    a field of one of them in an API served by the walker alone would be
    forwarded unchecked."""

    @property
    def GENERIC(self):
        from vkafka.tenancy.rules.common import walk_req, walk_resp
        return (walk_req, walk_resp)

    def classes_of(self, key, side):
        from vkafka.tenancy.fields import TABLE
        return set(getattr(TABLE[key], side).values())

    def test_generic_rows_recognised(self):
        """The check below can fail: a plain walked API uses the generic pair."""
        from vkafka.tenancy.rules import tenant_rules
        end_txn = tenant_rules()[26]
        self.assertIn(end_txn.rewrite_request, self.GENERIC)
        self.assertIn(end_txn.rewrite_response, self.GENERIC)

    def test_patterns_and_parsed_bytes_have_their_own_rule(self):
        from vkafka.tenancy.fields import Field
        from vkafka.tenancy.rules import tenant_rules
        for key, rule in tenant_rules().items():
            if rule.local:
                continue
            special = self.classes_of(key, "request") & {Field.PATTERN,
                                                         Field.BROKER_PARSED}
            if special:
                self.assertNotIn(rule.rewrite_request, self.GENERIC,
                                 f"{rule.name}: {special} walked generically")
            special = self.classes_of(key, "response") & {Field.PATTERN,
                                                          Field.BROKER_PARSED}
            if special:
                self.assertNotIn(rule.rewrite_response, self.GENERIC,
                                 f"{rule.name}: {special} walked generically")

    def test_fetch_sessions_and_cursors_bound(self):
        """Fetch checks its session (sliced and decoded paths, and the response
        that makes one); DescribeTopicPartitions pages by its own rule."""
        from vkafka.tenancy.rules import tenant_rules
        rules = tenant_rules()
        fetch = rules[1]
        self.assertEqual((fetch.rewrite_frame.__name__, fetch.rewrite_request.__name__,
                          fetch.observe.__name__),
                         ("fetch_frame", "fetch_request", "fetch_observe"))
        self.assertEqual(rules[75].rewrite_request.__name__,
                         "describe_topic_partitions_request")


class DocsTests(unittest.TestCase):
    def test_markdown_lists_every_field(self):
        """The generated section shows each path with its class and versions."""
        text = fields.markdown()
        self.assertIn("| response | `topics.topic_authorized_operations` | SCALAR | "
                      "v8-13 |", text)
        rows = sum(len(r.request) + len(r.response) for r in TABLE.values())
        self.assertEqual(text.count("\n| request |") + text.count("\n| response |"),
                         rows)
