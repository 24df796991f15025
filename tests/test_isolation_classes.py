"""Isolation, class by class, attacked with a raw protocol client.

london (A) owns topic "secret" with a record and group "lg"; paris (B) owns
topic "mine".  Each test sends what a hostile paris client would, against
real Kafka, and checks both the answer (the same as for a name or id that
does not exist) and the physical effect on the brokers.
"""

import datetime
import uuid

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i32, i32Timedelta, i64

from vkafka.tenancy.rules.configs import TENANT_BROKER_CONFIGS

from . import stack
from .test_isolation import IsolationBase, metadata

RETRIABLE = (ErrorCode.coordinator_load_in_progress, ErrorCode.coordinator_not_available,
             ErrorCode.not_coordinator)
"""What a transaction coordinator answers while a fresh cluster is loading."""

WAIT = i32Timedelta.parse(datetime.timedelta(milliseconds=50))


def fetch(topic_id=None, session=0, epoch=-1, version=17):
    """A Fetch request (v13+: by id) of partition 0 from offset 0."""
    import importlib
    m = importlib.import_module(f"kio.schema.fetch.v{version}.request")
    topics = () if topic_id is None else (m.FetchTopic(topic_id=topic_id, partitions=(
        m.FetchPartition(partition=i32(0), fetch_offset=i64(0),
                         partition_max_bytes=i32(1 << 20)),)),)
    return m.FetchRequest(max_wait=WAIT, min_bytes=i32(1), max_bytes=i32(1 << 20),
                          session_id=i32(session), session_epoch=i32(epoch),
                          topics=topics, forgotten_topics_data=(), rack_id="")


class IsolationClassTests(IsolationBase):
    def leader_client(self, vcluster, topic):
        """A raw client of *vcluster* on the gateway port of *topic*'s leader."""
        raw = self.client(vcluster)
        answer = raw.request(metadata([topic]), 12)
        [t] = answer.topics
        leader = t.partitions[0].leader_id
        [port] = [b.port for b in answer.brokers if b.node_id == leader]
        return self.client(vcluster, port=port), t.topic_id

    def test_fetch_session_of_another_tenant(self):
        """paris naming london's fetch session gets what a session id that does
        not exist gets (FETCH_SESSION_ID_NOT_FOUND, nothing else), whether it
        reads (epoch 1) or would close it (epoch -1 / 0); london's session is
        intact and still serves london's records."""
        london, secret_id = self.leader_client(self.london, "secret")
        opened = london.request(fetch(secret_id, 0, 0), 17)
        self.assertEqual(opened.error_code, ErrorCode.none)
        session = opened.session_id
        self.assertNotEqual(session, 0)
        self.assertTrue(opened.responses[0].partitions[0].records)
        paris, _ = self.leader_client(self.paris, "mine")
        made_up = (session % 2_000_000_000) + 1
        answers = {}
        for probe in (session, made_up):
            stolen = paris.request(fetch(None, probe, 1), 17)
            answers[probe] = (stolen.error_code, stolen.session_id, stolen.responses)
        self.assertEqual(answers[session], (ErrorCode.fetch_session_id_not_found, 0, ()))
        self.assertEqual(answers[session], answers[made_up])
        for epoch in (-1, 0):  # a full fetch naming it would close it
            full = paris.request(fetch(None, session, epoch), 17)
            self.assertEqual(full.error_code, ErrorCode.none)
            self.assertNotEqual(full.session_id, session)
            self.assertNotIn(secret_id, [t.topic_id for t in full.responses])
        more = london.request(fetch(None, session, 1), 17)  # incremental: intact
        self.assertEqual((more.error_code, more.session_id),
                         (ErrorCode.none, session))

    def test_fetch_session_bound_to_its_connection(self):
        """Even london's own second connection cannot name the first one's
        session: a session id is connection-bound state."""
        london, secret_id = self.leader_client(self.london, "secret")
        session = london.request(fetch(secret_id, 0, 0), 17).session_id
        other, _ = self.leader_client(self.london, "secret")
        answer = other.request(fetch(None, session, 1), 17)
        self.assertEqual(answer.error_code, ErrorCode.fetch_session_id_not_found)

    def test_fetch_sessions_a_connection_makes_are_bounded(self):
        """Full fetches each asking the broker for a new session (a tenant
        filling the brokers' shared session cache to evict other tenants'):
        one connection gets FetchSessions.LIMIT of them; past that its fetches
        are answered in full, sessionless (session id 0), records included."""
        from vkafka.tenancy.sessions import FetchSessions
        limit = FetchSessions.LIMIT
        london, secret_id = self.leader_client(self.london, "secret")
        answers = [london.request(fetch(secret_id, 0, 0), 17) for _ in range(limit + 4)]
        self.assertEqual([a.error_code for a in answers], [ErrorCode.none] * (limit + 4))
        made = [a.session_id for a in answers[:limit]]
        self.assertEqual(len(set(made)), limit)
        self.assertNotIn(0, made)
        self.assertEqual([a.session_id for a in answers[limit:]], [0] * 4)
        for answer in answers:
            self.assertTrue(answer.responses[0].partitions[0].records)

    def test_fetch_sessions_closed_with_their_connection(self):
        """A tenant's connection closes: the broker sessions it made are closed
        too (their slots in the brokers' shared session cache free at once,
        not when evicted): the broker itself no longer knows them."""
        from compose import devstack
        from tests.rawclient import RawClient
        london, secret_id = self.leader_client(self.london, "secret")
        answer = london.request(metadata(["secret"]), 12)
        leader = answer.topics[0].partitions[0].leader_id
        session = london.request(fetch(secret_id, 0, 0), 17).session_id
        self.assertNotEqual(session, 0)
        direct = RawClient("localhost", devstack.NODES[leader])
        self.addCleanup(direct.close)
        self.assertEqual(direct.request(fetch(None, session, 1), 17).error_code,
                         ErrorCode.none)  # the broker has it, for anyone naming it
        london.close()
        epoch = 2
        def gone():
            nonlocal epoch
            answer = direct.request(fetch(None, session, epoch), 17)
            epoch += 1
            return answer.error_code == ErrorCode.fetch_session_id_not_found
        stack.wait_until(gone, "the closed connection's fetch session to be closed", 30)

    def heartbeat(self, client, group, regex, member=None, epoch=0):
        from kio.schema.consumer_group_heartbeat.v1.request import (
            ConsumerGroupHeartbeatRequest)
        return client.request(ConsumerGroupHeartbeatRequest(
            group_id=group, member_id=member or str(uuid.uuid4()),
            member_epoch=i32(epoch),
            rebalance_timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
            subscribed_topic_names=(), subscribed_topic_regex=regex,
            topic_partitions=()), 1)

    def assigned(self, vcluster, group, regex):
        """The topic ids a fresh KIP-848 member subscribed by *regex* is
        assigned, polled until it has an assignment."""
        from kio.schema.consumer_group_heartbeat.v1.request import (
            ConsumerGroupHeartbeatRequest)
        client = self.coordinator(vcluster, group)
        member, found = str(uuid.uuid4()), {}
        request = None

        def beat():
            nonlocal request
            if request is None:
                response = self.heartbeat(client, group, regex, member)
            else:
                response = client.request(request, 1)
            self.assertEqual(response.error_code, ErrorCode.none, response.error_message)
            request = ConsumerGroupHeartbeatRequest(
                group_id=group, member_id=member, member_epoch=response.member_epoch,
                topic_partitions=None)
            if response.assignment is not None:
                found["ids"] = {t.topic_id for t in response.assignment.topic_partitions}
            return "ids" in found and found["ids"]
        stack.wait_until(beat, f"an assignment for {regex!r}", 60, interval=0.5)
        return found["ids"]

    def test_regex_cannot_escape(self):
        """A regex that would close the gateway's old wrapping (')|(') is just a
        pattern over paris's own names: invalid here, so paris gets the broker's
        INVALID_REGULAR_EXPRESSION and no assignment."""
        paris = self.coordinator(self.paris, "escape-group")
        for regex in (")|(.*", f")|({self.london}.*"):
            answer = self.heartbeat(paris, "escape-group", regex)
            self.assertEqual(answer.error_code, ErrorCode.invalid_regular_expression,
                             regex)
            self.assertIsNone(answer.assignment)

    def test_anchored_regex_assigned(self):
        """'^mine$' (anchored, as franz-go and Java's SubscriptionPattern send)
        is assigned paris's topic, exactly as '.*' is; never london's."""
        paris = self.client(self.paris)
        [mine] = paris.request(metadata(["mine"]), 12).topics
        for regex, group in (("^mine$", "anchored"), ("^m.*", "prefix")):
            self.assertEqual(self.assigned(self.paris, group, regex), {mine.topic_id})
        self.assertNotIn(self.london_id, self.assigned(self.paris, "all", ".*"))

    def test_describe_topic_partitions_pages_own_topics_only(self):
        """DescribeTopicPartitions pages through paris's topics only, whatever
        the cursor (london's name, an invalid one, none) or the page limit:
        the partition counts it shows are paris's alone."""
        from kio.schema.describe_topic_partitions.v0.request import (
            Cursor, DescribeTopicPartitionsRequest)
        paris = self.client(self.paris)
        seen = []
        for cursor in (None, "secret", "!!", "", "a", self.london + "secret"):
            for limit in (1, 2, 1000):
                answer = paris.request(DescribeTopicPartitionsRequest(
                    topics=(), response_partition_limit=i32(limit),
                    cursor=None if cursor is None else Cursor(
                        topic_name=cursor, partition_index=i32(0))), 0)
                self.assertIsNotNone(answer, (cursor, limit))
                names = [t.name for t in answer.topics]
                ids = [t.topic_id for t in answer.topics]
                seen.append((cursor, limit, names))
                self.assertTrue(set(names) <= {"mine"}, (cursor, names))
                self.assertNotIn(self.london_id, ids)
                if answer.next_cursor is not None:
                    self.assertEqual(answer.next_cursor.topic_name, "mine")
        self.assertIn((None, 1000, ["mine"]), seen)

    def test_refused_group_ids_never_meet(self):
        """A group id the gateway refuses (here the empty one) reaches the
        broker as a name no tenant can produce, unique to the request, or as a
        request the broker refuses: two tenants' refused commits and joins never
        meet on one physical group, and no group or offset is created for them
        (Kafka itself would take a simple offset commit for group "")."""
        from kio.schema.join_group.v9.request import JoinGroupRequest
        from kio.schema.offset_commit.v9.request import (
            OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic)
        before = set(stack.cli("kafka-consumer-groups", "--bootstrap-server",
                               stack.BOOTSTRAP, "--list").split())
        ten = i32Timedelta.parse(datetime.timedelta(seconds=10))
        # every node: each refused request gets a new decoy, whose coordinator
        # may be any of them
        for vcluster, node in [(v, n) for v in (self.london, self.paris)
                               for n in range(3)]:
            client = self.client(vcluster, port=self.start_port + node)
            topic = "secret" if vcluster == self.london else "mine"
            answer = client.request(OffsetCommitRequest(
                group_id="", generation_id_or_member_epoch=i32(-1), member_id="",
                group_instance_id=None, topics=(OffsetCommitRequestTopic(
                    name=topic, partitions=(OffsetCommitRequestPartition(
                        partition_index=i32(0), committed_offset=i64(1),
                        committed_leader_epoch=i32(-1),
                        committed_metadata=None),)),)), 9)
            [t] = answer.topics
            self.assertEqual(t.name, topic)
            self.assertNotEqual(t.partitions[0].error_code, ErrorCode.none)
            joined = client.request(JoinGroupRequest(
                group_id="", session_timeout=ten, rebalance_timeout=ten, member_id="",
                group_instance_id=None, protocol_type="consumer", protocols=(),
                reason=None), 9)
            self.assertNotEqual(joined.error_code, ErrorCode.none)
        after = set(stack.cli("kafka-consumer-groups", "--bootstrap-server",
                              stack.BOOTSTRAP, "--list").split())
        self.assertFalse({g for g in after - before if "vkafka" in g or "!" in g})
        self.assertEqual(self.committed_on_broker(""), set())

    def committed_on_broker(self, group):
        """This run's physical topics with offsets committed in *group*, asked
        of the broker directly."""
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        from kio.schema.offset_fetch.v9.request import (
            OffsetFetchRequest, OffsetFetchRequestGroup)

        from .rawclient import RawClient
        raw = RawClient("localhost", 29092)
        self.addCleanup(raw.close)
        [found] = raw.request(FindCoordinatorRequest(
            key_type=i8(0), coordinator_keys=(group,)), 4).coordinators
        coordinator = RawClient("localhost", found.port)
        self.addCleanup(coordinator.close)
        [answer] = coordinator.request(OffsetFetchRequest(groups=(OffsetFetchRequestGroup(
            group_id=group, member_id=None, member_epoch=i32(-1), topics=None),),
            require_stable=False), 9).groups
        return {t.name for t in answer.topics
                if t.name.startswith((self.london, self.paris))}

    def test_broker_configs_allow_list(self):
        """Broker configs are cut to an allow-list: never listeners, voters,
        paths or secrets; BROKER_LOGGER is not available at all."""
        from kio.schema.describe_configs.v4.request import (
            DescribeConfigsRequest, DescribeConfigsResource)
        paris = self.client(self.paris)
        [broker, logger] = paris.request(DescribeConfigsRequest(
            resources=(DescribeConfigsResource(resource_type=i8(4), resource_name="1",
                                               configuration_keys=None),
                       DescribeConfigsResource(resource_type=i8(8), resource_name="1",
                                               configuration_keys=None)),
            include_synonyms=True, include_documentation=False), 4).results
        self.assertEqual(broker.error_code, ErrorCode.none)
        names = {c.name for c in broker.configs}
        self.assertTrue(names)
        self.assertTrue(names <= TENANT_BROKER_CONFIGS, names - TENANT_BROKER_CONFIGS)
        for c in broker.configs:
            self.assertTrue({s.name for s in c.synonyms} <= TENANT_BROKER_CONFIGS)
        text = repr(broker)
        for secret in ("listeners", "controller.quorum", "log.dirs", "29092",
                       "/tmp", ".stack"):
            self.assertNotIn(secret, text)
        self.assertEqual((logger.error_code, logger.configs),
                         (ErrorCode.cluster_authorization_failed, ()))
        # asking for a forbidden key by name gets nothing either
        [asked] = paris.request(DescribeConfigsRequest(
            resources=(DescribeConfigsResource(
                resource_type=i8(4), resource_name="1",
                configuration_keys=("listeners", "log.dirs")),),
            include_synonyms=False, include_documentation=False), 4).results
        self.assertEqual(asked.configs, ())

    def test_transactional_id_pattern_runs_in_linear_time(self):
        """ListTransactions' pattern is matched by the gateway with RE2 over
        the tenant's own ids: '(a+)+b' over the longest id (~240 bytes, where
        backtracking would take 2**240 steps) answers at once, and paris never
        sees london's ids."""
        from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
        from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
        from kio.schema.list_transactions.v2.request import ListTransactionsRequest
        from kio.static.primitive import i16
        from vkafka.tenancy.naming import MAX_ID_LENGTH
        from vkafka.tenancy.vclusters import VirtualClusters
        txn = "a" * (MAX_ID_LENGTH - len(VirtualClusters().namespace(self.london).prefix))
        london = self.client(self.london)

        def initialised():
            """The id's producer made; False while the coordinator is not
            ready (a fresh cluster loads its transaction state first)."""
            [found] = london.request(FindCoordinatorRequest(
                key_type=i8(1), coordinator_keys=(txn,)), 4).coordinators
            if found.error_code != ErrorCode.none:
                return False
            coordinator = self.client(self.london, port=found.port)
            answer = coordinator.request(InitProducerIdRequest(
                transactional_id=txn, transaction_timeout=i32Timedelta.parse(
                    datetime.timedelta(seconds=60)), producer_id=i64(-1),
                producer_epoch=i16(-1)), 4)
            self.assertIn(answer.error_code, RETRIABLE + (ErrorCode.none,))
            return answer.error_code == ErrorCode.none
        stack.wait_until(initialised, "the transactional producer made", 60)

        def listed(client, pattern):
            ids = []
            for node in range(3):
                raw = self.client(client, port=self.start_port + node)
                response = raw.request(ListTransactionsRequest(
                    state_filters=(), producer_id_filters=(),
                    duration_filter=i64(-1), transactional_id_pattern=pattern), 2)
                self.assertEqual(response.error_code, ErrorCode.none)
                ids += [t.transactional_id for t in response.transaction_states]
            return ids
        self.assertEqual(listed(self.london, "(a+)+b"), [])
        self.assertEqual(listed(self.london, "(a+)+"), [txn])
        self.assertEqual(listed(self.paris, ".*"), [])

    def test_oversized_decode_refused_others_unaffected(self):
        """A Metadata request naming far more topics than any tenant owns is
        refused before it is decoded (the connection closes); paris's other
        connection is served as before."""
        from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
        attacker = self.client(self.paris)
        bystander = self.client(self.paris)
        names = tuple(MetadataRequestTopic(topic_id=None, name=f"t{i:06d}{'x' * 20}")
                      for i in range(20_000))
        answer = attacker.request(MetadataRequest(
            topics=names, allow_auto_topic_creation=False,
            include_topic_authorized_operations=False), 12)
        self.assertIsNone(answer)  # closed
        [mine] = bystander.request(metadata(["mine"]), 12).topics
        self.assertEqual(mine.error_code, ErrorCode.none)


    def test_amplified_answer_refused(self):
        """A small DescribeConfigs asking for large answers: naming one topic
        thousands of times (each repeat answered INVALID_REQUEST by the
        gateway, never asked of the broker), or many resources with their
        documentation in an answer past --max-decoded-response (the
        connection closes as its size arrives, nothing decoded); the tenant's
        other connection is served as before."""
        from kio.schema.describe_configs.v4.request import (
            DescribeConfigsRequest, DescribeConfigsResource)
        from kio.static.primitive import i8
        attacker = self.client(self.paris)
        bystander = self.client(self.paris)
        answer = attacker.request(DescribeConfigsRequest(
            resources=tuple(DescribeConfigsResource(
                resource_type=i8(2), resource_name="mine", configuration_keys=None)
                for _ in range(3000)),
            include_synonyms=True, include_documentation=True), 4)
        codes = [r.error_code for r in answer.results]
        self.assertEqual((codes[0], set(codes[1:])),
                         (ErrorCode.none, {ErrorCode.invalid_request}))
        self.assertEqual(len(codes), 3000)
        [mine] = bystander.request(metadata(["mine"]), 12).topics
        self.assertEqual(mine.error_code, ErrorCode.none)

        from .stack import devstack
        small = stack.GatewayProcess((*devstack.TENANT_OPTIONS,
                                      "--max-decoded-response=10000")).start()
        self.addCleanup(small.stop)
        attacker = self.client(self.paris, port=small.start_port)
        bystander = self.client(self.paris, port=small.start_port)
        self.assertIsNone(attacker.request(DescribeConfigsRequest(  # ~25 KB
            resources=(DescribeConfigsResource(resource_type=i8(2), resource_name="mine",
                                               configuration_keys=None),),
            include_synonyms=True, include_documentation=True), 4),
            "an answer over 10,000 bytes was decoded")
        stack.wait_until(lambda: "--max-decoded-response" in small.log(),
                         "the reason in the gateway's log")
        [mine] = bystander.request(metadata(["mine"]), 12).topics
        self.assertEqual(mine.error_code, ErrorCode.none)


    def test_repeated_entries_refused(self):
        """One broker under three spellings in a DescribeConfigs (the broker
        reads its name as a number: three answers of ~95 KB): the repeats
        answered INVALID_REQUEST by the gateway.  A DescribeGroups or
        OffsetFetch naming one group twice (the broker builds an answer per
        entry: 400,000 of them ran it out of heap): the connection closed,
        nothing sent; the tenant's other connection served as before."""
        from kio.schema.describe_configs.v4.request import (
            DescribeConfigsRequest, DescribeConfigsResource)
        from kio.schema.describe_groups.v5.request import DescribeGroupsRequest
        from kio.schema.offset_fetch.v9 import request as of
        from kio.static.primitive import i8, i32
        attacker = self.client(self.paris)
        bystander = self.client(self.paris)
        answer = attacker.request(DescribeConfigsRequest(
            resources=tuple(DescribeConfigsResource(
                resource_type=i8(4), resource_name=name, configuration_keys=None)
                for name in ("1", "01", "+1")),
            include_synonyms=False, include_documentation=True), 4)
        self.assertEqual([(r.error_code, r.error_message) for r in answer.results[1:]],
                         [(ErrorCode.invalid_request,
                           "the resource is named twice in this request")] * 2)
        self.assertIsNone(attacker.request(DescribeGroupsRequest(
            groups=("g", "g"), include_authorized_operations=False), 5))
        attacker = self.client(self.paris)
        self.assertIsNone(attacker.request(of.OffsetFetchRequest(groups=tuple(
            of.OffsetFetchRequestGroup(group_id="g", member_id=None,
                                       member_epoch=i32(-1), topics=None)
            for _ in range(2)), require_stable=False), 9))
        [mine] = bystander.request(metadata(["mine"]), 12).topics
        self.assertEqual(mine.error_code, ErrorCode.none)


    def test_producer_ids(self):
        """Batches under a producer id the tenant chose: written (a producer's
        id is its own to pick), and counted as a new one (tenancy/producers.py:
        each is broker state for a day).  One request carrying two producers'
        batches: the connection closed, nothing written."""
        from .kafka_messages import produce_records, record_batch
        raw, _ = self.leader_client(self.paris, "mine")
        answer = raw.request(produce_records(
            "mine", record_batch(1, producer=123456789)), 9)
        self.assertEqual(answer.responses[0].partition_responses[0].error_code,
                         ErrorCode.none)
        self.assertIsNone(raw.request(produce_records(
            "mine", record_batch(1, producer=5) + record_batch(1, producer=6)), 9))
        bystander, _ = self.leader_client(self.paris, "mine")
        answer = bystander.request(produce_records("mine", record_batch(1)), 9)
        self.assertEqual(answer.responses[0].partition_responses[0].error_code,
                         ErrorCode.none)
        producers = self.direct_producers(stack.physical_topic(self.paris, "mine"))
        self.assertIn(123456789, producers)
        self.assertNotIn(5, producers)
        self.assertNotIn(6, producers)

    def direct_producers(self, physical):
        """The producer ids the partition's leader keeps, asked directly."""
        from kio.schema.describe_producers.v0.request import (
            DescribeProducersRequest, TopicRequest)
        from kio.static.primitive import i32
        from .rawclient import RawClient
        for address in stack.BOOTSTRAP.split(","):
            host, port = address.rsplit(":", 1)
            direct = RawClient(host, int(port))
            self.addCleanup(direct.close)
            [p] = direct.request(DescribeProducersRequest(topics=(TopicRequest(
                name=physical, partition_indexes=(i32(0),)),)), 0).topics[0].partitions
            if p.error_code == ErrorCode.none:
                return {a.producer_id for a in p.active_producers}
        self.fail(f"no broker leads {physical}-0")


class BrokerSideRegexTests(IsolationBase):
    """A real KIP-848 consumer (librdkafka, group.protocol=consumer) subscribed
    with an anchored broker-side regex, through two gateways."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.second = stack.GatewayProcess(stack.devstack.TENANT_OPTIONS).start()

    @classmethod
    def tearDownClass(cls):
        cls.second.stop()
        super().tearDownClass()

    def consumer(self, vcluster, group, port):
        from confluent_kafka import Consumer
        config = self.confluent_config(vcluster, **{
            "group.id": group, "group.protocol": "consumer",
            "bootstrap.servers": f"localhost:{port}",
            "topic.metadata.refresh.interval.ms": 2000})
        consumer = Consumer(config)
        self.addCleanup(consumer.close)
        consumer.subscribe(["^orders.*$"])
        return consumer

    def test_anchored_regex_through_two_gateways(self):
        """london's two members (one per gateway) are assigned exactly london's
        topics matching '^orders.*$', never paris's 'orders1', never 'other';
        a matching topic created later is assigned too."""
        for name in ("orders1", "orders2", "other"):
            self.create_topic(self.london, name, 2, 1)
        self.create_topic(self.paris, "orders1", 1, 1)
        members = [self.consumer(self.london, "rx", port)
                   for port in (self.start_port, self.second.start_port)]

        def assigned():
            found = set()
            for member in members:
                member.poll(0.2)
                found |= {p.topic for p in member.assignment()}
            return found
        stack.wait_until(lambda: assigned() == {"orders1", "orders2"},
                         "london's orders topics assigned", 90, interval=0)
        self.create_topic(self.london, "orders3", 1, 1)
        stack.wait_until(lambda: assigned() == {"orders1", "orders2", "orders3"},
                         "the new orders3 assigned", 90, interval=0)
