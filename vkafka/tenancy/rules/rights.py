# -*- test-case-name: tests.test_rights -*-
"""What each API needs when a virtual cluster's ACLs are on, as Kafka's
brokers check it (KafkaApis), and the ACL APIs answered by the gateway.

A tenant API with no row here is refused while ACLs are on (fail closed):
tests/test_rights.py checks every row of the tenant table has one.
"""

from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.static.constants import EntityType
from kio.static.primitive import i16, i64

from ...protocol.codec import encode_body
from ..naming import GROUP, TOPIC, TRANSACTION
from ..rights import NOTHING, Needs
from .common import NO_THROTTLE

READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = (
    "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE")
DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = (
    "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE")

NEEDS = {
    0: Needs(topic=WRITE, transaction=WRITE, whole=(TRANSACTION,)),  # Produce
    1: Needs(topic=READ),                                            # Fetch
    2: Needs(topic=DESCRIBE),                                        # ListOffsets
    3: Needs(topic=DESCRIBE, lists=(TOPIC,)),                        # Metadata
    8: Needs(topic=READ, group=READ, whole=(GROUP,)),                # OffsetCommit
    9: Needs(topic=DESCRIBE, group=DESCRIBE, whole=(GROUP,),         # OffsetFetch
             lists=(TOPIC,)),
    10: Needs(group=DESCRIBE, transaction=DESCRIBE),                 # FindCoordinator
    11: Needs(group=READ, whole=(GROUP,)),                           # JoinGroup
    12: Needs(group=READ, whole=(GROUP,)),                           # Heartbeat
    13: Needs(group=READ, whole=(GROUP,)),                           # LeaveGroup
    14: Needs(group=READ, whole=(GROUP,)),                           # SyncGroup
    15: Needs(group=DESCRIBE),                                       # DescribeGroups
    16: Needs(lists=(GROUP,), cluster_sees_all=True),                # ListGroups
    17: NOTHING, 36: NOTHING,            # SASL: answered before any principal
    18: NOTHING,                                                     # ApiVersions
    19: Needs(topic=CREATE, create_on_cluster=True),                 # CreateTopics
    20: Needs(topic=DELETE),                                         # DeleteTopics
    21: Needs(topic=DELETE),                                         # DeleteRecords
    22: Needs(transaction=WRITE, whole=(TRANSACTION,)),              # InitProducerId
    23: Needs(topic=DESCRIBE),                                 # OffsetForLeaderEpoch
    24: Needs(topic=WRITE, transaction=WRITE, whole=(TRANSACTION,)),  # AddPartitionsToTxn
    25: Needs(transaction=WRITE, group=READ, whole=(TRANSACTION, GROUP)),  # AddOffsetsToTxn
    26: Needs(transaction=WRITE, whole=(TRANSACTION,)),              # EndTxn
    28: Needs(topic=READ, group=READ, transaction=WRITE,             # TxnOffsetCommit
              whole=(TRANSACTION, GROUP)),
    29: Needs(cluster=DESCRIBE),                                     # DescribeAcls
    30: Needs(cluster=ALTER),                                        # CreateAcls
    31: Needs(cluster=ALTER),                                        # DeleteAcls
    32: Needs(topic=DESCRIBE_CONFIGS, group=DESCRIBE_CONFIGS,        # DescribeConfigs
              cluster=DESCRIBE_CONFIGS),
    33: Needs(topic=ALTER_CONFIGS, group=ALTER_CONFIGS),             # AlterConfigs
    37: Needs(topic=ALTER),                                          # CreatePartitions
    42: Needs(group=DELETE),                                         # DeleteGroups
    44: Needs(topic=ALTER_CONFIGS, group=ALTER_CONFIGS),       # IncrementalAlterConfigs
    47: Needs(topic=READ, group=DELETE, whole=(GROUP,)),             # OffsetDelete
    60: NOTHING,                                                     # DescribeCluster
    61: Needs(topic=READ),                                           # DescribeProducers
    65: Needs(transaction=DESCRIBE, lists=(TOPIC,)),                # DescribeTransactions
    66: Needs(lists=(TRANSACTION,)),                                 # ListTransactions
    68: Needs(topic=DESCRIBE, group=READ, whole=(GROUP, TOPIC)),     # ConsumerGroupHeartbeat
    69: Needs(group=DESCRIBE),                                       # ConsumerGroupDescribe
    75: Needs(topic=DESCRIBE, lists=(TOPIC,)),               # DescribeTopicPartitions
}
"""api key -> Needs."""


def idempotent_producer(services, rctx, request):
    """InitProducerId without a transactional id (an idempotent producer)
    needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic (KIP-679);
    without either it is answered CLUSTER_AUTHORIZATION_FAILED, no producer
    id asked of the broker."""
    rights = rctx.rights
    if rights is None or request.transactional_id is not None or \
            rights.on_cluster(IDEMPOTENT_WRITE) or rights.any_of(WRITE, TOPIC):
        return request
    rights.tell(IDEMPOTENT_WRITE, "CLUSTER", "kafka-cluster")
    module = load_payload_module(22, request.__version__, EntityType.response)
    rctx.answer = encode_body(module.InitProducerIdResponse(
        throttle_time=NO_THROTTLE, error_code=ErrorCode.cluster_authorization_failed,
        producer_id=i64(-1), producer_epoch=i16(-1)))
    return request
