"""--workers N (vkafka/workers.py), in memory: the supervisor's restarts and
stop, the control channel, the metrics sums, workers as one node.  Real
processes and Kafka: tests/test_workers.py."""

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import error
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyRequest

from vkafka import workers
from vkafka.admin.dashboard import read_connections, read_counters
from vkafka.metrics import Metrics
from vkafka.state.membership import Membership
from vkafka.tap import Options, worker_environment
from vkafka.workers import (RESTART_DELAY, STABLE_AFTER, SummedMetrics,
                            WorkerControl, WorkerSupervisor, merge, snapshot)


class FakeProcess:
    """What WorkerProcess uses of a process transport."""

    def __init__(self, pid):
        self.pid = pid
        self.written = []
        self.signals = []

    def write(self, data):
        self.written.append(data)

    def signalProcess(self, name):
        self.signals.append(name)

    def asked(self):
        return [json.loads(line) for chunk in self.written
                for line in chunk.splitlines()]


def ended(code=None, signal=None):
    if signal is not None:
        return Failure(error.ProcessTerminated(signal=signal))
    return Failure(error.ProcessDone(0) if code == 0
                   else error.ProcessTerminated(exitCode=code))


class Harness:
    def __init__(self, count=2):
        self.clock = Clock()
        self.spawned = []
        self.supervisor = WorkerSupervisor(count, self.spawn, self.clock,
                                           stop_timeout=15.0)

    def spawn(self, index, protocol):
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((index, protocol, process))
        protocol.makeConnection(process)
        return process

    def current(self, index):
        return self.supervisor.workers[index]

    def die(self, index, **how):
        worker = self.current(index)
        worker.processEnded(ended(**how))
        return worker


def feed(worker, metrics, only=None):
    """*worker* asks, and its process answers with *metrics*' snapshot."""
    worker.ask(only)
    answer(worker, metrics, only)


def answer(worker, metrics, only=None):
    """*worker*'s process answers the last question it was asked."""
    ident = json.loads(worker.transport.written[-1])["id"]
    report = {"pid": worker.pid, "reason": None, "connections": 0, "vclusters": {},
              "families": None if only is None else sorted(only),
              "metrics": snapshot(metrics, only)}
    worker.outReceived(json.dumps({"id": ident, "report": report}).encode() + b"\n")


def traffic(metrics, vc, produced, records, seconds, connections):
    conn = metrics.for_connection(vc)
    conn.request("Produce", produced, records)
    conn.response("Produce", 40, seconds, error=0)
    metrics.connections.labels(vc).set(connections)


class SupervisorTests(unittest.TestCase):
    def test_starts_each_worker(self):
        h = Harness(3)
        h.supervisor.startService()
        self.assertEqual([i for i, *_ in h.spawned], [0, 1, 2])
        self.assertEqual(sorted(w.pid for w in h.supervisor.workers.values()),
                         [1000, 1001, 1002])

    def test_a_dead_worker_is_restarted_with_backoff(self):
        """A worker dying at once is restarted after 0.5 s, then 1, 2, 4...
        (at most 30 s); one that ran STABLE_AFTER seconds starts over at 0.5."""
        h = Harness(2)
        h.supervisor.startService()
        delays = []
        for _ in range(8):
            before = len(h.spawned)
            h.die(0, signal=9)
            self.assertNotIn(0, h.supervisor.workers)
            waited = 0.0
            while len(h.spawned) == before:
                h.clock.advance(0.25)
                waited += 0.25
            delays.append(waited)
        self.assertEqual(delays, [RESTART_DELAY * 2 ** i for i in range(6)] + [30, 30])
        self.assertEqual(h.current(0).pid, h.spawned[-1][2].pid)
        self.assertEqual(h.supervisor.restarts, {0: 8, 1: 0})
        h.clock.advance(STABLE_AFTER)
        before = len(h.spawned)
        h.die(0, code=1)
        h.clock.advance(RESTART_DELAY)
        self.assertEqual(len(h.spawned), before + 1)
        self.assertEqual(h.spawned[-1][0], 0)
        self.assertEqual(h.current(1).pid, 1001)  # the other one untouched

    def test_stop_forwards_sigterm_and_restarts_nothing(self):
        h = Harness(2)
        h.supervisor.startService()
        h.die(1, signal=9)  # a restart pending
        d = h.supervisor.stopService()
        self.assertEqual(h.spawned[0][2].signals, ["TERM"])
        stopped = []
        d.addCallback(stopped.append)
        self.assertFalse(stopped)
        h.die(0, code=0)
        self.assertTrue(stopped)
        h.clock.advance(60)
        self.assertEqual(len(h.spawned), 2)  # neither restarted
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_a_worker_that_will_not_stop_is_killed(self):
        h = Harness(1)
        h.supervisor.startService()
        d = h.supervisor.stopService()
        process = h.spawned[0][2]
        h.clock.advance(14.9)
        self.assertEqual(process.signals, ["TERM"])
        h.clock.advance(0.2)
        self.assertEqual(process.signals, ["TERM", "KILL"])
        h.die(0, signal=9)
        self.assertTrue(d.called)

    def test_reports_and_timeouts(self):
        """The supervisor asks each worker on its control channel; a worker that
        does not answer within ASK_TIMEOUT counts as no report."""
        h = Harness(2)
        h.supervisor.startService()
        d = h.supervisor.reports()
        got = []
        d.addCallback(got.append)
        [ask0] = h.spawned[0][2].asked()
        self.assertEqual(ask0["ask"], "report")
        report = {"pid": 1000, "reason": None, "connections": 3,
                  "vclusters": {"london": 2}}
        h.current(0).outReceived(json.dumps({"id": ask0["id"], "report": report})
                                 .encode()[:10])
        h.current(0).outReceived(json.dumps({"id": ask0["id"], "report": report})
                                 .encode()[10:] + b"\n")
        self.assertFalse(got)
        h.clock.advance(workers.ASK_TIMEOUT)
        self.assertEqual(got, [{0: report, 1: None}])
        details = h.supervisor.details()  # /health: no tenant named
        self.assertEqual(details[0], {"index": 0, "pid": 1000, "restarts": 0,
                                      "ready": True, "connections": 3})
        self.assertEqual(h.supervisor.details(names=True)[0]["vclusters"],
                         {"london": 2})  # GET /admin/workers
        self.assertEqual(details[1], {"index": 1, "pid": 1001, "restarts": 0,
                                      "ready": False})

    def test_polls_every_second(self):
        h = Harness(1)
        h.supervisor.startService()
        h.clock.advance(workers.POLL_EVERY)
        self.assertEqual(len(h.spawned[0][2].asked()), 1)
        h.clock.advance(workers.POLL_EVERY)
        self.assertEqual(len(h.spawned[0][2].asked()), 2)

    def test_worker_log_lines_are_logged(self):
        h = Harness(1)
        h.supervisor.startService()
        events = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        h.current(0).errReceived(json.dumps({"level": "warn", "ns": "vkafka.x",
                                             "text": "hello"}).encode() + b"\nTrace")
        h.current(0).errReceived(b"back\n")
        said = [(e["log_namespace"], e["log_level"].name, e.get("text"))
                for e in events if e.get("worker") == 0]
        self.assertEqual(said, [("vkafka.x", "warn", "hello"),
                                ("vkafka.worker", "warn", "Traceback")])


class ControlTests(unittest.TestCase):
    def test_worker_answers_reports(self):
        lost = []
        control = WorkerControl(lambda only: {"pid": 7, "only": only and sorted(only)},
                                lambda: lost.append(True))
        transport = StringTransport()
        control.makeConnection(transport)
        control.dataReceived(b'{"id": 4, "ask": "report"}\n{"id": 5, "ask": "x"}\n'
                             b'{"id": 6, "ask": "report", "families": ["a"]}\n')
        answers = [json.loads(line) for line in transport.value().splitlines()]
        self.assertEqual(answers[0], {"id": 4, "report": {"pid": 7, "only": None}})
        self.assertEqual(answers[1]["id"], 5)
        self.assertIn("unknown request", answers[1]["error"])
        self.assertEqual(answers[2], {"id": 6, "report": {"pid": 7, "only": ["a"]}})
        control.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(lost, [True])

    def test_siblings_are_told_not_answered(self):
        told = []
        control = WorkerControl(lambda only: {}, lambda: None,
                                lambda ips, vcs: told.append((ips, vcs)))
        transport = StringTransport()
        control.makeConnection(transport)
        control.dataReceived(b'{"siblings": {"ips": {"1.2.3.4": 2}, '
                             b'"vclusters": {"london": 1}}}\n{"siblings": {}}\n')
        self.assertEqual(told, [({"1.2.3.4": 2}, {"london": 1}), ({}, {})])
        self.assertEqual(transport.value(), b"")


class SumTests(unittest.TestCase):
    def setUp(self):
        self.one, self.two = Metrics(), Metrics()
        traffic(self.one, "london", 1000, 10, 0.003, 4)
        traffic(self.one, "paris", 50, 1, 0.2, 1)
        traffic(self.two, "london", 700, 7, 0.0004, 2)
        self.one.state_entries.set(12)
        self.two.state_entries.set(12)
        self.one.cluster_nodes.set(3)  # two workers of one node of three
        self.two.cluster_nodes.set(3)
        self.one.rate_share.labels("london", "produceBytesPerSecond").set(0.25)
        self.two.rate_share.labels("london", "produceBytesPerSecond").set(0.25)

    def parsed(self, text):
        out = {}
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def test_counters_histograms_gauges_summed(self):
        summed = SummedMetrics(lambda: merge([snapshot(self.one),
                                              snapshot(self.two)]))
        got = self.parsed(summed.text())
        one, two = self.parsed(self.one.text()), self.parsed(self.two.text())
        for key in set(one) | set(two):
            name = key[0]
            if name.endswith("_created"):
                self.assertEqual(got[key], min(one.get(key, 1e12), two.get(key, 1e12)))
            elif name == "vkafka_state_entries":
                self.assertEqual(got[key], 12)
            elif name == "vkafka_gateway_cluster_nodes":
                self.assertEqual(got[key], 3)
            else:
                self.assertEqual(got[key], one.get(key, 0) + two.get(key, 0), key)
        self.assertEqual(got[("vkafka_bytes_total", (("direction", "in"),
                                                     ("vcluster", "london")))], 1700)
        self.assertEqual(got[("vkafka_records_total", (("direction", "in"),
                                                       ("vcluster", "london")))], 17)
        le = ("le", "0.0005")
        self.assertEqual(got[("vkafka_request_latency_seconds_bucket",
                              (("api", "Produce"), le))], 1)
        self.assertEqual(got[("vkafka_request_latency_seconds_count",
                              (("api", "Produce"),))], 3)
        self.assertEqual(set(got), set(one) | set(two))

    def test_the_dashboard_reads_the_sums(self):
        summed = SummedMetrics(lambda: merge([snapshot(self.one),
                                              snapshot(self.two)]))
        self.assertEqual(read_connections(summed), {"london": 6, "paris": 1})
        counters = read_counters(summed)
        self.assertEqual(counters[("london", "bytes", "in")], 1700)
        self.assertEqual(counters[("london", "requests", "Produce")], 2)
        self.assertEqual([s.value for f in summed.rate_share.collect()
                          for s in f.samples], [0.5])

    def test_a_dead_workers_counters_stay_in_the_totals(self):
        h = Harness(2)
        h.supervisor.startService()
        for index, metrics in ((0, self.one), (1, self.two)):
            feed(h.current(index), metrics)
        before = self.parsed(SummedMetrics(h.supervisor.merged).text())
        h.die(0, signal=9)
        h.clock.advance(RESTART_DELAY)
        after = self.parsed(SummedMetrics(h.supervisor.merged).text())
        london_in = ("vkafka_bytes_total", (("direction", "in"), ("vcluster", "london")))
        self.assertEqual(after[london_in], before[london_in])
        connections = ("vkafka_connections", (("vcluster", "london"),))
        self.assertEqual((before[connections], after[connections]), (6, 2))
        # the restarted worker's own counters add to what the dead one left
        fresh = Metrics()
        traffic(fresh, "london", 5, 1, 0.1, 1)
        feed(h.current(0), fresh)
        again = self.parsed(SummedMetrics(h.supervisor.merged).text())
        self.assertEqual(again[london_in], before[london_in] + 5)

    def test_polls_read_the_traffic_scrapes_all(self):
        """Every second the supervisor reads what the dashboard shows and the
        counts of the clients' traffic, records included (a worker killed
        takes at most a second of them with it); the rest of a worker's
        series (latency, answers...) at each scrape, so a sum mixes both
        readings, each the latest of its kind."""
        h = Harness(1)
        h.supervisor.startService()
        feed(h.current(0), self.one)
        scraped = self.parsed(SummedMetrics(h.supervisor.merged).text())
        traffic(self.one, "london", 100, 1, 0.003, 4)
        h.clock.advance(workers.POLL_EVERY)
        self.assertEqual(h.spawned[0][2].asked()[-1]["families"],
                         sorted(workers.POLLED_FAMILIES))
        feed(h.current(0), self.one, workers.POLLED_FAMILIES)
        got = self.parsed(SummedMetrics(h.supervisor.merged).text())
        london = (("direction", "in"), ("vcluster", "london"))
        self.assertEqual(got[("vkafka_bytes_total", london)], 1100)
        self.assertEqual(got[("vkafka_records_total", london)], 11)
        self.assertEqual(got[("vkafka_requests_total", (("api", "Produce"),
                                                        ("vcluster", "london")))], 2)
        latency = ("vkafka_request_latency_seconds_count", (("api", "Produce"),))
        self.assertEqual((scraped[latency], got[latency]), (2, 2))
        snap = snapshot(self.one, workers.POLLED_FAMILIES)
        self.assertEqual({f["tally"] if isinstance(f, dict) else f[0] for f in snap},
                         set(workers.POLLED_FAMILIES))


    def scrape(self, resource, query, answers=()):
        """``(status, body)`` of GET /metrics with *query*, each worker of
        *answers* (``(worker, metrics)``) answering the supervisor's question."""
        request = DummyRequest([b""])
        request.args = query
        rendered = resource.render_GET(request)
        for worker, metrics in answers:
            answer(worker, metrics)
        body = rendered if isinstance(rendered, bytes) else b"".join(request.written)
        return request.responseCode or 200, body

    def test_by_worker_when_asked(self):
        """``/metrics?by=worker``: the same series, each with the worker that
        counted it (what a dead worker left as ``gone``, the supervisor's own
        as ``supervisor``), adding up to the totals; any other ``by`` is a
        400 with a JSON body."""
        h = Harness(2)
        h.supervisor.startService()
        feed(h.current(0), self.one)
        feed(h.current(1), self.two)
        h.die(1, signal=9)
        h.clock.advance(RESTART_DELAY)
        fresh, own = Metrics(), Metrics()
        traffic(fresh, "london", 5, 1, 0.1, 1)
        own.state_entries.set(12)
        resource = workers.SummedMetricsResource(h.supervisor, own)
        answers = [(h.current(0), self.one), (h.current(1), fresh)]
        status, each = self.scrape(resource, {b"by": [b"worker"]}, answers)
        self.assertEqual(status, 200)
        status, total = self.scrape(resource, {}, answers)
        each, total = self.parsed(each), self.parsed(total)
        london_in = ("vkafka_bytes_total", (("direction", "in"), ("vcluster", "london")))
        self.assertEqual({dict(k[1])["worker"]: v for k, v in each.items()
                          if (k[0], tuple(x for x in k[1] if x[0] != "worker"))
                          == london_in},
                         {"0": 1000, "1": 5, "gone": 700})
        self.assertEqual(total[london_in], 1705)
        self.assertEqual(each[("vkafka_state_entries", (("worker", "supervisor"),))], 12)
        self.assertTrue(all("worker" in dict(k[1]) for k in each))
        added = {}
        for (name, labels), value in each.items():
            key = (name, tuple(x for x in labels if x[0] != "worker"))
            if not name.endswith("_created") and name not in workers.MAX_FAMILIES:
                added[key] = added.get(key, 0) + value
        self.assertEqual(set(added), {k for k in total if not k[0].endswith("_created")
                                      and k[0] not in workers.MAX_FAMILIES})
        for key, value in added.items():
            self.assertAlmostEqual(total[key], value, places=9, msg=key)
        for query in ({b"by": [b"vcluster"]}, {b"by": [b"worker", b"worker"]}):
            status, body = self.scrape(resource, query)
            self.assertEqual(status, 400)
            self.assertEqual(json.loads(body)["error"], "bad_request")

    def test_one_process_by_worker(self):
        """``--workers 1``: asked ``by=worker``, every series says worker 0."""
        from vkafka.metrics import MetricsResource
        resource = MetricsResource(self.one)
        status, each = self.scrape(resource, {b"by": [b"worker"]})
        plain = self.parsed(self.scrape(resource, {})[1])
        self.assertEqual(self.parsed(each), {
            (name, tuple(sorted(labels + (("worker", "0"),)))): value
            for (name, labels), value in plain.items()})
        status, body = self.scrape(resource, {b"by": [b"node"]})
        self.assertEqual(status, 400)
        self.assertIn("worker", json.loads(body)["message"])


class OptionsTests(unittest.TestCase):
    def parse(self, argv, environ=None):
        options = Options(environ or {})
        options.parseOptions(argv)
        return options

    def test_default_is_one_per_core(self):
        self.patch(workers.os, "cpu_count", lambda: 6)
        self.assertEqual(self.parse([])["workers"], 6)
        self.assertEqual(self.parse([], {"GATEWAY_WORKERS": "3"})["workers"], 3)
        self.assertEqual(self.parse(["--workers", "1"],
                                    {"GATEWAY_WORKERS": "3"})["workers"], 1)
        from twisted.python.usage import UsageError
        for bad in ("0", "x", "-2"):
            self.assertRaises(UsageError, self.parse, ["--workers", bad])

    def test_worker_environment(self):
        """Workers get every setting given, in its environment variable (not
        on their command line), and nothing of the config file's name."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("start-port: 7969\n")
        options = self.parse(["--token-secret", "t" * 32, "--security-protocol",
                              "SASL_PLAINTEXT", "--multi-tenancy", "true",
                              "--config", path, "--workers", "2"],
                             {"GATEWAY_ADMIN_PORT": "1", "GATEWAY_HTTP_PORT": "9999"})
        env = worker_environment(options, {"PATH": "/bin", "GATEWAY_CONFIG_FILE": path,
                                           "GATEWAY_RACK_ID": "stale"})
        self.assertEqual(env["GATEWAY_USER_POOL_SECRET_KEY"], "t" * 32)
        self.assertEqual(env["GATEWAY_START_PORT"], "7969")
        self.assertEqual(env["GATEWAY_HTTP_PORT"], "9999")
        self.assertEqual(env["GATEWAY_WORKERS"], "1")
        self.assertEqual(env["PATH"], "/bin")
        self.assertNotIn("GATEWAY_CONFIG_FILE", env)
        self.assertNotIn("GATEWAY_RACK_ID", env)
        again = Options(env)
        again.parseOptions([])
        for name in ("start-port", "token-secret", "admin-port", "security-protocol"):
            self.assertEqual(again[name], options[name])


class FakeStore:
    def __init__(self):
        self.listeners = []
        self.ready = type("Ready", (), {"called": True})()

    def subscribe(self, listener):
        self.listeners.append(listener)

    def put(self, key, value):
        from twisted.internet import defer
        for listener in self.listeners:
            listener(key, value)
        return defer.succeed(None)


class OneNodeTests(unittest.TestCase):
    """Workers of one supervisor beat each (alive: counted by the rate shares)
    and are one node of the gateway cluster (the mapping)."""

    def test_workers_are_one_node(self):
        clock, store = Clock(), FakeStore()

        def describe(port):
            return lambda: {"host": "h", "port": port, "ports": 3, "minBroker": 1}
        a0 = Membership("a:1#0", store, clock.seconds, describe(1), "c", node="a:1")
        a1 = Membership("a:1#1", store, clock.seconds, describe(1), "c", node="a:1")
        b = Membership("b:2", store, clock.seconds, describe(2), "c")
        for m in (a0, a1, b):
            m.beat()
        for m in (a0, a1, b):
            self.assertEqual([n.id for n in m.nodes()], ["a:1", "b:2"])
            self.assertEqual(m.alive(), {"a:1#0", "a:1#1", "b:2"})
        mapping = a0.mapping("client", [1, 2, 3])
        self.assertEqual(mapping, a1.mapping("client", [1, 2, 3]))
        self.assertEqual(mapping, b.mapping("client", [1, 2, 3]))
        self.assertEqual({n.id for n in mapping.values()}, {"a:1", "b:2"})
        # one worker of a dies: a is still a node, for everybody
        clock.advance(3)
        a0.beat()
        b.beat()
        clock.advance(1)
        self.assertEqual([n.id for n in b.nodes()], ["a:1", "b:2"])
        self.assertEqual(b.alive(), {"a:1#0", "b:2"})
        # alone: a's workers advertise themselves (no mapping)
        lone = Membership("z:9#0", FakeStore(), clock.seconds, describe(9), "c",
                          node="z:9")
        Membership("z:9#1", lone.store, clock.seconds, describe(9), "c",
                   node="z:9").beat()
        lone.beat()
        self.assertEqual([n.id for n in lone.nodes()], ["z:9"])
        self.assertEqual(lone.mapping("client", [1, 2]), {})

    def test_single_process_record_unchanged(self):
        m = Membership("a:1", FakeStore(), Clock().seconds,
                       lambda: {"host": "h", "port": 1, "ports": 3, "minBroker": 1}, "c")
        self.assertNotIn("node", m.record())


# The connection caps over every worker (Gateway.siblings, tell_siblings).

class LinkedProcess(FakeProcess):
    """A worker process in memory: a Gateway whose WorkerControl reads what
    the supervisor writes and answers on the supervisor's end."""

    def __init__(self, pid, protocol, gateway):
        super().__init__(pid)
        self.gateway = gateway
        self.control = WorkerControl(self.report, lambda: None, gateway.siblings)
        self.out = StringTransport()
        self.control.makeConnection(self.out)
        self.protocol = protocol

    def report(self, only=None):
        g = self.gateway
        return {"pid": self.pid, "reason": None, "connections": sum(g.per_ip.values()),
                "vclusters": dict(g.per_vcluster), "ips": g.reported_ips(),
                "families": None if only is None else sorted(only), "metrics": []}

    def write(self, data):
        super().write(data)
        self.control.dataReceived(data)
        answer = self.out.value()
        self.out.clear()
        if answer:
            self.protocol.outReceived(answer)


def gateway(workers, per_ip=6, per_vcluster=4):
    from vkafka.proxy.gateway import Gateway
    from vkafka.proxy.topology import Topology
    g = Gateway(Clock(), Topology([("k", 9092)], "gw", 6969, 3, 1), {},
                max_connections_per_ip=per_ip, max_connections_per_vcluster=per_vcluster)
    g.workers = workers
    return g


def address(host, port=5):
    from twisted.internet.address import IPv4Address
    return IPv4Address("TCP", host, port)


class SharedCapTests(unittest.TestCase):
    """--max-connections-per-ip and --max-connections-per-vcluster hold for
    the gateway, all its workers (docs/operations.md, Workers)."""

    def linked(self, count, **caps):
        h = Harness(count)
        h.gateways = []

        def spawn(index, protocol):
            g = gateway(count, **caps)
            process = LinkedProcess(1000 + len(h.spawned), protocol, g)
            h.spawned.append((index, protocol, process))
            h.gateways.append(g)
            protocol.makeConnection(process)
            return process
        h.supervisor.spawn = spawn
        h.supervisor.startService()
        return h

    def test_one_worker_unchanged(self):
        """--workers 1: the cap is the worker's, as before; no sibling state."""
        g = gateway(1)
        factory = g.factory_for_port(6969)
        self.assertTrue(all(factory.buildProtocol(address("1.2.3.4")) for _ in range(6)))
        self.assertIsNone(factory.buildProtocol(address("1.2.3.4")))
        self.assertEqual(g.shared_ip.admitted, {})
        self.assertTrue(all(g.admit_tenant("london") for _ in range(4)))
        self.assertFalse(g.admit_tenant("london"))
        self.assertEqual(g.shared_vcluster.admitted, {})

    def test_supervisor_sends_nothing_with_one_worker(self):
        h = self.linked(1)
        h.clock.advance(workers.POLL_EVERY)
        self.assertEqual([m.get("ask") for m in h.spawned[0][2].asked()], ["report"])

    def test_siblings_count_and_share_of_the_room(self):
        """A worker admits while its connections and its siblings' last known
        total are under the cap, and since the last reading at most its share
        of the room that reading left (ceil(room / N))."""
        g = gateway(2)
        factory = g.factory_for_port(6969)
        refusals = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(refusals.append)
        self.addCleanup(globalLogPublisher.removeObserver, refusals.append)

        def connect():
            return factory.buildProtocol(address("1.2.3.4"))
        # before any reading: room 6, a share of 3
        opened = [connect() for _ in range(4)]
        self.assertEqual([c is not None for c in opened], [True] * 3 + [False])
        self.assertEqual(g.refused_connections, 1)
        [said] = [e for e in refusals if "refusing connections" in e.get("log_format", "")]
        self.assertEqual((said["host"], said["n"], said["limit"]), ("1.2.3.4", 3, 6))
        # a reading: the sibling holds 2; room 6 - 3 - 2 = 1
        g.siblings({"1.2.3.4": 2}, {})
        self.assertIsNotNone(connect())
        self.assertIsNone(connect())
        # the sibling holds 3 now: 4 + 3 >= 6
        g.siblings({"1.2.3.4": 3}, {})
        self.assertIsNone(connect())
        from twisted.python.failure import Failure
        for client in opened[:2]:  # 2 + 3 < 6, but no room until the next reading
            client.connectionLost(Failure(error.ConnectionDone()))
        self.assertIsNone(connect())
        g.siblings({"1.2.3.4": 3}, {})
        self.assertIsNotNone(connect())
        self.assertIsNone(connect())
        self.assertEqual(g.per_ip, {"1.2.3.4": 3})
        self.assertEqual(g.refused_connections, 5)
        # another address has its own room
        self.assertIsNotNone(factory.buildProtocol(address("5.6.7.8")))

    def test_vcluster_cap_counts_siblings(self):
        g = gateway(2, per_vcluster=4)
        self.assertEqual([g.admit_tenant("london") for _ in range(3)],
                         [True, True, False])  # a share of the room: 2
        g.siblings({}, {"london": 1})
        self.assertEqual([g.admit_tenant("london") for _ in range(2)], [True, False])
        g.siblings({}, {"london": 1})
        self.assertFalse(g.admit_tenant("london"))  # 3 + 1 >= 4
        g.tenant_closed("london")
        g.siblings({}, {"london": 2})
        self.assertFalse(g.admit_tenant("london"))  # 2 + 2 >= 4
        self.assertTrue(g.admit_tenant("paris"))
        self.assertEqual(g.per_vcluster, {"london": 2, "paris": 1})

    def test_reported_ips_are_bounded(self):
        """A worker reports the addresses with at least cap / (2N) connections,
        at most REPORT_MOST of them, the largest."""
        from vkafka.proxy import gateway as module
        g = gateway(2, per_ip=1000)  # reported from 250
        g.per_ip = {f"10.0.{i // 256}.{i % 256}": 1 for i in range(100_000)}
        g.per_ip.update({"1.1.1.1": 250, "2.2.2.2": 249, "3.3.3.3": 900})
        self.assertEqual(g.reported_ips(), {"1.1.1.1": 250, "3.3.3.3": 900})
        small = gateway(2, per_ip=6)  # every address with a connection
        small.per_ip = {f"10.0.{i // 256}.{i % 256}": 1 + i % 3 for i in range(5000)}
        reported = small.reported_ips()
        self.assertEqual(len(reported), module.REPORT_MOST)
        self.assertEqual(set(reported.values()), {3})
        self.assertLess(len(json.dumps(reported)), 30_000)

    def test_supervisor_tells_each_worker_what_the_others_hold(self):
        h = self.linked(3, per_ip=6, per_vcluster=4)
        a, b, c = h.gateways
        for g, n in ((a, 2), (b, 1), (c, 0)):
            for _ in range(n):
                self.assertTrue(g.admit(address("1.2.3.4")))
        a.admit_tenant("london")
        c.admit_tenant("london")
        b.admit(address("9.9.9.9"))
        h.clock.advance(workers.POLL_EVERY)
        self.assertEqual(a.shared_ip.siblings, {"1.2.3.4": 1, "9.9.9.9": 1})
        self.assertEqual(b.shared_ip.siblings, {"1.2.3.4": 2})
        self.assertEqual(c.shared_ip.siblings, {"1.2.3.4": 3, "9.9.9.9": 1})
        self.assertEqual(a.shared_vcluster.siblings, {"london": 1})
        self.assertEqual(b.shared_vcluster.siblings, {"london": 2})
        told = [m for m in h.spawned[2][2].asked() if "siblings" in m]
        self.assertEqual(told, [{"siblings": {"ips": {"1.2.3.4": 3, "9.9.9.9": 1},
                                              "vclusters": {"london": 1}}}])
        # a worker that does not answer counts with its last report
        h.spawned[1][2].write = lambda data: None
        self.assertTrue(c.admit(address("1.2.3.4")))
        h.clock.advance(workers.POLL_EVERY)
        self.assertEqual(a.shared_ip.siblings, {"1.2.3.4": 1, "9.9.9.9": 1})
        h.clock.advance(workers.ASK_TIMEOUT)  # told once every answer is in
        self.assertEqual(a.shared_ip.siblings, {"1.2.3.4": 2, "9.9.9.9": 1})

    def test_a_restarted_worker_is_told_at_once(self):
        h = self.linked(2)
        a = h.gateways[0]
        for _ in range(3):
            a.admit(address("1.2.3.4"))
        h.clock.advance(workers.POLL_EVERY)
        h.die(1, signal=9)
        h.clock.advance(RESTART_DELAY)
        restarted = h.gateways[2]
        self.assertEqual(restarted.shared_ip.siblings, {"1.2.3.4": 3})
        # room 6 - 3 = 3, a share of 2 (not ceil(6 / 2) = 3, as for an empty reading)
        self.assertEqual([restarted.admit(address("1.2.3.4")) for _ in range(3)],
                         [True, True, False])

    def test_flood_holds_within_the_bound(self):
        """Random floods from one address over 3 workers, connections closing
        now and then, readings once a second: the gateway never holds more
        than cap + (N - 1) * max(1, cap // (2N)), and it does reach the cap."""
        import random
        from vkafka.proxy.gateway import report_threshold
        for cap in (6, 20, 100):
            h = self.linked(3, per_ip=cap, per_vcluster=cap)
            bound = cap + 2 * report_threshold(cap, 3)
            rng = random.Random(cap)
            most = 0
            for second in range(40):
                for _ in range(rng.randrange(0, 3 * cap)):
                    g = rng.choice(h.gateways)
                    g.admit(address("6.6.6.6"))
                    g.admit_tenant("flood")
                    if rng.random() < 0.05:  # one of each closes
                        if g.per_ip.get("6.6.6.6"):
                            g.per_ip["6.6.6.6"] -= 1
                        if g.per_vcluster.get("flood"):
                            g.tenant_closed("flood")
                    total_ip = sum(x.per_ip.get("6.6.6.6", 0) for x in h.gateways)
                    total_vc = sum(x.per_vcluster.get("flood", 0) for x in h.gateways)
                    self.assertLessEqual(total_ip, bound, (cap, second))
                    self.assertLessEqual(total_vc, cap + 2, (cap, second))
                    most = max(most, total_ip)
                h.clock.advance(workers.POLL_EVERY)
            self.assertGreaterEqual(most, cap)
            h.supervisor.stopService()
