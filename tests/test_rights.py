"""ACLs applied to tenants' requests (tenancy/rights.py, rules/rights.py,
rules/acls.py): one request at a time through the tenant filter and the
response filter, with a real state on a MemoryStore.  The same decisions
against a real broker with an authorizer: test_acls_integration.py."""

import dataclasses
import datetime
import struct
import uuid
from dataclasses import dataclass

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64
from twisted.internet.task import Clock
from twisted.trial import unittest

from vkafka.auth.acls import Acl
from vkafka.auth.tokens import TokenAuthority
from vkafka.filters.responses import rewrite_response
from vkafka.filters.tenant import rewrite_request
from vkafka.protocol.codec import decode_request, decode_response
from vkafka.proxy.sequencer import Pending
from vkafka.proxy.topology import Topology
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore
from vkafka.tenancy.metadata_cache import MetadataAnswers
from vkafka.tenancy.rules import tenant_rules
from vkafka.tenancy.rules.rights import NEEDS
from vkafka.tenancy.services import Services
from vkafka.tenancy.sessions import FetchSessions
from vkafka.tenancy.vclusters import VirtualClusters

from .kafka_messages import record_batch, request_frame, response_frame

NO_THROTTLE = i32Timedelta.parse(datetime.timedelta(0))
SECONDS = i32Timedelta.parse(datetime.timedelta(seconds=5))
RULES = tenant_rules()


@dataclass
class Claims:
    vcluster: str
    username: str
    expires_at: float = 1e12


@dataclass
class Login:
    claims: Claims
    namespace: object


class RightsTestCase(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.vclusters = VirtualClusters()
        self.state = GatewayState(MemoryStore(), TokenAuthority("r" * 32, self.clock.seconds),
                                  self.vclusters, self.clock.seconds)
        self.successResultOf(self.state.ensure_vcluster("shop"))
        self.successResultOf(self.state.put_rights("shop", True, ["root"]))
        self.topology = Topology([("kafka1", 9092)], "gw", 6969, 3, 1)
        self.services = Services(self.topology, self.clock, RULES,
                                 metadata_answers=MetadataAnswers(1.0), state=self.state,
                                 authorizer=self.state.authorizer, peer_host="10.0.0.1")
        self.correlation = 0

    def allow(self, rtype, name, principal, op, permission="ALLOW", pattern="LITERAL"):
        self.successResultOf(self.state.add_acls("shop", [Acl.checked(
            rtype, pattern, name, principal, "*", op, permission)]))

    def send(self, body, version, user="app"):
        """(Outcome, Pending) of *body* sent by *user* of "shop"."""
        self.correlation += 1
        api_key = body.__api_key__
        login = Login(Claims("shop", user), self.vclusters.namespace("shop"))
        frame = request_frame(body, version, self.correlation)[4:]
        outcome = rewrite_request(self.services, login, 1 << 20, RULES[api_key], frame,
                                  api_key, version)
        if outcome.later is not None:  # decided once a check ran (no codec thread here)
            outcome = self.successResultOf(outcome.later)
        pending = Pending(self.correlation, api_key, version, RULES[api_key],
                          outcome.context)
        return outcome, pending

    def forwarded(self, outcome):
        self.assertIsNone(outcome.refused)
        self.assertIsNone(outcome.answer)
        return decode_request(outcome.frame)[1]

    def answered(self, pending, body, flexible=True):
        """The client's decoded answer to the broker's *body*."""
        raw = response_frame(pending.correlation_id, body, flexible)[4:]
        out, _, _ = rewrite_response(self.services, pending, raw)
        return decode_response(out, pending.api_key, pending.api_version)[1]

    def local(self, outcome, api_key, version):
        self.assertIsNotNone(outcome.answer)
        return decode_response(struct.pack(">i", 0) + b"\x00" + outcome.answer,
                               api_key, version)[1]


class TableTests(unittest.TestCase):
    def test_every_tenant_api_says_what_it_needs(self):
        """Fail closed: an API without a row is refused while ACLs are on."""
        self.assertEqual([k for k in RULES if k not in NEEDS], [])
        for key, rule in RULES.items():
            self.assertIs(rule.needs, NEEDS[key])



class FailClosedTests(RightsTestCase):
    def test_an_api_without_needs_is_refused_while_acls_are_on(self):
        import dataclasses
        from kio.schema.list_groups.v4.request import ListGroupsRequest
        rule = dataclasses.replace(RULES[16], needs=None)
        login = Login(Claims("shop", "app"), self.vclusters.namespace("shop"))
        outcome = rewrite_request(self.services, login, 1 << 20, rule, request_frame(
            ListGroupsRequest(states_filter=()), 4, 1)[4:], 16, 4)
        self.assertIn("ACLs are on", outcome.refused)


class ProduceTests(RightsTestCase):
    def produce(self, topic, txn=None, version=9):
        import importlib
        m = importlib.import_module(f"kio.schema.produce.v{version}.request")
        return m.ProduceRequest(
            transactional_id=txn, acks=i16(-1), timeout=SECONDS,
            topic_data=(m.TopicProduceData(name=topic, partition_data=(
                m.PartitionProduceData(index=i32(0), records=record_batch(1)),)),))

    def broker_answer(self, name, code=0):
        from kio.schema.produce.v9.response import (PartitionProduceResponse,
                                                    ProduceResponse, TopicProduceResponse)
        return ProduceResponse(throttle_time=NO_THROTTLE, responses=(TopicProduceResponse(
            name=name, partition_responses=(PartitionProduceResponse(
                index=i32(0), error_code=ErrorCode(code), base_offset=i64(-1),
                log_append_time=None, log_start_offset=i64(-1), record_errors=(),
                error_message=None),)),))

    def test_write_allowed_and_refused(self):
        self.allow("TOPIC", "orders", "User:app", "WRITE")
        outcome, _ = self.send(self.produce("orders"), 9)
        self.assertEqual(self.forwarded(outcome).topic_data[0].name, "shoporders")
        outcome, pending = self.send(self.produce("payments"), 9)
        decoy = self.forwarded(outcome).topic_data[0].name
        self.assertTrue(decoy.startswith("!"))
        answer = self.answered(pending, self.broker_answer(decoy, 17))
        self.assertEqual(answer.responses[0].name, "payments")
        part = answer.responses[0].partition_responses[0]
        self.assertEqual(part.error_code, ErrorCode.topic_authorization_failed)
        self.assertIn("User:app may not WRITE topic 'payments'", part.error_message)

    def test_record_error_messages_scrubbed(self):
        """A broker's record errors name the partition by its physical topic
        (a null key on a compacted topic): the batch's message is scrubbed
        as the partition's is, so no prefix or physical name reaches the
        tenant."""
        from kio.schema.produce.v9.response import BatchIndexAndErrorMessage
        outcome, pending = self.send(self.produce("orders"), 9, user="root")
        said = ("Compacted topic cannot accept message without key in topic "
                "partition shoporders-0.")
        broker = self.broker_answer("shoporders", 87)
        topic = broker.responses[0]
        part = dataclasses.replace(
            topic.partition_responses[0], error_message=said,
            record_errors=(BatchIndexAndErrorMessage(
                batch_index=i32(0), batch_index_error_message=said),))
        broker = dataclasses.replace(broker, responses=(dataclasses.replace(
            topic, partition_responses=(part,)),))
        answer = self.answered(pending, broker)
        got = answer.responses[0].partition_responses[0]
        self.assertEqual(got.error_message, said.replace("shoporders", "orders"))
        self.assertEqual(got.record_errors[0].batch_index_error_message,
                         said.replace("shoporders", "orders"))

    def test_refusals_go_to_the_audit_log(self):
        told = []

        class Audit:
            def refused(self, *args, **kwargs):
                told.append((args, kwargs))
        self.services.audit = Audit()
        self.send(self.produce("payments"), 9)
        self.assertEqual(told, [(("shop", "User:app", "WRITE", "TOPIC", "payments", 0),
                                 {"host": "10.0.0.1"})])

    def test_super_user_passes(self):
        outcome, _ = self.send(self.produce("payments"), 9, user="root")
        self.assertEqual(self.forwarded(outcome).topic_data[0].name, "shoppayments")

    def test_refused_transactional_id_refuses_the_whole_request(self):
        self.allow("TOPIC", "orders", "User:app", "WRITE")
        outcome, pending = self.send(self.produce("orders", txn="tx"), 9)
        sent = self.forwarded(outcome)
        self.assertTrue(sent.transactional_id.startswith("!"))
        decoy = sent.topic_data[0].name
        self.assertTrue(decoy.startswith("!"), "no record may reach a real topic")
        answer = self.answered(pending, self.broker_answer(decoy, 17))
        self.assertEqual(answer.responses[0].name, "orders")
        self.assertEqual(answer.responses[0].partition_responses[0].error_code,
                         ErrorCode.transactional_id_authorization_failed)

    def test_topic_ids_checked_too(self):
        """Produce v13 names topics by id: the id's topic needs WRITE."""
        topic_id = uuid.uuid4()
        self.topology.topic_ids[topic_id] = "shoppayments"
        outcome, _ = self.send(self.produce_by_id(topic_id), 13)
        sent = self.forwarded(outcome)
        self.assertNotEqual(sent.topic_data[0].topic_id, topic_id)
        self.allow("TOPIC", "pay", "User:app", "WRITE", pattern="PREFIXED")
        outcome, _ = self.send(self.produce_by_id(topic_id), 13)
        self.assertEqual(self.forwarded(outcome).topic_data[0].topic_id, topic_id)

    def test_topic_id_one_may_not_describe_is_unknown(self):
        """By id, a topic the principal may not even DESCRIBE is answered as
        a missing id is (UNKNOWN_TOPIC_ID, no name), as Kafka does: the
        refusal named the topic, and told a guessed id (a concentrated
        topic's is computable) from a missing one.  With DESCRIBE but not
        WRITE: TOPIC_AUTHORIZATION_FAILED, as Kafka answers."""
        from kio.schema.produce.v13.response import (
            PartitionProduceResponse, ProduceResponse, TopicProduceResponse)
        topic_id = uuid.uuid4()
        self.topology.topic_ids[topic_id] = "shoppayments"

        def answer(decoy):
            return ProduceResponse(throttle_time=NO_THROTTLE, responses=(
                TopicProduceResponse(topic_id=decoy, partition_responses=(
                    PartitionProduceResponse(
                        index=i32(0), error_code=ErrorCode.unknown_topic_id,
                        base_offset=i64(-1), log_append_time=None,
                        log_start_offset=i64(-1), record_errors=(),
                        error_message=None),)),), node_endpoints=())
        for allowed, code in ((None, ErrorCode.unknown_topic_id),
                              ("DESCRIBE", ErrorCode.topic_authorization_failed)):
            if allowed:
                self.allow("TOPIC", "payments", "User:app", allowed)
            outcome, pending = self.send(self.produce_by_id(topic_id), 13)
            decoy = self.forwarded(outcome).topic_data[0].topic_id
            self.assertNotEqual(decoy, topic_id)
            got = self.answered(pending, answer(decoy)).responses[0]
            part = got.partition_responses[0]
            self.assertEqual((got.topic_id, part.error_code), (topic_id, code))
            if code == ErrorCode.unknown_topic_id:
                self.assertNotIn("payments", part.error_message or "")
                self.assertEqual(outcome.context.unplaced_ids, 1)  # waits as unknown

    def test_null_topic_name_refused(self):
        """A Produce naming its topic with a null string (the schema allows none)
        closes the connection; it reached the ACL check as None and raised
        TypeError there (found by a sweep with ACLs on)."""
        for version, name, null in ((9, b"\x05zzzz", b"\x00"),
                                    (3, b"\x00\x04zzzz", b"\xff\xff")):
            frame = request_frame(self.produce("zzzz", version=version), version, 1)[4:]
            self.assertEqual(frame.count(name), 1)
            outcome = rewrite_request(self.services, Login(
                Claims("shop", "app"), self.vclusters.namespace("shop")), 1 << 20,
                RULES[0], frame.replace(name, null), 0, version)
            self.assertIn("a null topic name", outcome.refused)

    def produce_by_id(self, topic_id):
        from kio.schema.produce.v13 import request as m
        return m.ProduceRequest(
            transactional_id=None, acks=i16(-1), timeout=SECONDS,
            topic_data=(m.TopicProduceData(topic_id=topic_id, partition_data=(
                m.PartitionProduceData(index=i32(0), records=record_batch(1)),)),))

    def test_read_only_mapping_explained_in_the_same_terms(self):
        self.allow("TOPIC", "*", "User:app", "ALL")
        self.vclusters.namespace("shop").set_alias("feed", "shared.feed", True, False, None)
        outcome, pending = self.send(self.produce("feed"), 9)
        decoy = self.forwarded(outcome).topic_data[0].name
        part = self.answered(pending, self.broker_answer(decoy, 17)) \
            .responses[0].partition_responses[0]
        self.assertEqual(part.error_code, ErrorCode.topic_authorization_failed)
        self.assertIn("read-only", part.error_message)
        self.assertIn("WRITE", part.error_message)


class ProducerIdTests(RightsTestCase):
    def init(self, txn):
        from kio.schema.init_producer_id.v5.request import InitProducerIdRequest
        return InitProducerIdRequest(transactional_id=txn, transaction_timeout=SECONDS,
                                     producer_id=i64(-1), producer_epoch=i16(-1))

    def test_idempotent_producer_needs_write_somewhere(self):
        outcome, _ = self.send(self.init(None), 5)
        answer = self.local(outcome, 22, 5)
        self.assertEqual(answer.error_code, ErrorCode.cluster_authorization_failed)
        self.allow("TOPIC", "orders", "User:app", "WRITE")
        self.assertIsNone(self.send(self.init(None), 5)[0].answer)

    def test_idempotent_write_on_the_cluster_is_enough(self):
        self.allow("CLUSTER", "kafka-cluster", "User:app", "IDEMPOTENT_WRITE")
        self.assertIsNone(self.send(self.init(None), 5)[0].answer)

    def test_transactional_id_needs_write(self):
        outcome, _ = self.send(self.init("tx"), 5)
        self.assertEqual(self.forwarded(outcome).transactional_id, "")  # refused there
        self.allow("TRANSACTIONAL_ID", "tx", "User:app", "WRITE")
        outcome, _ = self.send(self.init("tx"), 5)
        self.assertEqual(self.forwarded(outcome).transactional_id, "shoptx")


class GroupTests(RightsTestCase):
    def commit(self, group, topic):
        from kio.schema.offset_commit.v8 import request as m
        return m.OffsetCommitRequest(
            group_id=group, generation_id_or_member_epoch=i32(-1), member_id="",
            group_instance_id=None, topics=(m.OffsetCommitRequestTopic(name=topic,
                partitions=(m.OffsetCommitRequestPartition(
                    partition_index=i32(0), committed_offset=i64(5),
                    committed_leader_epoch=i32(-1), committed_metadata=None),)),))

    def commit_answer(self, name, code):
        from kio.schema.offset_commit.v8 import response as m
        return m.OffsetCommitResponse(throttle_time=NO_THROTTLE, topics=(
            m.OffsetCommitResponseTopic(name=name, partitions=(
                m.OffsetCommitResponsePartition(partition_index=i32(0),
                                                error_code=ErrorCode(code)),)),))

    def test_group_refused_refuses_the_whole_commit(self):
        self.allow("TOPIC", "orders", "User:app", "READ")
        outcome, pending = self.send(self.commit("g", "orders"), 8)
        sent = self.forwarded(outcome)
        self.assertTrue(sent.group_id.startswith("!"))
        self.assertTrue(sent.topics[0].name.startswith("!"))
        answer = self.answered(pending, self.commit_answer(sent.topics[0].name, 69))
        self.assertEqual(answer.topics[0].name, "orders")
        self.assertEqual(answer.topics[0].partitions[0].error_code,
                         ErrorCode.group_authorization_failed)

    def test_refused_coordinator_in_every_version(self):
        """FindCoordinator for a group the principal may not describe: answered
        GROUP_AUTHORIZATION_FAILED, with the reason where the version has an
        error message (v1+); v0 has none, and the rewrite raised TypeError
        there (found by a sweep of broker answers with ACLs on)."""
        import importlib
        for version in range(0, 7):
            req = importlib.import_module(f"kio.schema.find_coordinator.v{version}.request")
            resp = importlib.import_module(
                f"kio.schema.find_coordinator.v{version}.response")
            keys = {"coordinator_keys": ("g",)} if version >= 4 else {"key": "g"}
            outcome, pending = self.send(req.FindCoordinatorRequest(
                **keys, **({"key_type": i8(0)} if version >= 1 else {})), version)
            decoy = "" if version < 4 else self.forwarded(outcome).coordinator_keys[0]
            if version >= 4:
                body = resp.FindCoordinatorResponse(
                    throttle_time=NO_THROTTLE, coordinators=(resp.Coordinator(
                        key=decoy, node_id=i32(1), host="kafka1", port=i32(9092),
                        error_code=ErrorCode.none, error_message=None),))
            else:
                body = resp.FindCoordinatorResponse(
                    error_code=ErrorCode.none, node_id=i32(1), host="kafka1",
                    port=i32(9092), **({"throttle_time": NO_THROTTLE,
                                        "error_message": None} if version >= 1 else {}))
            answer = self.answered(pending, body, flexible=version >= 3)
            found = answer.coordinators[0] if version >= 4 else answer
            self.assertEqual(found.error_code, ErrorCode.group_authorization_failed,
                             version)
            self.assertEqual(found.node_id, -1, version)

    def test_topic_refused_alone(self):
        self.allow("GROUP", "g", "User:app", "READ")
        outcome, pending = self.send(self.commit("g", "orders"), 8)
        sent = self.forwarded(outcome)
        self.assertEqual(sent.group_id, "shopg")
        answer = self.answered(pending, self.commit_answer(sent.topics[0].name, 17))
        self.assertEqual(answer.topics[0].partitions[0].error_code,
                         ErrorCode.topic_authorization_failed)

    def test_offset_fetch_refused_per_group_or_whole(self):
        """v8+ names groups in a list: each refused on its own; before v8 the
        one group refuses the request."""
        from kio.schema.offset_fetch.v7.request import OffsetFetchRequest as V7
        from kio.schema.offset_fetch.v9 import request as v9
        self.allow("GROUP", "mine", "User:app", "DESCRIBE")
        outcome, pending = self.send(v9.OffsetFetchRequest(groups=tuple(
            v9.OffsetFetchRequestGroup(group_id=g, topics=None)
            for g in ("other", "mine"))), 9)
        sent = self.forwarded(outcome)
        self.assertTrue(sent.groups[0].group_id.startswith("!"))
        self.assertEqual(sent.groups[1].group_id, "shopmine")
        self.assertIsNone(pending.context.rights.refused)
        from kio.schema.offset_fetch.v9 import response as rs
        decoy = sent.groups[0].group_id
        answer = self.answered(pending, rs.OffsetFetchResponse(
            throttle_time=NO_THROTTLE, groups=tuple(rs.OffsetFetchResponseGroup(
                group_id=g, error_code=ErrorCode.none, topics=(rs.OffsetFetchResponseTopics(
                    name="shoporders", partitions=(rs.OffsetFetchResponsePartitions(
                        partition_index=i32(0), committed_offset=i64(-1),
                        committed_leader_epoch=i32(-1), metadata=None,
                        error_code=ErrorCode.none),)),)) for g in (decoy, "shopmine"))))
        refused, mine = answer.groups
        self.assertEqual((refused.group_id, refused.error_code, refused.topics),
                         ("other", ErrorCode.group_authorization_failed, ()))
        self.assertEqual(mine.group_id, "mine")
        outcome, pending = self.send(V7(group_id="other", topics=None), 7)
        self.assertTrue(self.forwarded(outcome).group_id.startswith("!"))
        self.assertEqual(pending.context.rights.refused[1],
                         ErrorCode.group_authorization_failed)

    def test_list_groups_shows_what_the_principal_may_describe(self):
        from kio.schema.list_groups.v4 import request as rq, response as rs
        self.allow("GROUP", "mine", "User:app", "READ")
        outcome, pending = self.send(rq.ListGroupsRequest(states_filter=()), 4)
        listed = rs.ListGroupsResponse(
            throttle_time=NO_THROTTLE, error_code=ErrorCode.none, groups=tuple(
                rs.ListedGroup(group_id=g, protocol_type="consumer", group_state="Stable")
                for g in ("shopmine", "shopother", "bankmine")))
        answer = self.answered(pending, listed)
        self.assertEqual([g.group_id for g in answer.groups], ["mine"])
        self.allow("CLUSTER", "kafka-cluster", "User:app", "DESCRIBE")
        outcome, pending = self.send(rq.ListGroupsRequest(states_filter=()), 4)
        self.assertEqual([g.group_id for g in self.answered(pending, listed).groups],
                         ["mine", "other"])

    def test_described_transaction_shows_only_describable_topics(self):
        """DescribeTransactions lists a transaction's topics: those the
        principal may not DESCRIBE are left out, as Kafka's broker does."""
        import datetime
        from kio.schema.describe_transactions.v0 import request as rq, response as rs
        from kio.static.primitive import i16, i32, i32Timedelta, i64
        self.allow("TRANSACTIONAL_ID", "tx", "User:app", "DESCRIBE")
        self.allow("TOPIC", "seen", "User:app", "WRITE")
        outcome, pending = self.send(rq.DescribeTransactionsRequest(
            transactional_ids=("tx",)), 0)
        self.assertEqual(self.forwarded(outcome).transactional_ids, ("shoptx",))
        answer = self.answered(pending, rs.DescribeTransactionsResponse(
            throttle_time=NO_THROTTLE, transaction_states=(rs.TransactionState(
                error_code=ErrorCode.none, transactional_id="shoptx",
                transaction_state="Ongoing",
                transaction_timeout=i32Timedelta.parse(datetime.timedelta(seconds=60)),
                transaction_start_time=datetime.datetime.now(datetime.timezone.utc),
                producer_id=i64(7), producer_epoch=i16(0),
                topics=tuple(rs.TopicData(topic=t, partitions=(i32(0),))
                             for t in ("shopseen", "shophidden"))),)))
        state = answer.transaction_states[0]
        self.assertEqual((state.transactional_id, [t.topic for t in state.topics]),
                         ("tx", ["seen"]))

    def test_consumer_protocol_topics_are_not_checked(self):
        """JoinGroup needs READ on the group only, as on a broker."""
        from kio.schema.join_group.v9.request import (JoinGroupRequest,
                                                      JoinGroupRequestProtocol)
        from vkafka.tenancy.consumer_protocol import encode
        from .test_consumer_protocol import subscription
        self.allow("GROUP", "g", "User:app", "READ")
        metadata = encode(subscription(1, ("orders",)))
        join = JoinGroupRequest(group_id="g", session_timeout=SECONDS,
                                rebalance_timeout=SECONDS, member_id="",
                                group_instance_id=None, protocol_type="consumer",
                                protocols=(JoinGroupRequestProtocol(
                                    name="range", metadata=metadata),), reason=None)
        outcome, _ = self.send(join, 9)
        self.assertEqual(self.forwarded(outcome).group_id, "shopg")


class MetadataTests(RightsTestCase):
    def test_listing_shows_only_describable_topics(self):
        from kio.schema.metadata.v12 import request as rq, response as rs
        self.allow("TOPIC", "orders", "User:app", "READ")
        self.topology.learn_listing({"shoporders": 1, "shopsecret": 1}, 1000.0)
        outcome, pending = self.send(rq.MetadataRequest(
            topics=None, allow_auto_topic_creation=False,
            include_topic_authorized_operations=False), 12)
        sent = self.forwarded(outcome)
        self.assertEqual(sorted(t.name for t in sent.topics), ["shoporders", "shopsecret"])
        broker = rs.MetadataResponse(
            throttle_time=NO_THROTTLE, brokers=(), cluster_id="c", controller_id=i32(1),
            topics=tuple(rs.MetadataResponseTopic(
                error_code=ErrorCode.none, name=n, topic_id=uuid.uuid4(), is_internal=False,
                partitions=(), topic_authorized_operations=i32(0xFF8))  # the gateway's
                for n in ("shoporders", "shopsecret")))
        topics = self.answered(pending, broker).topics
        self.assertEqual([t.name for t in topics], ["orders"])
        # the tenant principal's operations, not the gateway's: READ, DESCRIBE
        self.assertEqual(topics[0].topic_authorized_operations, (1 << 3) | (1 << 8))

    def test_explicit_topic_refused(self):
        from kio.schema.metadata.v12 import request as rq, response as rs
        outcome, pending = self.send(rq.MetadataRequest(
            topics=(rq.MetadataRequestTopic(topic_id=None, name="secret"),),
            allow_auto_topic_creation=False,
            include_topic_authorized_operations=False), 12)
        decoy = self.forwarded(outcome).topics[0].name
        broker = rs.MetadataResponse(
            throttle_time=NO_THROTTLE, brokers=(), cluster_id="c", controller_id=i32(1),
            topics=(rs.MetadataResponseTopic(
                error_code=ErrorCode.invalid_topic_exception, name=decoy,
                topic_id=uuid.UUID(int=0), is_internal=False, partitions=(),
                topic_authorized_operations=i32(-2147483648)),))
        topic = self.answered(pending, broker).topics[0]
        self.assertEqual((topic.name, topic.error_code),
                         ("secret", ErrorCode.topic_authorization_failed))


class AclsOffOperationsTests(RightsTestCase):
    """With the ACLs off, authorized-operations fields say what the gateway
    lets the tenant do, not what the broker lets the gateway's own account
    (a super user) do."""

    def setUp(self):
        super().setUp()
        self.successResultOf(self.state.put_rights("shop", False, []))
        self.vclusters.namespace("shop").set_alias("mirror", "upstream.events",
                                                   read_only=True)

    def test_cluster_and_topics(self):
        from kio.schema.describe_cluster.v1 import request as dq, response as dr
        from kio.schema.metadata.v12 import request as rq, response as rs
        outcome, pending = self.send(dq.DescribeClusterRequest(
            include_cluster_authorized_operations=True, endpoint_type=i8(1)), 1)
        answer = self.answered(pending, dr.DescribeClusterResponse(
            throttle_time=NO_THROTTLE, error_code=ErrorCode.none, error_message=None,
            endpoint_type=i8(1), cluster_id="c", controller_id=i32(1), brokers=(),
            cluster_authorized_operations=i32(8096)))
        # CREATE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, IDEMPOTENT_WRITE: not
        # ALTER_CONFIGS nor CLUSTER_ACTION, which the broker granted the gateway
        self.assertEqual(answer.cluster_authorized_operations,
                         sum(1 << op for op in (5, 7, 8, 10, 12)))
        outcome, pending = self.send(rq.MetadataRequest(
            topics=tuple(rq.MetadataRequestTopic(topic_id=None, name=n)
                         for n in ("orders", "mirror")),
            allow_auto_topic_creation=False, include_topic_authorized_operations=True), 12)
        topics = self.answered(pending, rs.MetadataResponse(
            throttle_time=NO_THROTTLE, brokers=(), cluster_id="c", controller_id=i32(1),
            topics=tuple(rs.MetadataResponseTopic(
                error_code=ErrorCode.none, name=n, topic_id=uuid.uuid4(),
                is_internal=False, partitions=(), topic_authorized_operations=i32(0xFF8))
                for n in ("shoporders", "upstream.events")))).topics
        self.assertEqual([(t.name, t.topic_authorized_operations) for t in topics],
                         [("orders", sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))),
                          ("mirror", (1 << 3) | (1 << 8) | (1 << 10))])  # read only

    def test_groups(self):
        """A group's operations as Kafka 4 reports them: READ, DELETE,
        DESCRIBE and, since groups have configs (KIP-848), DESCRIBE_CONFIGS
        and ALTER_CONFIGS (the gateway checks both on DescribeConfigs and
        IncrementalAlterConfigs of a group)."""
        from kio.schema.describe_groups.v5 import request as gq, response as gr
        outcome, pending = self.send(gq.DescribeGroupsRequest(
            groups=("g",), include_authorized_operations=True), 5)
        answer = self.answered(pending, gr.DescribeGroupsResponse(
            throttle_time=NO_THROTTLE, groups=(gr.DescribedGroup(
                error_code=ErrorCode.none, group_id=self.forwarded(outcome).groups[0],
                group_state="Empty", protocol_type="consumer", protocol_data="",
                members=(), authorized_operations=i32(0)),)))
        self.assertEqual(answer.groups[0].authorized_operations,
                         sum(1 << op for op in (3, 6, 8, 10, 11)))


class TopicsActedOnByRulesTests(RightsTestCase):
    """Rules that act on a name themselves, before the walk (a mapping
    removed by DeleteTopics, a concentrated topic made by CreateTopics), ask
    the ACLs first: a refused name goes to the walk, which makes it a decoy."""

    def delete(self, name):
        from kio.schema.delete_topics.v6 import request as rq
        return rq.DeleteTopicsRequest(topics=(rq.DeleteTopicState(
            name=name, topic_id=uuid.UUID(int=0)),), timeout=SECONDS)

    def test_mapping_deleted_only_with_delete(self):
        forgotten = []
        self.services.forget_alias = lambda namespace, logical: forgotten.append(
            logical)
        self.vclusters.namespace("shop").set_alias("feed", "shared.feed")
        self.allow("TOPIC", "*", "User:app", "READ")
        outcome, _ = self.send(self.delete("feed"), 6)
        [sent] = self.forwarded(outcome).topics
        self.assertNotIn(sent.name, ("feed", "shared.feed", "shopfeed"))  # a decoy
        self.assertEqual(forgotten, [])
        self.allow("TOPIC", "feed", "User:app", "DELETE")
        outcome, _ = self.send(self.delete("feed"), 6)
        self.assertEqual(self.forwarded(outcome).topics, ())
        self.assertEqual(forgotten, ["feed"])

    def test_concentrated_topic_created_only_with_create(self):
        from kio.schema.create_topics.v7 import request as rq
        from vkafka.names import ConcentrationRule
        self.vclusters.namespace("shop").set_rule(ConcentrationRule(
            "r", "events-.*", (("delete", "events.all"),)))
        self.allow("TOPIC", "*", "User:app", "READ")
        outcome, _ = self.send(rq.CreateTopicsRequest(topics=(rq.CreatableTopic(
            name="events-x", num_partitions=i32(1), replication_factor=i16(1),
            assignments=(), configs=()),), timeout=SECONDS, validate_only=False), 7)
        [sent] = self.forwarded(outcome).topics
        self.assertNotEqual(sent.name, "shopevents-x")  # a decoy, refused
        self.assertEqual(outcome.context.created, [])  # no concentrated topic made


class AnswerTests(RightsTestCase):
    """What an answer shows of a resource the principal may not describe."""

    def test_created_topic_without_describe_configs(self):
        from kio.schema.create_topics.v7 import request as rq, response as rs
        self.allow("TOPIC", "new", "User:app", "CREATE", pattern="PREFIXED")
        self.allow("TOPIC", "newer", "User:app", "DESCRIBE_CONFIGS")
        outcome, pending = self.send(rq.CreateTopicsRequest(topics=tuple(
            rq.CreatableTopic(name=n, num_partitions=i32(1), replication_factor=i16(1),
                              assignments=(), configs=()) for n in ("new1", "newer")),
            timeout=SECONDS, validate_only=False), 7)
        self.assertEqual([t.name for t in self.forwarded(outcome).topics],
                         ["shopnew1", "shopnewer"])
        answer = self.answered(pending, rs.CreateTopicsResponse(
            throttle_time=NO_THROTTLE, topics=tuple(rs.CreatableTopicResult(
                name=n, topic_id=uuid.uuid4(), error_code=ErrorCode.none,
                error_message=None, topic_config_error_code=i16(0),
                num_partitions=i32(1), replication_factor=i16(3),
                configs=(rs.CreatableTopicConfigs(
                    name="retention.ms", value="1", read_only=False,
                    config_source=i8(5), is_sensitive=False),))
                for n in ("shopnew1", "shopnewer"))))
        hidden, shown = answer.topics
        self.assertEqual((hidden.error_code, hidden.topic_config_error_code,
                          hidden.configs, hidden.num_partitions, hidden.topic_id),
                         (ErrorCode.none, 29, (), -1, None))  # None: the zero id
        self.assertEqual((shown.topic_config_error_code, len(shown.configs)), (0, 1))

    def test_described_group_assigned_a_hidden_topic(self):
        from kio.schema.consumer_group_describe.v1 import request as rq, response as rs
        self.allow("GROUP", "g", "User:app", "DESCRIBE")
        self.allow("TOPIC", "orders", "User:app", "READ")
        outcome, pending = self.send(rq.ConsumerGroupDescribeRequest(
            group_ids=("g",), include_authorized_operations=False), 1)
        self.assertEqual(self.forwarded(outcome).group_ids, ("shopg",))

        def member(topic):
            assignment = rs.Assignment(topic_partitions=(rs.TopicPartitions(
                topic_id=uuid.uuid4(), topic_name=topic, partitions=(i32(0),)),))
            return rs.Member(member_id="m", member_epoch=i32(1), client_id="c",
                             client_host="/h", subscribed_topic_names=(topic,),
                             assignment=assignment, target_assignment=assignment)
        described = rs.ConsumerGroupDescribeResponse(throttle_time=NO_THROTTLE, groups=(
            rs.DescribedGroup(error_code=ErrorCode.none, group_id="shopg",
                              group_state="Stable", group_epoch=i32(1),
                              assignment_epoch=i32(1), assignor_name="uniform",
                              members=(member("shopsecret"),),
                              authorized_operations=i32(-2147483648)),))
        group = self.answered(pending, described).groups[0]
        self.assertEqual((group.group_id, group.error_code, group.members),
                         ("g", ErrorCode.topic_authorization_failed, ()))


class FetchSessionTests(unittest.TestCase):
    def test_a_session_made_under_other_acls_is_refused_once(self):
        sessions = FetchSessions()
        sessions.created(7, 1)
        self.assertEqual(sessions.check(7, 3, 1), "forward")
        self.assertEqual(sessions.check(7, 4, 2), "refuse")
        self.assertNotIn(7, sessions)
        self.assertEqual(sessions.check(0, 0, 2), "forward")  # the full fetch after


class AclApiTests(RightsTestCase):
    def create(self, *creations, user="root"):
        from kio.schema.create_acls.v3 import request as m
        return self.send(m.CreateAclsRequest(creations=tuple(
            m.AclCreation(resource_type=i8(rt), resource_name=name,
                          resource_pattern_type=i8(3), principal=principal, host="*",
                          operation=i8(op), permission_type=i8(3))
            for rt, name, principal, op in creations)), 3, user)

    def describe(self, user="root"):
        from kio.schema.describe_acls.v3.request import DescribeAclsRequest
        return self.send(DescribeAclsRequest(
            resource_type_filter=i8(1), resource_name_filter=None, pattern_type_filter=i8(1),
            principal_filter=None, host_filter=None, operation=i8(1),
            permission_type=i8(1)), 3, user)

    def test_create_describe_delete(self):
        outcome, _ = self.create((2, "orders", "User:app", 3), (3, "g", "User:app", 3),
                                 (7, "bob", "User:app", 3))
        outcome = self.successResultOf(outcome.later) if outcome.later else outcome
        results = self.local(outcome, 30, 3).results
        self.assertEqual([r.error_code for r in results],
                         [ErrorCode.none, ErrorCode.none, ErrorCode.invalid_request])
        self.assertIn("not supported", results[2].error_message)
        self.assertEqual(len(self.state.acls_of("shop")), 2)
        outcome, _ = self.describe()
        resources = self.local(outcome, 29, 3).resources
        self.assertEqual(sorted((r.resource_type, r.resource_name) for r in resources),
                         [(2, "orders"), (3, "g")])
        from kio.schema.delete_acls.v3 import request as m
        outcome, _ = self.send(m.DeleteAclsRequest(filters=(m.DeleteAclsFilter(
            resource_type_filter=i8(2), resource_name_filter=None,
            pattern_type_filter=i8(1), principal_filter=None, host_filter=None,
            operation=i8(1), permission_type=i8(1)),)), 3, "root")
        outcome = self.successResultOf(outcome.later) if outcome.later else outcome
        matched = self.local(outcome, 31, 3).filter_results[0].matching_acls
        self.assertEqual([a.resource_name for a in matched], ["orders"])
        self.assertEqual([a.name for a in self.state.acls_of("shop")], ["g"])

    def test_deletion_filters_bounded(self):
        """Each filter is matched against every ACL of the virtual cluster on
        the loop: more than MAX_FILTERS in one DeleteAcls are refused, each
        INVALID_REQUEST, and nothing is removed."""
        from kio.schema.delete_acls.v3 import request as m

        from vkafka.tenancy.rules.acls import MAX_FILTERS
        outcome, _ = self.create((2, "orders", "User:app", 3))
        self.successResultOf(outcome.later) if outcome.later else outcome
        outcome, _ = self.send(m.DeleteAclsRequest(filters=tuple(m.DeleteAclsFilter(
            resource_type_filter=i8(2), resource_name_filter=f"t{n}",
            pattern_type_filter=i8(1), principal_filter=None, host_filter=None,
            operation=i8(1), permission_type=i8(1)) for n in range(MAX_FILTERS + 1))),
            3, "root")
        results = self.local(outcome, 31, 3).filter_results
        self.assertEqual({r.error_code for r in results}, {ErrorCode.invalid_request})
        self.assertIn(f"at most {MAX_FILTERS} filters", results[0].error_message)
        self.assertEqual([a.name for a in self.state.acls_of("shop")], ["orders"])

    def test_creations_budgeted(self):
        """A virtual cluster creates at most MAX_ACLS ACLs at once through a
        gateway process, then one a second: creating and removing them in a
        loop grew the state every gateway reads (THROTTLING_QUOTA_EXCEEDED)."""
        from vkafka.auth.acls import MAX_ACLS
        from vkafka.tenancy.rules.common import StateWrites
        self.services.acl_writes = StateWrites(self.clock.seconds, MAX_ACLS)
        self.assertTrue(self.services.acl_writes.take("shop", MAX_ACLS - 1))
        outcome, _ = self.create((2, "orders", "User:app", 3))  # the last of the burst
        outcome = self.successResultOf(outcome.later) if outcome.later else outcome
        self.assertEqual(self.local(outcome, 30, 3).results[0].error_code, ErrorCode.none)
        outcome, _ = self.create((2, "more", "User:app", 3))
        outcome = self.successResultOf(outcome.later) if outcome.later else outcome
        [result] = self.local(outcome, 30, 3).results
        self.assertEqual(result.error_code, ErrorCode.throttling_quota_exceeded)
        self.assertIn("at most 1 a second", result.error_message)
        self.assertEqual([a.name for a in self.state.acls_of("shop")], ["orders"])
        self.assertTrue(self.services.acl_writes.take("other", 5))  # its own budget
        self.clock.advance(1.0)
        outcome, _ = self.create((2, "more", "User:app", 3))
        outcome = self.successResultOf(outcome.later) if outcome.later else outcome
        self.assertEqual(self.local(outcome, 30, 3).results[0].error_code, ErrorCode.none)

    def test_creations_budgeted_over_workers(self):
        """A worker of a gateway of N refills at an Nth of the rate, so the
        gateway's workers together add one ACL a second, not N; the burst
        stays whole on each (a CreateAcls of MAX_ACLS passes on any)."""
        from vkafka.auth.acls import MAX_ACLS
        from vkafka.tenancy.rules.common import StateWrites
        writes = StateWrites(self.clock.seconds, MAX_ACLS)
        writes.processes = 2
        self.assertTrue(writes.take("shop", MAX_ACLS))
        self.clock.advance(1.0)
        self.assertFalse(writes.take("shop", 1))
        self.clock.advance(1.0)
        self.assertTrue(writes.take("shop", 1))
        self.assertFalse(writes.take("shop", 1))

    def test_acl_apis_need_cluster_rights(self):
        outcome, _ = self.describe(user="app")
        answer = self.local(outcome, 29, 3)
        self.assertEqual(answer.error_code, ErrorCode.cluster_authorization_failed)
        outcome, _ = self.create((2, "x", "User:app", 3), user="app")
        outcome = self.successResultOf(outcome.later) if outcome.later else outcome
        self.assertEqual(self.local(outcome, 30, 3).results[0].error_code,
                         ErrorCode.cluster_authorization_failed)
        self.assertEqual(self.state.acls_of("shop"), [])

    def test_another_tenant_sees_none(self):
        self.create((2, "orders", "User:app", 3))
        self.successResultOf(self.state.ensure_vcluster("bank"))
        login = Login(Claims("bank", "x"), self.vclusters.namespace("bank"))
        from kio.schema.describe_acls.v3.request import DescribeAclsRequest
        body = DescribeAclsRequest(
            resource_type_filter=i8(1), resource_name_filter=None, pattern_type_filter=i8(1),
            principal_filter=None, host_filter=None, operation=i8(1), permission_type=i8(1))
        outcome = rewrite_request(self.services, login, 1 << 20, RULES[29],
                                  request_frame(body, 3, 9)[4:], 29, 3)
        self.assertEqual(self.local(outcome, 29, 3).resources, ())
