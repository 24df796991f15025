# -*- test-case-name: tests.test_fields -*-
"""Field classes of the consumer group APIs: coordination, membership, offsets.

FindCoordinator, the classic protocol (JoinGroup, SyncGroup, Heartbeat,
LeaveGroup), the new one (ConsumerGroupHeartbeat, ConsumerGroupDescribe),
committed offsets (OffsetCommit, OffsetFetch, OffsetDelete) and group admin
(DescribeGroups, ListGroups, DeleteGroups): the APIs that name group ids.
"""

from .kinds import ApiKey, F, Row

# Paths are dotted through nested entities, in the order kio's versions
# introduce them; docs/api-rules.md shows the versions of each.
GROUP_ROWS = {
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
}
