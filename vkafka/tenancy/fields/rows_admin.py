# -*- test-case-name: tests.test_fields -*-
"""Field classes of the topic and config admin APIs.

CreateTopics, CreatePartitions, DeleteTopics and DeleteRecords (a tenant's
topics and their data), DescribeConfigs, AlterConfigs and
IncrementalAlterConfigs (config resources: a kind and a name, see
``Field.RESOURCE``).
"""

from .kinds import ApiKey, F, Row

# Paths are dotted through nested entities, in the order kio's versions
# introduce them; docs/api-rules.md shows the versions of each.
ADMIN_ROWS = {
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
    ApiKey.DESCRIBE_ACLS: Row(  # answered by the gateway (rules/acls.py)
        request={
            "resource_type_filter": F.ACL,
            "resource_name_filter": F.ACL,
            "pattern_type_filter": F.ACL,
            "principal_filter": F.ACL,
            "host_filter": F.ACL,
            "operation": F.ACL,
            "permission_type": F.ACL,
        },
        response={
            "throttle_time": F.SCALAR,
            "error_code": F.ERROR,
            "error_message": F.ERROR,
            "resources.resource_type": F.ACL,
            "resources.resource_name": F.ACL,
            "resources.pattern_type": F.ACL,
            "resources.acls.principal": F.ACL,
            "resources.acls.host": F.ACL,
            "resources.acls.operation": F.ACL,
            "resources.acls.permission_type": F.ACL,
        },
    ),
    ApiKey.CREATE_ACLS: Row(
        request={
            "creations.resource_type": F.ACL,
            "creations.resource_name": F.ACL,
            "creations.resource_pattern_type": F.ACL,
            "creations.principal": F.ACL,
            "creations.host": F.ACL,
            "creations.operation": F.ACL,
            "creations.permission_type": F.ACL,
        },
        response={
            "throttle_time": F.SCALAR,
            "results.error_code": F.ERROR,
            "results.error_message": F.ERROR,
        },
    ),
    ApiKey.DELETE_ACLS: Row(
        request={
            "filters.resource_type_filter": F.ACL,
            "filters.resource_name_filter": F.ACL,
            "filters.pattern_type_filter": F.ACL,
            "filters.principal_filter": F.ACL,
            "filters.host_filter": F.ACL,
            "filters.operation": F.ACL,
            "filters.permission_type": F.ACL,
        },
        response={
            "throttle_time": F.SCALAR,
            "filter_results.error_code": F.ERROR,
            "filter_results.error_message": F.ERROR,
            "filter_results.matching_acls.error_code": F.ERROR,
            "filter_results.matching_acls.error_message": F.ERROR,
            "filter_results.matching_acls.resource_type": F.ACL,
            "filter_results.matching_acls.resource_name": F.ACL,
            "filter_results.matching_acls.pattern_type": F.ACL,
            "filter_results.matching_acls.principal": F.ACL,
            "filter_results.matching_acls.host": F.ACL,
            "filter_results.matching_acls.operation": F.ACL,
            "filter_results.matching_acls.permission_type": F.ACL,
        },
    ),
}
