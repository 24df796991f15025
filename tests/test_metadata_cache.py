"""Tenants' all-topics Metadata answers, reused for a moment (metadata_cache.py)."""

import uuid
from dataclasses import replace

from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.response import MetadataResponseTopic
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from vkafka.protocol.codec import decode_request, decode_response
from vkafka.protocol.framing import FrameDecoder

from .kafka_messages import metadata_response, response_frame
from .test_splice import BROKERS
from .test_tenant_splice import TenantSpliceBase, authenticate, handshake, metadata_for


def metadata_answer(correlation_id, names, ids=None):
    """A broker's Metadata v12 answer naming *names* (their ids from *ids*,
    else fresh)."""
    topics = tuple(MetadataResponseTopic(
        error_code=ErrorCode.none, name=n,
        topic_id=(ids or {}).get(n) or uuid.uuid4(), partitions=())
        for n in names)
    return response_frame(correlation_id,
                          replace(metadata_response(BROKERS), topics=topics))


class FakeRefresher:
    all_topics = True

    def __init__(self):
        self.listings = 0

    def refresh_listing(self):
        self.listings += 1


class MetadataCacheTests(TenantSpliceBase):
    def setUp(self):
        super().setUp()
        self.topology.learn_listing({"londona", "londonb", "parisc"},
                                    self.reactor.seconds())
        self.login()

    def forwarded(self):
        """The requests the broker has received so far."""
        return [decode_request(f)[1] for f in FrameDecoder().feed(
            self.broker_transport.value())]

    def answer(self, correlation_id, names=("londona", "londonb")):
        """The broker answers the latest request with *names*."""
        self.broker.dataReceived(metadata_answer(correlation_id, names))

    def answers(self):
        return [decode_response(f, 3, 12) for f in self.responses()]

    def ask_and_answer(self, correlation_id):
        self.client.dataReceived(metadata_for(None, correlation_id))
        if len(self.forwarded()) > self.asked:
            self.asked += 1
            self.answer(correlation_id)

    asked = 0

    def test_second_request_answered_by_the_gateway(self):
        """Within the TTL, the same request is answered without the broker, with
        its own correlation id and the same topics."""
        self.ask_and_answer(3)
        self.reactor.advance(0.5)
        self.client.dataReceived(metadata_for(None, 4))
        self.assertEqual(len(self.forwarded()), 1)
        (h1, first), (h2, second) = self.answers()
        self.assertEqual((h1[:4], h2[:4]), (b"\0\0\0\3", b"\0\0\0\4"))
        self.assertEqual(first, second)
        self.assertEqual([t.name for t in second.topics], ["a", "b"])

    def test_expires(self):
        """After the TTL the broker is asked again."""
        self.ask_and_answer(3)
        self.reactor.advance(1.01)
        self.ask_and_answer(4)
        self.assertEqual(len(self.forwarded()), 2)

    def test_topic_change_ends_it(self):
        """A topic created (or a partition added) through the gateway: asked again."""
        self.ask_and_answer(3)
        self.topology.learn_topic("londonc")
        self.ask_and_answer(4)
        self.assertEqual(len(self.forwarded()), 2)
        self.assertIn("londonc", [t.name for t in self.forwarded()[1].topics])
        self.topology.topics_changed()
        self.ask_and_answer(5)
        self.assertEqual(len(self.forwarded()), 3)

    def test_mapping_change_ends_it(self):
        """A mapping added to the tenant: asked again."""
        self.ask_and_answer(3)
        self.client.namespace.set_alias("shared", "parisc", read_only=True)
        self.ask_and_answer(4)
        self.assertEqual(len(self.forwarded()), 2)
        self.assertIn("parisc", [t.name for t in self.forwarded()[1].topics])

    def test_named_topics_always_forwarded(self):
        """Requests that name topics never come from the cache."""
        self.ask_and_answer(3)
        self.client.dataReceived(metadata_for(["a"], 4))
        self.assertEqual(len(self.forwarded()), 2)

    def test_other_tenant_never_sees_it(self):
        """Another virtual cluster's all-topics request goes to the broker."""
        self.ask_and_answer(3)
        other = self.gateway.factory_for_port(6969).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "1.2.3.4", 6))
        other.makeConnection(transport)
        other.dataReceived(handshake())
        other.dataReceived(authenticate("sa", self.authority.issue("paris", "sa", 60)))
        other.dataReceived(metadata_for(None, 3))
        _, _, broker_transport = self.brokers[-1]  # opened by that request
        _, request = decode_request(FrameDecoder().feed(broker_transport.value())[0])
        self.assertEqual([t.name for t in request.topics], ["parisc"])
        self.assertNotIn(b"londona", transport.value())

    def test_disabled(self):
        """--metadata-cache 0: every request goes to the broker."""
        self.gateway.metadata_answers.ttl = 0
        self.ask_and_answer(3)
        self.ask_and_answer(4)
        self.assertEqual(len(self.forwarded()), 2)

    def test_change_while_asking_is_not_kept(self):
        """An answer asked for before a change is not kept after it."""
        self.client.dataReceived(metadata_for(None, 3))
        self.topology.learn_topic("londonc")
        self.answer(3)
        self.client.dataReceived(metadata_for(None, 4))
        self.assertEqual(len(self.forwarded()), 2)

    def test_listing_renewed_in_the_background(self):
        """Past half its age the listing is renewed in the background, while the
        current one still answers."""
        self.gateway.refresher = self.client.services.refresher = refresher = FakeRefresher()
        self.gateway.metadata_answers.ttl = 0
        self.reactor.advance(0.5)
        self.ask_and_answer(3)
        self.assertEqual(refresher.listings, 0)
        self.reactor.advance(0.6)
        self.ask_and_answer(4)
        self.assertEqual(refresher.listings, 1)
        self.assertEqual([t.name for t in self.forwarded()[1].topics],
                         ["londona", "londonb"])  # by name, from this listing

    def test_create_partitions_ends_it(self):
        """Partitions added through the gateway: the next answer is the broker's."""
        import datetime

        from kio.schema.create_partitions.v3.request import (
            CreatePartitionsRequest, CreatePartitionsTopic)
        from kio.schema.create_partitions.v3.response import (
            CreatePartitionsResponse, CreatePartitionsTopicResult)
        from kio.static.primitive import i32, i32Timedelta

        from .kafka_messages import request_frame
        self.ask_and_answer(3)
        self.asked += 1
        self.client.dataReceived(request_frame(CreatePartitionsRequest(
            topics=(CreatePartitionsTopic(name="a", count=i32(4), assignments=None),),
            timeout=i32Timedelta.parse(datetime.timedelta(seconds=5)),
            validate_only=False), 3, 4))
        self.broker.dataReceived(response_frame(4, CreatePartitionsResponse(
            throttle_time=i32Timedelta.parse(datetime.timedelta(0)),
            results=(CreatePartitionsTopicResult(name="londona",
                                                 error_code=ErrorCode.none),))))
        self.ask_and_answer(5)
        self.assertEqual(len(self.forwarded()), 3)


class RefresherTests(unittest.TestCase):
    """The gateway's own listing: decoded off the reactor thread (run_blocking)."""

    def refresh(self, all_topics):
        from twisted.internet import defer
        from twisted.internet.testing import MemoryReactorClock

        from vkafka.proxy.discovery import Refresher
        from vkafka.proxy.topology import Topology
        from .test_splice import FakeEndpoint
        self.attempts, self.refused, self.brokers = [], set(), []
        topology = Topology([("kafka1", 9092)], "gw", 6969, 3, 1)
        calls = []

        def run_blocking(f, *args):
            calls.append(f.__name__)
            return defer.succeed(f(*args))
        refresher = Refresher(MemoryReactorClock(), topology,
                              lambda r, h, p: FakeEndpoint(self, h, p),
                              all_topics=all_topics, run_blocking=run_blocking)
        self.refresher = refresher
        done = refresher.refresh()
        _, proto, _ = self.brokers[-1]
        proto.dataReceived(metadata_answer(1, ("t1",)))
        self.assertEqual(self.successResultOf(done), True)
        return topology, calls

    def test_all_topics_decoded_by_run_blocking(self):
        topology, calls = self.refresh(all_topics=True)
        self.assertEqual(calls, ["parse_listing"])
        self.assertEqual(topology.topic_names, {"t1"})
        self.assertEqual(sorted(topology.brokers), [1, 2, 3])

    def test_broker_list_marks_the_unlisted(self):
        """Each refresh's broker list is the cluster's view of which brokers
        are alive: one it lacks is marked (Topology.unlisted), one it names
        again is not."""
        topology, _ = self.refresh(all_topics=False)
        topology.learn([(4, "kafka4", 9092)])  # known once, not listed now
        topology.learn_listed(topology.brokers)
        self.assertEqual(topology.unlisted, frozenset())
        from vkafka.proxy.discovery import Refresher
        from twisted.internet.testing import MemoryReactorClock
        from .test_splice import FakeEndpoint
        refresher = Refresher(MemoryReactorClock(), topology,
                              lambda r, h, p: FakeEndpoint(self, h, p), all_topics=False)
        done = refresher.refresh()
        _, proto, _ = self.brokers[-1]
        proto.dataReceived(metadata_answer(1, ("t1",)))
        self.assertEqual(self.successResultOf(done), True)
        self.assertEqual(topology.unlisted, frozenset({4}))

    def test_listing_decoded_with_the_collector_held_off(self):
        """No cyclic collection can start inside the listing decode (at 10,000
        topics one stalled every connection for 28-47 ms); the collector is back
        on after, or stays off if it was off."""
        import gc

        from vkafka.proxy import discovery
        seen = []
        real = discovery.parse_metadata

        def spy(payload):
            seen.append(gc.isenabled())
            return real(payload)
        self.patch(discovery, "parse_metadata", spy)
        self.addCleanup(gc.enable)
        self.refresh(all_topics=True)
        self.assertEqual(seen, [False])
        self.assertTrue(gc.isenabled())
        gc.disable()
        self.refresh(all_topics=True)
        self.assertFalse(gc.isenabled())

    def test_ids_of_deleted_topics_forgotten(self):
        """Listings prune the id map: an id missing from two listings in a row
        is forgotten; one learnt between listings (a topic created a moment
        ago) survives a first miss; the refresher's listing feeds it."""
        import uuid

        from vkafka.proxy.topology import Topology
        topology = Topology([("kafka1", 9092)], "gw", 6969, 3, 1)
        old, new, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        topology.topic_ids.update({old: "gone", kept: "t"})
        topology.learn_listed_ids({kept: "t"})
        self.assertEqual(set(topology.topic_ids), {old, kept})
        topology.topic_ids[new] = "born"  # a CreateTopics answer, between listings
        topology.learn_listed_ids({kept: "t"})
        self.assertEqual(set(topology.topic_ids), {new, kept})
        topology.learn_listed_ids({kept: "t", new: "born"})
        topology.learn_listed_ids({kept: "t", new: "born"})
        self.assertEqual(set(topology.topic_ids), {new, kept})
        listed, _ = self.refresh(all_topics=True)
        self.assertEqual(set(listed.topic_ids.values()), {"t1"})

    def test_same_listing_decoded_once(self):
        """A broker answers the same bytes while the cluster does not change:
        a listing like the last one is not decoded again (~25 ms of CPU at
        10,000 topics, every refresh), and one that differs is, and learnt."""
        topology, calls = self.refresh(all_topics=True)
        refresher, ids = self.refresher, {"t1": uuid.uuid4(), "t2": uuid.uuid4()}
        for topics in (("t1",), ("t1",), ("t1", "t2"), ("t2",), ("t2",)):
            done = refresher.refresh()
            _, proto, transport = self.brokers[-1]
            sent = transport.value()
            while len(sent) > 4 + int.from_bytes(sent[:4], "big"):  # the last request
                sent = sent[4 + int.from_bytes(sent[:4], "big"):]
            correlation_id = int.from_bytes(sent[8:12], "big")
            proto.dataReceived(metadata_answer(correlation_id, topics, ids))
            self.assertEqual(self.successResultOf(done), True)
            self.assertEqual(topology.topic_names, set(topics))
            self.assertEqual({topology.topic_ids[ids[n]] for n in topics}, set(topics))
        # the helper's t1 (another id), t1, t1 and t2, t2: decoded; the repeats not
        self.assertEqual(calls, ["parse_listing"] * 4)

    def test_brokers_only_decoded_inline(self):
        topology, calls = self.refresh(all_topics=False)
        self.assertEqual(calls, [])
        self.assertEqual(sorted(topology.brokers), [1, 2, 3])


class BoundedTests(unittest.TestCase):
    """Keys a tenant can multiply (addresses, ACL generations) never grow the
    kept answers past LIMIT or LIMIT_BYTES: expired ones go first, then all."""

    def test_bounded(self):
        from types import SimpleNamespace

        from vkafka.tenancy.metadata_cache import MetadataAnswers
        answers = MetadataAnswers(ttl=1.0)
        answers.LIMIT, answers.LIMIT_BYTES = 5, 1000
        topology = SimpleNamespace(names_version=1)
        namespace = SimpleNamespace(name="acme", version=0,
                                    prefixes=SimpleNamespace(known=()))

        class Request:
            __version__ = 12
        for n in range(12):
            answers.keeper(topology, namespace, Request(), float(n // 4),
                           mapping=n)(b"x" * 10)
        self.assertLessEqual(len(answers._answers), 5)
        self.assertEqual(answers._bytes, 10 * len(answers._answers))
        self.assertEqual(answers.get(topology, namespace, Request(), 2.5, 11), b"x" * 10)
        answers.keeper(topology, namespace, Request(), 3.0, mapping="big")(b"y" * 2000)
        answers.keeper(topology, namespace, Request(), 3.0, mapping="next")(b"z")
        self.assertEqual(list(answers._answers), [(
            "acme", 12, False, False, "next")])
        self.assertEqual(answers._bytes, 1)
