"""`make bench` keeps working: the whole benchmark at a tiny size, and the
verdict on each target is the right one for the figures it is given."""

import contextlib
import importlib.util
import io
import re
from pathlib import Path

from twisted.trial import unittest

from . import stack

ROOT = Path(__file__).resolve().parent.parent
TARGET = re.compile(
    r"- (?P<name>[^:]+): (?P<verdict>met|missed by [\d.]+ \w+) "
    r"\((?P<value>[+-]?[\d.]+)( of direct| ms| KB)?, target \+?(?P<target>[\d.]+)")
AT_MOST = ("End-to-end p99 added", "Tenant metadata p99", "Memory per connection")
"""Targets that are limits (met at or below); the others are ratios to direct."""


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "bench" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def figures(**changes):
    """The figures ``bench.standing`` reads, every target met unless changed."""
    return {"produce_ratio": 0.97, "consume_ratio": 0.96, "added_p99_ms": 0.4,
            "metadata_ms": {"gateway": (1.0, 3.5, 4.0)}, "metadata_topics": 10_000,
            "kb_per_connection": 40.0, "forwarder_ratio": None, **changes}


class VerdictMixin:
    def assertVerdicts(self, report):
        """Each target line says met exactly when its own figure meets the target."""
        found = {m["name"]: m for m in TARGET.finditer(report)}
        self.assertEqual(len(found), 5, report)
        for name, m in found.items():
            value, target = float(m["value"]), float(m["target"])
            if abs(value - target) < 0.01:
                continue  # printed rounded: too close to the target to tell
            met = value <= target if name.startswith(AT_MOST) else value >= target
            self.assertEqual(m["verdict"] == "met", met, m.group(0))


class StandingTests(VerdictMixin, unittest.TestCase):
    """``standing``: met or missed (and by how much) for the figures fed in."""

    def setUp(self):
        self.standing = load_bench().standing

    def lines(self, **changes):
        return dict(line.split(": ", 1)
                    for line in self.standing(figures(**changes)).splitlines())

    def test_all_met(self):
        lines = self.lines()
        self.assertEqual(len(lines), 5)
        for name, verdict in lines.items():
            self.assertTrue(verdict.startswith("met ("), f"{name}: {verdict}")

    def test_each_missed(self):
        lines = self.lines(produce_ratio=0.90, consume_ratio=0.5, added_p99_ms=2.5,
                           metadata_ms={"gateway": (1.0, 7.3, 9.0)},
                           kb_per_connection=100.0)
        self.assertEqual(lines, {
            "- Producer throughput":
                "missed by 5.0 points (0.900 of direct, target 0.95).",
            "- Consumer throughput":
                "missed by 45.0 points (0.500 of direct, target 0.95).",
            "- End-to-end p99 added": "missed by 1.5 ms (+2.50 ms, target +1 ms).",
            "- Tenant metadata p99 at 10,000 topics":
                "missed by 2.3 ms (7.3 ms, target 5 ms).",
            "- Memory per connection": "missed by 36.0 KB (100.0 KB, target 64 KB).",
        })

    def test_bounds_are_met(self):
        """Exactly on a target is met: at least 0.95 of direct, at most a limit."""
        lines = self.lines(produce_ratio=0.95, added_p99_ms=1.0,
                           metadata_ms={"gateway": (1.0, 5.0, 5.0)},
                           kb_per_connection=64.0)
        for name, verdict in lines.items():
            self.assertTrue(verdict.startswith("met ("), f"{name}: {verdict}")

    def test_verdicts_checked(self):
        """The check the tiny bench applies to its report reads every line, and
        fails on a verdict that does not fit its figure."""
        report = self.standing(figures(produce_ratio=0.5, added_p99_ms=3.0))
        self.assertVerdicts(report)
        self.assertVerdicts(self.standing(figures()))
        with self.assertRaises(self.failureException):
            self.assertVerdicts(report.replace("missed by 45.0 points", "met"))

    def test_forwarder_floor(self):
        """A missed ratio says whether a bare forwarder missed it too."""
        lines = self.lines(produce_ratio=0.80, consume_ratio=0.90,
                           forwarder_ratio={"produce": 0.85, "consume": 0.97})
        self.assertIn("A bare TCP forwarder reached 0.850 in this run: below the "
                      "target too", lines["- Producer throughput"])
        self.assertTrue(lines["- Consumer throughput"].endswith(
            "A bare TCP forwarder reached 0.970 in this run."))


class CpuStandingTests(unittest.TestCase):
    """The CPU targets: the producer at most 1.2 x the forwarder's CPU per GB,
    the consumer at most 0.81 CPU-s per GB."""

    def lines(self, produced, consumed, forwarder=2.0):
        return load_bench().cpu_standing({
            "forwarder_cpu_s_per_gb": {"produce": forwarder, "consume": 0.5},
            "cpu_s_per_gb_produced": produced, "cpu_s_per_gb_consumed": consumed})

    def test_met_and_missed(self):
        met = self.lines(2.4, 0.81)
        self.assertTrue(met[0].startswith("- Producer CPU per GB: met (2.40 CPU-s, "
                                          "1.20 x the forwarder's 2.00"), met[0])
        self.assertTrue(met[1].startswith("- Consumer CPU per GB: met"), met[1])
        missed = self.lines(3.0, 0.9)
        self.assertTrue(missed[0].startswith("- Producer CPU per GB: missed (3.00 "
                                             "CPU-s, 1.50 x"), missed[0])
        self.assertTrue(missed[1].startswith("- Consumer CPU per GB: missed"))

    def test_no_forwarder_cpu_measured(self):
        """A run too short for the CPU clock: no division by zero."""
        self.assertIn("n/a x the forwarder's", self.lines(1.0, 0.5, forwarder=0.0)[0])
        table = load_bench().paths_table({
            "forwarder_ratio": {"produce": 1, "consume": 1},
            "produce_mb_s": {"direct": 1, "forwarder": 0.0, "gateway": 1},
            "consume_mb_s": {"direct": 1, "forwarder": 1, "gateway": 1},
            "forwarder_cpu_s_per_gb": {"produce": 0.0, "consume": 0.0},
            "cpu_s_per_gb_produced": 1.0, "cpu_s_per_gb_consumed": 1.0})
        self.assertIn("| vkafka / forwarder | n/a | 1.000 | **n/a x** | **n/a x** |",
                      table)

    def test_none_without_a_forwarder(self):
        self.assertEqual(load_bench().cpu_standing({}), [])


class BenchTests(VerdictMixin, unittest.TestCase):
    def test_workers_note_fits_the_host(self):
        """The workers section's note speaks of this two-core machine only
        when the run was on two cores or fewer; it names the clients."""
        bench = load_bench()
        row = {"produce_mb_s": 40.0, "consume_mb_s": 400.0,
               "cpu_s_per_gb": {"produce": 1.8, "consume": 0.6}}
        small = bench.workers_table({"workers": {"1": row, "2": row}, "cores": 2})
        self.assertIn("On this machine two cores", small)
        self.assertIn("--workers-counts 1,2,4,8 --workers-clients 8", small)
        big = bench.workers_table({"workers": {"1": row, "16": row, "8": row},
                                   "cores": 16, "workers_clients": 8})
        self.assertEqual(re.findall(r"\n\| (\d+) \|", big), ["1", "8", "16"])
        self.assertNotIn("two cores", big)
        self.assertIn("8 perf-test clients at once in each run", big)
        self.assertRegex(big, r"\n\| 8 \| 40\.0 \| 400\.0 \| 1\.80 \| 0\.60 \|")

    def test_workers_options_refused(self):
        """Worker counts and clients out of range stop the bench before it
        starts anything, naming what is expected."""
        bench = load_bench()
        for option, value in (("--workers-counts", "1,1"), ("--workers-counts", "0,2"),
                              ("--workers-counts", "two"), ("--workers-clients", "0"),
                              ("--workers-clients", "65")):
            stderr = io.StringIO()
            with self.assertRaises(SystemExit) as stopped, \
                    contextlib.redirect_stderr(stderr):
                bench.main([option, value])
            self.assertEqual(stopped.exception.code, 2)
            self.assertIn("expected", stderr.getvalue())
        self.assertEqual(bench.worker_counts("1,2,4,8"), (1, 2, 4, 8))

    def test_tiny_bench(self):
        """bench/bench.py runs every measure and writes the report and the plot."""
        stack.ensure_cluster()
        bench = load_bench()
        out = Path(self.mktemp())
        code = bench.main(["--records", "3000", "--rounds", "1",
                           "--latency-messages", "50", "--metadata-topics", "40",
                           "--metadata-vclusters", "4", "--metadata-requests", "5",
                           "--connections", "20", "--workers-rounds", "1",
                           "--workers-counts", "1,3", "--workers-clients", "2",
                           "--consume-runs", "2", "--out", str(out)])
        self.assertEqual(code, 0)
        report = (out / "benchmarks.md").read_text()
        for measure in ("producer throughput", "consumer throughput",
                        "end-to-end latency", "all-topics metadata",
                        "answer cache off", "memory per authenticated connection",
                        "CPU seconds per GB"):
            self.assertIn(measure, report)
        for target in ("Producer throughput", "Consumer throughput", "End-to-end p99",
                       "Tenant metadata p99", "Memory per connection"):
            self.assertRegex(report, rf"- {target}[^:]*: (met|missed by)")
        self.assertVerdicts(report)
        # round by round, both sides, the bare forwarder too; the consumer ran
        # twice a path (--consume-runs), each run's group join noted
        self.assertRegex(report, r"- Producer, MB/s: direct [\d.]+; gateway [\d.]+; "
                                 r"forwarder [\d.]+\n")
        self.assertRegex(report, r"- Consumer, MB/s: direct [\d.]+ / [\d.]+; gateway "
                                 r"[\d.]+ / [\d.]+; forwarder [\d.]+ / [\d.]+\n")
        self.assertRegex(report, r"- Consumer, group join of each run \(ms\): direct "
                                 r"\d+ / \d+; forwarder \d+ / \d+; gateway \d+ / \d+\n")
        self.assertIn("the consumer 2 times a\npath a round", report)
        self.assertRegex(report, r"- End-to-end p99, ms: direct [\d.]+; gateway [\d.]+")
        self.assertRegex(report, r"- Bare TCP forwarder \(bench/forwarder.py: [^)]*\), "
                                 r"medians: producer [\d.]+ MB/s \([\d.]+ of direct\), "
                                 r"consumer [\d.]+ MB/s \([\d.]+\); its CPU-s per GB "
                                 r"produced / consumed [\d.]+ / [\d.]+\. The gateway "
                                 r"against it: producer [\d.]+, consumer [\d.]+")
        self.assertRegex(report, r"- Consumer, medians: group join \(ms\) direct \d+, "
                                 r"gateway \d+; data phase alone \(MB/s\) direct [\d.]+, "
                                 r"gateway [\d.]+ \(ratio [\d.]+\); the consumer's average "
                                 r"fetch latency \(ms\) direct [\d.]+, gateway [\d.]+")
        self.assertGreater((out / "benchmarks.png").stat().st_size, 1000)
        # CPU per GB path by path, and the workers section (1 and 3 workers,
        # two clients at once in each run)
        self.assertRegex(report, r"\| bare TCP forwarder \| [\d.]+ \| [\d.]+ \| "
                                 r"[\d.]+ \| [\d.]+ \|")
        self.assertRegex(report, r"\| vkafka / forwarder \| [\d.]+ \| [\d.]+ \| "
                                 r"\*\*([\d.]+|n/a) x\*\* \| \*\*([\d.]+|n/a) x\*\* \|")
        for n in (1, 3):
            self.assertRegex(report, rf"\n\| {n} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| "
                                     r"[\d.]+ \|")
        self.assertNotRegex(report, r"\n\| 2 \| [\d.]+ \|")
        self.assertIn("2 perf-test clients at once in each run", report)
        self.assertRegex(report, r"- Producer CPU per GB: (met|missed) \([\d.]+ CPU-s, "
                                 r"([\d.]+|n/a) x the forwarder's")
