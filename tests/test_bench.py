"""`make bench` keeps working: the whole benchmark at a tiny size."""

import importlib.util
from pathlib import Path

from twisted.trial import unittest

from . import stack

ROOT = Path(__file__).resolve().parent.parent


class BenchTests(unittest.TestCase):
    def test_tiny_bench(self):
        """bench/bench.py runs every measure and writes the report and the plot."""
        stack.ensure_cluster()
        spec = importlib.util.spec_from_file_location("bench", ROOT / "bench" / "bench.py")
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        out = Path(self.mktemp())
        code = bench.main(["--records", "3000", "--rounds", "1",
                           "--latency-messages", "50", "--metadata-topics", "40",
                           "--metadata-vclusters", "4", "--metadata-requests", "5",
                           "--connections", "20", "--out", str(out)])
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
        for side in ("Producer", "Consumer"):  # round by round, both sides
            self.assertRegex(report, rf"- {side}, MB/s: direct [\d.]+; gateway [\d.]+")
        self.assertRegex(report, r"- End-to-end p99, ms: direct [\d.]+; gateway [\d.]+")
        for side in ("Producer", "Consumer"):  # the bare forwarder took its turns
            self.assertRegex(report, rf"- {side}, MB/s: direct [\d.]+; gateway [\d.]+; "
                                     r"forwarder [\d.]+")
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
