"""Where a produced GB's CPU goes: the bare forwarder, the same on Twisted, the gateway.

``make bench`` compares the gateway's producer CPU per GB with the bare
threaded forwarder's.  This sets a third path between them, the forwarder on
a Twisted reactor (``bench/forwarder.py --twisted``): what any proxy built on
an event loop as vkafka is pays with no Kafka logic at all.  The gap from it
to the gateway is the gateway's own per-request work (framing, the rule
table, the tenant rewrite, the response scan, metrics); the gap from the
threaded forwarder to it, the event loop's.  The three take turns, the
gateway a tenant over SASL as in ``make bench``, and the medians print:

    .venv/bin/python bench/floor.py [--records 400000] [--rounds 3] [--consume]

``--consume`` measures the consumer path instead (the topic filled first):
there the gap from the Twisted forwarder is the gateway's work per read of
a streamed Fetch answer.

A few minutes on the dev stack (``make up``), against ~25 for ``make bench``:
the quick check for a change on the produce path.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
from compose import devstack  # noqa: E402
from vkafka.auth.tokens import TokenAuthority  # noqa: E402

PATHS = ("threads", "twisted", "gateway")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--consume", action="store_true",
                        help="the consumer path instead of the producer's")
    args = parser.parse_args(argv)
    if devstack.brokers_up() != sorted(devstack.NODES):
        devstack.start_cluster()
    token = TokenAuthority(devstack.DEMO_SECRET).issue(bench.VCLUSTER, "sa", 3600)
    props = bench.properties(token, Path(tempfile.mkdtemp(prefix="vkafka-floor-"))
                             / "tenant.properties")
    bench.recreate(bench.PHYSICAL, 6, 3)
    gateway = bench.Gateway(devstack.DEMO_SECRET)
    gb = args.records * 1024 / 2**30
    run = (lambda *a: bench.consume(*a)[0]) if args.consume else bench.produce
    runs = {path: [] for path in PATHS}
    try:
        bench.produce("gateway", args.records if args.consume else args.records // 10,
                      props)  # warm-up; for --consume, what is read
        if args.consume:
            bench.consume("gateway", args.records // 10, props)
        for round_ in range(args.rounds):
            for path in PATHS:
                proxy = gateway if path == "gateway" else \
                    bench.Forwarder(twisted=path == "twisted")
                try:
                    before = proxy.cpu_seconds()
                    mb_s = run("gateway" if path == "gateway" else "forwarder",
                               args.records, props)
                    runs[path].append((mb_s, (proxy.cpu_seconds() - before) / gb))
                finally:
                    if proxy is not gateway:
                        proxy.stop()
                print(f"round {round_ + 1} {path:8s} {mb_s:5.1f} MB/s "
                      f"{runs[path][-1][1]:.2f} CPU-s per GB", flush=True)
    finally:
        gateway.stop()
    cpu = {path: statistics.median(c for _, c in v) for path, v in runs.items()}
    print("\n| path | MB/s | CPU-s per GB | of the threaded forwarder |\n"
          "|---|---:|---:|---:|")
    for path in PATHS:
        print(f"| {path} | {statistics.median(m for m, _ in runs[path]):.1f} | "
              f"{cpu[path]:.2f} | {cpu[path] / cpu['threads']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
