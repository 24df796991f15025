"""Kafka ACLs inside a virtual cluster (issue 22), on real Kafka with stock
clients, against a real broker with Kafka's own authorizer in the same run.

The broker: a one-node KRaft cluster of this class's own with the
StandardAuthorizer (``devstack.start_acl_broker``), a SASL/PLAIN user per
account of the table below.  The gateway: a tenant gateway on a state topic
of its own in front of the shared cluster, a virtual cluster with its ACLs
on and "admin" its super user, the same account names (tokens).  The same
ACLs go on both (the gateway: the stock ``kafka-acls`` run as "admin"; the
broker: the Admin client, and both DescribeAcls listings must be equal), the
same requests are sent by the same account names (raw requests, kio
classes), and the Kafka error codes and listings are compared, case by case;
the table is printed and any difference fails the test.  Then: kafka-acls/kafka-topics/console clients through the gateway,
transactional and idempotent producers (confluent-kafka) with exactly the
rights Kafka requires, and two gateways on one state topic deciding the same
within a second of a change.
"""

import concurrent.futures
import datetime
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64
from twisted.trial import unittest

from . import stack
from .kafka_messages import fetch_request, produce_records, record_batch
from .rawclient import RawClient
from .stack import devstack
from .test_limits_integration import admin

SECONDS = i32Timedelta.parse(datetime.timedelta(seconds=10))
TX_TIMEOUT = i32Timedelta.parse(datetime.timedelta(seconds=60))

ACCOUNTS = ("admin", "reader", "prefixer", "star", "denier", "wild", "describer",
            "configurer", "cclust", "ctopic", "cnone", "deleter", "txok", "txno",
            "idem", "allop", "lister", "clusterdesc", "txapp", "txnow", "idemw",
            "clireader", "sync")
"""Every account name of the tests: a PLAIN user of the broker (password
"<name>-secret"), a service account of the virtual cluster (a token)."""

TOPICS = ("orders", "secret", "app.x", "app.secret", "denied", "del.a", "del.b",
          "out")
GROUPS = ("g.reader", "g.other", "g.tx")

ALLOW, DENY = "--allow-principal", "--deny-principal"
ACLS = [
    # READ-only account
    (ALLOW, "User:reader", "--operation", "Read", "--topic", "orders",
     "--group", "g.reader"),
    # prefixed ALLOW, literal DENY
    (ALLOW, "User:prefixer", "--operation", "Write", "--topic", "app.",
     "--resource-pattern-type", "prefixed"),
    (DENY, "User:prefixer", "--operation", "Write", "--topic", "app.secret"),
    # '*' literal, a DENY beside it
    (ALLOW, "User:star", "--operation", "Read", "--topic", "*"),
    (DENY, "User:star", "--operation", "Read", "--topic", "secret"),
    # DENY beats ALLOW (ALL allowed, WRITE denied)
    (ALLOW, "User:denier", "--operation", "All", "--topic", "orders"),
    (DENY, "User:denier", "--operation", "Write", "--topic", "orders"),
    # a DENY for User:* beats the account's own ALLOW
    (ALLOW, "User:wild", "--operation", "Read", "--topic", "denied"),
    (DENY, "User:*", "--operation", "Read", "--topic", "denied"),
    (ALLOW, "User:describer", "--operation", "Describe", "--topic", "orders"),
    (ALLOW, "User:configurer", "--operation", "AlterConfigs", "--topic", "orders"),
    (ALLOW, "User:cclust", "--operation", "Create", "--cluster"),
    (ALLOW, "User:ctopic", "--operation", "Create", "--topic", "new.",
     "--resource-pattern-type", "prefixed"),
    (ALLOW, "User:deleter", "--operation", "Delete", "--topic", "del.a"),
    (ALLOW, "User:txok", "--operation", "Write", "--transactional-id", "tx1",
     "--topic", "orders"),
    (ALLOW, "User:txok", "--operation", "Read", "--group", "g.tx", "--topic",
     "orders"),
    (ALLOW, "User:txno", "--operation", "Write", "--topic", "orders"),
    (ALLOW, "User:txno", "--operation", "Read", "--group", "g.tx"),
    (ALLOW, "User:idem", "--operation", "IdempotentWrite", "--cluster"),
    (ALLOW, "User:allop", "--operation", "All", "--topic", "orders"),
    (ALLOW, "User:lister", "--operation", "Describe", "--group", "g.reader"),
    (ALLOW, "User:clusterdesc", "--operation", "Describe", "--cluster"),
    # part 3: a transactional producer (consume-transform-produce)
    (ALLOW, "User:txapp", "--operation", "Write", "--transactional-id", "tx.app",
     "--topic", "out"),
    (ALLOW, "User:txapp", "--operation", "Read", "--group", "g.txapp", "--topic",
     "orders"),
    (ALLOW, "User:txnow", "--operation", "Write", "--topic", "out"),
    (ALLOW, "User:txnow", "--operation", "Read", "--group", "g.txapp", "--topic",
     "orders"),
    (ALLOW, "User:idemw", "--operation", "Write", "--topic", "out"),
]
"""kafka-acls --add arguments, the same on the broker and the gateway."""


def bindings(args):
    """The confluent-kafka AclBindings of one kafka-acls --add argument list."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType,
                                       ResourcePatternType, ResourceType)
    permission = AclPermissionType.ALLOW if args[0] == ALLOW else AclPermissionType.DENY
    principal, operation, pattern = args[1], None, ResourcePatternType.LITERAL
    resources, rest = [], list(args[2:])
    while rest:
        flag = rest.pop(0)
        if flag == "--cluster":
            resources.append((ResourceType.BROKER, "kafka-cluster"))
            continue
        value = rest.pop(0)
        if flag == "--operation":
            operation = AclOperation[re.sub(r"(?<!^)([A-Z])", r"_\1", value).upper()]
        elif flag == "--resource-pattern-type":
            pattern = ResourcePatternType[value.upper()]
        else:
            resources.append(({"--topic": ResourceType.TOPIC, "--group": ResourceType.GROUP,
                               "--transactional-id": ResourceType.TRANSACTIONAL_ID}[flag],
                              value))
    return [AclBinding(rtype, name, pattern, principal, "*", operation, permission)
            for rtype, name in resources]


def code_name(code):
    return ErrorCode(code).name.upper()


def properties(path, username, password):
    Path(path).write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
        f"required username='{username}' password='{password}';\n")
    return str(path)


class Side:
    """The broker or the gateway, as the accounts see it: raw clients
    (authenticated, one per account and port), the CLIs' properties files."""

    def __init__(self, name, bootstrap, passwords, directory):
        self.name = name
        self.bootstrap = bootstrap
        self.host, port = bootstrap.rsplit(":", 1)
        self.port = int(port)
        self.passwords = dict(passwords)
        self.props = {a: properties(Path(directory) / f"{name}-{a}.properties", a, p)
                      for a, p in self.passwords.items()}
        self.clients = {}
        self.pinned = None  # a port every coordinator request goes to (everywhere)
        self.producers = {}  # account -> (producer id, epoch) of its InitProducerId

    def client(self, account, port=None):
        key = (account, port or self.port)
        if key not in self.clients:
            raw = RawClient(self.host, key[1])
            answer = raw.sasl_plain(account, self.passwords[account])
            assert answer.error_code == ErrorCode.none, (self.name, account, answer)
            self.clients[key] = raw
        return self.clients[key]

    def close(self):
        for raw in self.clients.values():
            raw.close()
        self.clients.clear()

    def config(self, account, **extra):
        """A confluent-kafka configuration of *account*."""
        return {"bootstrap.servers": self.bootstrap,
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": account, "sasl.password": self.passwords[account],
                "logger": QUIET, **extra}

    def request(self, account, body, version, port=None):
        answer = self.client(account, port).request(body, version)
        assert answer is not None, f"{self.name} closed {account}'s connection"
        return answer

    def acls(self, *args, account="admin"):
        return stack.run_cli("kafka-acls", "--bootstrap-server", self.bootstrap,
                             "--command-config", self.props[account], *args)

    # -- where to send (asked as admin) --------------------------------------

    def metadata(self, account, names=None):
        from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
        topics = None if names is None else tuple(
            MetadataRequestTopic(topic_id=None, name=n) for n in names)
        return self.request(account, MetadataRequest(
            topics=topics, allow_auto_topic_creation=False,
            include_topic_authorized_operations=False), 12)

    def ports(self):
        return {b.node_id: b.port for b in self.metadata("admin", []).brokers}

    def leader_port(self, topic):
        answer = self.metadata("admin", [topic])
        [found] = answer.topics
        assert found.error_code == ErrorCode.none, (self.name, topic, found)
        leader = found.partitions[0].leader_id
        return {b.node_id: b.port for b in answer.brokers}[leader]

    def coordinator_port(self, key, key_type=0):
        """The port of the coordinator of *key* (polled while the internal
        topics are being made: COORDINATOR_NOT_AVAILABLE)."""
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        if self.pinned is not None:
            return self.pinned

        def find():
            [found] = self.request("admin", FindCoordinatorRequest(
                key_type=i8(key_type), coordinator_keys=(key,)), 4).coordinators
            if found.error_code == ErrorCode.coordinator_not_available:
                return None
            assert found.error_code == ErrorCode.none, (self.name, key, found)
            return found.port
        return stack.wait_until(find, f"{self.name}'s coordinator of {key}", 60)


# -- the actions: each returns what is compared ---------------------------------

ROUNDS = 5


def everywhere(action):
    """*action* sent to every broker in place of the coordinator, ROUNDS
    times: the distinct answers.  A refused group or transactional id is
    refused wherever the request goes; through the gateway it becomes a decoy
    name whose coordinator may be any broker (a decoy may differ from one
    request to the next), so each broker's answer is compared, often enough
    that one of them is the decoy's coordinator."""
    def act(side):
        answers = set()
        for port in sorted(side.ports().values()) * ROUNDS:
            side.pinned = port
            try:
                answers.add(action(side))
            finally:
                side.pinned = None
        return " | ".join(sorted(answers))
    act.everywhere = True
    return act


def produce(account, topic):
    def act(side):
        answer = side.request(account, produce_records(topic, record_batch(1)), 9,
                              side.leader_port(topic))
        return code_name(answer.responses[0].partition_responses[0].error_code)
    return act


def produce_many(account, *topics):
    """One Produce naming several topics, sent to the first one's leader."""
    def act(side):
        import importlib
        m = importlib.import_module("kio.schema.produce.v9.request")
        body = produce_records(topics[0], record_batch(1))
        body = m.ProduceRequest(
            transactional_id=None, acks=body.acks, timeout=body.timeout,
            topic_data=tuple(m.TopicProduceData(name=t, partition_data=(
                m.PartitionProduceData(index=i32(0), records=record_batch(1)),))
                for t in topics))
        answer = side.request(account, body, 9, side.leader_port(topics[0]))
        codes = {r.name: code_name(r.partition_responses[0].error_code)
                 for r in answer.responses}
        return "; ".join(f"{t} {codes.get(t, '(absent)')}" for t in topics)
    return act


def fetch(account, topic):
    def act(side):
        answer = side.request(account, fetch_request(topic), 12, side.leader_port(topic))
        if answer.error_code != ErrorCode.none:
            return code_name(answer.error_code)
        return code_name(answer.responses[0].partitions[0].error_code)
    return act


def list_offsets(account, topic):
    def act(side):
        from kio.schema.list_offsets.v7.request import (
            ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic)
        answer = side.request(account, ListOffsetsRequest(
            replica_id=i32(-1), isolation_level=i8(0), topics=(ListOffsetsTopic(
                name=topic, partitions=(ListOffsetsPartition(
                    partition_index=i32(0), current_leader_epoch=i32(-1),
                    timestamp=i64(-1)),)),)), 7, side.leader_port(topic))
        return code_name(answer.topics[0].partitions[0].error_code)
    return act


def metadata_all(account):
    """The all-topics listing (internal topics apart: see metadata_internal)."""
    def act(side):
        topics = side.metadata(account).topics
        return ",".join(sorted(t.name for t in topics if not t.is_internal)) or "-"
    return act


def metadata_internal(account):
    def act(side):
        topics = side.metadata(account).topics
        return ",".join(sorted(t.name for t in topics if t.is_internal)) or "-"
    return act


def metadata(account, *names):
    def act(side):
        answer = side.metadata(account, names)
        codes = {t.name: code_name(t.error_code) for t in answer.topics}
        return " ".join(codes.get(n, "(absent)") for n in names)
    return act


def init_producer(account, txn=None):
    """InitProducerId (idempotent without *txn*), sent to the transaction
    coordinator of *txn*; the producer id is kept for the next requests."""
    def act(side):
        from kio.schema.init_producer_id.v4.request import InitProducerIdRequest

        def answered():
            """The answer, or None while the coordinator is loading (a fresh
            cluster's transaction state), which either side may meet first."""
            port = side.coordinator_port(txn, 1) if txn else None
            answer = side.request(account, InitProducerIdRequest(
                transactional_id=txn, transaction_timeout=TX_TIMEOUT,
                producer_id=i64(-1), producer_epoch=i16(-1)), 4, port)
            return None if answer.error_code in (14, 15, 16) else answer
        answer = stack.wait_until(answered, "a transaction coordinator", 60)
        side.producers[account] = (answer.producer_id, answer.producer_epoch)
        return code_name(answer.error_code)
    return act


def add_offsets(account, txn, group):
    def act(side):
        from kio.schema.add_offsets_to_txn.v3.request import AddOffsetsToTxnRequest
        pid, epoch = side.producers.get(account, (-1, -1))
        answer = side.request(account, AddOffsetsToTxnRequest(
            transactional_id=txn, producer_id=i64(pid), producer_epoch=i16(epoch),
            group_id=group), 3, side.coordinator_port(txn, 1))
        return code_name(answer.error_code)
    return act


def txn_offset_commit(account, txn, group, topic):
    def act(side):
        from kio.schema.txn_offset_commit.v3.request import (
            TxnOffsetCommitRequest, TxnOffsetCommitRequestPartition,
            TxnOffsetCommitRequestTopic)
        pid, epoch = side.producers.get(account, (-1, -1))
        answer = side.request(account, TxnOffsetCommitRequest(
            transactional_id=txn, group_id=group, producer_id=i64(pid),
            producer_epoch=i16(epoch), generation_id=i32(-1), member_id="",
            group_instance_id=None, topics=(TxnOffsetCommitRequestTopic(
                name=topic, partitions=(TxnOffsetCommitRequestPartition(
                    partition_index=i32(0), committed_offset=i64(0),
                    committed_leader_epoch=i32(-1), committed_metadata=""),)),)),
            3, side.coordinator_port(group))
        return code_name(answer.topics[0].partitions[0].error_code)
    return act


def end_txn(account, txn, committed=False):
    def act(side):
        from kio.schema.end_txn.v3.request import EndTxnRequest
        pid, epoch = side.producers.get(account, (-1, -1))
        answer = side.request(account, EndTxnRequest(
            transactional_id=txn, producer_id=i64(pid), producer_epoch=i16(epoch),
            committed=committed), 3, side.coordinator_port(txn, 1))
        return code_name(answer.error_code)
    return act


def offset_commit(account, group, topic):
    def act(side):
        return commit(side, account, group, topic)
    return act


def commit(side, account, group, topic, offset=0):
    from kio.schema.offset_commit.v8.request import (
        OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic)
    answer = side.request(account, OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=i32(-1), member_id="",
        group_instance_id=None, topics=(OffsetCommitRequestTopic(
            name=topic, partitions=(OffsetCommitRequestPartition(
                partition_index=i32(0), committed_offset=i64(offset),
                committed_leader_epoch=i32(-1), committed_metadata=""),)),)),
        8, side.coordinator_port(group))
    return code_name(answer.topics[0].partitions[0].error_code)


def offset_fetch(account, group, *topics):
    def act(side):
        from kio.schema.offset_fetch.v8.request import (
            OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopics)
        [found] = side.request(account, OffsetFetchRequest(groups=(
            OffsetFetchRequestGroup(group_id=group, topics=tuple(
                OffsetFetchRequestTopics(name=t, partition_indexes=(i32(0),))
                for t in topics)),), require_stable=False), 8,
            side.coordinator_port(group)).groups
        parts = [f"group {code_name(found.error_code)}"]
        parts += [f"{t.name} {code_name(t.partitions[0].error_code)}"
                  for t in found.topics]
        return "; ".join(parts)
    return act


def subscription(*topics):
    """A ConsumerProtocolSubscription v0 (the gateway reads and refuses
    unreadable "consumer" metadata: INCONSISTENT_GROUP_PROTOCOL)."""
    import struct
    body = struct.pack(">hi", 0, len(topics))
    for t in topics:
        body += struct.pack(">h", len(t)) + t.encode()
    return body + struct.pack(">i", -1)


def join_group(account, group):
    def act(side):
        from kio.schema.join_group.v9.request import (JoinGroupRequest,
                                                      JoinGroupRequestProtocol)
        answer = side.request(account, JoinGroupRequest(
            group_id=group, session_timeout=SECONDS, rebalance_timeout=SECONDS,
            member_id="", group_instance_id=None, protocol_type="consumer",
            protocols=(JoinGroupRequestProtocol(name="range",
                                                metadata=subscription("orders")),),
            reason=None), 9, side.coordinator_port(group))
        return code_name(answer.error_code)
    return act


def describe_groups(account, group):
    def act(side):
        from kio.schema.describe_groups.v5.request import DescribeGroupsRequest
        [found] = side.request(account, DescribeGroupsRequest(
            groups=(group,), include_authorized_operations=False), 5,
            side.coordinator_port(group)).groups
        return code_name(found.error_code)
    return act


def list_groups(account):
    """ListGroups of every broker, merged (each lists the groups it coordinates)."""
    def act(side):
        from kio.schema.list_groups.v4.request import ListGroupsRequest
        names, codes = set(), set()
        for port in side.ports().values():
            answer = side.request(account, ListGroupsRequest(states_filter=()), 4, port)
            codes.add(code_name(answer.error_code))
            names.update(g.group_id for g in answer.groups)
        return f"{'/'.join(sorted(codes))}: {','.join(sorted(names)) or '-'}"
    return act


def create_topic(account, name):
    """CreateTopics with validate_only (nothing created)."""
    def act(side):
        from kio.schema.create_topics.v7.request import CreatableTopic, CreateTopicsRequest
        [found] = side.request(account, CreateTopicsRequest(topics=(CreatableTopic(
            name=name, num_partitions=i32(1), replication_factor=i16(-1),
            assignments=(), configs=()),), timeout=SECONDS, validate_only=True),
            7).topics
        return code_name(found.error_code)
    return act


def delete_topic(account, name):
    def act(side):
        from kio.schema.delete_topics.v6.request import (DeleteTopicsRequest,
                                                         DeleteTopicState)
        [found] = side.request(account, DeleteTopicsRequest(topics=(DeleteTopicState(
            name=name, topic_id=None),), timeout=SECONDS), 6).responses
        return code_name(found.error_code)
    return act


def describe_configs(account, topic):
    def act(side):
        from kio.schema.describe_configs.v4.request import (DescribeConfigsRequest,
                                                            DescribeConfigsResource)
        [found] = side.request(account, DescribeConfigsRequest(resources=(
            DescribeConfigsResource(resource_type=i8(2), resource_name=topic,
                                    configuration_keys=("cleanup.policy",)),),
            include_synonyms=False, include_documentation=False), 4).results
        return code_name(found.error_code)
    return act


def describe_acls(account):
    def act(side):
        from kio.schema.describe_acls.v3.request import DescribeAclsRequest
        answer = side.request(account, DescribeAclsRequest(
            resource_type_filter=i8(1), resource_name_filter=None,
            pattern_type_filter=i8(1), principal_filter=None, host_filter=None,
            operation=i8(1), permission_type=i8(1)), 3)
        return code_name(answer.error_code)
    return act


def find_coordinator(account, key, key_type=0):
    def act(side):
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        [found] = side.request(account, FindCoordinatorRequest(
            key_type=i8(key_type), coordinator_keys=(key,)), 4).coordinators
        return code_name(found.error_code)
    return act


def add_partitions(account, txn, *topics):
    def act(side):
        from kio.schema.add_partitions_to_txn.v3.request import (
            AddPartitionsToTxnRequest, AddPartitionsToTxnTopic)
        pid, epoch = side.producers.get(account, (-1, -1))
        answer = side.request(account, AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=txn, v3_and_below_producer_id=i64(pid),
            v3_and_below_producer_epoch=i16(epoch), v3_and_below_topics=tuple(
                AddPartitionsToTxnTopic(name=t, partitions=(i32(0),)) for t in topics)),
            3, side.coordinator_port(txn, 1))
        codes = {t.name: code_name(t.results_by_partition[0].partition_error_code)
                 for t in answer.results_by_topic_v3_and_below}
        return "; ".join(f"{t} {codes.get(t, '(absent)')}" for t in topics)
    return act


def alter_configs(account, topic):
    """IncrementalAlterConfigs with validate_only (nothing changed)."""
    def act(side):
        from kio.schema.incremental_alter_configs.v1.request import (
            AlterableConfig, AlterConfigsResource, IncrementalAlterConfigsRequest)
        [found] = side.request(account, IncrementalAlterConfigsRequest(resources=(
            AlterConfigsResource(resource_type=i8(2), resource_name=topic, configs=(
                AlterableConfig(name="retention.ms", config_operation=i8(0),
                                value="3600000"),)),), validate_only=True), 1).responses
        return code_name(found.error_code)
    return act


def create_partitions(account, topic):
    """CreatePartitions to 2 with validate_only (nothing changed)."""
    def act(side):
        from kio.schema.create_partitions.v3.request import (CreatePartitionsRequest,
                                                             CreatePartitionsTopic)
        [found] = side.request(account, CreatePartitionsRequest(topics=(
            CreatePartitionsTopic(name=topic, count=i32(2), assignments=None),),
            timeout=SECONDS, validate_only=True), 3).results
        return code_name(found.error_code)
    return act


def delete_groups(account, group):
    def act(side):
        from kio.schema.delete_groups.v2.request import DeleteGroupsRequest
        [found] = side.request(account, DeleteGroupsRequest(groups_names=(group,)), 2,
                               side.coordinator_port(group)).results
        return code_name(found.error_code)
    return act


def delete_records(account, topic):
    def act(side):
        from kio.schema.delete_records.v2.request import (
            DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic)
        answer = side.request(account, DeleteRecordsRequest(topics=(DeleteRecordsTopic(
            name=topic, partitions=(DeleteRecordsPartition(
                partition_index=i32(0), offset=i64(0)),)),), timeout=SECONDS), 2,
            side.leader_port(topic))
        return code_name(answer.topics[0].partitions[0].error_code)
    return act


def offset_for_leader_epoch(account, topic):
    def act(side):
        from kio.schema.offset_for_leader_epoch.v4.request import (
            OffsetForLeaderEpochRequest, OffsetForLeaderPartition, OffsetForLeaderTopic)
        answer = side.request(account, OffsetForLeaderEpochRequest(
            replica_id=i32(-1), topics=(OffsetForLeaderTopic(topic=topic, partitions=(
                OffsetForLeaderPartition(partition=i32(0), current_leader_epoch=i32(-1),
                                         leader_epoch=i32(0)),)),)), 4,
            side.leader_port(topic))
        return code_name(answer.topics[0].partitions[0].error_code)
    return act


def describe_producers(account, topic):
    def act(side):
        from kio.schema.describe_producers.v0.request import (DescribeProducersRequest,
                                                              TopicRequest)
        answer = side.request(account, DescribeProducersRequest(topics=(TopicRequest(
            name=topic, partition_indexes=(i32(0),)),)), 0, side.leader_port(topic))
        return code_name(answer.topics[0].partitions[0].error_code)
    return act


def offset_delete(account, group, topic):
    def act(side):
        from kio.schema.offset_delete.v0.request import (
            OffsetDeleteRequest, OffsetDeleteRequestPartition, OffsetDeleteRequestTopic)
        answer = side.request(account, OffsetDeleteRequest(group_id=group, topics=(
            OffsetDeleteRequestTopic(name=topic, partitions=(
                OffsetDeleteRequestPartition(partition_index=i32(0)),)),)), 0,
            side.coordinator_port(group))
        parts = [f"group {code_name(answer.error_code)}"]
        parts += [f"{t.name} {code_name(t.partitions[0].error_code)}"
                  for t in answer.topics]
        return "; ".join(parts)
    return act


def list_transactions(account):
    """ListTransactions of every broker, merged."""
    def act(side):
        from kio.schema.list_transactions.v1.request import ListTransactionsRequest
        names, codes = set(), set()
        for port in side.ports().values():
            answer = side.request(account, ListTransactionsRequest(
                state_filters=(), producer_id_filters=(), duration_filter=i64(-1)), 1,
                port)
            codes.add(code_name(answer.error_code))
            names.update(t.transactional_id for t in answer.transaction_states)
        return f"{'/'.join(sorted(codes))}: {','.join(sorted(names)) or '-'}"
    return act


def describe_transactions(account, txn):
    def act(side):
        from kio.schema.describe_transactions.v0.request import (
            DescribeTransactionsRequest)
        [found] = side.request(account, DescribeTransactionsRequest(
            transactional_ids=(txn,)), 0, side.coordinator_port(txn, 1)).transaction_states
        return code_name(found.error_code)
    return act


CASES = [
    # (case, api, version, action)
    ("reader (READ orders): Fetch orders", "Fetch", 12, fetch("reader", "orders")),
    ("reader: Produce orders", "Produce", 9, produce("reader", "orders")),
    ("reader: idempotent InitProducerId (no WRITE anywhere)", "InitProducerId", 4,
     init_producer("reader")),
    ("reader: Metadata all topics", "Metadata", 12, metadata_all("reader")),
    ("reader: Metadata orders (DESCRIBE implied by READ)", "Metadata", 12,
     metadata("reader", "orders")),
    ("reader: Metadata secret (not describable)", "Metadata", 12,
     metadata("reader", "secret")),
    ("reader: Metadata orders,secret", "Metadata", 12,
     metadata("reader", "orders", "secret")),
    ("reader: Metadata nosuch (absent, not describable)", "Metadata", 12,
     metadata("reader", "nosuch")),
    ("reader: ListOffsets secret", "ListOffsets", 7, list_offsets("reader", "secret")),
    ("reader: OffsetCommit g.reader/orders", "OffsetCommit", 8,
     offset_commit("reader", "g.reader", "orders")),
    ("reader: OffsetCommit g.reader/secret", "OffsetCommit", 8,
     offset_commit("reader", "g.reader", "secret")),
    ("reader: OffsetCommit g.other/orders", "OffsetCommit", 8,
     everywhere(offset_commit("reader", "g.other", "orders"))),
    ("reader: JoinGroup g.reader", "JoinGroup", 9, join_group("reader", "g.reader")),
    ("reader: JoinGroup g.other", "JoinGroup", 9,
     everywhere(join_group("reader", "g.other"))),
    ("reader: OffsetFetch g.reader orders,secret", "OffsetFetch", 8,
     offset_fetch("reader", "g.reader", "orders", "secret")),
    ("reader: OffsetFetch g.other orders", "OffsetFetch", 8,
     everywhere(offset_fetch("reader", "g.other", "orders"))),
    ("reader: ListGroups", "ListGroups", 4, list_groups("reader")),
    ("reader: DeleteRecords orders (READ only)", "DeleteRecords", 2,
     delete_records("reader", "orders")),
    ("reader: OffsetForLeaderEpoch orders", "OffsetForLeaderEpoch", 4,
     offset_for_leader_epoch("reader", "orders")),
    ("reader: OffsetForLeaderEpoch secret", "OffsetForLeaderEpoch", 4,
     offset_for_leader_epoch("reader", "secret")),
    ("reader: DescribeProducers orders", "DescribeProducers", 0,
     describe_producers("reader", "orders")),
    ("reader: OffsetDelete g.reader/orders (no DELETE on the group)", "OffsetDelete", 0,
     everywhere(offset_delete("reader", "g.reader", "orders"))),
    ("reader: FindCoordinator g.reader", "FindCoordinator", 4,
     find_coordinator("reader", "g.reader")),
    ("reader: FindCoordinator g.other", "FindCoordinator", 4,
     find_coordinator("reader", "g.other")),
    ("reader: CreatePartitions orders (READ only)", "CreatePartitions", 3,
     create_partitions("reader", "orders")),
    ("reader: DescribeConfigs orders (READ only)", "DescribeConfigs", 4,
     describe_configs("reader", "orders")),
    ("reader: DescribeAcls", "DescribeAcls", 3, describe_acls("reader")),
    ("prefixer (ALLOW WRITE app.* / DENY app.secret): Produce app.x", "Produce", 9,
     produce("prefixer", "app.x")),
    ("prefixer: Produce app.secret", "Produce", 9, produce("prefixer", "app.secret")),
    ("prefixer: Produce orders", "Produce", 9, produce("prefixer", "orders")),
    ("prefixer: one Produce to app.x and app.secret", "Produce", 9,
     produce_many("prefixer", "app.x", "app.secret")),
    ("prefixer: Metadata all topics (DESCRIBE implied by WRITE)", "Metadata", 12,
     metadata_all("prefixer")),
    ("prefixer: Metadata app.nosuch (describable, absent)", "Metadata", 12,
     metadata("prefixer", "app.nosuch")),
    ("prefixer: idempotent InitProducerId (WRITE on a prefix)", "InitProducerId", 4,
     init_producer("prefixer")),
    ("star (READ '*', DENY READ secret): Fetch orders", "Fetch", 12,
     fetch("star", "orders")),
    ("star: Fetch secret", "Fetch", 12, fetch("star", "secret")),
    ("star: Metadata all topics", "Metadata", 12, metadata_all("star")),
    ("star: Metadata all topics, internal ones", "Metadata", 12,
     metadata_internal("star")),
    ("star: Produce orders", "Produce", 9, produce("star", "orders")),
    ("denier (ALL orders, DENY WRITE orders): Produce orders", "Produce", 9,
     produce("denier", "orders")),
    ("denier: Fetch orders", "Fetch", 12, fetch("denier", "orders")),
    ("denier: DescribeConfigs orders (ALL)", "DescribeConfigs", 4,
     describe_configs("denier", "orders")),
    ("wild (READ denied; User:* DENY READ denied): Fetch denied", "Fetch", 12,
     fetch("wild", "denied")),
    ("wild: Metadata denied", "Metadata", 12, metadata("wild", "denied")),
    ("describer (DESCRIBE orders): Metadata orders", "Metadata", 12,
     metadata("describer", "orders")),
    ("describer: ListOffsets orders", "ListOffsets", 7,
     list_offsets("describer", "orders")),
    ("describer: Fetch orders", "Fetch", 12, fetch("describer", "orders")),
    ("describer: DescribeProducers orders", "DescribeProducers", 0,
     describe_producers("describer", "orders")),
    ("describer: DescribeConfigs orders", "DescribeConfigs", 4,
     describe_configs("describer", "orders")),
    ("configurer (ALTER_CONFIGS orders): DescribeConfigs orders", "DescribeConfigs", 4,
     describe_configs("configurer", "orders")),
    ("configurer: DescribeConfigs secret", "DescribeConfigs", 4,
     describe_configs("configurer", "secret")),
    ("configurer: Metadata orders (ALTER_CONFIGS implies no DESCRIBE)", "Metadata", 12,
     metadata("configurer", "orders")),
    ("cclust (CREATE cluster): CreateTopics new.a", "CreateTopics", 7,
     create_topic("cclust", "new.a")),
    ("cclust: CreateTopics other", "CreateTopics", 7, create_topic("cclust", "other")),
    ("ctopic (CREATE topic new.*): CreateTopics new.a", "CreateTopics", 7,
     create_topic("ctopic", "new.a")),
    ("ctopic: CreateTopics other", "CreateTopics", 7, create_topic("ctopic", "other")),
    ("ctopic: CreateTopics orders (exists, not describable)", "CreateTopics", 7,
     create_topic("ctopic", "orders")),
    ("cnone: CreateTopics new.a", "CreateTopics", 7, create_topic("cnone", "new.a")),
    ("deleter (DELETE del.a): DeleteTopics del.b", "DeleteTopics", 6,
     delete_topic("deleter", "del.b")),
    ("deleter: DeleteTopics nosuch", "DeleteTopics", 6, delete_topic("deleter", "nosuch")),
    ("deleter: DeleteTopics del.a", "DeleteTopics", 6, delete_topic("deleter", "del.a")),
    ("txno (WRITE orders): InitProducerId tx1", "InitProducerId", 4,
     everywhere(init_producer("txno", "tx1"))),
    ("txno: idempotent InitProducerId", "InitProducerId", 4, init_producer("txno")),
    ("txno: AddOffsetsToTxn tx1 g.tx", "AddOffsetsToTxn", 3,
     everywhere(add_offsets("txno", "tx1", "g.tx"))),
    ("txno: TxnOffsetCommit tx1 g.tx/orders", "TxnOffsetCommit", 3,
     everywhere(txn_offset_commit("txno", "tx1", "g.tx", "orders"))),
    ("txok (WRITE tx1, orders; READ g.tx, orders): InitProducerId tx1",
     "InitProducerId", 4, init_producer("txok", "tx1")),
    ("txok: AddOffsetsToTxn tx1 g.other", "AddOffsetsToTxn", 3,
     everywhere(add_offsets("txok", "tx1", "g.other"))),
    ("txok: AddOffsetsToTxn tx1 g.tx", "AddOffsetsToTxn", 3,
     add_offsets("txok", "tx1", "g.tx")),
    ("txok: AddPartitionsToTxn tx1 orders,secret", "AddPartitionsToTxn", 3,
     add_partitions("txok", "tx1", "orders", "secret")),
    ("txok: AddPartitionsToTxn tx1 secret", "AddPartitionsToTxn", 3,
     add_partitions("txok", "tx1", "secret")),
    ("txok: AddPartitionsToTxn tx1 orders", "AddPartitionsToTxn", 3,
     add_partitions("txok", "tx1", "orders")),
    ("txok: FindCoordinator tx2 (transactional id, no WRITE)", "FindCoordinator", 4,
     find_coordinator("txok", "tx2", 1)),
    ("txok: TxnOffsetCommit tx1 g.other/orders", "TxnOffsetCommit", 3,
     everywhere(txn_offset_commit("txok", "tx1", "g.other", "orders"))),
    ("txok: TxnOffsetCommit tx1 g.tx/secret", "TxnOffsetCommit", 3,
     txn_offset_commit("txok", "tx1", "g.tx", "secret")),
    ("txok: TxnOffsetCommit tx1 g.tx/orders", "TxnOffsetCommit", 3,
     txn_offset_commit("txok", "tx1", "g.tx", "orders")),
    ("txok: EndTxn tx1 abort", "EndTxn", 3, end_txn("txok", "tx1")),
    ("txok: ListTransactions", "ListTransactions", 1, list_transactions("txok")),
    ("txno: ListTransactions", "ListTransactions", 1, list_transactions("txno")),
    ("txok: DescribeTransactions tx1", "DescribeTransactions", 0,
     describe_transactions("txok", "tx1")),
    ("txno: DescribeTransactions tx1", "DescribeTransactions", 0,
     everywhere(describe_transactions("txno", "tx1"))),
    ("txok: InitProducerId tx2 (no WRITE on it)", "InitProducerId", 4,
     everywhere(init_producer("txok", "tx2"))),
    ("idem (IDEMPOTENT_WRITE cluster): idempotent InitProducerId", "InitProducerId", 4,
     init_producer("idem")),
    ("allop (ALL orders): Produce orders", "Produce", 9, produce("allop", "orders")),
    ("allop: DescribeConfigs orders", "DescribeConfigs", 4,
     describe_configs("allop", "orders")),
    ("allop: CreatePartitions orders (ALTER by ALL)", "CreatePartitions", 3,
     create_partitions("allop", "orders")),
    ("allop: DeleteRecords orders (DELETE by ALL)", "DeleteRecords", 2,
     delete_records("allop", "orders")),
    ("configurer: IncrementalAlterConfigs orders", "IncrementalAlterConfigs", 1,
     alter_configs("configurer", "orders")),
    ("describer: IncrementalAlterConfigs orders", "IncrementalAlterConfigs", 1,
     alter_configs("describer", "orders")),
    ("lister: DeleteGroups g.reader (DESCRIBE only)", "DeleteGroups", 2,
     everywhere(delete_groups("lister", "g.reader"))),
    ("lister (DESCRIBE g.reader): ListGroups", "ListGroups", 4, list_groups("lister")),
    ("lister: DescribeGroups g.reader", "DescribeGroups", 5,
     describe_groups("lister", "g.reader")),
    ("lister: DescribeGroups g.other", "DescribeGroups", 5,
     everywhere(describe_groups("lister", "g.other"))),
    ("lister: OffsetFetch g.reader orders (DESCRIBE group, no topic)", "OffsetFetch", 8,
     offset_fetch("lister", "g.reader", "orders")),
    ("lister: OffsetCommit g.reader/orders (no READ)", "OffsetCommit", 8,
     everywhere(offset_commit("lister", "g.reader", "orders"))),
    ("clusterdesc (DESCRIBE cluster): ListGroups", "ListGroups", 4,
     list_groups("clusterdesc")),
    ("clusterdesc: DescribeAcls", "DescribeAcls", 3, describe_acls("clusterdesc")),
    ("cnone: Metadata all topics", "Metadata", 12, metadata_all("cnone")),
]


def run_parallel(calls, workers=8):
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda call: call(), calls))


QUIET = logging.getLogger("test_acls_integration.librdkafka")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False
"""librdkafka's log (the fatal errors the cases expect) kept off the output."""

RETRIABLE = ("COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE",
             "NOT_COORDINATOR", "LEADER_NOT_AVAILABLE", "NOT_LEADER_OR_FOLLOWER",
             "CONCURRENT_TRANSACTIONS")
"""Codes a client retries: a case answered one is asked again (deadline)."""

BY_DESIGN = {
    "star: Metadata all topics, internal ones":
        "a virtual cluster has no internal topics: the broker's __consumer_offsets "
        "(READ on '*' implies DESCRIBE on it) is another tenant's, never shown",
}
"""Cases where the gateway answers otherwise on purpose, not an ACL decision:
printed in the table, listed in the failure message of any other difference."""


def settled(action, side, timeout=30):
    """*action*'s answer once no code of it is a retriable one (or the last
    one, if they all were until the deadline)."""
    got = []

    def final():
        got.append(action(side))
        return not any(code in got[-1] for code in RETRIABLE)
    try:
        stack.wait_until(final, f"{side.name}'s final answer", timeout, 0.1)
    except AssertionError:
        pass
    return got[-1]


def exceptions(text):
    """The Kafka authorization exceptions a Java client printed."""
    return sorted(set(re.findall(
        r"org\.apache\.kafka\.common\.errors\.(\w*Authorization\w*Exception)", text)))


class AclTests(unittest.TestCase):
    """A broker with Kafka's authorizer and two tenant gateways on one state
    topic (a virtual cluster with ACLs on, "admin" its super user); the same
    account names on both."""

    timeout = 900
    based = False

    @classmethod
    def setUpClass(cls):
        t0 = time.monotonic()
        for tool in ("kafka-acls", "kafka-topics", "kafka-console-producer",
                     "kafka-console-consumer"):
            if not (stack.BIN / tool).exists():
                raise AssertionError(f"{stack.BIN / tool} is missing: run "
                                     "`.venv/bin/python compose/devstack.py install-cli`")
        stack.ensure_cluster()
        cls.directory = Path(tempfile.mkdtemp(prefix="acltest-"))
        cls.broker_dir = cls.directory / "broker"
        cls.state_topic = stack.unique("_vkafka_state_acls").replace("-", "_")
        cls.gateways = [stack.GatewayProcess((
            *devstack.TENANT_OPTIONS, f"--state-topic={cls.state_topic}"))
            for _ in range(2)]
        cls.vclusters = []
        cls.sides = []
        try:
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                broker = pool.submit(devstack.start_acl_broker,
                                     {a: f"{a}-secret" for a in ACCOUNTS},
                                     cls.broker_dir)
                started = [pool.submit(g.start) for g in cls.gateways]
                cls.broker_ports = broker.result()
                for s in started:
                    s.result()
            cls.gateway, cls.gateway2 = cls.gateways
            cls.vc = cls.new_vcluster("acl")
            tokens = cls.tokens(cls.vc)
            cls.broker = cls.side("broker",
                                  f"localhost:{cls.broker_ports['SASL_PLAINTEXT']}",
                                  {a: f"{a}-secret" for a in ACCOUNTS})
            cls.gw = cls.side("gateway", cls.gateway.bootstrap, tokens)
            cls.gw2 = cls.side("gateway2", cls.gateway2.bootstrap, tokens)
            cls.startup = time.monotonic() - t0
            print(f"\nbroker (StandardAuthorizer) and two gateways up in "
                  f"{cls.startup:.1f}s")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def side(cls, name, bootstrap, passwords):
        side = Side(name, bootstrap, passwords, cls.directory)
        cls.sides.append(side)
        return side

    @classmethod
    def new_vcluster(cls, prefix):
        vc = stack.unique(prefix).replace("-", "")
        cls.vclusters.append(vc)
        return vc

    @classmethod
    def tokens(cls, vc, accounts=ACCOUNTS):
        """A token for each account of *vc* (made through the first
        gateway's admin API); ACLs on, "admin" the super user."""
        tokens = {}
        for account in accounts:
            code, body = admin(cls.gateway, "POST", f"/vcluster/{vc}/username/{account}",
                               {"lifeTimeSeconds": 3600})
            assert code == 200, body
            tokens[account] = body["token"]
        code, body = admin(cls.gateway, "PUT", f"/vcluster/{vc}/rights",
                           {"acls": True, "superUsers": ["admin"]})
        assert code == 200, body
        return tokens

    @classmethod
    def tearDownClass(cls):
        for side in cls.sides:
            side.close()
        for gateway in cls.gateways:
            gateway.stop()
        devstack.stop_acl_broker(cls.broker_dir)
        from confluent_kafka.admin import AdminClient
        direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        names = [n for n in direct.list_topics(timeout=30).topics
                 if n == cls.state_topic or any(n.startswith(vc) for vc in cls.vclusters)]
        if names:
            stack.delete_topics(names)
        shutil.rmtree(cls.directory, ignore_errors=True)

    def setUp(self):
        self.log_start = {g: len(g.log()) for g in self.gateways}

    def tearDown(self):
        for gateway, start in self.log_start.items():  # this test's part of the log
            self.assertNotIn("Traceback", gateway.log()[start:])

    # -- helpers ---------------------------------------------------------------

    def ensure_topics(self, side, names, account="admin"):
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic
        client = AdminClient(side.config(account))
        futures = client.create_topics([NewTopic(n, 1, 1 if side.name == "broker" else 3)
                                        for n in names])
        for future in futures.values():
            try:
                future.result(60)
            except KafkaException as e:
                if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise

    def add_acls(self, side, acls, account="admin"):
        results = run_parallel([lambda a=a: side.acls("--add", "--force", *a,
                                                      account=account)
                                for a in acls], 4)
        for args, result in zip(acls, results):
            self.assertEqual(result.returncode, 0,
                             f"{side.name}: kafka-acls --add {' '.join(args)}:\n"
                             f"{result.stdout}{result.stderr}")
        return results

    def acls_held(self, side):
        """Every ACL *side* holds (DescribeAcls as admin), as sorted tuples."""
        from kio.schema.describe_acls.v3.request import DescribeAclsRequest
        answer = side.request("admin", DescribeAclsRequest(
            resource_type_filter=i8(1), resource_name_filter=None,
            pattern_type_filter=i8(1), principal_filter=None, host_filter=None,
            operation=i8(1), permission_type=i8(1)), 3)
        self.assertEqual(answer.error_code, ErrorCode.none, answer)
        return sorted((int(r.resource_type), r.resource_name, int(r.pattern_type),
                       a.principal, a.host, int(a.operation), int(a.permission_type))
                      for r in answer.resources for a in r.acls)

    def ensure_base(self):
        """Once per class: the topics, groups and ACLs of the table on both."""
        cls = type(self)
        if cls.based:
            return
        t0 = time.monotonic()
        sides = (self.broker, self.gw)
        run_parallel([lambda s=s: self.ensure_topics(s, TOPICS) for s in sides], 2)
        for side in sides:  # the groups exist (simple commits, as admin)
            for group in GROUPS:
                self.assertEqual(settled(
                    lambda s: commit(s, "admin", group, "orders"), side), "NONE")
            # a fresh broker's first producer id waits for a block of ids
            self.assertEqual(settled(init_producer("admin"), side), "NONE")
        # the gateway: kafka-acls as the virtual cluster's super user; the
        # broker: the Admin client (one JVM per ACL on a loaded machine is slow)
        from confluent_kafka.admin import AdminClient
        client = AdminClient(self.broker.config("admin"))
        for future in client.create_acls(
                [b for args in ACLS for b in bindings(args)]).values():
            future.result(60)
        self.add_acls(self.gw, ACLS)
        expected = self.acls_held(self.broker)
        stack.wait_until(lambda: self.acls_held(self.gw) == expected,
                         f"the gateway to hold the broker's {len(expected)} ACLs", 30)
        cls.acl_count = len(expected)
        cls.based = True
        cls.base_setup = time.monotonic() - t0

    # -- 1. the comparison -------------------------------------------------------

    def test_1_decisions_match_broker(self):
        """The table: each case's answer on the broker and on the gateway."""
        self.ensure_base()
        sides = (self.broker, self.gw)
        rows, differences = [], []
        t1 = time.monotonic()
        for case, api, version, action in CASES:
            got = []
            for side in sides:
                try:
                    got.append(settled(action, side))
                except Exception as e:  # shown in the table, compared as is
                    got.append(f"error: {type(e).__name__}: {e}"[:200])
            if getattr(action, "everywhere", False):
                case += " *"
            rows.append((case, api, version, *got))
            if got[0] != got[1] and case not in BY_DESIGN:
                differences.append(rows[-1])
        run = time.monotonic() - t1

        width = max(len(r[0]) for r in rows)
        print(f"\n\nACL decisions, broker (StandardAuthorizer, Kafka 4.1) vs gateway "
              f"({len(ACLS)} kafka-acls --add, the same {self.acl_count} ACLs on "
              f"each; setup {self.base_setup:.1f}s, {len(rows)} cases in {run:.1f}s)")
        print(f"{'case':{width}}  {'api':18}  {'broker':38}  gateway")
        for case, api, version, broker, gateway in rows:
            mark = "" if broker == gateway else (
                "   <-- differs by design" if case in BY_DESIGN else "   <-- DIFFERS")
            print(f"{case:{width}}  {f'{api} v{version}':18}  {broker:38}  "
                  f"{gateway}{mark}")
        print("* sent to every broker, not only the coordinator: the distinct answers")
        agree = sum(1 for r in rows if r[3] == r[4])
        print(f"{agree} of {len(rows)} cases agree; by design: " + "; ".join(
            f"{case}: {why}" for case, why in BY_DESIGN.items()) + "\n")
        if differences:
            self.fail("the gateway decides differently from the broker in "
                      f"{len(differences)} case(s):\n" + "\n".join(
                          f"  {api} v{version}, {case}: broker {broker!r}, gateway "
                          f"{gateway!r}" for case, api, version, broker, gateway
                          in differences))

    # -- 2. the stock tools through the gateway ------------------------------------

    def test_2_kafka_acls_logical_names(self):
        """kafka-acls --add/--list/--remove through the gateway as the virtual
        cluster's super user: its own ACLs, logical names, the same listing
        as the broker's for the same ACLs; another virtual cluster's --list
        shows none of them."""
        vc = self.new_vcluster("cli")
        mine = self.side(f"gateway-{vc}", self.gateway.bootstrap,
                         self.tokens(vc, ("admin", "clireader")))
        other_vc = self.new_vcluster("oth")
        other = self.side(f"gateway-{other_vc}", self.gateway.bootstrap,
                          self.tokens(other_vc, ("admin",)))
        self.ensure_topics(mine, ["orders"])
        self.ensure_topics(self.broker, ["orders"])
        grant = (ALLOW, "User:clireader", "--operation", "Read", "--topic", "orders",
                 "--group", "g.cli")
        [added] = self.add_acls(mine, [grant])
        self.assertIn("ResourcePattern(resourceType=TOPIC, name=orders, "
                      "patternType=LITERAL)", added.stdout)
        self.assertNotIn(vc, added.stdout + added.stderr)
        self.add_acls(self.broker, [grant])

        def listing(side, *args):
            result = side.acls("--list", "--principal", "User:clireader", *args)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            return sorted(line.strip() for line in result.stdout.splitlines()
                          if line.strip())
        listed = listing(mine)
        self.assertIn("(principal=User:clireader, host=*, operation=READ, "
                      "permissionType=ALLOW)", listed)
        self.assertNotIn(vc, "\n".join(listed))
        self.assertEqual(listed, listing(self.broker))
        self.assertEqual(listing(mine, "--topic", "orders"),
                         listing(self.broker, "--topic", "orders"))
        # the other virtual cluster sees none of them, and removes none
        everything = other.acls("--list")
        self.assertEqual(everything.returncode, 0, everything.stderr)
        self.assertEqual(everything.stdout.strip(), "")
        removed = other.acls("--remove", "--force", "--topic", "orders")
        self.assertEqual(removed.returncode, 0, removed.stderr)
        self.assertEqual(listing(mine), listed)
        # --remove of the group's ACL: gone from --list, here as on the broker
        for side in (mine, self.broker):
            result = side.acls("--remove", "--force", "--allow-principal",
                               "User:clireader", "--operation", "Read", "--group",
                               "g.cli")
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(listing(mine), listing(self.broker))
        self.assertNotIn("g.cli", "\n".join(listing(mine)))
        print(f"\nkafka-acls --list through the gateway ({vc}), as on the broker:\n  "
              + "\n  ".join(listed))

    def test_3_console_clients(self):
        """An account with READ on orders and its group: kafka-console-consumer
        consumes, kafka-console-producer is refused (the same exception as
        on the broker), kafka-topics --list shows only orders."""
        vc = self.new_vcluster("con")
        mine = self.side(f"gateway-{vc}", self.gateway.bootstrap,
                         self.tokens(vc, ("admin", "clireader")))
        self.ensure_topics(mine, ["orders", "secret", "other"])
        self.ensure_topics(self.broker, ["orders", "secret"])
        grant = (ALLOW, "User:clireader", "--operation", "Read", "--topic", "orders",
                 "--group", "g.cli")
        self.add_acls(mine, [grant])
        self.add_acls(self.broker, [grant])
        sent = stack.run_cli("kafka-console-producer", "--bootstrap-server",
                             mine.bootstrap, "--producer.config", mine.props["admin"],
                             "--topic", "orders", input="first\nsecond\n")
        self.assertEqual(sent.returncode, 0, sent.stderr)
        consumed = stack.run_cli(
            "kafka-console-consumer", "--bootstrap-server", mine.bootstrap,
            "--consumer.config", mine.props["clireader"], "--topic", "orders",
            "--group", "g.cli", "--from-beginning", "--max-messages", "2",
            "--timeout-ms", "30000")
        self.assertEqual(consumed.stdout.split(), ["first", "second"], consumed.stderr)
        # its exit status depends on whether the fatal error came before or
        # after the send (on the broker too): the exception is what counts
        refused = {}
        for side in (mine, self.broker):
            result = stack.run_cli("kafka-console-producer", "--bootstrap-server",
                                   side.bootstrap, "--producer.config",
                                   side.props["clireader"], "--topic", "orders",
                                   input="nope\n", timeout=90)
            refused[side.name] = exceptions(result.stdout + result.stderr)
        print(f"\nkafka-console-producer as clireader (READ only): {refused}")
        self.assertTrue(refused[mine.name], refused)
        self.assertEqual(refused[mine.name], refused["broker"])
        self.assertEqual(self.end_offset(mine, "orders"), 2)  # nothing written
        listed = stack.run_cli("kafka-topics", "--bootstrap-server", mine.bootstrap,
                               "--command-config", mine.props["clireader"], "--list")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertEqual(listed.stdout.split(), ["orders"])

    def end_offset(self, side, topic):
        from kio.schema.list_offsets.v7.request import (
            ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic)
        answer = side.request("admin", ListOffsetsRequest(
            replica_id=i32(-1), isolation_level=i8(0), topics=(ListOffsetsTopic(
                name=topic, partitions=(ListOffsetsPartition(
                    partition_index=i32(0), current_leader_epoch=i32(-1),
                    timestamp=i64(-1)),)),)), 7, side.leader_port(topic))
        [found] = answer.topics[0].partitions
        self.assertEqual(found.error_code, ErrorCode.none, found)
        return found.offset

    # -- 3. transactions and idempotent producers --------------------------------

    def transactional(self, side, account, txn="tx.app", offset=5):
        """A consume-transform-produce transaction of *account* with
        confluent-kafka: 'committed' or the Kafka error's name."""
        from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
        producer = Producer(side.config(account, **{"transactional.id": txn}))
        consumer = Consumer(side.config(account, **{"group.id": "g.txapp"}))
        try:
            producer.init_transactions(30)
            producer.begin_transaction()
            producer.produce("out", b"transformed")
            producer.send_offsets_to_transaction(
                [TopicPartition("orders", 0, offset)],
                consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            return "committed"
        except KafkaException as e:
            return e.args[0].name()
        finally:
            consumer.close()

    def idempotent(self, side, account, topic):
        """One record by an idempotent producer: 'delivered' or the errors."""
        from confluent_kafka import KafkaException, Producer
        errors, reports = [], []
        producer = Producer(side.config(account, **{
            "enable.idempotence": True, "error_cb": lambda e: errors.append(e),
            "message.timeout.ms": 20000}))
        producer.produce(topic, b"v", on_delivery=lambda e, m: reports.append(
            "delivered" if e is None else e.name()))

        def reported():
            try:
                producer.poll(0.1)
            except KafkaException as e:  # a fatal error raised by poll
                errors.append(e.args[0])
            return reports or any(e.fatal() for e in errors)
        stack.wait_until(reported, f"{account}'s delivery report on {side.name}", 40, 0)
        fatal = sorted({f"fatal {e.name()}" for e in errors if e.fatal()})
        return " ".join(reports + fatal)

    def committed(self, side, group, topic):
        """The committed offset, once stable (the commit markers written)."""
        from kio.schema.offset_fetch.v8.request import (
            OffsetFetchRequest, OffsetFetchRequestGroup, OffsetFetchRequestTopics)

        def stable():
            [found] = side.request("admin", OffsetFetchRequest(groups=(
                OffsetFetchRequestGroup(group_id=group, topics=(OffsetFetchRequestTopics(
                    name=topic, partition_indexes=(i32(0),)),)),), require_stable=True),
                8, side.coordinator_port(group)).groups
            [partition] = found.topics[0].partitions
            if partition.error_code == ErrorCode.unstable_offset_commit:
                return None
            return f"{partition.committed_offset} ({code_name(partition.error_code)})"
        return stack.wait_until(stable, f"a stable offset of {group} on {side.name}",
                                30, 0.05)

    def test_4_transactions_and_idempotence(self):
        """A transactional producer with WRITE on its id and the output topic,
        READ on the input topic and the group commits; without the WRITE on
        its id it fails TRANSACTIONAL_ID_AUTHORIZATION_FAILED; an idempotent
        producer needs WRITE on some topic: the same on both."""
        self.ensure_base()
        t0 = time.monotonic()
        rows = [
            ("txapp (WRITE tx.app, out; READ orders, g.txapp): transaction",
             lambda side: self.transactional(side, "txapp")),
            ("txapp: committed offset of g.txapp on orders",
             lambda side: self.committed(side, "g.txapp", "orders")),
            ("txnow (no WRITE on tx.app): transaction",
             lambda side: self.transactional(side, "txnow", offset=9)),
            ("idemw (WRITE out): idempotent produce to out",
             lambda side: self.idempotent(side, "idemw", "out")),
            ("reader (READ orders only): idempotent produce to orders",
             lambda side: self.idempotent(side, "reader", "orders")),
        ]
        table = []
        for case, action in rows:
            table.append((case, *run_parallel([lambda s=s: action(s)
                                               for s in (self.broker, self.gw)], 2)))
        print(f"\nproducers with confluent-kafka ({time.monotonic() - t0:.1f}s):")
        for case, broker, gateway in table:
            print(f"  {case:62}  broker {broker:40}  gateway {gateway}"
                  + ("" if broker == gateway else "   <-- DIFFERS"))
        self.assertEqual([r[1] for r in table], [r[2] for r in table],
                         "the gateway answers the producers otherwise than the broker")
        self.assertEqual(table[0][1:], ("committed", "committed"))
        self.assertEqual(table[1][1:], ("5 (NONE)", "5 (NONE)"))
        self.assertEqual(table[2][1:], ("TRANSACTIONAL_ID_AUTHORIZATION_FAILED",) * 2)
        self.assertEqual(table[3][1:], ("delivered", "delivered"))

    # -- 4. two gateways, one state ------------------------------------------------

    def test_5_two_gateways_agree_within_a_second(self):
        """An ACL added through one gateway allows the action on the other
        within a second; removed through the other, it refuses on the first."""
        from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                           AclPermissionType, AdminClient,
                                           ResourcePatternType, ResourceType)
        self.ensure_topics(self.gw, ["orders"])
        binding = AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL,
                             "User:sync", "*", AclOperation.READ,
                             AclPermissionType.ALLOW)
        action = fetch("sync", "orders")
        self.assertEqual(settled(action, self.gw), "TOPIC_AUTHORIZATION_FAILED")
        self.assertEqual(settled(action, self.gw2), "TOPIC_AUTHORIZATION_FAILED")
        delays = {}

        def change(through, call, observer, wanted, what):
            client = AdminClient(through.config("admin"))
            for future in call(client).values():
                future.result(30)
            t0 = time.monotonic()
            stack.wait_until(lambda: action(observer) == wanted,
                             f"{observer.name} to answer {wanted} ({what})", 10, 0.01)
            delays[what] = time.monotonic() - t0
            self.assertEqual(action(through), wanted)

        change(self.gw, lambda c: c.create_acls([binding]), self.gw2, "NONE",
               "added through gateway1, allowed on gateway2")
        change(self.gw2, lambda c: c.delete_acls([AclBindingFilter(
            ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:sync",
            "*", AclOperation.READ, AclPermissionType.ALLOW)]), self.gw,
            "TOPIC_AUTHORIZATION_FAILED", "removed through gateway2, refused on gateway1")
        print("\ntwo gateways on one state topic: " + "; ".join(
            f"{what}: {delay * 1000:.0f} ms" for what, delay in delays.items()))
        for what, delay in delays.items():
            self.assertLess(delay, 1.0, what)
