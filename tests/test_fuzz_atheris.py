"""A bounded run of the atheris fuzzer of the gateway's Kafka port.

``tests/fuzz_gateway.py`` is the harness (run it longer by hand or from
``make reliability``); here it runs a few thousand inputs in a subprocess,
with a fixed seed so that a failure here reproduces.
"""

import importlib.util
import os
import re
import subprocess
import sys
import tempfile

from twisted.trial import unittest

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_gateway.py")
RUNS = 5000
LINE = re.compile(r"^fuzz: (\d+) inputs, peak decoder buffer (\d+) bytes.*"
                  r"peak RSS (\d+) MB", re.M)


class AtherisFuzzTests(unittest.TestCase):
    def test_gateway_survives_fuzzing(self):
        """A few thousand fuzzed byte streams: no exception, bounded buffers."""
        if importlib.util.find_spec("atheris") is None:
            self.fail("atheris is missing: pip install -e '.[test]' (setup.cfg pins it)")
        artifacts = os.path.join(tempfile.gettempdir(), "vkafka-fuzz-artifacts") + os.sep
        os.makedirs(artifacts, exist_ok=True)
        run = subprocess.run(
            [sys.executable, HARNESS, f"-runs={RUNS}", "-seed=1",
             f"-artifact_prefix={artifacts}"],
            capture_output=True, text=True, timeout=300)
        output = run.stdout + run.stderr
        found = LINE.search(run.stdout)
        self.assertIsNotNone(found, output[-6000:])
        inputs, buffered, rss = (int(g) for g in found.groups())
        print(found.group(0))
        self.assertEqual(run.returncode, 0,
                         f"the fuzzer found a failure (input saved under {artifacts}):"
                         f"\n{output[-6000:]}")
        self.assertGreaterEqual(inputs, RUNS)
        self.assertLessEqual(buffered, 64 * 1024 + 4)  # the harness's frame limit
        self.assertLess(rss, 1024)
