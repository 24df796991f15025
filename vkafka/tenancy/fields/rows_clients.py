# -*- test-case-name: tests.test_fields -*-
"""Field classes of what every producer and consumer sends: connect, discover, read, write.

ApiVersions and SASL (answered by the gateway), Metadata, DescribeCluster and
DescribeTopicPartitions (finding topics and brokers), Produce, Fetch,
ListOffsets and OffsetForLeaderEpoch (the data path).  Consumer groups are in
rows_groups.py, transactions in rows_transactions.py, topic and config admin in
rows_admin.py; the package __init__ joins them into ``TABLE``.
"""

from .kinds import ApiKey, F, Row

# Paths are dotted through nested entities, in the order kio's versions
# introduce them; docs/api-rules.md shows the versions of each.
CLIENT_ROWS = {
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
