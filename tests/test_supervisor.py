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
        details = h.supervisor.details()
        self.assertEqual(details[0], {"index": 0, "pid": 1000, "restarts": 0,
                                      "ready": True, "connections": 3,
                                      "vclusters": {"london": 2}})
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


class SumTests(unittest.TestCase):
    def setUp(self):
        self.one, self.two = Metrics(), Metrics()
        traffic(self.one, "london", 1000, 10, 0.003, 4)
        traffic(self.one, "paris", 50, 1, 0.2, 1)
        traffic(self.two, "london", 700, 7, 0.0004, 2)
        self.one.state_entries.set(12)
        self.two.state_entries.set(12)
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

    def test_polls_read_the_dashboards_families_scrapes_all(self):
        """Every second the supervisor reads what the dashboard shows; the
        rest of a worker's series (latency, records...) at each scrape, so
        a sum mixes both readings, each the latest of its kind."""
        h = Harness(1)
        h.supervisor.startService()
        feed(h.current(0), self.one)
        traffic(self.one, "london", 100, 1, 0.003, 4)
        feed(h.current(0), self.one, workers.DASHBOARD_FAMILIES)
        got = self.parsed(SummedMetrics(h.supervisor.merged).text())
        self.assertEqual(got[("vkafka_bytes_total", (("direction", "in"),
                                                     ("vcluster", "london")))], 1100)
        self.assertEqual(got[("vkafka_records_total", (("direction", "in"),
                                                       ("vcluster", "london")))], 10)
        asked = [a["families"] for a in h.spawned[0][2].asked()]
        self.assertEqual(asked, [None, sorted(workers.DASHBOARD_FAMILIES)])
        snap = snapshot(self.one, workers.DASHBOARD_FAMILIES)
        self.assertEqual({f["tally"] if isinstance(f, dict) else f[0] for f in snap},
                         set(workers.DASHBOARD_FAMILIES))


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
