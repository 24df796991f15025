# -*- test-case-name: tests.test_rules -*-
"""The per-API rule table: what the gateway does to each Kafka API.

An API key reaches a broker only if it has a row here (fail closed).  Each
row says up to which version the gateway offers the API and which response
rewrite it needs; every other request is forwarded as bytes.  ApiVersions
answers are cut down to exactly this table.
"""

from dataclasses import dataclass, replace
from typing import Callable

from twisted.logger import Logger

from ..protocol.headers import codec_versions

log = Logger()


@dataclass(frozen=True)
class Rule:
    api_key: int
    name: str
    min_version: int
    max_version: int
    rewrite_response: Callable | None = None
    """``(context, response) -> response``, applied from *rewrite_from* on."""
    rewrite_from: int = 0
    why: str = "forwarded unchanged"

    def needs_response_rewrite(self, version):
        return self.rewrite_response is not None and version >= self.rewrite_from


# --- response rewriters -------------------------------------------------------

def _endpoint(topology, node_id):
    return topology.gateway_address(node_id)


def rewrite_metadata(ctx, response):
    topology = ctx.topology
    topology.learn((b.node_id, b.host, b.port) for b in response.brokers)
    brokers = []
    for broker in response.brokers:
        address = _endpoint(topology, broker.node_id)
        if address is not None:
            brokers.append(replace(broker, host=address[0], port=address[1]))
    return replace(response, brokers=tuple(brokers))


def rewrite_describe_cluster(ctx, response):
    topology = ctx.topology
    topology.learn((b.broker_id, b.host, b.port) for b in response.brokers)
    brokers = []
    for broker in response.brokers:
        address = _endpoint(topology, broker.broker_id)
        if address is not None:
            brokers.append(replace(broker, host=address[0], port=address[1]))
    return replace(response, brokers=tuple(brokers))


def _rewrite_coordinator(topology, item):
    if item.node_id < 0 or item.error_code != 0:
        return item
    topology.learn([(item.node_id, item.host, item.port)])
    address = _endpoint(topology, item.node_id)
    if address is None:
        return replace(item, node_id=-1, host="", port=-1,
                       error_code=15)  # COORDINATOR_NOT_AVAILABLE: client retries
    return replace(item, host=address[0], port=address[1])


def rewrite_find_coordinator(ctx, response):
    if hasattr(response, "coordinators"):
        return replace(response, coordinators=tuple(
            _rewrite_coordinator(ctx.topology, c) for c in response.coordinators
        ))
    return _rewrite_coordinator(ctx.topology, response)


def rewrite_node_endpoints(ctx, response):
    """KIP-951: Produce and Fetch name the new leader's address on errors."""
    if not response.node_endpoints:
        return response
    topology = ctx.topology
    topology.learn((e.node_id, e.host, e.port) for e in response.node_endpoints)
    endpoints = []
    for endpoint in response.node_endpoints:
        address = _endpoint(topology, endpoint.node_id)
        if address is not None:
            endpoints.append(replace(endpoint, host=address[0], port=address[1]))
    return replace(response, node_endpoints=tuple(endpoints))


def rewrite_api_versions(ctx, response):
    """Offer the intersection of the broker's versions and this table."""
    table = ctx.rules
    kept = []
    for api in response.api_keys:
        rule = table.get(api.api_key)
        if rule is None:
            continue
        low = max(api.min_version, rule.min_version)
        high = min(api.max_version, rule.max_version)
        if low <= high:
            kept.append(replace(api, min_version=low, max_version=high))
    return replace(response, api_keys=tuple(kept))


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
    0: ("Produce", rewrite_node_endpoints, 10, "KIP-951 node_endpoints rewritten"),
    1: ("Fetch", rewrite_node_endpoints, 16, "KIP-951 node_endpoints rewritten"),
    3: ("Metadata", rewrite_metadata, 0, "broker addresses rewritten"),
    10: ("FindCoordinator", rewrite_find_coordinator, 0,
         "coordinator addresses rewritten"),
    18: ("ApiVersions", rewrite_api_versions, 0,
         "versions cut to this table and the codec"),
    60: ("DescribeCluster", rewrite_describe_cluster, 0,
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
    return dict(sorted(table.items()))
