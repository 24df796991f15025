"""Forbidden paths, sent with a raw protocol client so no library filters them.

Each test asserts the exact error and that nothing of another tenant leaks:
not its names, not its topic ids.
"""

import datetime
import uuid

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64

from vkafka.auth.tokens import TokenAuthority

from . import stack
from .rawclient import RawClient
from .test_tenants import AUTHORITY, TenantGatewayTestCase, token

SECONDS = i32Timedelta.parse(datetime.timedelta(seconds=10))


def metadata(names=None, ids=None, auto_create=False):
    from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
    topics = None
    if names is not None or ids is not None:
        topics = tuple(MetadataRequestTopic(topic_id=None, name=n) for n in names or ()) + \
            tuple(MetadataRequestTopic(topic_id=i, name=None) for i in ids or ())
    return MetadataRequest(topics=topics, allow_auto_topic_creation=auto_create,
                           include_topic_authorized_operations=False)


class IsolationBase(TenantGatewayTestCase):
    """london owns topic "secret" and group "lg"; paris owns topic "mine"."""

    def client(self, vcluster, username="sa", port=None):
        raw = RawClient("localhost", port or self.start_port)
        self.addCleanup(raw.close)
        answer = raw.sasl_plain(username, token(vcluster, username))
        self.assertEqual(answer.error_code, ErrorCode.none, answer.error_message)
        return raw

    def coordinator(self, vcluster, group):
        """A raw client of *vcluster* connected to *group*'s coordinator."""
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        raw = self.client(vcluster)
        [found] = raw.request(FindCoordinatorRequest(
            key_type=i8(0), coordinator_keys=(group,)), 4).coordinators
        self.assertEqual((found.error_code, found.key, found.host),
                         (ErrorCode.none, group, "localhost"))
        return self.client(vcluster, port=found.port)

    def setUp(self):
        """london owns topic "secret" and group "lg" with committed offsets."""
        from confluent_kafka import Consumer, Producer
        self.london, self.paris = self.vcluster(), self.vcluster()
        self.create_topic(self.london, "secret", 1, 1)
        self.create_topic(self.paris, "mine", 1, 1)
        producer = Producer(self.confluent_config(self.london))
        producer.produce("secret", value=b"london data")
        self.assertEqual(producer.flush(30), 0)
        consumer = Consumer(self.confluent_config(
            self.london, **{"group.id": "lg", "auto.offset.reset": "earliest"}))
        consumer.subscribe(["secret"])
        try:
            def record():  # an error event (e.g. a rebalance in progress) is not one
                message = consumer.poll(1.0)
                return message is not None and message.error() is None
            stack.wait_until(record, "london's record")
            consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        raw = self.client(self.london)
        [topic] = raw.request(metadata(["secret"]), 12).topics
        self.london_id = topic.topic_id
        self.assertNotEqual(self.london_id, uuid.UUID(int=0))

    def assertNoLeak(self, response):
        self.assertNotIn(self.london, repr(response))


class IsolationTests(IsolationBase):

    def test_metadata_by_foreign_topic_id(self):
        """Metadata by london's topic id, from paris: UNKNOWN_TOPIC_ID, no name."""
        paris = self.client(self.paris)
        [topic] = paris.request(metadata(ids=[self.london_id]), 12).topics
        self.assertEqual(topic.error_code, ErrorCode.unknown_topic_id)
        self.assertIsNone(topic.name)
        self.assertEqual(topic.topic_id, self.london_id)

    def test_all_topics_metadata_lists_only_own(self):
        """An all-topics Metadata request from paris lists paris's topics only."""
        paris = self.client(self.paris)
        response = paris.request(metadata(), 12)
        self.assertEqual([t.name for t in response.topics], ["mine"])
        self.assertNotIn(self.london_id, [t.topic_id for t in response.topics])

    def test_fetch_by_foreign_topic_id(self):
        """Fetch v17 by london's topic id, from paris: UNKNOWN_TOPIC_ID, no records."""
        from kio.schema.fetch.v17.request import FetchPartition, FetchRequest, FetchTopic
        paris = self.client(self.paris)
        response = paris.request(FetchRequest(
            max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=100)),
            min_bytes=i32(1), forgotten_topics_data=(),
            topics=(FetchTopic(topic_id=self.london_id, partitions=(
                FetchPartition(partition=i32(0), fetch_offset=i64(0),
                               partition_max_bytes=i32(1 << 20)),)),)), 17)
        [topic] = response.responses
        self.assertEqual(topic.topic_id, self.london_id)
        self.assertEqual(topic.partitions[0].error_code, ErrorCode.unknown_topic_id)
        self.assertFalse(topic.partitions[0].records)

    def test_fetch_as_replica_refused(self):
        """Fetch v17 as replica 1 (a follower broker's request) on paris's own
        topic: the gateway closes the connection; no records, nothing forwarded."""
        from kio.schema.fetch.v17.request import (
            FetchPartition, FetchRequest, FetchTopic, ReplicaState)
        paris = self.client(self.paris)
        [mine] = paris.request(metadata(["mine"]), 12).topics
        response = paris.request(FetchRequest(
            replica_state=ReplicaState(replica_id=i32(1), replica_epoch=i64(1)),
            max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=100)),
            min_bytes=i32(1), forgotten_topics_data=(),
            topics=(FetchTopic(topic_id=mine.topic_id, partitions=(
                FetchPartition(partition=i32(0), fetch_offset=i64(0),
                               partition_max_bytes=i32(1 << 20)),)),)), 17)
        self.assertIsNone(response)

    def test_delete_by_foreign_topic_id(self):
        """DeleteTopics by london's topic id, from paris: UNKNOWN_TOPIC_ID; topic stays."""
        from kio.schema.delete_topics.v6.request import DeleteTopicsRequest, DeleteTopicState
        paris = self.client(self.paris)
        [result] = paris.request(DeleteTopicsRequest(
            topics=(DeleteTopicState(name=None, topic_id=self.london_id),),
            timeout=SECONDS), 6).responses
        self.assertEqual(result.error_code, ErrorCode.unknown_topic_id)
        self.assertIsNone(result.name)
        self.assertIn(f"{self.london}secret", self.physical_topics())

    def test_describe_and_alter_foreign_topic_by_name(self):
        """Describe/alter configs of london's topic by any name, from paris: unknown."""
        from kio.schema.describe_configs.v4.request import (
            DescribeConfigsRequest, DescribeConfigsResource)
        from kio.schema.incremental_alter_configs.v1.request import (
            AlterableConfig, AlterConfigsResource, IncrementalAlterConfigsRequest)
        paris = self.client(self.paris)
        for name in ("secret", f"{self.london}secret"):
            [result] = paris.request(DescribeConfigsRequest(resources=(
                DescribeConfigsResource(resource_type=i8(2), resource_name=name),)),
                4).results
            self.assertEqual(result.error_code, ErrorCode.unknown_topic_or_partition)
            self.assertEqual(result.resource_name, name)
            self.assertNoLeak(result.error_message)
            [result] = paris.request(IncrementalAlterConfigsRequest(
                resources=(AlterConfigsResource(
                    resource_type=i8(2), resource_name=name, configs=(
                        AlterableConfig(name="retention.ms", config_operation=i8(0),
                                        value="1"),)),),
                validate_only=False), 1).responses
            self.assertEqual(result.error_code, ErrorCode.unknown_topic_or_partition)

    def test_broker_configs_read_only(self):
        """Broker configs: describe works, alter is CLUSTER_AUTHORIZATION_FAILED."""
        from kio.schema.describe_configs.v4.request import (
            DescribeConfigsRequest, DescribeConfigsResource)
        from kio.schema.incremental_alter_configs.v1.request import (
            AlterableConfig, AlterConfigsResource, IncrementalAlterConfigsRequest)
        paris = self.client(self.paris)
        [result] = paris.request(DescribeConfigsRequest(resources=(
            DescribeConfigsResource(resource_type=i8(4), resource_name="1"),)),
            4).results
        self.assertEqual(result.error_code, ErrorCode.none)
        [result] = paris.request(IncrementalAlterConfigsRequest(
            resources=(AlterConfigsResource(
                resource_type=i8(4), resource_name="1", configs=(
                    AlterableConfig(name="log.cleaner.threads", config_operation=i8(0),
                                    value="2"),)),),
            validate_only=True), 1).responses
        self.assertEqual(result.error_code, ErrorCode.cluster_authorization_failed)
        self.assertEqual((result.resource_type, result.resource_name), (4, "1"))

    def test_groups_invisible(self):
        """paris can't list, describe, fetch offsets of, or delete london's group."""
        from kio.schema.delete_groups.v2.request import DeleteGroupsRequest
        from kio.schema.describe_groups.v5.request import DescribeGroupsRequest
        from kio.schema.list_groups.v5.request import ListGroupsRequest
        from kio.schema.offset_fetch.v9.request import (
            OffsetFetchRequest, OffsetFetchRequestGroup)
        def list_groups(vcluster):
            """ListGroups is answered per broker: ask all three, as AdminClient does."""
            found = []
            for node in range(3):
                raw = self.client(vcluster, port=self.start_port + node)
                found += [g.group_id for g in raw.request(
                    ListGroupsRequest(states_filter=(), types_filter=()), 5).groups]
            return found
        self.assertEqual(list_groups(self.paris), [])
        self.assertEqual(list_groups(self.london), ["lg"])
        paris = self.coordinator(self.paris, "lg")
        london = self.coordinator(self.london, "lg")

        [group] = paris.request(DescribeGroupsRequest(
            groups=("lg",), include_authorized_operations=False), 5).groups
        self.assertEqual((group.group_id, group.group_state, group.members),
                         ("lg", "Dead", ()))
        [group] = paris.request(OffsetFetchRequest(groups=(OffsetFetchRequestGroup(
            group_id="lg", member_id=None, member_epoch=i32(-1), topics=None),),
            require_stable=False), 9).groups
        self.assertEqual(group.topics, ())
        [result] = paris.request(DeleteGroupsRequest(groups_names=("lg",)), 2).results
        self.assertEqual(result.group_id, "lg")
        self.assertEqual(result.error_code, ErrorCode.group_id_not_found)
        # london's group and offsets are untouched
        [group] = london.request(OffsetFetchRequest(groups=(OffsetFetchRequestGroup(
            group_id="lg", member_id=None, member_epoch=i32(-1), topics=None),),
            require_stable=False), 9).groups
        self.assertEqual([(t.name, t.partitions[0].committed_offset)
                          for t in group.topics], [("secret", 1)])

    def test_regex_subscription_confined(self):
        """KIP-848 regex ".*" from paris is assigned paris's topics only."""
        from kio.schema.consumer_group_heartbeat.v1.request import (
            ConsumerGroupHeartbeatRequest)
        paris = self.coordinator(self.paris, "regex-group")
        [mine] = paris.request(metadata(["mine"]), 12).topics
        member, assigned = str(uuid.uuid4()), set()
        request = ConsumerGroupHeartbeatRequest(
            group_id="regex-group", member_id=member, member_epoch=i32(0),
            rebalance_timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
            subscribed_topic_names=(), subscribed_topic_regex=".*",
            topic_partitions=())

        def heartbeat():
            nonlocal request
            response = paris.request(request, 1)
            self.assertEqual(response.error_code, ErrorCode.none, response.error_message)
            request = ConsumerGroupHeartbeatRequest(
                group_id="regex-group", member_id=member,
                member_epoch=response.member_epoch, topic_partitions=None)
            if response.assignment is not None:
                assigned.update(t.topic_id for t in response.assignment.topic_partitions)
            return assigned
        stack.wait_until(heartbeat, "an assignment", 60, interval=0.5)
        self.assertEqual(assigned, {mine.topic_id})

    def test_unoffered_api_closes(self):
        """An API a tenant is never offered (DescribeLogDirs: broker paths)
        closes the connection (the ACL APIs are the gateway's: test_rights.py)."""
        from kio.schema.describe_log_dirs.v4.request import DescribeLogDirsRequest
        paris = self.client(self.paris)
        paris.send(DescribeLogDirsRequest(topics=None), 4)
        self.assertTrue(paris.closed())

    def test_api_versions_offers_only_table(self):
        """ApiVersions before auth offers SASL and the tenant table, nothing else."""
        from kio.schema.api_versions.v3.request import ApiVersionsRequest
        from vkafka.tenancy.rules import tenant_rules
        raw = RawClient("localhost", self.start_port)
        self.addCleanup(raw.close)
        response = raw.request(ApiVersionsRequest(client_software_name="raw",
                                                  client_software_version="1"), 3)
        offered = {a.api_key for a in response.api_keys}
        self.assertEqual(offered, set(tenant_rules()))
        self.assertNotIn(35, offered)  # DescribeLogDirs: broker paths, never a tenant's

    def test_request_before_authentication_closes(self):
        """Metadata before SASL is refused: the connection is closed, nothing answered."""
        raw = RawClient("localhost", self.start_port)
        self.addCleanup(raw.close)
        self.assertIsNone(raw.request(metadata(), 12))

    def test_bad_tokens(self):
        """Expired, forged, malformed tokens and a wrong username: error 58 saying which."""
        forged = TokenAuthority("x" * 40).issue(self.paris, "sa", 3600)
        cases = [
            ("sa", AUTHORITY.issue(self.paris, "sa", 1), "expired"),
            ("sa", forged, "signature"),
            ("sa", "not-a-jwt", "malformed"),
            ("other", token(self.paris, "sa"), "username"),
        ]
        for username, password, reason in cases:
            if reason == "expired":
                # Let the 1 s token lapse: a deadline on the token, not on the gateway.
                expiry = int(password and AUTHORITY.clock()) + 2
                stack.wait_until(lambda: AUTHORITY.clock() >= expiry, "expiry", 5)
            raw = RawClient("localhost", self.start_port)
            self.addCleanup(raw.close)
            answer = raw.sasl_plain(username, password)
            self.assertEqual(answer.error_code, ErrorCode.sasl_authentication_failed)
            self.assertIn(reason, answer.error_message)
            self.assertTrue(raw.closed())

    def test_names_colliding_with_another_prefix(self):
        """Virtual cluster "ab" next to a known "abx": its names would be "abx"'s
        ("xTopic" -> "abxTopic"), so its logins are refused, naming no other
        virtual cluster; "abx" is still served."""
        from kio.schema.create_topics.v7.request import CreatableTopic, CreateTopicsRequest
        short = self.vcluster()
        longer = short + "x"
        self.client(longer)  # the gateway now knows the longer prefix
        raw = RawClient("localhost", self.start_port)
        self.addCleanup(raw.close)
        answer = raw.sasl_plain("sa", token(short))
        self.assertEqual(answer.error_code, ErrorCode.sasl_authentication_failed)
        self.assertIn(f"virtual cluster {short} is unavailable: its names overlap "
                      "another virtual cluster's", answer.error_message)
        self.assertNotIn(longer, answer.error_message)
        self.assertTrue(raw.closed())
        [result] = self.client(longer).request(CreateTopicsRequest(topics=(
            CreatableTopic(name="Topic", num_partitions=i32(1),
                           replication_factor=i16(1), assignments=(), configs=()),),
            timeout=SECONDS, validate_only=True), 7).topics
        self.assertEqual((result.name, result.error_code), ("Topic", ErrorCode.none))
        self.assertNotIn(f"{short}xTopic", self.physical_topics())

    def test_metadata_never_auto_creates(self):
        """allow_auto_topic_creation=true from a tenant creates nothing."""
        paris = self.client(self.paris)
        [topic] = paris.request(metadata(["ghost"], auto_create=True), 12).topics
        self.assertEqual(topic.error_code, ErrorCode.unknown_topic_or_partition)
        self.assertNotIn(f"{self.paris}ghost", self.physical_topics())


ADMIN_APIS = {  # the ACL APIs are answered by the gateway (docs/rights.md)
    34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 38: "CreateDelegationToken", 43: "ElectLeaders",
    45: "AlterPartitionReassignments", 46: "ListPartitionReassignments",
    48: "DescribeClientQuotas", 49: "AlterClientQuotas",
    50: "DescribeUserScramCredentials", 51: "AlterUserScramCredentials",
    55: "DescribeQuorum", 57: "UpdateFeatures", 67: "AllocateProducerIds",
    27: "WriteTxnMarkers", 72: "PushTelemetry", 76: "ShareGroupHeartbeat",
}


class MoreIsolationTests(IsolationBase):
    """Admin APIs and write paths aimed at another tenant's resources."""

    def test_cluster_admin_apis_close(self):
        """Every cluster-administration API, sent raw after login, closes the connection."""
        import struct
        from vkafka.protocol.framing import frame
        for key, name in ADMIN_APIS.items():
            paris = self.client(self.paris)
            paris.sock.sendall(frame(struct.pack(">hhih", key, 0, 9, 1) + b"x" + b"\0" * 8))
            self.assertTrue(paris.closed(), name)

    def test_write_paths_on_foreign_topic(self):
        """DeleteRecords, CreatePartitions, ListOffsets, DescribeProducers on london's
        topic from paris: unknown topic; london's data untouched."""
        from kio.schema.create_partitions.v3.request import (
            CreatePartitionsRequest, CreatePartitionsTopic)
        from kio.schema.delete_records.v2.request import (
            DeleteRecordsPartition, DeleteRecordsRequest, DeleteRecordsTopic)
        from kio.schema.describe_producers.v0.request import (
            DescribeProducersRequest, TopicRequest)
        from kio.schema.list_offsets.v9.request import (
            ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic)
        paris = self.client(self.paris)
        for name in ("secret", f"{self.london}secret"):
            [topic] = paris.request(DeleteRecordsRequest(topics=(DeleteRecordsTopic(
                name=name, partitions=(DeleteRecordsPartition(
                    partition_index=i32(0), offset=i64(1)),)),), timeout=SECONDS),
                2).topics
            self.assertEqual(topic.name, name)
            self.assertEqual(topic.partitions[0].error_code,
                             ErrorCode.unknown_topic_or_partition)
            [result] = paris.request(CreatePartitionsRequest(topics=(
                CreatePartitionsTopic(name=name, count=i32(5), assignments=None),),
                timeout=SECONDS, validate_only=False), 3).results
            self.assertEqual(result.error_code, ErrorCode.unknown_topic_or_partition)
            self.assertNoLeak(result.error_message)
            [topic] = paris.request(ListOffsetsRequest(
                replica_id=i32(-1), isolation_level=i8(0), topics=(ListOffsetsTopic(
                    name=name, partitions=(ListOffsetsPartition(
                        partition_index=i32(0), timestamp=i64(-1)),)),)), 9).topics
            self.assertEqual(topic.partitions[0].error_code,
                             ErrorCode.unknown_topic_or_partition)
            [topic] = paris.request(DescribeProducersRequest(topics=(TopicRequest(
                name=name, partition_indexes=(i32(0),)),)), 0).topics
            self.assertEqual(topic.name, name)
            self.assertNotEqual(topic.partitions[0].error_code, ErrorCode.none)
        # london's record is still there: low watermark 0, high 1, one partition
        from confluent_kafka import Consumer, TopicPartition
        consumer = Consumer({"bootstrap.servers": stack.BOOTSTRAP, "group.id": "wm"})
        try:
            self.assertEqual(consumer.get_watermark_offsets(
                TopicPartition(f"{self.london}secret", 0), timeout=10), (0, 1))
            self.assertEqual(len(consumer.list_topics(
                f"{self.london}secret", timeout=10).topics[
                    f"{self.london}secret"].partitions), 1)
        finally:
            consumer.close()

    def test_transactions_invisible(self):
        """DescribeTransactions of a london id from paris: not found; ListTransactions
        and FindCoordinator for share groups refused or empty."""
        from confluent_kafka import Producer
        from kio.schema.describe_transactions.v0.request import (
            DescribeTransactionsRequest)
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        from kio.schema.list_transactions.v1.request import ListTransactionsRequest
        producer = Producer(self.confluent_config(self.london,
                                                  **{"transactional.id": "ltx"}))
        producer.init_transactions(30)
        paris = self.coordinator_for_txn(self.paris, "ltx")
        [state] = paris.request(DescribeTransactionsRequest(
            transactional_ids=("ltx",)), 0).transaction_states
        self.assertEqual(state.transactional_id, "ltx")
        self.assertEqual(state.error_code, ErrorCode.transactional_id_not_found)
        listed = paris.request(ListTransactionsRequest(
            state_filters=(), producer_id_filters=(), duration_filter=i64(-1)), 1)
        self.assertEqual(listed.transaction_states, ())
        [found] = paris.request(FindCoordinatorRequest(
            key_type=i8(2), coordinator_keys=("share",)), 4).coordinators
        self.assertEqual(found.error_code, ErrorCode.invalid_request)
        self.assertEqual(found.key, "share")

    def coordinator_for_txn(self, vcluster, txn):
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        raw = self.client(vcluster)
        [found] = raw.request(FindCoordinatorRequest(
            key_type=i8(1), coordinator_keys=(txn,)), 4).coordinators
        self.assertEqual(found.error_code, ErrorCode.none)
        return self.client(vcluster, port=found.port)

    def test_describe_topic_partitions_cursor(self):
        """DescribeTopicPartitions with a cursor naming london's topic, from paris:
        nothing of london's comes back."""
        from kio.schema.describe_topic_partitions.v0.request import (
            Cursor, DescribeTopicPartitionsRequest, TopicRequest)
        paris = self.client(self.paris)
        response = paris.request(DescribeTopicPartitionsRequest(
            topics=(TopicRequest(name="secret"), TopicRequest(name="mine")),
            response_partition_limit=i32(100),
            cursor=Cursor(topic_name="secret", partition_index=i32(0))), 0)
        self.assertNoLeak(response)
        for topic in response.topics:
            if topic.name == "secret":
                self.assertEqual(topic.error_code, ErrorCode.unknown_topic_or_partition)


class CoordinatorMovedTests(IsolationBase):
    """Not an attack: london's group "lg" (committed offsets, IsolationBase)
    asked about on a broker that is not its coordinator, as when the
    coordinator moved after a client found it."""

    def test_offsets_asked_of_another_broker_name_the_partitions(self):
        """The broker answers NOT_COORDINATOR with no partitions; the client
        gets the partitions it asked for, each STALE_MEMBER_EPOCH, so
        librdkafka finds the coordinator and asks again (rules/groups.py,
        librdkafka #5586); the coordinator answers the committed offset."""
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        from kio.schema.offset_fetch.v9 import request as q
        [found] = self.client(self.london).request(FindCoordinatorRequest(
            key_type=i8(0), coordinator_keys=("lg",)), 4).coordinators
        self.assertEqual(found.error_code, ErrorCode.none)
        request = q.OffsetFetchRequest(groups=(q.OffsetFetchRequestGroup(
            group_id="lg", member_id=None, member_epoch=i32(-1),
            topics=(q.OffsetFetchRequestTopics(name="secret",
                                               partition_indexes=(i32(0),)),)),),
            require_stable=False)
        [group] = self.client(self.london, port=found.port).request(request, 9).groups
        self.assertEqual([(group.error_code, t.name, p.committed_offset, p.error_code)
                          for t in group.topics for p in t.partitions],
                         [(ErrorCode.none, "secret", 1, ErrorCode.none)])
        [other] = [p for p in range(self.start_port, self.start_port + 3)
                   if p != found.port][:1]
        [group] = self.client(self.london, port=other).request(request, 9).groups
        self.assertEqual(group.error_code, ErrorCode.not_coordinator)
        self.assertEqual([(t.name, p.partition_index, p.committed_offset, p.error_code)
                          for t in group.topics for p in t.partitions],
                         [("secret", 0, -1, ErrorCode.stale_member_epoch)])
