# -*- test-case-name: tests.test_rules -*-
"""The per-API rule table: what the gateway does to each Kafka API.

An API key reaches a broker only if it has a row here (fail closed).  Each
row says up to which version the gateway offers the API and which request
and response rewrites it needs; every other request is forwarded as bytes.
ApiVersions answers are cut down to exactly this table.  The rewrites live
in this package's modules, one per family of APIs (addresses, records,
topics, configs, groups); each gets the message, its request context
(context.py) and the narrow services (services.py), never the connection.
"""

from dataclasses import dataclass, replace
from typing import Callable

from ...auth.sasl import SASL_HANDSHAKE, VERSIONS as SASL_VERSIONS
from ...protocol.fastpath import scan_fetch, scan_produce_response
from ...protocol.headers import codec_versions
from .. import consumer_protocol
from ..context import OWNER
from ..naming import GROUP, TRANSACTION
from . import acls, addresses, common, configs, groups, records, topics
from . import rights
from .rights import NEEDS


@dataclass(frozen=True)
class Rule:
    api_key: int
    name: str
    min_version: int
    max_version: int
    rewrite_response: Callable | None = None
    """``(services, request context, response) -> response``, from *rewrite_from* on."""
    rewrite_from: int = 0
    why: str = "forwarded unchanged"
    rewrite_request: Callable | None = None
    """``(services, request context, request) -> request`` (tenant mode)."""
    local: bool = False
    """Answered by the gateway itself (SASL), never forwarded."""
    write: bool | str = False
    """Changes topics: read-only aliases are refused (TOPIC_AUTHORIZATION_FAILED);
    ``context.OWNER``: as their owner, so writable ones (shared) are too."""
    rewrite_frame: Callable | None = None
    """``(services, request context, frame, body offset, version) -> frame``:
    rewrites the request without decoding it (hot path); used instead of
    *rewrite_request*, unless it declines with None."""
    scan_response: Callable | None = None
    """``(frame, body offset, version) -> fastpath.Scan``: reads a big response by
    lengths (hot path) for *records.passes_as_bytes* and the metrics (its first error
    code, its records)."""
    passes_as_bytes: Callable | None = None
    """``(scan, version, request context) -> bool``: True when this response needs
    no rewrite and is forwarded without decoding (hot path); needs *scan_response*."""
    rename_response: Callable | None = None
    """``(frame, body offset, version, scan, request context) -> frame or None``:
    the response with its names made logical by slicing, when nothing else in it
    must change; None: decode it (hot path); needs *scan_response*."""
    observe: Callable | None = None
    """``(request context, scan)``: connection-bound state a response creates
    (fetch sessions), read from its scan however the response is forwarded."""
    needs: object = None
    """What the API needs when the virtual cluster's ACLs are on
    (rights.Needs, from rules/rights.py); None: refused while they are on."""

    def needs_response_rewrite(self, version):
        return self.rewrite_response is not None and version >= self.rewrite_from


# --- the table ----------------------------------------------------------------

# Client-facing APIs forwarded as bytes in passthrough mode: their requests and
# responses carry no broker address.  Broker-to-broker and controller APIs,
# share groups, streams groups, telemetry and DescribeQuorum (which lists
# controller addresses) are absent, hence refused.
_FORWARDED = {
    2: "ListOffsets", 8: "OffsetCommit", 9: "OffsetFetch", 11: "JoinGroup",
    12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups",
    16: "ListGroups", 17: "SaslHandshake", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn",
    28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls",
    32: "DescribeConfigs", 33: "AlterConfigs", 34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions",
    42: "DeleteGroups", 43: "ElectLeaders", 44: "IncrementalAlterConfigs",
    45: "AlterPartitionReassignments", 46: "ListPartitionReassignments",
    47: "OffsetDelete", 48: "DescribeClientQuotas", 49: "AlterClientQuotas",
    50: "DescribeUserScramCredentials", 51: "AlterUserScramCredentials",
    61: "DescribeProducers", 65: "DescribeTransactions", 66: "ListTransactions",
    68: "ConsumerGroupHeartbeat", 69: "ConsumerGroupDescribe",
    75: "DescribeTopicPartitions",
}

_REWRITTEN = {
    0: ("Produce", addresses.rewrite_node_endpoints, 10,
        "KIP-951 node_endpoints rewritten"),
    1: ("Fetch", addresses.rewrite_node_endpoints, 16,
        "KIP-951 node_endpoints rewritten"),
    3: ("Metadata", addresses.rewrite_metadata, 0,
        "broker addresses rewritten; the gateway's state topics hidden"),
    10: ("FindCoordinator", addresses.rewrite_find_coordinator, 0,
         "coordinator addresses rewritten"),
    18: ("ApiVersions", addresses.rewrite_api_versions, 0,
         "versions cut to this table and the codec"),
    60: ("DescribeCluster", addresses.rewrite_describe_cluster, 0,
         "broker addresses rewritten"),
}


def _row(api_key, name, rewrite=None, rewrite_from=0, why="forwarded unchanged"):
    low, high = codec_versions(api_key)
    return Rule(api_key, name, low, high, rewrite, rewrite_from, why)


def passthrough_rules():
    """The table for PLAINTEXT passthrough mode: api key -> Rule."""
    table = {key: _row(key, name) for key, name in _FORWARDED.items()}
    for key, (name, fn, since, why) in _REWRITTEN.items():
        table[key] = _row(key, name, fn, since, why)
    table[1] = replace(table[1], scan_response=scan_fetch,
                       passes_as_bytes=records.passes_as_bytes)
    table[0] = replace(table[0], scan_response=scan_produce_response,
                       passes_as_bytes=records.passes_as_bytes)
    return dict(sorted(table.items()))


# --- tenant mode ---------------------------------------------------------------
#
# Every row below rewrites names with the schema-driven walker (walker.py):
# requests to physical names with unmappable names and foreign topic ids
# replaced by decoys the broker refuses; responses back to logical names with
# other tenants' entities dropped.  Rows with extra work name it in `why`.
# APIs absent here (ACLs, quotas, SCRAM, reassignments, leader election, log
# dirs, delegation tokens, features, telemetry, share and streams groups,
# broker-to-broker and controller APIs) are refused to tenants.
_WALKED = {
    2: "ListOffsets", 8: "OffsetCommit", 9: "OffsetFetch", 11: "JoinGroup",
    12: "Heartbeat", 13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups",
    16: "ListGroups", 19: "CreateTopics", 21: "DeleteRecords",
    22: "InitProducerId", 23: "OffsetForLeaderEpoch", 24: "AddPartitionsToTxn",
    25: "AddOffsetsToTxn", 26: "EndTxn", 28: "TxnOffsetCommit",
    37: "CreatePartitions", 42: "DeleteGroups", 47: "OffsetDelete",
    61: "DescribeProducers", 65: "DescribeTransactions",
    75: "DescribeTopicPartitions",
}


def tenant_rules():
    """The table for virtual clusters: api key -> Rule (request and response rewrites)."""
    table = {key: _row(key, name, common.walk_resp, 0, "names rewritten, others' dropped")
             for key, name in _WALKED.items()}
    for key in _WALKED:
        table[key] = replace(table[key], rewrite_request=common.walk_req)

    def row(key, name, request, response, why, since=0, **hot_path):
        low, high = codec_versions(key)
        table[key] = Rule(key, name, low, high, response, since, why, request,
                          **hot_path)

    row(0, "Produce", common.walk_req,
        common.then(common.walk_resp, addresses.node_endpoints),
        "names and topic ids rewritten by slicing (records untouched, but "
        "for writable mappings: producer ids cleared, transactions refused); KIP-951 "
        "node_endpoints rewritten; v13+ responses forwarded as bytes, older ones "
        "renamed by slicing, unless something else in them must change; "
        "partitions named, and compressed records, beyond what their bytes "
        "would hold charged to the loop share; compressed batches inflating "
        "past a bound answered MESSAGE_TOO_LARGE",
        rewrite_frame=records.produce_frame, scan_response=scan_produce_response,
        passes_as_bytes=records.passes_as_bytes,
        rename_response=records.produce_response_names)
    row(1, "Fetch", records.fetch_request, records.fetch_response,
        "names (v<=12) and topic ids (v13+) checked and rewritten (v13+ requests "
        "by slicing: ids checked in place); fetch sessions bound to the "
        "connection that made them (others: FETCH_SESSION_ID_NOT_FOUND, or a "
        "full fetch without the session), at most 4 a connection (past them a "
        "full fetch goes on sessionless); fetches as a replica refused; "
        "partitions named beyond the first charged to the loop share; "
        "node_endpoints; v13+ responses forwarded as bytes when every topic id "
        "in them is the tenant's and nothing else must change, older ones "
        "renamed by slicing when every name is the tenant's",
        rewrite_frame=records.fetch_frame, scan_response=scan_fetch,
        passes_as_bytes=records.passes_as_bytes, observe=records.fetch_observe,
        rename_response=records.fetch_response_names)
    row(3, "Metadata", topics.metadata_request, topics.metadata_response,
        "names and ids rewritten, other tenants' topics dropped, no auto-create, "
        "broker addresses rewritten; all-topics requests ask for the tenant's "
        "topics by name (listing at most 2 s old); their answers reused for up to "
        "--metadata-cache seconds")
    row(9, "OffsetFetch", groups.offset_fetch_request, groups.offset_fetch_response,
        "names rewritten, others' dropped; concentrated topics' offsets split by "
        "logical topic; a moving coordinator's answer without partitions given "
        "the partitions asked, each STALE_MEMBER_EPOCH (librdkafka asks again)")
    row(19, "CreateTopics", topics.create_topics_request, topics.create_topics_response,
        "names rewritten (invalid or colliding names refused); the tenant's "
        "capacity and topic policy applied per topic (validate-only alike), "
        "retention caps made explicit; creations learnt; names a concentration "
        "rule matches become concentrated topics")
    row(10, "FindCoordinator", groups.find_coordinator_request,
        groups.find_coordinator_response,
        "group and transaction keys rewritten (others refused); addresses rewritten")
    row(18, "ApiVersions", None, addresses.rewrite_api_versions,
        "versions cut to this table; SASL answered by the gateway")
    row(32, "DescribeConfigs", configs.configs_request(True), configs.configs_response,
        "topic and group resources renamed; brokers read-only and cut to an "
        "allow-list (no listeners, addresses, paths, voters, secrets); others "
        "(BROKER_LOGGER, ...) refused")
    row(33, "AlterConfigs", configs.configs_request(False, replaces_all=True),
        configs.configs_response,
        "topic and group resources renamed; topic configs within the tenant's "
        "policy (keys allowed, retention caps); other resources refused")
    row(44, "IncrementalAlterConfigs", configs.configs_request(False),
        configs.configs_response,
        "topic and group resources renamed; topic configs within the tenant's "
        "policy (keys allowed, retention caps); other resources refused")
    row(75, "DescribeTopicPartitions", topics.describe_topic_partitions_request,
        topics.describe_topic_partitions_response,
        "names rewritten; paging (the cursor) only through the tenant's own "
        "topics: an all-topics request asks for them by name")
    row(60, "DescribeCluster", None, addresses.rewrite_describe_cluster,
        "broker addresses rewritten")
    row(66, "ListTransactions", groups.list_transactions_request,
        groups.list_transactions_response,
        "other tenants' ids dropped; the id pattern applied by the gateway (RE2)")
    row(68, "ConsumerGroupHeartbeat", groups.heartbeat_request,
        common.then(common.then(common.ids_known_first(common.walk_resp),
                                groups.answered_as_refused(GROUP)), groups.member_joined),
        "names rewritten; a regex subscription matched by the gateway (RE2) over "
        "the tenant's topics and sent as the exact alternation of their physical "
        "names, kept current; assignments by topic id checked (unknown ids: a "
        "listing first); a member past the tenant's member state bound refused: "
        "POLICY_VIOLATION; a join, leave, new subscription, rack or assignor costs "
        "10 ms of the loop share (the coordinator assigns anew)")
    row(69, "ConsumerGroupDescribe", common.walk_req,
        common.ids_known_first(groups.group_describe_response),
        "names and ids rewritten, the regex and client ids shown as the "
        "clients sent them")
    row(11, "JoinGroup", common.then(common.then(
        consumer_protocol.join_group_request, groups.within_group_capacity),
        groups.unknown_id_created("group_id", GROUP)),
        common.then(common.then(common.walk_resp, consumer_protocol.join_group_response),
                    groups.answered_as_refused(GROUP)),
        "names rewritten; a new group beyond the tenant's capacity refused; "
        "\"consumer\" protocol subscriptions (read by the broker) "
        "made physical, the leader's copies logical (others' topics dropped); "
        "unreadable ones or foreign names refused: INCONSISTENT_GROUP_PROTOCOL; "
        "a member past the tenant's member state bound refused: POLICY_VIOLATION")
    row(14, "SyncGroup", consumer_protocol.sync_group_request,
        common.then(common.walk_resp, consumer_protocol.sync_group_response),
        "names rewritten; assignments the broker could read as the consumer "
        "protocol made physical, the member's logical (others' topics dropped); "
        "unreadable \"consumer\" ones or foreign names refused: "
        "INCONSISTENT_GROUP_PROTOCOL; assignments past the tenant's member "
        "state bound refused: POLICY_VIOLATION")
    table[15] = replace(table[15], rewrite_response=common.then(common.then(
        common.walk_resp, consumer_protocol.describe_groups_response),
        groups.client_ids_shown), why="names rewritten, others' dropped; "
        "\"consumer\" members' subscriptions and assignments made logical, and "
        "client ids as the clients sent them")
    row(20, "DeleteTopics", topics.delete_topics_request, topics.delete_topics_response,
        "names and ids rewritten; deleting an alias removes the mapping, never "
        "the shared topic")
    row(37, "CreatePartitions", topics.create_partitions_request,
        common.then(common.walk_resp, topics.repartitioned),
        "names rewritten, others' dropped; the tenant's partition limits applied "
        "per topic")
    row(22, "InitProducerId", common.then(common.then(common.then(
        rights.idempotent_producer, common.walk_req), groups.within_transaction_capacity),
        groups.unknown_id_created("transactional_id", TRANSACTION)),
        groups.answered_as_refused(TRANSACTION), "transactional id renamed; a new one "
        "beyond the tenant's capacity refused: POLICY_VIOLATION")
    table[12] = replace(table[12], rewrite_request=consumer_protocol.heartbeat_request,
                        why="names rewritten, others' dropped; the member counted "
                        "alive")
    table[13] = replace(table[13], rewrite_request=consumer_protocol.leave_group_request,
                        why="names rewritten, others' dropped; members' reasons cut "
                        "to 255 bytes; the members no longer counted")
    table[42] = replace(table[42], rewrite_response=common.then(
        common.walk_resp, groups.deleted_groups_configs_cleared),
        why="names rewritten, others' dropped; a deleted group's configs cleared")
    table[61] = replace(table[61], rewrite_response=common.then(
        common.walk_resp, records.own_producers),
        why="names rewritten, others' dropped; a mapped topic's producers not listed")
    for key in (2, 23):  # ListOffsets, OffsetForLeaderEpoch
        table[key] = replace(table[key], rewrite_request=common.then(
            records.consumer_only, common.walk_req),
            why="names rewritten, others' dropped; as a replica (not a consumer) "
            "refused")
    table[2] = replace(table[2], rewrite_request=common.then(
        table[2].rewrite_request, records.lookups_timed),
        rewrite_response=common.then(records.lookups_charged, table[2].rewrite_response),
        why=table[2].why + "; a lookup by time charged its wait")
    for key in (8, 28):  # OffsetCommit, TxnOffsetCommit
        table[key] = replace(table[key], rewrite_request=common.then(common.then(
            common.walk_req, groups.within_group_capacity), groups.commit_needs_a_group),
            rewrite_response=common.then(common.walk_resp,
                                         groups.answered_as_refused(GROUP)))
    # AddPartitionsToTxn v4+ is the brokers' own batched form (KIP-890), for
    # which Kafka requires CLUSTER_ACTION: clients send v0-3.
    table[24] = replace(table[24], max_version=min(table[24].max_version, 3),
                        why=table[24].why + "; v4+ (brokers' batched form) not offered")
    for key in (0, 20, 24):  # these write to topics (AddPartitionsToTxn: markers)
        table[key] = replace(table[key], write=True)
    for key in (21, 33, 37, 44):  # DeleteRecords, config changes, CreatePartitions
        table[key] = replace(table[key], write=OWNER)
    table[24] = replace(table[24], rewrite_request=common.then(common.then(
        records.in_a_transaction, common.partitions_charged(
            common.TXN_PARTITION_WORK, "v3_and_below_topics")),
        table[24].rewrite_request),
        why=table[24].why + "; read-only and writable mappings refused (a "
        "transaction's markers would be written there); each partition costs "
        "1 ms of the loop share (its marker)")
    table[21] = replace(table[21], rewrite_request=common.then(
        common.partitions_charged(common.DELETED_RECORDS_WORK), table[21].rewrite_request),
        why=table[21].why + "; each partition costs 1 ms of the loop share")
    for key, (low, high) in SASL_VERSIONS.items():
        name = "SaslHandshake" if key == SASL_HANDSHAKE else "SaslAuthenticate"
        table[key] = Rule(key, name, low, high, None, 0,
                          "answered by the gateway (PLAIN with a vkafka token)",
                          None, True)
    for key, (name, request, response, why) in acls.RULES.items():
        row(key, name, request, response, why)
    table = {key: replace(rule, needs=NEEDS.get(key)) for key, rule in table.items()}
    from ..fields import classified  # versions with an unclassified field: not offered
    return classified(dict(sorted(table.items())))


def markdown_table():
    """docs/api-rules.md, generated from the tables above so it cannot drift."""
    from kio.schema.index import api_key_map

    passthrough, tenant = passthrough_rules(), tenant_rules()
    lines = [
        "# What vkafka does to each Kafka API",
        "",
        "Generated by `python -m vkafka.tenancy.rules` from `vkafka/tenancy/rules/`;",
        "a test fails if this file and the code disagree. An API that is not offered",
        "is removed from ApiVersions and, if sent anyway, closes the connection; so",
        "does a version past what the brokers offer (tenant mode: ApiVersions offers",
        "the versions both this table and the brokers know). In virtual cluster",
        "mode every request's header reaches the broker with the client id",
        "`<vcluster>/<the client's>` and no header tagged fields",
        "(`vkafka/filters/tenant.py`, `ClientIds`).",
        "",
        "| key | API | passthrough (PLAINTEXT) | virtual cluster (SASL_PLAINTEXT) |",
        "|---:|---|---|---|",
    ]
    for key in sorted(api_key_map):
        name = "".join(p.capitalize() for p in api_key_map[key].split("_"))

        def cell(rule):
            if rule is None:
                return "refused"
            needs = "" if rule.needs is None else \
                f"; **ACLs on:** {rule.needs.summary()}"
            return f"v{rule.min_version}-{rule.max_version}: {rule.why}{needs}"
        lines.append(f"| {key} | {name} | {cell(passthrough.get(key))} | "
                     f"{cell(tenant.get(key))} |")
    from ..fields import markdown  # then each tenant API's fields and their classes
    return "\n".join(lines) + "\n" + markdown()
