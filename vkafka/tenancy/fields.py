# -*- test-case-name: tests.test_fields -*-
"""Every field the tenant table offers, classified: fail closed, to the field.

rules.py decides per API; this table decides per field.  Each field path of
each request and response offered to virtual clusters (the union over the
versions kio models) says what it is, so enforcement can be reviewed class by
class.  A version carrying a field this table does not classify (a new kio, a
new row) is not offered to tenants: ``classified`` caps ``tenant_rules()``.

Typed fields were classified from kio's hints (TopicName, GroupId,
TransactionalId, BrokerId, ProducerId, ErrorCode, uuid ``topic_id``); every
other field by hand, by what it is, not by what the gateway does with it.
Run ``python -m vkafka.tenancy.fields`` to list what a new kio leaves
unclassified.
"""

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, IntEnum
from functools import lru_cache
from types import MappingProxyType

from kio.static.constants import EntityType

from ..protocol.headers import codec_versions, payload_class


class ApiKey(IntEnum):
    """The API keys the tenant table offers (kio's names)."""

    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    OFFSET_FOR_LEADER_EPOCH = 23
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    SASL_AUTHENTICATE = 36
    CREATE_PARTITIONS = 37
    DELETE_GROUPS = 42
    INCREMENTAL_ALTER_CONFIGS = 44
    OFFSET_DELETE = 47
    DESCRIBE_CLUSTER = 60
    DESCRIBE_PRODUCERS = 61
    DESCRIBE_TRANSACTIONS = 65
    LIST_TRANSACTIONS = 66
    CONSUMER_GROUP_HEARTBEAT = 68
    CONSUMER_GROUP_DESCRIBE = 69
    DESCRIBE_TOPIC_PARTITIONS = 75


class Field(Enum):
    """What a field is; each value is the sentence docs/api-rules.md shows."""

    TOPIC_NAME = "a topic name"
    GROUP_ID = "a consumer group id"
    TRANSACTIONAL_ID = "a transactional id"
    TOPIC_ID = "a topic id (uuid)"
    BROKER = ("the cluster's own shape: broker ids, hosts, ports, racks, node "
              "endpoints, cluster id, controller id, and what selects which "
              "brokers are listed")
    RESOURCE = ("a resource named by a kind and a name (config resources, "
                "coordinator keys): the kind field says whether the name is a "
                "topic, group, transaction or broker, so both halves are one class")
    PATTERN = "a tenant's pattern, evaluated by the gateway (or confined by it)"
    CONNECTION_STATE = ("state the broker hands out and the client sends back: "
                        "fetch sessions, paging cursors, member ids, member and "
                        "group epochs, generation ids, producer ids and epochs")
    BROKER_PARSED = ("bytes the broker interprets: consumer protocol subscriptions "
                     "and assignments (protocol type \"consumer\"), which name topics")
    OPAQUE_BYTES = ("bytes or text nobody interprets: record batches, SASL auth "
                    "bytes, offset metadata, free-text reasons")
    CLIENT = ("what a client says about itself, or where the broker saw it connect "
              "from: client id and host, rack, software name and version")
    CONFIG = "a config name, value or documentation"
    ERROR = "an error code or message"
    SCALAR = ("a harmless scalar: counts, timeouts, partition indexes, offsets, "
              "epochs of partitions, flags, states, protocol and feature names")


F = Field  # short, for the table


@dataclass(frozen=True)
class Row:
    """One API's field classes: field path -> Field, request and response."""

    request: Mapping[str, Field]
    response: Mapping[str, Field]

    def __post_init__(self):
        object.__setattr__(self, "request", MappingProxyType(dict(self.request)))
        object.__setattr__(self, "response", MappingProxyType(dict(self.response)))


# The table.  Paths are dotted through nested entities, in the order kio's
# versions introduce them; docs/api-rules.md shows the versions of each.
TABLE = {
    ApiKey.PRODUCE: Row(
        request={
            "transactional_id": F.TRANSACTIONAL_ID,
            "acks": F.SCALAR,
            "timeout": F.SCALAR,
            "topic_data.name": F.TOPIC_NAME,
            "topic_data.partition_data.index": F.SCALAR,
            "topic_data.partition_data.records": F.OPAQUE_BYTES,
            "topic_data.topic_id": F.TOPIC_ID,
        },
        response={
            "responses.name": F.TOPIC_NAME,
            "responses.partition_responses.index": F.SCALAR,
            "responses.partition_responses.error_code": F.ERROR,
            "responses.partition_responses.base_offset": F.SCALAR,
            "responses.partition_responses.log_append_time": F.SCALAR,
            "throttle_time": F.SCALAR,
            "responses.partition_responses.log_start_offset": F.SCALAR,
            "responses.partition_responses.record_errors.batch_index": F.SCALAR,
            "responses.partition_responses.record_errors.batch_index_error_message": F.ERROR,
            "responses.partition_responses.error_message": F.ERROR,
            "responses.partition_responses.current_leader.leader_id": F.BROKER,
            "responses.partition_responses.current_leader.leader_epoch": F.SCALAR,
            "node_endpoints.node_id": F.BROKER,
            "node_endpoints.host": F.BROKER,
            "node_endpoints.port": F.BROKER,
            "node_endpoints.rack": F.BROKER,
            "responses.topic_id": F.TOPIC_ID,
        },
    ),
    ApiKey.FETCH: Row(
        request={
            "replica_id": F.BROKER,  # -1 from consumers; >= 0 is a follower broker
            "max_wait": F.SCALAR,
            "min_bytes": F.SCALAR,
            "max_bytes": F.SCALAR,
            "isolation_level": F.SCALAR,
            "topics.topic": F.TOPIC_NAME,
            "topics.partitions.partition": F.SCALAR,
            "topics.partitions.fetch_offset": F.SCALAR,
            "topics.partitions.partition_max_bytes": F.SCALAR,
            "topics.partitions.log_start_offset": F.SCALAR,
            "session_id": F.CONNECTION_STATE,
            "session_epoch": F.CONNECTION_STATE,
            "forgotten_topics_data.topic": F.TOPIC_NAME,
            "forgotten_topics_data.partitions": F.SCALAR,
            "topics.partitions.current_leader_epoch": F.SCALAR,
            "rack_id": F.CLIENT,  # the consumer's rack (KIP-392)
            "cluster_id": F.BROKER,
            "topics.partitions.last_fetched_epoch": F.SCALAR,
            "topics.topic_id": F.TOPIC_ID,
            "forgotten_topics_data.topic_id": F.TOPIC_ID,
            "replica_state.replica_id": F.BROKER,
            "replica_state.replica_epoch": F.BROKER,  # a follower's broker epoch
            "topics.partitions.replica_directory_id": F.BROKER,  # a broker's log dir
            "topics.partitions.high_watermark": F.SCALAR,  # an offset
        },
        response={
            "throttle_time": F.SCALAR,
            "responses.topic": F.TOPIC_NAME,
            "responses.partitions.partition_index": F.SCALAR,
            "responses.partitions.error_code": F.ERROR,
            "responses.partitions.high_watermark": F.SCALAR,
            "responses.partitions.last_stable_offset": F.SCALAR,
            "responses.partitions.aborted_transactions.producer_id": F.CONNECTION_STATE,
            "responses.partitions.aborted_transactions.first_offset": F.SCALAR,
            "responses.partitions.records": F.OPAQUE_BYTES,
            "responses.partitions.log_start_offset": F.SCALAR,
            "error_code": F.ERROR,
            "session_id": F.CONNECTION_STATE,
            "responses.partitions.preferred_read_replica": F.BROKER,
            "responses.partitions.diverging_epoch.epoch": F.SCALAR,
            "responses.partitions.diverging_epoch.end_offset": F.SCALAR,
            "responses.partitions.current_leader.leader_id": F.BROKER,
            "responses.partitions.current_leader.leader_epoch": F.SCALAR,
            "responses.partitions.snapshot_id.end_offset": F.SCALAR,
            "responses.partitions.snapshot_id.epoch": F.SCALAR,
            "responses.topic_id": F.TOPIC_ID,
            "node_endpoints.node_id": F.BROKER,
            "node_endpoints.host": F.BROKER,
            "node_endpoints.port": F.BROKER,
            "node_endpoints.rack": F.BROKER,
        },
    ),
    ApiKey.LIST_OFFSETS: Row(
        request={
            "replica_id": F.BROKER,
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.timestamp": F.SCALAR,
            "isolation_level": F.SCALAR,
            "topics.partitions.current_leader_epoch": F.SCALAR,
            "timeout": F.SCALAR,
        },
        response={
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.error_code": F.ERROR,
            "topics.partitions.timestamp": F.SCALAR,
            "topics.partitions.offset": F.SCALAR,
            "throttle_time": F.SCALAR,
            "topics.partitions.leader_epoch": F.SCALAR,
        },
    ),
    ApiKey.METADATA: Row(
        request={
            "topics.name": F.TOPIC_NAME,
            "allow_auto_topic_creation": F.SCALAR,
            "include_cluster_authorized_operations": F.SCALAR,
            "include_topic_authorized_operations": F.SCALAR,
            "topics.topic_id": F.TOPIC_ID,
        },
        response={
            "brokers.node_id": F.BROKER,
            "brokers.host": F.BROKER,
            "brokers.port": F.BROKER,
            "topics.error_code": F.ERROR,
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.error_code": F.ERROR,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.leader_id": F.BROKER,
            "topics.partitions.replica_nodes": F.BROKER,
            "topics.partitions.isr_nodes": F.BROKER,
            "brokers.rack": F.BROKER,
            "controller_id": F.BROKER,
            "topics.is_internal": F.SCALAR,
            "cluster_id": F.BROKER,
            "throttle_time": F.SCALAR,
            "topics.partitions.offline_replicas": F.BROKER,
            "topics.partitions.leader_epoch": F.SCALAR,
            "topics.topic_authorized_operations": F.SCALAR,
            "cluster_authorized_operations": F.SCALAR,
            "topics.topic_id": F.TOPIC_ID,
            "error_code": F.ERROR,
        },
    ),
    ApiKey.OFFSET_COMMIT: Row(
        request={
            "group_id": F.GROUP_ID,
            "generation_id_or_member_epoch": F.CONNECTION_STATE,
            "member_id": F.CONNECTION_STATE,
            "retention_time": F.SCALAR,
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.committed_offset": F.SCALAR,
            "topics.partitions.committed_metadata": F.OPAQUE_BYTES,  # the client's text
            "topics.partitions.committed_leader_epoch": F.SCALAR,
            "group_instance_id": F.CONNECTION_STATE,  # static membership: a member id
            "topics.topic_id": F.TOPIC_ID,
        },
        response={
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.error_code": F.ERROR,
            "throttle_time": F.SCALAR,
            "topics.topic_id": F.TOPIC_ID,
        },
    ),
    ApiKey.OFFSET_FETCH: Row(
        request={
            "group_id": F.GROUP_ID,
            "topics.name": F.TOPIC_NAME,
            "topics.partition_indexes": F.SCALAR,
            "require_stable": F.SCALAR,
            "groups.group_id": F.GROUP_ID,
            "groups.topics.name": F.TOPIC_NAME,
            "groups.topics.partition_indexes": F.SCALAR,
            "groups.member_id": F.CONNECTION_STATE,
            "groups.member_epoch": F.CONNECTION_STATE,
            "groups.topics.topic_id": F.TOPIC_ID,
        },
        response={
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.committed_offset": F.SCALAR,
            "topics.partitions.metadata": F.OPAQUE_BYTES,  # committed_metadata, back
            "topics.partitions.error_code": F.ERROR,
            "error_code": F.ERROR,
            "throttle_time": F.SCALAR,
            "topics.partitions.committed_leader_epoch": F.SCALAR,
            "groups.group_id": F.GROUP_ID,
            "groups.topics.name": F.TOPIC_NAME,
            "groups.topics.partitions.partition_index": F.SCALAR,
            "groups.topics.partitions.committed_offset": F.SCALAR,
            "groups.topics.partitions.committed_leader_epoch": F.SCALAR,
            "groups.topics.partitions.metadata": F.OPAQUE_BYTES,
            "groups.topics.partitions.error_code": F.ERROR,
            "groups.error_code": F.ERROR,
            "groups.topics.topic_id": F.TOPIC_ID,
        },
    ),
    ApiKey.FIND_COORDINATOR: Row(
        request={
            "key": F.RESOURCE,  # a group id or a transactional id ...
            "key_type": F.RESOURCE,  # ... as this says (v0: a group id)
            "coordinator_keys": F.RESOURCE,
        },
        response={
            "error_code": F.ERROR,
            "node_id": F.BROKER,
            "host": F.BROKER,
            "port": F.BROKER,
            "throttle_time": F.SCALAR,
            "error_message": F.ERROR,
            "coordinators.key": F.RESOURCE,
            "coordinators.node_id": F.BROKER,
            "coordinators.host": F.BROKER,
            "coordinators.port": F.BROKER,
            "coordinators.error_code": F.ERROR,
            "coordinators.error_message": F.ERROR,
        },
    ),
    ApiKey.JOIN_GROUP: Row(
        request={
            "group_id": F.GROUP_ID,
            "session_timeout": F.SCALAR,
            "member_id": F.CONNECTION_STATE,
            "protocol_type": F.SCALAR,  # "consumer" makes the metadata BROKER_PARSED
            "protocols.name": F.SCALAR,  # an assignor's name ("range")
            "protocols.metadata": F.BROKER_PARSED,
            "rebalance_timeout": F.SCALAR,
            "group_instance_id": F.CONNECTION_STATE,
            "reason": F.OPAQUE_BYTES,  # free text, logged by the broker
        },
        response={
            "error_code": F.ERROR,
            "generation_id": F.CONNECTION_STATE,
            "protocol_name": F.SCALAR,
            "leader": F.CONNECTION_STATE,  # the leader's member id
            "member_id": F.CONNECTION_STATE,
            "members.member_id": F.CONNECTION_STATE,
            "members.metadata": F.BROKER_PARSED,
            "throttle_time": F.SCALAR,
            "members.group_instance_id": F.CONNECTION_STATE,
            "protocol_type": F.SCALAR,
            "skip_assignment": F.SCALAR,
        },
    ),
    ApiKey.HEARTBEAT: Row(
        request={
            "group_id": F.GROUP_ID,
            "generation_id": F.CONNECTION_STATE,
            "member_id": F.CONNECTION_STATE,
            "group_instance_id": F.CONNECTION_STATE,
        },
        response={
            "error_code": F.ERROR,
            "throttle_time": F.SCALAR,
        },
    ),
    ApiKey.LEAVE_GROUP: Row(
        request={
            "group_id": F.GROUP_ID,
            "member_id": F.CONNECTION_STATE,
            "members.member_id": F.CONNECTION_STATE,
            "members.group_instance_id": F.CONNECTION_STATE,
            "members.reason": F.OPAQUE_BYTES,
        },
        response={
            "error_code": F.ERROR,
            "throttle_time": F.SCALAR,
            "members.member_id": F.CONNECTION_STATE,
            "members.group_instance_id": F.CONNECTION_STATE,
            "members.error_code": F.ERROR,
        },
    ),
    ApiKey.SYNC_GROUP: Row(
        request={
            "group_id": F.GROUP_ID,
            "generation_id": F.CONNECTION_STATE,
            "member_id": F.CONNECTION_STATE,
            "assignments.member_id": F.CONNECTION_STATE,
            "assignments.assignment": F.BROKER_PARSED,
            "group_instance_id": F.CONNECTION_STATE,
            "protocol_type": F.SCALAR,
            "protocol_name": F.SCALAR,
        },
        response={
            "error_code": F.ERROR,
            "assignment": F.BROKER_PARSED,
            "throttle_time": F.SCALAR,
            "protocol_type": F.SCALAR,
            "protocol_name": F.SCALAR,
        },
    ),
    ApiKey.DESCRIBE_GROUPS: Row(
        request={
            "groups": F.GROUP_ID,
            "include_authorized_operations": F.SCALAR,
        },
        response={
            "groups.error_code": F.ERROR,
            "groups.group_id": F.GROUP_ID,
            "groups.group_state": F.SCALAR,
            "groups.protocol_type": F.SCALAR,
            "groups.protocol_data": F.SCALAR,  # the chosen assignor's name
            "groups.members.member_id": F.CONNECTION_STATE,
            "groups.members.client_id": F.CLIENT,
            "groups.members.client_host": F.CLIENT,  # as the broker saw it: a gateway
            "groups.members.member_metadata": F.BROKER_PARSED,
            "groups.members.member_assignment": F.BROKER_PARSED,
            "throttle_time": F.SCALAR,
            "groups.authorized_operations": F.SCALAR,
            "groups.members.group_instance_id": F.CONNECTION_STATE,
            "groups.error_message": F.ERROR,
        },
    ),
    ApiKey.LIST_GROUPS: Row(
        request={
            "states_filter": F.SCALAR,
            "types_filter": F.SCALAR,
        },
        response={
            "error_code": F.ERROR,
            "groups.group_id": F.GROUP_ID,
            "groups.protocol_type": F.SCALAR,
            "throttle_time": F.SCALAR,
            "groups.group_state": F.SCALAR,
            "groups.group_type": F.SCALAR,
        },
    ),
    ApiKey.SASL_HANDSHAKE: Row(  # answered by the gateway, never forwarded
        request={
            "mechanism": F.SCALAR,
        },
        response={
            "error_code": F.ERROR,
            "mechanisms": F.SCALAR,
        },
    ),
    ApiKey.API_VERSIONS: Row(  # the answer is cut to the rule table
        request={
            "client_software_name": F.CLIENT,
            "client_software_version": F.CLIENT,
        },
        response={
            "error_code": F.ERROR,
            "api_keys.api_key": F.SCALAR,
            "api_keys.min_version": F.SCALAR,
            "api_keys.max_version": F.SCALAR,
            "throttle_time": F.SCALAR,
            "supported_features.name": F.SCALAR,  # "metadata.version", ...
            "supported_features.min_version": F.SCALAR,
            "supported_features.max_version": F.SCALAR,
            "finalized_features_epoch": F.SCALAR,
            "finalized_features.name": F.SCALAR,
            "finalized_features.max_version_level": F.SCALAR,
            "finalized_features.min_version_level": F.SCALAR,
            "zk_migration_ready": F.SCALAR,
        },
    ),
    ApiKey.CREATE_TOPICS: Row(
        request={
            "topics.name": F.TOPIC_NAME,
            "topics.num_partitions": F.SCALAR,
            "topics.replication_factor": F.SCALAR,
            "topics.assignments.partition_index": F.SCALAR,
            "topics.assignments.broker_ids": F.BROKER,
            "topics.configs.name": F.CONFIG,
            "topics.configs.value": F.CONFIG,
            "timeout": F.SCALAR,
            "validate_only": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "topics.name": F.TOPIC_NAME,
            "topics.error_code": F.ERROR,
            "topics.error_message": F.ERROR,
            "topics.topic_config_error_code": F.ERROR,
            "topics.num_partitions": F.SCALAR,
            "topics.replication_factor": F.SCALAR,
            "topics.configs.name": F.CONFIG,
            "topics.configs.value": F.CONFIG,
            "topics.configs.read_only": F.SCALAR,
            "topics.configs.config_source": F.SCALAR,
            "topics.configs.is_sensitive": F.SCALAR,
            "topics.topic_id": F.TOPIC_ID,
        },
    ),
    ApiKey.DELETE_TOPICS: Row(
        request={
            "topic_names": F.TOPIC_NAME,
            "timeout": F.SCALAR,
            "topics.name": F.TOPIC_NAME,
            "topics.topic_id": F.TOPIC_ID,
        },
        response={
            "throttle_time": F.SCALAR,
            "responses.name": F.TOPIC_NAME,
            "responses.error_code": F.ERROR,
            "responses.error_message": F.ERROR,
            "responses.topic_id": F.TOPIC_ID,
        },
    ),
    ApiKey.DELETE_RECORDS: Row(
        request={
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.offset": F.SCALAR,
            "timeout": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.low_watermark": F.SCALAR,
            "topics.partitions.error_code": F.ERROR,
        },
    ),
    ApiKey.INIT_PRODUCER_ID: Row(
        request={
            "transactional_id": F.TRANSACTIONAL_ID,
            "transaction_timeout": F.SCALAR,
            "producer_id": F.CONNECTION_STATE,
            "producer_epoch": F.CONNECTION_STATE,
            "enable2_pc": F.SCALAR,
            "keep_prepared_txn": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "error_code": F.ERROR,
            "producer_id": F.CONNECTION_STATE,
            "producer_epoch": F.CONNECTION_STATE,
            "ongoing_txn_producer_id": F.CONNECTION_STATE,
            "ongoing_txn_producer_epoch": F.CONNECTION_STATE,
        },
    ),
    ApiKey.OFFSET_FOR_LEADER_EPOCH: Row(
        request={
            "topics.topic": F.TOPIC_NAME,
            "topics.partitions.partition": F.SCALAR,
            "topics.partitions.current_leader_epoch": F.SCALAR,
            "topics.partitions.leader_epoch": F.SCALAR,
            "replica_id": F.BROKER,
        },
        response={
            "throttle_time": F.SCALAR,
            "topics.topic": F.TOPIC_NAME,
            "topics.partitions.error_code": F.ERROR,
            "topics.partitions.partition": F.SCALAR,
            "topics.partitions.leader_epoch": F.SCALAR,
            "topics.partitions.end_offset": F.SCALAR,
        },
    ),
    ApiKey.ADD_PARTITIONS_TO_TXN: Row(
        request={
            "v3_and_below_transactional_id": F.TRANSACTIONAL_ID,
            "v3_and_below_producer_id": F.CONNECTION_STATE,
            "v3_and_below_producer_epoch": F.CONNECTION_STATE,
            "v3_and_below_topics.name": F.TOPIC_NAME,
            "v3_and_below_topics.partitions": F.SCALAR,
            "transactions.transactional_id": F.TRANSACTIONAL_ID,
            "transactions.producer_id": F.CONNECTION_STATE,
            "transactions.producer_epoch": F.CONNECTION_STATE,
            "transactions.verify_only": F.SCALAR,
            "transactions.topics.name": F.TOPIC_NAME,
            "transactions.topics.partitions": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "results_by_topic_v3_and_below.name": F.TOPIC_NAME,
            "results_by_topic_v3_and_below.results_by_partition.partition_index": F.SCALAR,
            "results_by_topic_v3_and_below.results_by_partition.partition_error_code": F.ERROR,
            "error_code": F.ERROR,
            "results_by_transaction.transactional_id": F.TRANSACTIONAL_ID,
            "results_by_transaction.topic_results.name": F.TOPIC_NAME,
            "results_by_transaction.topic_results.results_by_partition.partition_index": F.SCALAR,
            "results_by_transaction.topic_results.results_by_partition.partition_error_code": F.ERROR,
        },
    ),
    ApiKey.ADD_OFFSETS_TO_TXN: Row(
        request={
            "transactional_id": F.TRANSACTIONAL_ID,
            "producer_id": F.CONNECTION_STATE,
            "producer_epoch": F.CONNECTION_STATE,
            "group_id": F.GROUP_ID,
        },
        response={
            "throttle_time": F.SCALAR,
            "error_code": F.ERROR,
        },
    ),
    ApiKey.END_TXN: Row(
        request={
            "transactional_id": F.TRANSACTIONAL_ID,
            "producer_id": F.CONNECTION_STATE,
            "producer_epoch": F.CONNECTION_STATE,
            "committed": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "error_code": F.ERROR,
            "producer_id": F.CONNECTION_STATE,
            "producer_epoch": F.CONNECTION_STATE,
        },
    ),
    ApiKey.TXN_OFFSET_COMMIT: Row(
        request={
            "transactional_id": F.TRANSACTIONAL_ID,
            "group_id": F.GROUP_ID,
            "producer_id": F.CONNECTION_STATE,
            "producer_epoch": F.CONNECTION_STATE,
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.committed_offset": F.SCALAR,
            "topics.partitions.committed_metadata": F.OPAQUE_BYTES,
            "topics.partitions.committed_leader_epoch": F.SCALAR,
            "generation_id": F.CONNECTION_STATE,
            "member_id": F.CONNECTION_STATE,
            "group_instance_id": F.CONNECTION_STATE,
        },
        response={
            "throttle_time": F.SCALAR,
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.error_code": F.ERROR,
        },
    ),
    ApiKey.DESCRIBE_CONFIGS: Row(
        request={
            "resources.resource_type": F.RESOURCE,
            "resources.resource_name": F.RESOURCE,
            "resources.configuration_keys": F.CONFIG,
            "include_synonyms": F.SCALAR,
            "include_documentation": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "results.error_code": F.ERROR,
            "results.error_message": F.ERROR,
            "results.resource_type": F.RESOURCE,
            "results.resource_name": F.RESOURCE,
            "results.configs.name": F.CONFIG,
            "results.configs.value": F.CONFIG,
            "results.configs.read_only": F.SCALAR,
            "results.configs.config_source": F.SCALAR,
            "results.configs.is_sensitive": F.SCALAR,
            "results.configs.synonyms.name": F.CONFIG,
            "results.configs.synonyms.value": F.CONFIG,
            "results.configs.synonyms.source": F.SCALAR,
            "results.configs.config_type": F.SCALAR,
            "results.configs.documentation": F.CONFIG,  # text about the config
        },
    ),
    ApiKey.ALTER_CONFIGS: Row(
        request={
            "resources.resource_type": F.RESOURCE,
            "resources.resource_name": F.RESOURCE,
            "resources.configs.name": F.CONFIG,
            "resources.configs.value": F.CONFIG,
            "validate_only": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "responses.error_code": F.ERROR,
            "responses.error_message": F.ERROR,
            "responses.resource_type": F.RESOURCE,
            "responses.resource_name": F.RESOURCE,
        },
    ),
    ApiKey.SASL_AUTHENTICATE: Row(  # answered by the gateway, never forwarded
        request={
            "auth_bytes": F.OPAQUE_BYTES,
        },
        response={
            "error_code": F.ERROR,
            "error_message": F.ERROR,
            "auth_bytes": F.OPAQUE_BYTES,
            "session_lifetime": F.SCALAR,
        },
    ),
    ApiKey.CREATE_PARTITIONS: Row(
        request={
            "topics.name": F.TOPIC_NAME,
            "topics.count": F.SCALAR,
            "topics.assignments.broker_ids": F.BROKER,
            "timeout": F.SCALAR,
            "validate_only": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "results.name": F.TOPIC_NAME,
            "results.error_code": F.ERROR,
            "results.error_message": F.ERROR,
        },
    ),
    ApiKey.DELETE_GROUPS: Row(
        request={
            "groups_names": F.GROUP_ID,
        },
        response={
            "throttle_time": F.SCALAR,
            "results.group_id": F.GROUP_ID,
            "results.error_code": F.ERROR,
        },
    ),
    ApiKey.INCREMENTAL_ALTER_CONFIGS: Row(
        request={
            "resources.resource_type": F.RESOURCE,
            "resources.resource_name": F.RESOURCE,
            "resources.configs.name": F.CONFIG,
            "resources.configs.config_operation": F.SCALAR,
            "resources.configs.value": F.CONFIG,
            "validate_only": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "responses.error_code": F.ERROR,
            "responses.error_message": F.ERROR,
            "responses.resource_type": F.RESOURCE,
            "responses.resource_name": F.RESOURCE,
        },
    ),
    ApiKey.OFFSET_DELETE: Row(
        request={
            "group_id": F.GROUP_ID,
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
        },
        response={
            "error_code": F.ERROR,
            "throttle_time": F.SCALAR,
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.error_code": F.ERROR,
        },
    ),
    ApiKey.DESCRIBE_CLUSTER: Row(
        request={
            "include_cluster_authorized_operations": F.SCALAR,
            "endpoint_type": F.BROKER,  # brokers or controllers: which nodes are listed
            "include_fenced_brokers": F.BROKER,
        },
        response={
            "throttle_time": F.SCALAR,
            "error_code": F.ERROR,
            "error_message": F.ERROR,
            "cluster_id": F.BROKER,
            "controller_id": F.BROKER,
            "brokers.broker_id": F.BROKER,
            "brokers.host": F.BROKER,
            "brokers.port": F.BROKER,
            "brokers.rack": F.BROKER,
            "cluster_authorized_operations": F.SCALAR,
            "endpoint_type": F.BROKER,
            "brokers.is_fenced": F.BROKER,
        },
    ),
    ApiKey.DESCRIBE_PRODUCERS: Row(
        request={
            "topics.name": F.TOPIC_NAME,
            "topics.partition_indexes": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "topics.name": F.TOPIC_NAME,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.error_code": F.ERROR,
            "topics.partitions.error_message": F.ERROR,
            "topics.partitions.active_producers.producer_id": F.CONNECTION_STATE,
            "topics.partitions.active_producers.producer_epoch": F.CONNECTION_STATE,
            "topics.partitions.active_producers.last_sequence": F.SCALAR,
            "topics.partitions.active_producers.last_timestamp": F.SCALAR,
            "topics.partitions.active_producers.coordinator_epoch": F.SCALAR,  # a count
            "topics.partitions.active_producers.current_txn_start_offset": F.SCALAR,
        },
    ),
    ApiKey.DESCRIBE_TRANSACTIONS: Row(
        request={
            "transactional_ids": F.TRANSACTIONAL_ID,
        },
        response={
            "throttle_time": F.SCALAR,
            "transaction_states.error_code": F.ERROR,
            "transaction_states.transactional_id": F.TRANSACTIONAL_ID,
            "transaction_states.transaction_state": F.SCALAR,
            "transaction_states.transaction_timeout": F.SCALAR,
            "transaction_states.transaction_start_time": F.SCALAR,
            "transaction_states.producer_id": F.CONNECTION_STATE,
            "transaction_states.producer_epoch": F.CONNECTION_STATE,
            "transaction_states.topics.topic": F.TOPIC_NAME,
            "transaction_states.topics.partitions": F.SCALAR,
        },
    ),
    ApiKey.LIST_TRANSACTIONS: Row(
        request={
            "state_filters": F.SCALAR,
            "producer_id_filters": F.CONNECTION_STATE,  # producer ids
            "duration_filter": F.SCALAR,
            "transactional_id_pattern": F.PATTERN,
        },
        response={
            "throttle_time": F.SCALAR,
            "error_code": F.ERROR,
            "unknown_state_filters": F.SCALAR,
            "transaction_states.transactional_id": F.TRANSACTIONAL_ID,
            "transaction_states.producer_id": F.CONNECTION_STATE,
            "transaction_states.transaction_state": F.SCALAR,
        },
    ),
    ApiKey.CONSUMER_GROUP_HEARTBEAT: Row(
        request={
            "group_id": F.GROUP_ID,
            "member_id": F.CONNECTION_STATE,
            "member_epoch": F.CONNECTION_STATE,
            "instance_id": F.CONNECTION_STATE,
            "rack_id": F.CLIENT,
            "rebalance_timeout": F.SCALAR,
            "subscribed_topic_names": F.TOPIC_NAME,
            "server_assignor": F.SCALAR,
            "topic_partitions.topic_id": F.TOPIC_ID,
            "topic_partitions.partitions": F.SCALAR,
            "subscribed_topic_regex": F.PATTERN,
        },
        response={
            "throttle_time": F.SCALAR,
            "error_code": F.ERROR,
            "error_message": F.ERROR,
            "member_id": F.CONNECTION_STATE,
            "member_epoch": F.CONNECTION_STATE,
            "heartbeat_interval": F.SCALAR,
            "assignment.topic_partitions.topic_id": F.TOPIC_ID,
            "assignment.topic_partitions.partitions": F.SCALAR,
        },
    ),
    ApiKey.CONSUMER_GROUP_DESCRIBE: Row(
        request={
            "group_ids": F.GROUP_ID,
            "include_authorized_operations": F.SCALAR,
        },
        response={
            "throttle_time": F.SCALAR,
            "groups.error_code": F.ERROR,
            "groups.error_message": F.ERROR,
            "groups.group_id": F.GROUP_ID,
            "groups.group_state": F.SCALAR,
            "groups.group_epoch": F.CONNECTION_STATE,
            "groups.assignment_epoch": F.CONNECTION_STATE,
            "groups.assignor_name": F.SCALAR,
            "groups.members.member_id": F.CONNECTION_STATE,
            "groups.members.instance_id": F.CONNECTION_STATE,
            "groups.members.rack_id": F.CLIENT,
            "groups.members.member_epoch": F.CONNECTION_STATE,
            "groups.members.client_id": F.CLIENT,
            "groups.members.client_host": F.CLIENT,
            "groups.members.subscribed_topic_names": F.TOPIC_NAME,
            "groups.members.subscribed_topic_regex": F.PATTERN,
            "groups.members.assignment.topic_partitions.topic_id": F.TOPIC_ID,
            "groups.members.assignment.topic_partitions.topic_name": F.TOPIC_NAME,
            "groups.members.assignment.topic_partitions.partitions": F.SCALAR,
            "groups.members.target_assignment.topic_partitions.topic_id": F.TOPIC_ID,
            "groups.members.target_assignment.topic_partitions.topic_name": F.TOPIC_NAME,
            "groups.members.target_assignment.topic_partitions.partitions": F.SCALAR,
            "groups.authorized_operations": F.SCALAR,
            "groups.members.member_type": F.SCALAR,
        },
    ),
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: Row(
        request={
            "topics.name": F.TOPIC_NAME,
            "response_partition_limit": F.SCALAR,
            # The paging cursor is state the broker hands out, but its topic
            # is a topic name like any other (the walker renames it).
            "cursor.topic_name": F.TOPIC_NAME,
            "cursor.partition_index": F.CONNECTION_STATE,
        },
        response={
            "throttle_time": F.SCALAR,
            "topics.error_code": F.ERROR,
            "topics.name": F.TOPIC_NAME,
            "topics.topic_id": F.TOPIC_ID,
            "topics.is_internal": F.SCALAR,
            "topics.partitions.error_code": F.ERROR,
            "topics.partitions.partition_index": F.SCALAR,
            "topics.partitions.leader_id": F.BROKER,
            "topics.partitions.leader_epoch": F.SCALAR,
            "topics.partitions.replica_nodes": F.BROKER,
            "topics.partitions.isr_nodes": F.BROKER,
            "topics.partitions.eligible_leader_replicas": F.BROKER,
            "topics.partitions.last_known_elr": F.BROKER,
            "topics.partitions.offline_replicas": F.BROKER,
            "topics.topic_authorized_operations": F.SCALAR,
            "next_cursor.topic_name": F.TOPIC_NAME,
            "next_cursor.partition_index": F.CONNECTION_STATE,
        },
    ),
}


_SIDES = (("request", EntityType.request), ("response", EntityType.response))


def _base(hint):
    """A field's type with Optional and tuple peeled off (``tuple[X | None, ...]``
    -> X), so entities inside lists are walked into too."""
    while True:
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(args) != 1:
                return hint
            hint = args[0]
        elif origin is tuple:
            hint = typing.get_args(hint)[0]
        else:
            return hint


def _leaves(cls, prefix=""):
    """The dotted paths of the non-entity fields of *cls*, entities walked into."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base = _base(hints[f.name])
        if dataclasses.is_dataclass(base):
            yield from _leaves(base, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


@lru_cache(maxsize=None)
def field_paths(api_key, version, side):
    """The field paths of one version's request or response ("request" or
    "response"), or None when kio does not model that version."""
    entity_type = dict(_SIDES)[side]
    cls = payload_class(api_key, version, entity_type)
    return None if cls is None else tuple(dict.fromkeys(_leaves(cls)))


def unclassified(api_key, version, table=TABLE):
    """The field paths of this version's request and response that *table*
    does not classify (all of them for an API it lacks).  A version kio does
    not model cannot be checked: LookupError."""
    row = table.get(api_key)
    missing = []
    for side, _ in _SIDES:
        paths = field_paths(api_key, version, side)
        if paths is None:
            raise LookupError(f"kio has no {side} for API {api_key} v{version}")
        known = {} if row is None else getattr(row, side)
        missing.extend(p for p in paths if p not in known)
    return missing


def offered_range(api_key, low, high, table=TABLE):
    """(low, high'): high' the last version such that every version from *low*
    has every field classified; None if *low* itself has one that is not."""
    top = None
    for version in range(low, high + 1):
        try:
            if unclassified(api_key, version, table):
                break
        except LookupError:
            break
        top = version
    return None if top is None else (low, top)


def classified(rules, table=TABLE):
    """*rules* (api key -> Rule) with each row capped to its classified versions;
    rows with none left are dropped (fail closed)."""
    capped = {}
    for key, rule in rules.items():
        offered = offered_range(key, rule.min_version, rule.max_version, table)
        if offered is not None:
            capped[key] = dataclasses.replace(rule, max_version=offered[1])
    return capped


def _versions(api_key, side, path):
    """Where *path* exists, within kio's versions: "v3-12", "v0-2, v5"."""
    low, high = codec_versions(api_key)
    present = [v for v in range(low, high + 1)
               if path in (field_paths(api_key, v, side) or ())]
    spans = []
    for v in present:
        if spans and spans[-1][1] == v - 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ", ".join(f"v{a}" if a == b else f"v{a}-{b}" for a, b in spans)


def _title(api_key):
    return "".join(part.capitalize() for part in ApiKey(api_key).name.split("_"))


def markdown(table=TABLE):
    """The field section of docs/api-rules.md: each API's fields and classes."""
    lines = [
        "",
        "## Fields of the APIs offered to virtual clusters",
        "",
        "Generated from `vkafka/tenancy/fields.py`. Every field of every request and",
        "response offered to virtual clusters is classified by what it is; a version",
        "with a field that is not classified is not offered (fail closed, to the",
        "field). Paths go through nested entities; versions are those where kio",
        "models the field.",
        "",
        "| class | what it is |",
        "|---|---|",
    ]
    lines += [f"| {field.name} | {field.value} |" for field in Field]
    for key in sorted(table):
        lines += ["", f"### {int(key)} {_title(key)}", "",
                  "| | field | class | versions |", "|---|---|---|---|"]
        for side, _ in _SIDES:
            for path, field in getattr(table[key], side).items():
                lines.append(f"| {side} | `{path}` | {field.name} | "
                             f"{_versions(key, side, path)} |")
    return "\n".join(lines) + "\n"


def main():
    """Print what kio models for the tenant APIs that this table leaves
    unclassified (after a kio upgrade, say), by API, version and side."""
    for key in ApiKey:
        low, high = codec_versions(key)
        for version in range(low, high + 1):
            for side, _ in _SIDES:
                known = getattr(TABLE[key], side)
                for path in field_paths(key, version, side) or ():
                    if path not in known:
                        print(f"{key.name} v{version} {side}: {path}")


if __name__ == "__main__":
    main()
