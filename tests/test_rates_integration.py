"""Per-virtual-cluster rate limits (docs/governance.md, "Rates") enforced by
real gateways in front of the Kafka 4.x dev cluster, measured with the stock
perf-test CLIs.

Rates are throttles, never refusals (KIP-219): a request over the tenant's
share is served, its response says ``throttle_time_ms`` and the gateway stops
reading that client for as long (filters/throttle.py, proxy/splice.py
``hold_reads``).  Two gateways on one state topic split a limit every second
by observed demand (filters/shares.py, ``rate/<gateway>/<vc>`` records).

What is measured, and where the margins come from:

- produce: the broker stamps each batch as it appends it (the topic has
  ``message.timestamp.type=LogAppendTime``), so the rate the gateways let
  through is read from the records themselves.  The steady rate leaves out
  the first second (each gateway's bucket starts full, one second of burst
  at its share, and the shares are one second behind where the clients are):
  within 10 % of the limit.  The wall-clock rate runs from the first append
  (the same host's clock) to both perf-tests' exit, the burst and the
  producers' final flush included: within 15 %.  From the launch it would
  also count the two JVMs' start, 2-5 s on this two-core machine, which says
  nothing about the gateway (it is printed, not asserted).
- fetch: kafka-consumer-perf-test's own data phase (``fetch.time.ms``, the
  group join left out): at most the limit + 15 % (one second of burst in a
  DURATION-second run, and the limit counts Fetch response bytes).
- isolation: an unlimited tenant's producer throughput on the same gateway
  while a limited tenant is throttled is at least 70 % of what it is while
  that tenant is idle (mean of a run before and a run after).

Figures are in bytes of record values (``--record-size``); the limits count
Kafka frame bytes, a percent or two more, well inside the margins.
DURATION (seconds of traffic at the limit) is 20, or
``VKAFKA_RATE_TEST_SECONDS``.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial import unittest

from vkafka.filters.shares import FRESH

from . import stack
from .stack import devstack
from .test_limits_integration import admin

DURATION = float(os.environ.get("VKAFKA_RATE_TEST_SECONDS", "20"))
"""Seconds of traffic at the limit each measurement lasts."""

RECORD_SIZE = 1000
PRODUCE_LIMIT = 2_000_000
FETCH_LIMIT = 1_000_000
ISOLATION_LIMIT = 1_000_000
"""Tenant A's produce limit in the isolation test."""
ISOLATION_RECORDS = 50_000
"""Records of each of tenant B's warming runs (50 MB: 6-7 s unthrottled on
the development machine, 40 s or more on a slower CI machine)."""
B_SECONDS = DURATION / 2
"""Seconds each measured run of B lasts at its warm rate alone: the records
of those runs are sized from that rate, so that they end well inside tenant
A's runs on a machine of any speed."""
B_LEAST = 5_000
"""Fewest records of a measured run of B."""

STEADY_MARGIN = 0.10
WALL_MARGIN = 0.15
FETCH_MARGIN = 0.15
ISOLATION_RATIO = 0.70
PACED = 0.9
"""Tenant A's paced runs (the baseline) send this share of its limit."""
A_SETTLE = 3_000
"""Records tenant A sends before B's run beside it starts: its JVM's start
and first compiles (up to half a core here) would otherwise land in one
kind of run more than the other."""
ISOLATION_A_RECORDS = int(ISOLATION_LIMIT * 2 * DURATION / RECORD_SIZE)
"""Records of tenant A's throttled run: twice DURATION at its limit, so that
B's run (B_SECONDS at its rate alone) ends first.  A's paced runs are
stopped when B's run beside them ends; they are sized never to end first."""
PACED_A_RECORDS = int(ISOLATION_LIMIT * PACED * 600 / RECORD_SIZE)
WARM_RUNS = 6
"""Most runs of tenant B before it is measured: the brokers' JVMs (fresh when
the test starts the cluster) speed up for the first few hundred MB, which
made runs later in the test up to 3 times faster than earlier ones."""
WARM_STEP = 0.15
"""B is warm once a run is less than this much faster than the one before."""


def samples(gateway, name):
    """{labels as a sorted tuple of pairs: value} of metric sample *name*
    scraped from *gateway*'s /metrics."""
    from prometheus_client.parser import text_string_to_metric_families
    text = stack.scrape(f"http://localhost:{gateway.admin_port}/metrics")
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def metric(gateway, name, **labels):
    """The value of one sample (None if absent)."""
    return samples(gateway, name).get(tuple(sorted(labels.items())))


def spawn(tool, *args, tag, directory):
    """Start a stock CLI tool; its output goes to files in *directory*."""
    out = open(directory / f"{tag}.out", "w+")
    err = open(directory / f"{tag}.err", "w+")
    process = subprocess.Popen([str(stack.BIN / tool), *args], stdout=out,
                               stderr=err, stdin=subprocess.DEVNULL, text=True)
    process.files = (out, err)
    process.tag = tag
    return process


def finish(process, deadline):
    """Wait for *process* until *deadline* (monotonic); (rc, stdout, stderr)."""
    try:
        process.wait(max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{process.tag} still running at its deadline: killed")
    finally:
        outputs = []
        for f in process.files:
            f.seek(0)
            outputs.append(f.read())
            f.close()
    return process.returncode, outputs[0], outputs[1]


def problems(*texts):
    """Lines of CLI output that report an error."""
    return [line for text in texts for line in text.splitlines()
            if re.search(r"\bERROR\b|Exception|\bError\b", line)]


def producer_summary(out):
    """The final line of kafka-producer-perf-test and its metrics:
    {records, records_per_second, throttle_avg, throttle_max}."""
    total = [line for line in out.splitlines()
             if "records sent" in line and "50th" in line]
    if not total:
        raise AssertionError(f"no total line in the producer's output:\n{out[-3000:]}")
    found = re.match(r"(\d+) records sent, ([\d.]+) records/sec", total[-1])
    summary = {"records": int(found.group(1)), "records_per_second": float(found.group(2)),
               "line": total[-1]}
    for key in ("avg", "max"):
        line = re.search(rf"^producer-metrics:produce-throttle-time-{key}:\{{[^}}]*\}}"
                         r"\s*:\s*(\S+)", out, re.M)
        summary[f"throttle_{key}"] = float(line.group(1)) if line else None
    return summary


def consumer_summary(out):
    """kafka-consumer-perf-test's result row and its throttle metrics."""
    lines = out.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("start.time")),
                  None)
    if header is None:
        raise AssertionError(f"no result row in the consumer's output:\n{out[-3000:]}")
    names = [f.strip() for f in lines[header].split(",")]
    values = [f.strip() for f in lines[header + 1].split(",")]
    row = dict(zip(names, values))
    for key in ("avg", "max"):
        line = re.search(r"^consumer-fetch-manager-metrics:fetch-throttle-time-"
                         rf"{key}:\{{[^}}]*\}}\s*:\s*(\S+)", out, re.M)
        row[f"throttle_{key}"] = float(line.group(1)) if line else None
    return row


def read_directly(topic, deadline):
    """Every record of *topic*, read from the cluster (not a gateway) until
    the high watermarks: [(timestamp type, timestamp ms, value length)]."""
    from confluent_kafka import TopicPartition, Consumer
    consumer = Consumer({"bootstrap.servers": stack.BOOTSTRAP,
                         "group.id": stack.unique("rateint-check"),
                         "enable.auto.commit": False,
                         "fetch.max.bytes": 52428800})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                       timeout=30)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        seen = dict.fromkeys(partitions, 0)
        got = []
        while any(seen[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(got)} of {sum(ends.values())} records "
                                     f"of {topic} before the deadline")
            for m in consumer.consume(1000, 1.0):
                if m.error() is not None:
                    raise AssertionError(f"reading {topic}: {m.error()}")
                seen[m.partition()] = m.offset() + 1
                kind, ms = m.timestamp()
                got.append((kind, ms, len(m.value() or b"")))
        return got, sum(ends.values())
    finally:
        consumer.close()


def state_records(topic, prefix, deadline):
    """{key: value} of the state topic's records whose key starts with *prefix*
    (the latest of each), read directly from the cluster."""
    from confluent_kafka import TopicPartition, Consumer
    consumer = Consumer({"bootstrap.servers": stack.BOOTSTRAP,
                         "group.id": stack.unique("rateint-state"),
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        seen = dict.fromkeys(partitions, 0)
        got = {}
        while any(seen[p] < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise AssertionError(f"state topic {topic} not read before the deadline")
            for m in consumer.consume(1000, 1.0):
                if m.error() is not None:
                    raise AssertionError(f"reading {topic}: {m.error()}")
                seen[m.partition()] = m.offset() + 1
                key = (m.key() or b"").decode()
                if key.startswith(prefix):
                    got[key] = None if m.value() is None else json.loads(m.value())
        return got
    finally:
        consumer.close()


class RatesTestCase(unittest.TestCase):
    """Two tenant gateways of the class's own on a state topic of their own."""

    timeout = 600 + 12 * DURATION

    @classmethod
    def setUpClass(cls):
        stack.ensure_cluster()
        cls.scratch = Path(tempfile.mkdtemp(prefix="rateint_"))
        """CLI output and client properties, removed at the end."""
        cls.state_topic = stack.unique("_vkafka_state_rates").replace("-", "_")
        options = (*devstack.TENANT_OPTIONS, f"--state-topic={cls.state_topic}")
        cls.gateway = stack.GatewayProcess(options).start()
        try:
            cls.other = stack.GatewayProcess(options).start()
        except BaseException:
            cls.gateway.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gateway.stop()
            cls.other.stop()
        finally:
            shutil.rmtree(cls.scratch, ignore_errors=True)
            stack.delete_topics([cls.state_topic])

    def setUp(self):
        self.log_start = {g: len(g.log()) for g in (self.gateway, self.other)}

    def tearDown(self):
        for gateway, start in self.log_start.items():  # this test's part of the log
            part = gateway.log()[start:]
            warnings = [line for line in part.splitlines()
                        if "closing:" in line or "#warn]" in line or "rate shares" in line]
            if warnings:
                print(f"[log {gateway.start_port}] {len(warnings)} warnings, the first: "
                      + "\n".join(warnings[:10]))
            if "Traceback" in part:
                at = part.index("Traceback")
                self.fail(f"Traceback in the log of the gateway on "
                          f"{gateway.start_port}:\n{part[max(at - 1500, 0):at + 3000]}")

    def log_excerpt(self, gateway, lines=40):
        part = gateway.log()[self.log_start[gateway]:]
        return "\n".join(part.splitlines()[-lines:])

    # -- tenants ---------------------------------------------------------

    def tenant(self, rates=None, gateway=None):
        """A fresh virtual cluster with service account "sa", its *rates*
        set; returns (vc, client properties file)."""
        gateway = gateway or self.gateway
        vc = stack.unique("rate").replace("-", "")
        code, body = admin(gateway, "POST", f"/vcluster/{vc}/username/sa",
                           {"lifeTimeSeconds": 3600})
        self.assertEqual(code, 200, body)
        self.addCleanup(self.delete_physical_topics, vc)
        path = self.scratch / f"{vc}.properties"
        path.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
                        "sasl.jaas.config=org.apache.kafka.common.security.plain."
                        f"PlainLoginModule required username='sa' "
                        f"password='{body['token']}';\n")
        if rates is not None:
            limits = {"rates": rates}
            code, body = admin(gateway, "POST", f"/vcluster/{vc}/limits", limits)
            self.assertEqual((code, body), (200, limits))
            for g in (self.gateway, self.other):  # both follow the state
                stack.wait_until(lambda: admin(g, "GET", f"/vcluster/{vc}/limits")
                                 == (200, limits),
                                 f"the limits of {vc} on {g.start_port}", timeout=10,
                                 interval=0.05)
        return vc, str(path)

    def delete_physical_topics(self, vc):
        from confluent_kafka.admin import AdminClient
        direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        names = [n for n in direct.list_topics(timeout=30).topics if n.startswith(vc)]
        if names:
            stack.delete_topics(names)

    def topic(self, vc, logical, partitions=3, configs=None):
        """Create *vc*'s topic *logical* directly on the cluster (replication
        3); returns its physical name."""
        from confluent_kafka.admin import AdminClient, NewTopic
        physical = stack.physical_topic(vc, logical)
        direct = AdminClient({"bootstrap.servers": stack.BOOTSTRAP})
        direct.create_topics([NewTopic(physical, partitions, 3, config=configs or {})]
                             )[physical].result(30)
        return physical

    def producer(self, gateway, props, topic, records, tag, throughput=-1):
        """kafka-producer-perf-test through *gateway* as a tenant (started), as
        fast as it can or at *throughput* records a second."""
        return spawn("kafka-producer-perf-test", "--topic", topic,
                     "--num-records", str(records), "--record-size", str(RECORD_SIZE),
                     "--throughput", str(throughput), "--print-metrics",
                     "--producer-props", f"bootstrap.servers={gateway.bootstrap}",
                     "acks=all", "--producer.config", props, tag=tag,
                     directory=self.scratch)

    def assertClean(self, tag, rc, out, err, gateway):
        said = problems(out, err)
        self.assertEqual((rc, said), (0, []),
                         f"{tag} exited {rc}; error lines: {said[:20]}\n"
                         f"stderr tail:\n{err[-2000:]}\n"
                         f"gateway log:\n{self.log_excerpt(gateway)}")


class ProduceRateTests(RatesTestCase):

    def test_produce_rate_split_between_two_gateways(self):
        """Two producers of one tenant, one per gateway, as fast as they can:
        together they get the tenant's 2 MB/s, not 2 MB/s each; both are
        told to back off (produce-throttle-time-avg > 0), neither sees an
        error, and every record reaches the broker once."""
        vc, props = self.tenant({"produceBytesPerSecond": PRODUCE_LIMIT})
        physical = self.topic(vc, "metered",
                              configs={"message.timestamp.type": "LogAppendTime"})
        each = int(PRODUCE_LIMIT * DURATION / RECORD_SIZE / 2)

        launched = time.time()
        started = time.monotonic()
        runs = [self.producer(g, props, "metered", each, f"{vc}-produce-{i}")
                for i, g in enumerate((self.gateway, self.other))]
        # While they run: each gateway's share of the limit, about once a second.
        shares = []
        deadline = started + 8 * DURATION + 120
        while time.monotonic() < deadline:
            running = [p for p in runs if p.poll() is None]
            if not running:
                break
            shares.append((round(time.monotonic() - started, 1), [
                metric(g, "vkafka_rate_share", vcluster=vc,
                       rate="produce_bytes_per_second")
                for g in (self.gateway, self.other)], len(running) == 2))
            try:
                running[0].wait(1.0)
            except subprocess.TimeoutExpired:
                pass
        results = [finish(p, deadline) for p in runs]
        exited = time.time()

        summaries = []
        for (rc, out, err), g, p in zip(results, (self.gateway, self.other), runs):
            self.assertClean(p.tag, rc, out, err, g)
            summaries.append(producer_summary(out))
        for s in summaries:
            print(f"\n[produce] {s['line']}\n[produce] produce-throttle-time-avg "
                  f"{s['throttle_avg']} ms, max {s['throttle_max']} ms")
        rounded = [(at, [r and round(r, 3) for r in row], busy)
                   for at, row, busy in shares]
        print(f"[produce] shares (s since start, [gateway, other], both running): "
              f"{rounded}")

        # nothing lost, nothing doubled: read back from the cluster itself
        records, end_offsets = read_directly(physical, time.monotonic() + 120 + DURATION)
        self.assertEqual((len(records), end_offsets), (2 * each, 2 * each))
        self.assertEqual({kind for kind, _, _ in records}, {2},  # LogAppendTime
                         "the topic's records are not stamped by the broker")
        self.assertEqual({size for _, _, size in records}, {RECORD_SIZE})

        stamps = sorted(ms for _, ms, _ in records)
        first, last = stamps[0], stamps[-1]
        total = len(stamps) * RECORD_SIZE
        per_second = {}
        for ms in stamps:
            per_second[(ms - first) // 1000] = per_second.get((ms - first) // 1000, 0) \
                + RECORD_SIZE
        steady = sum(RECORD_SIZE for ms in stamps if ms >= first + 1000)
        steady_rate = steady / ((last - first - 1000) / 1000)
        broker_rate = total / ((last - first) / 1000)
        # wall clock: from the first append (same host clock) to both exits;
        # from the launch it would count the JVMs' start, 2-5 s here
        wall = exited - first / 1000
        wall_rate = total / wall
        launch_rate = total / (exited - launched)
        print(f"[produce] {total} bytes; launch to exit {exited - launched:.2f} s: "
              f"{launch_rate / 1e6:.3f} MB/s; first append to exit {wall:.2f} s: "
              f"{wall_rate / 1e6:.3f} MB/s ({(wall_rate / PRODUCE_LIMIT - 1) * 100:+.1f} "
              f"%); appended over {(last - first) / 1000:.2f} s: "
              f"{broker_rate / 1e6:.3f} MB/s "
              f"({(broker_rate / PRODUCE_LIMIT - 1) * 100:+.1f} %); after the first "
              f"second: {steady_rate / 1e6:.3f} MB/s "
              f"({(steady_rate / PRODUCE_LIMIT - 1) * 100:+.1f} %)")
        print(f"[produce] bytes appended per second: "
              f"{[per_second.get(i, 0) for i in range(max(per_second) + 1)]}")

        # the gateways' own account
        throttled = [metric(g, "vkafka_throttle_seconds_total", vcluster=vc)
                     for g in (self.gateway, self.other)]
        requests = [metric(g, "vkafka_requests_total", vcluster=vc, api="Produce")
                    for g in (self.gateway, self.other)]
        told = [(n or 0) * (s["throttle_avg"] or 0) / 1000
                for n, s in zip(requests, summaries)]
        print(f"[produce] Produce requests per gateway {requests}; throttle the "
              f"clients were told, about (requests x produce-throttle-time-avg): "
              f"{[round(t, 1) for t in told]} s")
        fallback = [metric(g, "vkafka_rate_share_fallback")
                    for g in (self.gateway, self.other)]
        print(f"[produce] vkafka_throttle_seconds_total {throttled}, "
              f"vkafka_rate_share_fallback {fallback}")
        reports = state_records(self.state_topic, "rate/", time.monotonic() + 60)
        mine = {k: v for k, v in reports.items() if k.endswith(f"/{vc}")}
        print(f"[produce] rate records of {vc}: {mine}")

        self.assertLessEqual(abs(steady_rate / PRODUCE_LIMIT - 1), STEADY_MARGIN,
                             f"steady produce rate {steady_rate:.0f} B/s, limit "
                             f"{PRODUCE_LIMIT}")
        self.assertLessEqual(abs(wall_rate / PRODUCE_LIMIT - 1), WALL_MARGIN,
                             f"wall-clock produce rate {wall_rate:.0f} B/s, limit "
                             f"{PRODUCE_LIMIT}")
        for s in summaries:
            self.assertEqual(s["records"], each)
            self.assertGreater(s["throttle_avg"] or 0, 0, s)
        for g, seconds in zip((self.gateway, self.other), throttled):
            self.assertGreater(seconds or 0, 0, f"vkafka_throttle_seconds_total of "
                                                f"{vc} on {g.start_port}")
        self.assertEqual(fallback, [0.0, 0.0])
        # They split the limit; and while both producers ran, from FRESH
        # seconds after both gateways first had a share (the split's window,
        # filters/shares.py), the shares add up to at most 1 (that docstring
        # says why; the two are read a moment apart, so allow a little more).
        # Less, for a second, is the split lagging behind demand; before,
        # each may still hold all of it.
        both = [(at, row) for at, row, busy in shares if busy and None not in row]
        self.assertTrue([row for _, row in both if max(row) < 1.0],
                        f"the two gateways never split the limit: {shares}")
        settled = [(at, row) for at, row in both if at >= both[0][0] + FRESH]
        sums = [round(sum(row), 3) for _, row in settled]
        early = [(at, round(sum(row), 3)) for at, row in both if at < both[0][0] + FRESH]
        print(f"[produce] sum of the shares while both ran, from {FRESH} s after "
              f"both had one: min {min(sums, default=None)}, max "
              f"{max(sums, default=None)}; before: {early}")
        self.assertTrue(sums, shares)
        self.assertLessEqual(max(sums), 1.15, settled)
        ids = {f"rate/{socket.gethostname()}:{g.start_port}/{vc}"
               for g in (self.gateway, self.other)}
        self.assertEqual(set(mine), ids, reports.keys())
        for value in mine.values():
            self.assertIn("produce_bytes_per_second", value)
            self.assertIn("at", value)


class FetchRateTests(RatesTestCase):

    def test_fetch_rate(self):
        """DURATION seconds of data at the fetch limit, written directly to
        the cluster, read through one gateway: at most the limit (+15 %),
        every record, and the consumer is told to back off."""
        vc, props = self.tenant({"fetchBytesPerSecond": FETCH_LIMIT})
        physical = self.topic(vc, "fetched")
        records = int(FETCH_LIMIT * DURATION / RECORD_SIZE)
        stack.cli("kafka-producer-perf-test", "--topic", physical,
                  "--num-records", str(records), "--record-size", str(RECORD_SIZE),
                  "--throughput", "-1", "--producer-props",
                  f"bootstrap.servers={stack.BOOTSTRAP}", "acks=all",
                  timeout=120 + DURATION)

        started = time.monotonic()
        run = spawn("kafka-consumer-perf-test", "--bootstrap-server",
                    self.gateway.bootstrap, "--consumer.config", props,
                    "--topic", "fetched", "--messages", str(records),
                    "--timeout", "60000", "--print-metrics", tag=f"{vc}-fetch",
                    directory=self.scratch)
        rc, out, err = finish(run, started + 8 * DURATION + 120)
        wall = time.monotonic() - started
        self.assertClean(run.tag, rc, out, err, self.gateway)
        row = consumer_summary(out)
        fetch_seconds = float(row["fetch.time.ms"]) / 1000
        consumed = int(row["data.consumed.in.nMsg"])
        rate = consumed * RECORD_SIZE / fetch_seconds
        wall_rate = consumed * RECORD_SIZE / wall
        throttled = metric(self.gateway, "vkafka_throttle_seconds_total", vcluster=vc)
        print(f"\n[fetch] {row}\n[fetch] {consumed} records in {fetch_seconds:.2f} s "
              f"of fetching: {rate / 1e6:.3f} MB/s "
              f"({(rate / FETCH_LIMIT - 1) * 100:+.1f} %); wall {wall:.2f} s: "
              f"{wall_rate / 1e6:.3f} MB/s; vkafka_throttle_seconds_total {throttled}")

        self.assertEqual(consumed, records)
        self.assertLessEqual(rate, FETCH_LIMIT * (1 + FETCH_MARGIN),
                             f"fetched at {rate:.0f} B/s, limit {FETCH_LIMIT}")
        self.assertGreater(row["throttle_avg"] or 0, 0, row)
        self.assertGreater(throttled or 0, 0)


class IsolationTests(RatesTestCase):

    def b_run(self, props, tag, records=ISOLATION_RECORDS):
        """Tenant B's producer through the gateway: bytes/s it reports."""
        run = self.producer(self.gateway, props, "free", records, tag)
        rc, out, err = finish(run, time.monotonic() + 300)
        self.assertClean(tag, rc, out, err, self.gateway)
        summary = producer_summary(out)
        self.assertEqual(summary["records"], records)
        return summary["records_per_second"] * RECORD_SIZE

    def a_started(self, a, a_props, tag, throttled, records, **options):
        """Start tenant A's producer and wait until it has sent A_SETTLE
        records through the gateway (its JVM's start and first compiles
        over, alike for both kinds of run) and, if *throttled*, has been
        throttled.  Returns the running producer."""
        def count(name, **labels):
            return metric(self.gateway, name, vcluster=a, **labels) or 0

        def sent():
            return count("vkafka_records_total", direction="in")

        def held():
            return count("vkafka_throttle_seconds_total")
        before, throttle = sent(), held()
        a_run = self.producer(self.gateway, a_props, "metered", records, tag,
                              **options)
        what = "was throttled" if throttled else f"sent {A_SETTLE} records"
        stack.wait_until(lambda: a_run.poll() is not None or (
            sent() >= before + A_SETTLE and (not throttled or held() > throttle)),
            f"tenant A ({a}) {what}", timeout=60, interval=0.2)
        if a_run.poll() is not None:
            rc, out, err = finish(a_run, time.monotonic())
            self.fail(f"tenant A's producer ended (exit {rc}) before it {what}:\n"
                      f"{out[-2000:]}\n{err[-2000:]}")
        return a_run

    def b_beside_paced_a(self, a, a_props, tag):
        """B's run while A produces at PACED of its limit, never throttled:
        the load a tenant at its limit puts on the cluster and the machine."""
        a_run = self.a_started(a, a_props, f"{a}-paced-{tag}", False, PACED_A_RECORDS,
                               throughput=int(ISOLATION_LIMIT * PACED / RECORD_SIZE))
        try:
            beside = self.b_run(self.b_props, f"{self.b}-beside-paced-{tag}",
                                self.b_records)
            self.assertIsNone(a_run.poll(), "tenant A's paced producer ended before "
                                            f"B's run beside it did ({self.b_records} "
                                            "records)")
        finally:
            a_run.terminate()
            finish(a_run, time.monotonic() + 30)
        return beside

    def test_throttled_tenant_does_not_slow_another(self):
        """Tenant B (no limits) produces as fast as it can through the gateway
        while tenant A, on the same gateway, tries to produce far past its
        limit and is throttled to it: at least ISOLATION_RATIO of what B gets
        while A produces just under its limit on its own (before and after).

        The baseline carries A's allowed traffic: on a machine where three
        brokers, the gateway and both producers share two cores, the cluster
        takes 5-7 MB/s in all, and A's 1 MB/s at its limit is a sixth of it,
        spent whether or not A asks for more.  What is measured is what A's
        asking for more costs B: its throttled requests held by the gateway.
        B runs until its figure stops rising first, so that the cluster's
        warming up is not read as A's doing."""
        a, a_props = self.tenant({"produceBytesPerSecond": ISOLATION_LIMIT})
        self.b, self.b_props = self.tenant()
        self.topic(a, "metered")
        self.topic(self.b, "free")

        warming = [self.b_run(self.b_props, f"{self.b}-warm-0")]
        while len(warming) < WARM_RUNS:
            warming.append(self.b_run(self.b_props, f"{self.b}-warm-{len(warming)}"))
            if warming[-1] < warming[-2] * (1 + WARM_STEP):
                break
        self.b_records = max(B_LEAST, int(warming[-1] * B_SECONDS / RECORD_SIZE))
        paced_before = self.b_beside_paced_a(a, a_props, "1")

        a_started = time.monotonic()
        a_run = self.a_started(a, a_props, f"{a}-a", True, ISOLATION_A_RECORDS)
        b_started = time.monotonic()
        alongside = self.b_run(self.b_props, f"{self.b}-with-a", self.b_records)
        a_still_running = a_run.poll() is None
        overlap = time.monotonic() - b_started
        rc, out, err = finish(a_run, a_started + 8 * DURATION + 120)
        self.assertClean(a_run.tag, rc, out, err, self.gateway)
        a_summary = producer_summary(out)

        paced_after = self.b_beside_paced_a(a, a_props, "2")
        baseline = (paced_before + paced_after) / 2
        ratio = alongside / baseline
        report = (f"\n[isolation] B alone, warming up "
                  f"{' '.join(f'{run / 1e6:.1f}' for run in warming)} MB/s; measured "
                  f"runs of {self.b_records} records\n"
                  f"[isolation] B beside A at {PACED:.0%} of its limit "
                  f"{paced_before / 1e6:.1f} / {paced_after / 1e6:.1f} MB/s (mean "
                  f"{baseline / 1e6:.1f}); B while A throttled {alongside / 1e6:.1f} "
                  f"MB/s; ratio {ratio:.2f}\n"
                  f"[isolation] A: {a_summary['line']}; throttle avg "
                  f"{a_summary['throttle_avg']} ms; A still running when B ended: "
                  f"{a_still_running} (B's run took {overlap:.1f} s)")
        print(report)

        self.assertTrue(a_still_running, "tenant A finished before B's run alongside "
                                         f"it did: the runs did not overlap{report}")
        self.assertGreater(a_summary["throttle_avg"] or 0, 0, report)
        self.assertGreaterEqual(ratio, ISOLATION_RATIO, report)
