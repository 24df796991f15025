# -*- test-case-name: tests.test_fields -*-
"""Field classes of the idempotent and transactional producer APIs.

InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and
TxnOffsetCommit (a transaction's life), and DescribeProducers,
DescribeTransactions and ListTransactions (looking at them): the APIs that
name transactional ids and carry producer ids and epochs.
"""

from .kinds import ApiKey, F, Row

# Paths are dotted through nested entities, in the order kio's versions
# introduce them; docs/api-rules.md shows the versions of each.
TRANSACTION_ROWS = {
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
}
