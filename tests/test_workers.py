"""--workers 2 with real processes, real Kafka and real clients
(vkafka/workers.py; docs/operations.md, Workers).

One multi-tenant gateway of two workers behind one set of ports: clients
spread over both, each serving both tenants; /metrics adds them up; a
revocation closes connections on both; a worker killed with SIGKILL loses
nothing acknowledged and is started again; a fetch session never crosses
workers.  A passthrough gateway of two workers (PLAINTEXT clients, only broker
addresses rewritten) loses nothing and its /metrics adds both workers up; with
--advertise self every worker names only its own gateway in Metadata."""

import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

from kio.schema.errors import ErrorCode
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial import unittest

from . import stack
from .rawclient import RawClient
from .stack import devstack
from .test_isolation import metadata
from .test_isolation_classes import fetch
from .test_tenants import token
from . import test_tls

WORKERS = 2


class WorkersTests(unittest.TestCase):
    timeout = 600

    @classmethod
    def setUpClass(cls):
        stack.ensure_cluster()
        cls.gateway = stack.GatewayProcess(
            (*devstack.TENANT_OPTIONS, f"--workers={WORKERS}")).start()
        stack.wait_until(lambda: all(w["ready"] for w in cls.workers()),
                         "both workers ready", 60)

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()

    # what the supervisor says

    @classmethod
    def workers(cls):
        answer = devstack.health(cls.gateway.admin_port)
        if answer is None:
            return []
        return answer[1].get("workers", [])

    def per_worker(self, vcluster):
        """Connections of *vcluster* on each worker, by index (``GET
        /admin/workers``: /health names no virtual cluster)."""
        return [w["vclusters"].get(vcluster, 0)
                for w in workers_of(self.gateway, names=True)]

    def metrics(self, query=""):
        """``{(name, labels...): value}`` of the supervisor's /metrics."""
        text = stack.scrape(f"http://localhost:{self.gateway.admin_port}/metrics{query}")
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, *sorted(s.labels.items()))] = s.value
        return out

    def counter(self, figures, name, vcluster, direction):
        return figures.get((f"{name}_total", ("direction", direction),
                            ("vcluster", vcluster)), 0)

    # clients

    def config(self, vcluster, **extra):
        return {"bootstrap.servers": self.gateway.bootstrap,
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": "sa", "sasl.password": token(vcluster), **extra}

    def create_topic(self, vcluster, topic, partitions):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient(self.config(vcluster))
        admin.create_topics([NewTopic(topic, partitions, 3)])[topic].result(60)

    def raw(self, vcluster, port=None, secret=None):
        raw = RawClient("localhost", port or self.gateway.start_port)
        self.addCleanup(raw.close)
        answer = raw.sasl_plain("sa", secret or token(vcluster))
        self.assertEqual(answer.error_code, ErrorCode.none, answer.error_message)
        return raw

    def test_thirty_clients_sigkill_and_restart(self):
        """Thirty idempotent acks=all producers of two tenants and a consumer
        group each: both workers serve both tenants; /metrics counts every
        record sent; one worker SIGKILLed under load: its clients reconnect
        (to the other), every acknowledged record is in the topic exactly
        once, and the supervisor starts the worker again."""
        from confluent_kafka import Consumer, Producer
        vcs = [stack.unique("wa").replace("-", ""), stack.unique("wb").replace("-", "")]
        for vc in vcs:
            self.create_topic(vc, "orders", 6)
        acked, failed = {vc: [] for vc in vcs}, []
        producers, stats = [], {}

        def keep(i):
            def stats_cb(text):
                stats[i] = (stats.get(i, (0, None))[0] + 1, json.loads(text))
            return stats_cb
        for i in range(30):
            vc = vcs[i % 2]
            producers.append((vc, Producer(self.config(
                vc, **{"client.id": f"p{i}", "enable.idempotence": True,
                       "acks": "all", "linger.ms": 5, "metadata.max.age.ms": 5000,
                       "statistics.interval.ms": 200, "stats_cb": keep(i)}))))
        sent = Counter()
        seq = Counter()

        def produce_round():
            for i, (vc, producer) in enumerate(producers):
                value = f"{vc}:{i}:{seq[i]}"
                seq[i] += 1
                producer.produce("orders", value=value.encode(),
                                 on_delivery=lambda err, m, vc=vc: delivered_vc(err, m, vc))
                sent[vc] += 1
                producer.poll(0)

        def delivered_vc(err, message, vc):
            if err is not None:
                failed.append((vc, str(err)))
            else:
                acked[vc].append(message.value().decode())

        try:
            for _ in range(20):
                produce_round()
            for _, producer in producers:
                self.assertEqual(producer.flush(60), 0)
            self.assertEqual(failed, [])
            # both workers hold connections of both tenants
            spread = stack.wait_until(
                lambda: (lambda c: c if all(all(x) for x in c) else None)(
                    [self.per_worker(vc) for vc in vcs]),
                "connections of both tenants on both workers", 30)
            print(f"\nconnections per worker: {dict(zip(vcs, spread))}")
            # /health, open to anyone, counts them without naming a tenant
            health = json.dumps(devstack.health(self.gateway.admin_port)[1])
            self.assertNotIn("vclusters", health)
            for vc in vcs:
                self.assertNotIn(vc, health)
            with self.assertRaises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(
                    f"http://localhost:{self.gateway.admin_port}/admin/workers",
                    timeout=10)
            self.assertEqual(refused.exception.code, 401)
            # /metrics: what the clients sent (their own count of the records
            # they transmitted, retries included), summed over the workers
            transmitted = self.transmitted(producers, stats)
            figures = self.metrics()
            print(f"records acked {dict(sent)}, transmitted {dict(transmitted)}")
            for vc in vcs:
                self.assertEqual(self.counter(figures, "vkafka_records", vc, "in"),
                                 transmitted[vc])
                self.assertGreater(self.counter(figures, "vkafka_bytes", vc, "in"),
                                   sent[vc] * len(f"{vc}:0:0"))
            # asked by worker: both counted records of both tenants, adding
            # up to the totals
            each = self.metrics("?by=worker")
            for vc in vcs:
                counted = {dict(k[1:])["worker"]: v for k, v in each.items()
                           if k[0] == "vkafka_records_total"
                           and dict(k[1:]).get("vcluster") == vc
                           and dict(k[1:])["direction"] == "in"}
                self.assertEqual(set(counted), {"0", "1"}, counted)
                self.assertTrue(all(counted.values()), counted)
                self.assertEqual(sum(counted.values()), transmitted[vc])

            def connections_agree():
                figures = self.metrics()
                summed = sum(v for k, v in figures.items()
                             if k[0] == "vkafka_connections")
                return summed == sum(w["connections"] for w in self.workers())
            stack.wait_until(connections_agree, "vkafka_connections = the workers' "
                             "connections in /health", 30)

            # consumers of each tenant, through the same ports
            consumers = {}
            for vc in vcs:
                consumers[vc] = Consumer(self.config(
                    vc, **{"group.id": "g", "auto.offset.reset": "earliest",
                           "enable.auto.commit": False,
                           "metadata.max.age.ms": 5000}))
                consumers[vc].subscribe(["orders"])
            for vc in vcs:
                got = stack.drain(consumers[vc], sent[vc], f"{vc}'s first records")
                self.assertEqual(Counter(m.value().decode() for m in got),
                                 Counter(acked[vc]))
            figures = self.metrics()
            for vc in vcs:
                self.assertGreaterEqual(
                    self.counter(figures, "vkafka_records", vc, "out"), sent[vc])
            for consumer in consumers.values():
                consumer.close()

            # SIGKILL one worker under load
            before = {w["index"]: w["pid"] for w in self.workers()}
            victim = before[0]
            killed_at = time.monotonic()
            for _ in range(5):
                produce_round()
                producers[0][1].poll(0.1)
            os.kill(victim, signal.SIGKILL)

            def restarted():
                produce_round()
                producers[0][1].poll(0.1)
                [w0] = [w for w in self.workers() if w["index"] == 0]
                return w0["pid"] not in (None, victim) and w0["ready"] and w0
            w0 = stack.wait_until(restarted, "worker 0 started again", 60, interval=0)
            restarted_after = time.monotonic() - killed_at
            self.assertEqual(w0["restarts"], 1)
            self.assertEqual([w["pid"] for w in self.workers() if w["index"] == 1],
                             [before[1]])
            for _ in range(20):
                produce_round()
                producers[0][1].poll(0.05)
            for _, producer in producers:
                self.assertEqual(producer.flush(120), 0)
            self.assertEqual(failed, [])
            # the restarted worker serves: new clients reach it
            late = [Producer(self.config(vcs[0], **{"client.id": f"late{i}"}))
                    for i in range(8)]
            for i, producer in enumerate(late):
                producer.produce("orders", value=f"{vcs[0]}:late{i}".encode(),
                                 on_delivery=lambda err, m: delivered_vc(err, m, vcs[0]))
                sent[vcs[0]] += 1
                self.assertEqual(producer.flush(60), 0)
            stack.wait_until(lambda: all(w.get("connections") for w in self.workers()),
                             "connections on the restarted worker too", 30)
            self.assertEqual(failed, [])
        finally:
            for _, producer in producers:
                producer.flush(10)
        # every acknowledged record once, read from the brokers directly
        for vc in vcs:
            stored = stack.read_all(stack.physical_topic(vc, "orders"))
            self.assertEqual(len(acked[vc]), sent[vc])
            counts = Counter(stored)
            self.assertEqual(sorted(v for v, n in counts.items() if n > 1), [])
            self.assertEqual(Counter(stored), Counter(acked[vc]))
        print(f"worker 0 pid {victim} -> {w0['pid']}, serving again after "
              f"{restarted_after:.1f}s; records acked: "
              f"{ {vc: len(acked[vc]) for vc in vcs} }")

    def transmitted(self, producers, stats):
        """Records each tenant's producers transmitted (librdkafka's txmsgs,
        retries included), from statistics emitted after now."""
        seen = {i: stats.get(i, (0, None))[0] for i in range(len(producers))}

        def fresh():
            for _, producer in producers:
                producer.poll(0.05)
            return all(stats.get(i, (0, None))[0] > seen[i] + 1 for i in seen)
        stack.wait_until(fresh, "fresh statistics from every producer", 30, interval=0)
        out = Counter()
        for i, (vc, _) in enumerate(producers):
            partitions = stats[i][1]["topics"]["orders"]["partitions"]
            out[vc] += sum(p["txmsgs"] for key, p in partitions.items() if key != "-1")
        return out

    def test_revocation_closes_connections_on_both_workers(self):
        vc = stack.unique("wr").replace("-", "")
        code, made = stack.admin(self.gateway.admin_port, "POST",
                                 f"/vclusters/v1/vcluster/{vc}/username/sa",
                                 {"lifeTimeSeconds": 3600})
        self.assertEqual(code, 200, made)
        clients = [self.raw(vc, secret=made["token"]) for _ in range(10)]
        stack.wait_until(lambda: all(self.per_worker(vc)),
                         "the tenant's connections on both workers", 30)
        self.assertEqual(sum(self.per_worker(vc)), 10)

        def dashboard():  # the workers' connections, added up
            code, snapshot = stack.admin(self.gateway.admin_port, "GET",
                                         "/dashboard.json")
            rows = [r for r in snapshot["vclusters"] if r["name"] == vc]
            return code == 200 and rows and rows[0]["connections"] == 10
        stack.wait_until(dashboard, "the dashboard counting 10 connections", 30)
        code, _ = stack.admin(self.gateway.admin_port, "POST",
                              f"/vclusters/v1/vcluster/{vc}/username/sa/revoke")
        self.assertEqual(code, 200)
        for raw in clients:
            self.assertTrue(raw.closed())
        stack.wait_until(lambda: self.workers() and not any(self.per_worker(vc)),
                         "no connection of the tenant on any worker", 30)
        again = RawClient("localhost", self.gateway.start_port)
        self.addCleanup(again.close)
        answer = again.sasl_plain("sa", made["token"])
        self.assertNotEqual(answer.error_code, ErrorCode.none)

    def test_a_mapping_reaches_both_workers(self):
        """A topic mapping made through the admin port while the tenant's
        connections sit on both workers: every connection, on either
        worker, soon lists the mapped topic by its logical name, and none
        after the mapping is removed."""
        from confluent_kafka.admin import AdminClient, NewTopic
        vc = stack.unique("wm").replace("-", "")
        physical = stack.unique("shared-orders")
        direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        direct.create_topics([NewTopic(physical, 2, 3)])[physical].result(30)
        self.addCleanup(stack.delete_topics, [physical])
        clients = [self.raw(vc) for _ in range(10)]
        stack.wait_until(lambda: all(self.per_worker(vc)),
                         "the tenant's connections on both workers", 30)

        def listed(raw):
            [topic] = raw.request(metadata(["orders"]), 12).topics
            return topic.error_code == ErrorCode.none and topic.name == "orders"
        self.assertFalse(any(listed(raw) for raw in clients))
        code, body = stack.admin(self.gateway.admin_port, "POST",
                                 f"/vclusters/v1/vcluster/{vc}/topics/orders",
                                 {"physicalTopicName": physical, "readOnly": False,
                                  "concentrated": False})
        self.assertEqual(code, 200, body)
        stack.wait_until(lambda: all(listed(raw) for raw in clients),
                         "the mapping on every connection of both workers", 30)
        code, body = stack.admin(self.gateway.admin_port, "DELETE",
                                 f"/vclusters/v1/vcluster/{vc}/topics/orders")
        self.assertIn(code, (200, 204), body)
        stack.wait_until(lambda: not any(listed(raw) for raw in clients),
                         "the mapping gone from every connection", 30)
        self.assertEqual(sum(self.per_worker(vc)), 10)

    def test_produce_rate_limit_split_over_the_workers(self):
        """A tenant's produce limit holds for the gateway, not for each worker:
        producers spread over both workers get the limit together (each
        worker is a gateway of the rate shares, filters/shares.py)."""
        from confluent_kafka import Producer
        from .test_rates_integration import read_directly
        limit, seconds, size = 1_000_000, 12.0, 1000
        vc = stack.unique("wl").replace("-", "")
        code, made = stack.admin(self.gateway.admin_port, "POST",
                                 f"/vclusters/v1/vcluster/{vc}/username/sa",
                                 {"lifeTimeSeconds": 3600})
        self.assertEqual(code, 200, made)
        limits = {"rates": {"produceBytesPerSecond": limit}}
        self.assertEqual(stack.admin(self.gateway.admin_port, "POST",
                                     f"/vclusters/v1/vcluster/{vc}/limits", limits),
                         (200, limits))
        physical = stack.physical_topic(vc, "metered")
        from confluent_kafka.admin import AdminClient, NewTopic
        direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        direct.create_topics([NewTopic(physical, 6, 3, config={
            "message.timestamp.type": "LogAppendTime"})])[physical].result(30)
        self.addCleanup(stack.delete_topics, [physical])
        producers = [Producer({**self.config(vc), "sasl.password": made["token"],
                               "client.id": f"metered{i}",
                               "queue.buffering.max.messages": 200})
                     for i in range(6)]
        value = b"x" * size
        shares, spread = [], None
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            for producer in producers:
                try:
                    while True:
                        producer.produce("metered", value)
                except BufferError:
                    pass
                producer.poll(0.01)
            if spread is None or len(shares) < time.monotonic() - started:
                spread = self.per_worker(vc)
                shares.append(sum(v for k, v in self.metrics().items()
                                  if k[0] == "vkafka_rate_share" and
                                  ("vcluster", vc) in k))
        for producer in producers:
            self.assertEqual(producer.flush(60), 0)
        print(f"\nconnections per worker {spread}; the gateway's share of the "
              f"limit (summed over the workers), once a second: "
              f"{[round(s, 2) for s in shares]}")
        self.assertTrue(all(spread), spread)
        records, _ = read_directly(physical, time.monotonic() + 120)
        stamps = sorted(ms for _, ms, _ in records)
        first, last = stamps[0], stamps[-1]
        steady = [ms for ms in stamps if ms >= first + 3000]  # shares settled
        rate = len(steady) * size / ((last - first - 3000) / 1000)
        print(f"produce rate after the first 3 s: {rate / 1e6:.3f} MB/s "
              f"(limit {limit / 1e6} MB/s, {len(stamps)} records)")
        self.assertLessEqual(rate, limit * 1.15)
        self.assertGreaterEqual(rate, limit * 0.3)  # served, if slowly on 2 busy cores
        # Each worker's share follows its demand, a second behind: a sum reads
        # above 1 for a second now and then, never on average.
        settled = shares[3:]
        self.assertLessEqual(sum(settled) / len(settled), 1.1, shares)

    def test_fetch_session_never_crosses_workers(self):
        """A fetch session is its connection's: another connection of the same
        tenant naming it (on either worker) is answered
        FETCH_SESSION_ID_NOT_FOUND by the gateway, as for a made-up id."""
        vc = stack.unique("wf").replace("-", "")
        self.create_topic(vc, "events", 1)
        raw = self.raw(vc)
        [topic] = raw.request(metadata(["events"]), 12).topics
        leader = topic.partitions[0].leader_id
        port = self.gateway.start_port + leader - 1  # --min-broker-id=1
        owner = self.raw(vc, port)

        session = stack.wait_until(lambda: session_asked(self, owner, topic.topic_id),
                                   "a fetch session", 30).session_id
        self.assertNotEqual(session, 0)
        others = [self.raw(vc, port) for _ in range(10)]
        stack.wait_until(lambda: all(self.per_worker(vc)),
                         "the tenant's connections on both workers", 30)
        for other in others:
            answer = other.request(fetch(None, session, 1), 17)
            self.assertEqual((answer.error_code, answer.session_id),
                             (ErrorCode.fetch_session_id_not_found, 0))
        more = owner.request(fetch(None, session, 1), 17)  # the owner's: intact
        self.assertEqual((more.error_code, more.session_id), (ErrorCode.none, session))


class FetchSessionsWorkersTests(unittest.TestCase):
    """--max-fetch-sessions holds for a gateway of two workers as a whole:
    each worker an even share (docs/operations.md, Workers).  With a pool
    of the whole setting in each, a tenant's connections spread over both
    made twice as many broker sessions."""

    timeout = 300
    SESSIONS = 4

    @classmethod
    def setUpClass(cls):
        stack.ensure_cluster()
        cls.gateway = stack.GatewayProcess((
            *devstack.TENANT_OPTIONS, f"--workers={WORKERS}",
            f"--max-fetch-sessions={cls.SESSIONS}")).start()
        stack.wait_until(lambda: all(w["ready"] for w in workers_of(cls.gateway)),
                         "both workers ready", 60)

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()

    raw = WorkersTests.raw

    def test_sessions_over_both_workers(self):
        """Connections to the leader's port until each worker holds five of
        the tenant's (one may be the Metadata one): each then asks for a
        session; SESSIONS are made in all, SESSIONS / 2 through each worker
        (a worker's pool of the whole setting would make SESSIONS there), and
        the others' fetches are answered in full, sessionless."""
        from .test_limits_integration import create_topics, creatable
        vc = stack.unique("fsw").replace("-", "")
        raw = self.raw(vc)
        self.assertEqual(create_topics(raw, [creatable("events", 1, 1)], False),
                         {"events": (ErrorCode.none, None)})
        [topic] = stack.wait_until(lambda: [
            t for t in raw.request(metadata(["events"]), 12).topics
            if t.partitions and t.partitions[0].leader_id >= 0], "a leader", 30)
        port = self.gateway.start_port + topic.partitions[0].leader_id - 1

        def per_worker():
            return [w["vclusters"].get(vc, 0) for w in workers_of(self.gateway, names=True)]
        fetchers = []

        def spread():
            if len(fetchers) < 40:
                fetchers.append(self.raw(vc, port))
            counts = per_worker()
            return len(counts) == WORKERS and min(counts) > self.SESSIONS and counts
        counts = stack.wait_until(spread, f"{self.SESSIONS + 1} of the tenant's "
                                  "connections on each worker", 60)

        made = [stack.wait_until(lambda: session_asked(self, c, topic.topic_id),
                                 "an answered fetch", 30).session_id for c in fetchers]
        granted = [s for s in made if s != 0]
        self.assertEqual(len(granted), self.SESSIONS,
                         f"sessions made {granted} of {len(made)} fetches asking "
                         f"for one; the tenant's connections per worker {counts}")


class SniRoutingWorkersTests(test_tls.SniRoutingTests):
    """TLS and SNI routing (tests/test_tls.py) with two workers on the port."""

    extra = ("--workers=2",)

    def setUp(self):
        super().setUp()
        stack.wait_until(lambda: all(
            w["ready"] for w in (devstack.health(self.gateway.admin_port) or
                                 (0, {}))[1].get("workers", [{"ready": False}])),
            "both workers ready", 60)


class WorkersClusterTests(unittest.TestCase):
    """Two gateways of two workers each as one gateway cluster: two nodes
    (never a node per worker), clients spread over both."""

    timeout = 600

    def test_two_nodes_not_four(self):
        sys.path.insert(0, str(stack.ROOT))
        from reliability import cluster
        stack.ensure_cluster()
        cluster_id, topic = cluster.unique("clw"), cluster.unique("_vkafka_state_clw_")
        gateways = [cluster.ClusterGateway(cluster_id, topic, ("--workers=2",))
                    for _ in range(2)]
        for g in gateways:
            self.addCleanup(g.stop)
            g.start(wait=False)
        for g in gateways:
            stack.wait_until(g.ready, f"gateway on {g.port} ready", 90)
        nodes = sorted(f"{socket.gethostname()}:{g.port}" for g in gateways)
        stack.wait_until(lambda: all(sorted(g.members()) == nodes for g in gateways),
                         "each gateway seeing two nodes", 30)
        stack.wait_until(lambda: all(all(w["ready"] for w in
                                         devstack.health(g.admin)[1]["workers"])
                                     for g in gateways), "every worker ready", 60)
        figures = cluster.spread(gateways, clients=12)
        print(f"\nspread over two gateways of two workers: {figures}")
        self.assertTrue(all(figures["connections per gateway"]))
        for g in gateways:  # still two nodes
            self.assertEqual(sorted(g.members()), nodes)


class SourcedClient(RawClient):
    """A RawClient whose connection comes from *source* (a loopback address:
    each test its own client address)."""

    def __init__(self, source, port):
        from vkafka.protocol.framing import FrameDecoder
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15,
                                             source_address=(source, 0))
        self.decoder, self.frames, self.correlation_id = FrameDecoder(), [], 0

    def still_open(self):
        import select
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return True
        try:
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False


class CapsWorkersTests(unittest.TestCase):
    """--max-connections-per-ip and --max-connections-per-vcluster hold for
    the gateway of two workers as a whole, within cap + (N - 1) * max(1,
    cap // (2N)) (docs/operations.md, Workers): here 6 + 1 and 5 + 1."""

    timeout = 300
    PER_IP, PER_VCLUSTER = 6, 5

    @classmethod
    def setUpClass(cls):
        stack.ensure_cluster()
        cls.gateway = stack.GatewayProcess((
            *devstack.TENANT_OPTIONS, f"--workers={WORKERS}",
            f"--max-connections-per-ip={cls.PER_IP}",
            f"--max-connections-per-vcluster={cls.PER_VCLUSTER}",
            "--authentication-timeout=300")).start()
        stack.wait_until(lambda: all(w["ready"] for w in cls.workers()),
                         "both workers ready", 60)

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()

    @classmethod
    def workers(cls):
        answer = devstack.health(cls.gateway.admin_port)
        return [] if answer is None else answer[1].get("workers", [])

    def held(self, key="connections"):
        """Per worker: its connections (or ``vclusters``: ``GET /admin/workers``),
        at the last reading."""
        workers = workers_of(self.gateway, names=True) if key == "vclusters" \
            else self.workers()
        return [w.get(key, 0) for w in workers]

    def refused_total(self):
        text = stack.scrape(f"http://localhost:{self.gateway.admin_port}/metrics")
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "vkafka_connections_refused_total":
                    return s.value
        return 0

    def connect(self, source):
        client = SourcedClient(source, self.gateway.start_port)
        self.addCleanup(client.close)
        return client

    def test_connections_per_ip_over_both_workers(self):
        bound = self.PER_IP + 1
        stack.wait_until(lambda: self.held() == [0, 0], "no connection left", 30)
        refused_before = self.refused_total()
        opened = [self.connect("127.0.0.3") for _ in range(20)]  # a burst

        def settled():  # what the clients see open is what the workers hold
            open_now = sum(c.still_open() for c in opened)
            held = self.held()
            return open_now == sum(held) and (open_now, held)
        total, per_worker = stack.wait_until(settled, "a reading of the burst", 30)
        print(f"\nburst of 20 from one address: {per_worker} on the workers")
        self.assertLessEqual(total, bound)
        self.assertEqual(len(per_worker), 2)
        # more, a few at a time, readings in between: the gateway reaches the
        # cap and stays within the bound
        deadline = time.monotonic() + 30
        while total < self.PER_IP and time.monotonic() < deadline:
            opened += [self.connect("127.0.0.3") for _ in range(5)]
            total, per_worker = stack.wait_until(settled, "a reading", 30)
            self.assertLessEqual(total, bound, per_worker)
        self.assertGreaterEqual(total, self.PER_IP)
        opened += [self.connect("127.0.0.3") for _ in range(20)]
        total, per_worker = stack.wait_until(settled, "a reading", 30)
        self.assertLessEqual(total, bound, per_worker)
        print(f"after {len(opened)} attempts: {per_worker} on the workers")
        # refusals counted as before: one per connection closed at once
        self.assertEqual(self.refused_total() - refused_before, len(opened) - total)
        # another address is not held back
        other = self.connect("127.0.0.4")
        stack.wait_until(lambda: sum(self.held()) == total + 1, "another address", 30)
        self.assertTrue(other.still_open())

    def test_connections_per_vcluster_over_both_workers(self):
        from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
        from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
        from vkafka.protocol.codec import decode_response
        bound = self.PER_VCLUSTER + 1
        vc = stack.unique("wcap").replace("-", "")
        secret = token(vc)
        accepted, answers = [], []
        sources = iter(f"127.0.1.{i}" for i in range(1, 250))  # one address each

        def logins(count):
            """*count* logins at once; the number accepted."""
            clients = [self.connect(next(sources)) for _ in range(count)]
            for c in clients:
                c.send(SaslHandshakeRequest(mechanism="PLAIN"), 1)
            for c in clients:
                self.assertIsNotNone(c.receive_frame())
            for c in clients:
                c.send(SaslAuthenticateRequest(
                    auth_bytes=b"\x00sa\x00" + secret.encode()), 2)
            for c in clients:
                _, answer = decode_response(c.receive_frame(), 36, 2)
                answers.append(answer)
                if answer.error_code == ErrorCode.none:
                    accepted.append(c)
            return len(accepted)

        def reading(expected):
            def read():
                counts = [v.get(vc, 0) for v in self.held("vclusters")]
                return sum(counts) == expected and counts
            return stack.wait_until(read, f"workers holding {expected} of {vc}", 30)
        total = logins(12)
        per_worker = reading(total)
        print(f"\n12 logins of one virtual cluster at once: {per_worker} on the workers")
        self.assertLessEqual(total, bound)
        deadline = time.monotonic() + 30
        while total < self.PER_VCLUSTER and time.monotonic() < deadline:
            total = logins(3)
            reading(total)
            self.assertLessEqual(total, bound)
        self.assertGreaterEqual(total, self.PER_VCLUSTER)
        total = logins(12)
        per_worker = reading(total)
        print(f"after {len(answers)} logins: {per_worker} on the workers")
        self.assertLessEqual(total, bound)
        refusals = [a for a in answers if a.error_code != ErrorCode.none]
        self.assertEqual(len(refusals), len(answers) - total)
        for answer in refusals:  # as a single gateway refuses
            self.assertEqual(answer.error_code, ErrorCode.sasl_authentication_failed)
            self.assertEqual(answer.error_message,
                             f"too many connections for this virtual cluster (limit "
                             f"{self.PER_VCLUSTER} per gateway, or the virtual "
                             f"cluster's capacity.connections)")


# Passthrough and --advertise self: clients of both workers, nothing lost

ADMIN_OPTIONS = ("--admin-users=admin:conduktor", "--admin-allow-plain=true")
"""The admin user of devstack.TENANT_OPTIONS, for a passthrough gateway's
/metrics (stack.scrape's credentials)."""


def wait_workers_ready(gateway):
    stack.wait_until(lambda: (lambda ws: len(ws) == WORKERS and all(
        w["ready"] for w in ws))(workers_of(gateway)), "both workers ready", 60)


def session_asked(test, client, topic_id):
    """A full Fetch of partition 0 of *topic_id* asking for a new session: the
    answer, or None while the worker has not learnt the id (the Metadata may
    have passed through the other worker, which answers UNKNOWN_TOPIC_ID,
    sessionless; this one learns it with a listing within a second)."""
    answer = client.request(fetch(topic_id, 0, 0), 17)
    test.assertEqual(answer.error_code, ErrorCode.none)
    [[partition]] = [t.partitions for t in answer.responses]
    if partition.error_code == ErrorCode.unknown_topic_id:
        return None
    test.assertEqual(partition.error_code, ErrorCode.none, answer)
    return answer


def workers_of(gateway, names=False):
    """The supervisor's /health list of its workers ([] if it does not answer);
    with *names*, ``GET /admin/workers`` (credentials), which adds each
    worker's connections per virtual cluster."""
    if names:
        code, body = stack.admin(gateway.admin_port, "GET", "/workers")
        return body["workers"] if code == 200 else []
    answer = devstack.health(gateway.admin_port)
    return [] if answer is None else answer[1].get("workers", [])


def metric_samples(gateway):
    """``{(name, labels...): value}`` of the supervisor's /metrics."""
    text = stack.scrape(f"http://localhost:{gateway.admin_port}/metrics")
    return {(s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples}


def state_records(topic):
    """(key, value) of every record of a state topic up to its end now, read
    from the brokers directly (value None: a deletion)."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": stack.BOOTSTRAP,
                         "group.id": stack.unique("state"), "enable.auto.commit": False})
    try:
        [partition] = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        end = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                             timeout=30)[1]
        consumer.assign([TopicPartition(topic, partition, 0)])
        out, offset = [], 0
        deadline = time.monotonic() + 30
        while offset < end:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not read to offset {end} in 30 s")
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            value = message.value()
            out.append((message.key().decode(),
                        None if value is None else json.loads(value)))
            offset = message.offset() + 1
        return out
    finally:
        consumer.close()


class Traffic:
    """*count* idempotent acks=all confluent-kafka producers of *config*,
    each with a client id of its own, and their librdkafka statistics."""

    def __init__(self, test, config, topic, count):
        from confluent_kafka import Producer
        self.topic, self.acked, self.failed, self.stats = topic, [], [], {}
        self.sent = 0

        def keep(i):
            def stats_cb(text):
                self.stats[i] = (self.stats.get(i, (0, None))[0] + 1, json.loads(text))
            return stats_cb
        self.producers = [Producer({
            **config, "client.id": f"{topic}-p{i}", "enable.idempotence": True,
            "acks": "all", "linger.ms": 5, "statistics.interval.ms": 200,
            "stats_cb": keep(i)}) for i in range(count)]
        test.addCleanup(self.close)

    def close(self):
        for producer in self.producers:
            producer.flush(10)
        self.producers.clear()  # each is destroyed (its connections closed) now

    def delivered(self, err, message):
        if err is not None:
            self.failed.append(str(err))
        else:
            self.acked.append(message.value().decode())

    def produce(self, rounds):
        """*rounds* records from each producer, every one acknowledged."""
        for n in range(rounds):
            for i, producer in enumerate(self.producers):
                producer.produce(self.topic, value=f"{self.topic}:{i}:{n}".encode(),
                                 on_delivery=self.delivered)
                self.sent += 1
                producer.poll(0)
        remaining = [p.flush(60) for p in self.producers]
        assert remaining == [0] * len(self.producers), f"not flushed: {remaining}"
        assert self.failed == [], f"send errors: {self.failed[:5]}"
        assert len(self.acked) == self.sent, (len(self.acked), self.sent)

    def figures(self):
        """(records transmitted, Produce requests sent) by all the producers,
        retries included, from statistics emitted after now (librdkafka's
        txmsgs per partition, req.Produce per broker)."""
        seen = {i: self.stats.get(i, (0, None))[0] for i in range(len(self.producers))}

        def fresh():
            for producer in self.producers:
                producer.poll(0.05)
            return all(self.stats.get(i, (0, None))[0] > seen[i] + 1 for i in seen)
        stack.wait_until(fresh, "fresh statistics from every producer", 30, interval=0)
        records = requests = 0
        for i in seen:
            stats = self.stats[i][1]
            partitions = stats["topics"][self.topic]["partitions"]
            records += sum(p["txmsgs"] for key, p in partitions.items() if key != "-1")
            requests += sum(b["req"].get("Produce", 0) for b in stats["brokers"].values())
        return records, requests


def consume_all(test, config, topic, expected, members=3):
    """Values read by a consumer group of *members* through *config* until
    each of *expected* (a Counter) was read: every one at least once, nothing
    else.  The members join one by one and commit nothing, so a partition
    moved in a rebalance is read again from the start by its new member: a
    value read twice is the group's at-least-once, not a gateway's copy (the
    brokers' own count is checked against the producers' separately)."""
    from confluent_kafka import Consumer
    group = stack.unique("g")
    consumers = [Consumer({**config, "group.id": group, "client.id": f"{group}-c{i}",
                           "auto.offset.reset": "earliest",
                           "enable.auto.commit": False}) for i in range(members)]
    for consumer in consumers:
        consumer.subscribe([topic])
    got, errors = Counter(), []

    def enough():
        for consumer in consumers:
            for m in consumer.consume(500, 0.3):
                if m.error() is None:
                    got[m.value().decode()] += 1
                elif not m.error().retriable():
                    errors.append(str(m.error()))
        return all(got[value] >= count for value, count in expected.items())
    try:
        stack.wait_until(enough, f"{sum(expected.values())} records of {topic} "
                         f"consumed (got {sum(got.values())}, errors {errors[:3]})",
                         90, interval=0)
    finally:
        for consumer in consumers:
            consumer.close()
    test.assertEqual(set(got), set(expected))
    return got


class PassthroughWorkersTests(unittest.TestCase):
    """A passthrough gateway (no virtual clusters, PLAINTEXT clients; it only
    rewrites broker addresses) of two workers: producers and a consumer group
    spread over both workers lose nothing, and /metrics adds up both workers'
    requests, records and connections."""

    timeout = 300

    @classmethod
    def setUpClass(cls):
        stack.ensure_cluster()
        cls.gateway = stack.GatewayProcess(
            (*ADMIN_OPTIONS, "--port-count=3", f"--workers={WORKERS}")).start()
        wait_workers_ready(cls.gateway)

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()

    def figure(self, figures, name, **labels):
        return figures.get((name, *sorted({"vcluster": "-", **labels}.items())), 0)

    def test_clients_over_both_workers(self):
        topic = stack.unique("wpt")
        stack.create_topic(topic, 6, 3)
        self.addCleanup(stack.delete_topics, [topic])
        config = {"bootstrap.servers": self.gateway.bootstrap}
        before = metric_samples(self.gateway)
        traffic = Traffic(self, config, topic, 8)
        traffic.produce(50)
        # the producers' connections (bootstrap and three brokers each) on both
        spread = stack.wait_until(
            lambda: (lambda c: len(c) == WORKERS and all(c) and c)(
                [w["connections"] for w in workers_of(self.gateway)]),
            "producers' connections on both workers", 30)
        print(f"\nconnections per worker: {spread}")
        records, requests = traffic.figures()
        figures = metric_samples(self.gateway)

        def delta(name, **labels):
            return self.figure(figures, name, **labels) - \
                self.figure(before, name, **labels)
        print(f"records acked {traffic.sent}, transmitted {records} in {requests} "
              f"Produce requests; /metrics: "
              f"{delta('vkafka_records_total', direction='in')} records in "
              f"{delta('vkafka_requests_total', api='Produce')} Produce requests")
        # every Produce request and record of every client, whichever worker
        # it went through: the sums of both workers
        self.assertEqual(delta("vkafka_requests_total", api="Produce"), requests)
        self.assertEqual(delta("vkafka_records_total", direction="in"), records)
        self.assertEqual(delta("vkafka_responses_total", api="Produce", error="none"),
                         requests)
        self.assertGreater(delta("vkafka_requests_total", api="Metadata"), 0)

        def connections_agree():
            summed = sum(v for k, v in metric_samples(self.gateway).items()
                         if k[0] == "vkafka_connections")
            return summed == sum(w["connections"] for w in workers_of(self.gateway))
        stack.wait_until(connections_agree, "vkafka_connections = the workers' "
                         "connections in /health", 30)
        # a consumer group through the same ports reads every record
        consume_all(self, config, topic, Counter(traffic.acked))
        after = metric_samples(self.gateway)
        self.assertGreaterEqual(
            self.figure(after, "vkafka_records_total", direction="out") -
            self.figure(before, "vkafka_records_total", direction="out"), traffic.sent)
        self.assertGreater(
            self.figure(after, "vkafka_requests_total", api="Fetch") -
            self.figure(before, "vkafka_requests_total", api="Fetch"), 0)
        # and the brokers hold each acknowledged record exactly once
        self.assertEqual(Counter(stack.read_all(topic)), Counter(traffic.acked))


class AdvertiseSelfWorkersTests(unittest.TestCase):
    """A tenant gateway of two workers with --advertise self and an
    advertised host of its own, in a gateway cluster whose other node (a
    one-process gateway advertising the cluster) its workers know when they
    start: the Metadata every worker answers names this gateway's host and
    ports only, and clients produce and consume through both workers."""

    timeout = 300
    HOST = "127.0.0.1"  # not the clients' bootstrap name (localhost)
    PORTS = 3

    @classmethod
    def setUpClass(cls):
        stack.ensure_cluster()
        cls.cluster_id = stack.unique("wself")
        cls.state_topic = stack.unique("_vkafka_state_wself")
        cluster = (*devstack.TENANT_OPTIONS, f"--gateway-cluster-id={cls.cluster_id}",
                   f"--state-topic={cls.state_topic}", f"--port-count={cls.PORTS}")
        cls.peer = stack.GatewayProcess(cluster).start()
        try:
            # the peer's beat is in the state topic before the workers start:
            # a worker is ready once it has read the topic up to its end
            stack.wait_until(lambda: any(
                value.get("cluster") == cls.cluster_id and
                value.get("port") == cls.peer.start_port
                for key, value in state_records(cls.state_topic)
                if key.startswith("gateway/") and value),
                "the peer's beat in the state topic", 30)
            cls.gateway = stack.GatewayProcess((
                *cluster, f"--workers={WORKERS}", "--advertise=self",
                f"--advertised-host={cls.HOST}")).start()
        except BaseException:
            cls.peer.stop()
            raise
        try:
            wait_workers_ready(cls.gateway)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.gateway.stop()
        cls.peer.stop()
        stack.delete_topics([cls.state_topic])

    def config(self, vcluster):
        return {"bootstrap.servers": self.gateway.bootstrap,
                "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": "sa", "sasl.password": token(vcluster)}

    def per_worker(self, vcluster):
        return [w["vclusters"].get(vcluster, 0)
                for w in workers_of(self.gateway, names=True)]

    def test_metadata_names_this_gateway_and_clients_use_both_workers(self):
        from confluent_kafka.admin import AdminClient, NewTopic
        vc = stack.unique("ws").replace("-", "")
        admin = AdminClient(self.config(vc))
        admin.create_topics([NewTopic("orders", 6, 3)])["orders"].result(60)
        own = {(self.HOST, self.gateway.start_port + i) for i in range(self.PORTS)}
        # a Metadata over ten connections, spread over both workers
        clients = []
        for _ in range(10):
            raw = RawClient("localhost", self.gateway.start_port)
            self.addCleanup(raw.close)
            answer = raw.sasl_plain("sa", token(vc))
            self.assertEqual(answer.error_code, ErrorCode.none, answer.error_message)
            clients.append(raw)
        spread = stack.wait_until(lambda: (lambda c: len(c) == WORKERS and all(c) and c)(
            self.per_worker(vc)), "the tenant's connections on both workers", 30)
        print(f"\nMetadata connections per worker: {spread}")
        for raw in clients:
            answer = raw.request(metadata(["orders"]), 12)
            self.assertEqual({(b.host, b.port) for b in answer.brokers}, own)
            self.assertEqual(sorted(b.node_id for b in answer.brokers), [1, 2, 3])
            [topic] = answer.topics
            self.assertEqual((topic.error_code, len(topic.partitions)),
                             (ErrorCode.none, 6))
            self.assertEqual({p.leader_id for p in topic.partitions} - {1, 2, 3}, set())
        # what a librdkafka client learns
        brokers = admin.list_topics(timeout=30).brokers
        self.assertEqual({(b.host, b.port) for b in brokers.values()}, own)
        # /health: in the cluster, but not a node to send clients to (docs/
        # operations.md): none for itself, and the peer maps only over itself
        code, health = devstack.health(self.gateway.admin_port)
        self.assertEqual((code, health["cluster"]["id"], health["cluster"]["nodes"]),
                         (200, self.cluster_id, []))
        code, peer = devstack.health(self.peer.admin_port)
        self.assertEqual((code, peer["cluster"]["nodes"]),
                         (200, [f"{socket.gethostname()}:{self.peer.start_port}"]))
        for raw in clients:
            raw.close()
        del admin  # its connections close with it
        stack.wait_until(lambda: not any(self.per_worker(vc)),
                         "the Metadata connections closed", 30)
        # producers and a consumer group, through both workers
        traffic = Traffic(self, self.config(vc), "orders", 8)
        traffic.produce(50)
        spread = stack.wait_until(lambda: (lambda c: len(c) == WORKERS and all(c) and c)(
            self.per_worker(vc)), "the producers' connections on both workers", 30)
        print(f"producer connections per worker: {spread}")
        consume_all(self, self.config(vc), "orders", Counter(traffic.acked))
        stored = stack.read_all(stack.physical_topic(vc, "orders"))
        self.assertEqual(Counter(stored), Counter(traffic.acked))
