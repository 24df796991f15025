"""make reliability: faults, load and hostile input against real gateways.

Each scenario starts what it needs in front of the local cluster, injects its
fault or load, checks that nothing was lost or leaked, and returns figures;
``main`` runs them all and writes docs/reliability.md (or --out DIR).  The
test suite runs the same scenarios at a small size (tests/test_reliability.py),
on a cluster of its own: scenarios given a ``devstack.Cluster`` stop and start
that cluster's brokers, never those of ``make up``.
"""

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vkafka.auth.tokens import TokenAuthority  # noqa: E402
from tests import stack  # noqa: E402
from tests.stack import devstack, wait_until  # noqa: E402

AUTHORITY = TokenAuthority(devstack.DEMO_SECRET)


class ReliabilityError(AssertionError):
    """A check failed: something was lost, leaked or crashed."""


def check(condition, message):
    if not condition:
        raise ReliabilityError(message)


def unique(prefix):
    return f"{prefix}{os.urandom(4).hex()}"


class Gateway:
    """A tenant-mode ``twistd vkafka`` subprocess on free ports, in front of
    *cluster* (``make up``'s by default), with its log and /proc figures."""

    def __init__(self, state_topic, extra=(), wait=True, cluster=None):
        self.cluster = cluster or devstack.DEFAULT
        self.port, self.admin = devstack.free_ports(6), devstack.free_ports(1)
        self.logfile = Path(tempfile.mkdtemp(prefix="vkafka-rel-")) / "gateway.log"
        argv = devstack.gateway_argv(self.port, self.admin, self.logfile, (
            *devstack.TENANT_OPTIONS, f"--state-topic={state_topic}",
            "--max-connections-per-ip=5000", *extra), self.cluster.bootstrap)
        self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        if wait:
            self.wait_ready()

    @property
    def bootstrap(self):
        return f"localhost:{self.port}"

    def health(self):
        return devstack.health(self.admin)

    def wait_ready(self, timeout=90):
        def ready():
            if self.process.poll() is not None:
                raise ReliabilityError(f"gateway exited; log: {self.log()[-2000:]}")
            return self.answering() and (self.health() or (0,))[0] == 200
        wait_until(ready, f"gateway on {self.port} to be ready", timeout)

    def alive(self):
        return self.process.poll() is None

    def answering(self):
        """This process holds its admin port: /health there is its own."""
        return devstack.listening(self.process.pid, self.admin)

    def rss_mb(self):
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log(self):
        try:
            return self.logfile.read_text()
        except OSError:
            return ""

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(15)

    def stop(self):
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def warnings(gateways, last=20):
    """The last *last* warning or error lines of each gateway's log: what a
    failed run's message carries, the log itself being gone with the test."""
    return {g.port: [line for line in g.log().splitlines()
                     if any(w in line for w in ("#warn]", "#error]", "#critical]"))
                     ][-last:] for g in gateways}


def admin_call(gateway, method, path, body=None, timeout=30):
    """(status, json) of an admin API call as user admin."""
    import base64
    import urllib.request
    request = urllib.request.Request(
        f"http://localhost:{gateway.admin}/admin/vclusters/v1{path}", method=method,
        data=json.dumps(body or {}).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"admin:conduktor").decode(),
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def client_config(bootstrap, vcluster):
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": "sa",
            "sasl.password": AUTHORITY.issue(vcluster, "sa", 3600)}


class Producing:
    """An idempotent acks=all producer writing numbered records in a thread,
    keeping what was acknowledged."""

    def __init__(self, config, topic):
        from confluent_kafka import Producer
        self.topic = topic
        self.acked, self.failed = [], []
        self.producer = Producer({**config, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 5, "message.timeout.ms": 180000})
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _report(self, err, msg):
        (self.failed if err else self.acked).append(msg.value())

    def _run(self):
        i = 0
        while not self.stopping.is_set():
            self.producer.produce(self.topic, value=b"r%08d" % i, on_delivery=self._report)
            self.producer.poll(0)
            i += 1
            time.sleep(0.002)

    def finish(self):
        self.stopping.set()
        self.thread.join()
        left = self.producer.flush(180)
        check(left == 0, f"{left} records never acknowledged nor failed")
        check(not self.failed, f"{len(self.failed)} records failed: "
                               f"{self.failed[:3]}")
        return self.acked


def checksum(values):
    return hashlib.sha256(b"\n".join(sorted(values))).hexdigest()[:16]


def consume_all(config, topic, expected, group=None, timeout=180):
    """Every record of *topic* until *expected* distinct ones are seen."""
    from confluent_kafka import Consumer
    consumer = Consumer({**config, "group.id": group or unique("verify"),
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values = []
    try:
        wait_until(lambda: values.extend(m.value() for m in consumer.consume(500, 1.0)
                                         if m.error() is None) or
                   len(set(values)) >= expected, f"{expected} records of {topic}", timeout)
    finally:
        consumer.close()
    return values


def create_topic(config, topic, partitions=3, replication=3):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient(config)
    admin.create_topics([NewTopic(topic, partitions, replication)])[topic].result(60)


# -- faults ------------------------------------------------------------------

def leader_kill(gateway, records_after=1000):
    """Kill the leader of partition 0 while an idempotent acks=all producer
    writes through the gateway: every acked record is consumed exactly once."""
    from confluent_kafka.admin import AdminClient
    cluster = gateway.cluster
    vc = unique("relleader")
    config = client_config(gateway.bootstrap, vc)
    create_topic(config, "orders")
    direct = AdminClient({"bootstrap.servers": cluster.bootstrap})
    physical = stack.physical_topic(vc, "orders")

    def leader_now():
        """Partition 0's leader as a broker lists it; -1 while that broker
        does not list the new topic's partition yet."""
        topic = direct.list_topics(physical, timeout=10).topics.get(physical)
        partition = None if topic is None else topic.partitions.get(0)
        return -1 if partition is None else partition.leader
    wait_until(lambda: leader_now() >= 0, "partition 0 of the new topic listed with a leader")
    leader = leader_now()
    producing = Producing(config, "orders")
    try:
        wait_until(lambda: len(producing.acked) > 300, "records acked before the kill")
        cluster.stop_broker(leader, timeout=0)  # SIGTERM then SIGKILL at once
        count = len(producing.acked)
        wait_until(lambda: len(producing.acked) > count + records_after,
                   "records acked with the leader dead", 180)
        leader_after = leader_now()
    finally:
        acked = producing.finish()
        cluster.start_broker(leader)
        cluster.wait()
    values = consume_all(config, "orders", len(set(acked)))
    check(len(values) == len(acked) == len(set(acked)),
          f"acked {len(acked)}, consumed {len(values)} ({len(set(values))} distinct)")
    check(checksum(values) == checksum(acked), "consumed records differ from acked")
    check(gateway.alive(), "gateway died")
    return {"fault": f"broker {leader} (leader of partition 0) killed mid-produce",
            "leader": leader, "leader_after": leader_after,
            "records": len(acked), "checksum": checksum(acked)}


def gateway_kill(a, b, records_after=1000):
    """Producer and consumer group with both gateways in bootstrap; kill A:
    they go on through B, nothing acked is lost, the group resumes from its
    committed offsets."""
    from confluent_kafka import Consumer, TopicPartition
    vc = unique("relgw")
    config = client_config(f"{a.bootstrap},{b.bootstrap}", vc)
    create_topic(config, "events")
    consumed = []
    stop = threading.Event()

    def consume():
        consumer = Consumer({**config, "group.id": "workers",
                             "auto.offset.reset": "earliest",
                             "auto.commit.interval.ms": 500})
        consumer.subscribe(["events"])
        while not stop.is_set():
            consumed.extend(m.value() for m in consumer.consume(500, 0.5)
                            if m.error() is None)
        consumer.close()  # commits the final positions
    consumer_thread = threading.Thread(target=consume)
    consumer_thread.start()
    producing = Producing(config, "events")
    try:
        wait_until(lambda: len(producing.acked) > 500 and len(consumed) > 200,
                   "records acked and consumed before the kill")
        a.kill()
        count, seen = len(producing.acked), len(consumed)
        wait_until(lambda: len(producing.acked) > count + records_after and
                   len(consumed) > seen + records_after,
                   "records acked and consumed through gateway B", 180)
    finally:
        acked = producing.finish()
        wait_until(lambda: set(acked) <= set(consumed), "every acked record consumed",
                   120)
        stop.set()
        consumer_thread.join()
    check(set(acked) <= set(consumed), "acked records missing from the consumer")
    # The group resumes from its committed offsets: nothing left to read.
    only_b = client_config(b.bootstrap, vc)
    consumer = Consumer({**only_b, "group.id": "workers", "auto.offset.reset": "earliest"})
    try:
        committed = consumer.committed([TopicPartition("events", p) for p in range(3)],
                                       timeout=30)
        ends = [consumer.get_watermark_offsets(TopicPartition("events", p), timeout=30)[1]
                for p in range(3)]
    finally:
        consumer.close()
    offsets = [tp.offset for tp in committed]
    check(offsets == ends, f"committed offsets {offsets} != end offsets {ends}")
    check(b.alive(), "gateway B died")
    return {"fault": "gateway 1 killed (SIGKILL) under a producer and a consumer group",
            "records": len(acked), "duplicates": len(consumed) - len(set(consumed)),
            "committed": sum(offsets), "checksum": checksum(acked)}


def broker_back_unlisted(gateway, records=300):
    """A broker stopped until the gateway sees the cluster no longer list it,
    started again, and a tenant's producers and consumer group through the
    gateway at once, while the gateway still holds it unlisted: a client
    connection to its port is served by another broker meanwhile, and must
    not stay there (gateway.STAND_IN_LIFE; before, the group's consumers were
    never assigned and records timed out for as long as the clients ran)."""
    cluster = gateway.cluster
    victim = max(cluster.nodes)

    def unlisted():
        found = gateway.health()
        return found is not None and victim in found[1].get("unlistedBrokers", ())
    cluster.stop_broker(victim, timeout=0)
    try:
        wait_until(unlisted, f"the gateway to see broker {victim} unlisted", 120)
    finally:
        cluster.start_broker(victim)
        cluster.wait()
    still = unlisted()
    figures = load([gateway], vclusters=1, producers=2, consumers=2, records=records,
                   rounds=1)
    return {"fault": f"broker {victim} stopped and started again",
            "unlisted_at_start": still, "records": figures["records_checked"],
            "seconds": figures["seconds_per_round"][0]}


def state_outage(cluster=None):
    """The state topic loses its only replica: admin writes answer 503 with a
    message; known tokens keep authenticating and their traffic flows."""
    from confluent_kafka.admin import AdminClient, NewTopic
    sys.path.insert(0, str(ROOT / "tests"))
    from rawclient import RawClient

    cluster = cluster or devstack.DEFAULT
    topic = unique("_vkafka_state_outage_")
    direct = AdminClient({"bootstrap.servers": cluster.bootstrap})
    victim = 3
    direct.create_topics([NewTopic(topic, num_partitions=1, replica_assignment=[[victim]],
                                   config={"cleanup.policy": "compact"})])[topic].result(60)
    gateway = Gateway(topic, cluster=cluster)
    try:
        vc = unique("relstate")
        code, body = admin_call(gateway, "POST", f"/vcluster/{vc}/username/sa")
        check(code == 200, f"account creation answered {code} {body}")
        token = body["token"]
        cluster.stop_broker(victim, timeout=0)
        try:
            t0 = time.monotonic()
            code, body = admin_call(gateway, "POST", f"/vcluster/{vc}/username/other")
            write_seconds = time.monotonic() - t0
            check(code == 503 and body.get("message"),
                  f"admin write during the outage answered {code} {body}")
            raw = RawClient("localhost", gateway.port)
            answer = raw.sasl_plain("sa", token)
            raw.close()
            check(answer.error_code == 0, f"known token refused: {answer}")
            config = {"bootstrap.servers": gateway.bootstrap,
                      "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                      "sasl.username": "sa", "sasl.password": token}
            create_topic(config, "during-outage", replication=2)
            producing = Producing(config, "during-outage")
            wait_until(lambda: len(producing.acked) > 200, "traffic during the outage")
            produced = len(producing.finish())
        finally:
            cluster.start_broker(victim)
            cluster.wait()
        wait_until(lambda: admin_call(gateway, "POST",
                                      f"/vcluster/{vc}/username/after")[0] == 200,
                   "admin writes to work again", 120, interval=1)
        check(gateway.alive(), "gateway died")
        return {"fault": "state topic's only replica (broker 3) stopped",
                "admin_write": f"{code} in {write_seconds:.1f}s: {body['message']}",
                "records": produced}
    finally:
        gateway.stop()
        direct.delete_topics([topic])


def cluster_down_start(state_topic, cluster=None):
    """The whole cluster down: a gateway starts, /health says why it is not
    ready, and it becomes ready when the cluster is back, with no restart."""
    cluster = cluster or devstack.DEFAULT
    cluster.stop(wipe=False)
    gateway = None
    try:
        gateway = Gateway(state_topic, wait=False, cluster=cluster)
        answer = wait_until(lambda: (gateway.health() or (0,))[0] == 503 and
                            gateway.health(), "/health 503", 60)
        reason = answer[1].get("reason", "")
        check("cannot reach the Kafka cluster" in reason, f"reason: {reason}")
    finally:
        cluster.start()
    t0 = time.monotonic()
    gateway.wait_ready(120)
    ready_after = time.monotonic() - t0
    check(gateway.alive(), "gateway restarted or died")
    gateway.stop()
    return {"fault": "gateway started with the whole cluster down",
            "not_ready_reason": reason, "ready_seconds_after_cluster": round(ready_after, 1)}


# -- load --------------------------------------------------------------------

def load(gateways, vclusters, producers, consumers, records, rounds=2):
    """vclusters x (producers + consumers) through the gateways, *rounds* times:
    exact per-tenant counts, gateway memory flat across rounds.  Records a
    tenant read that another tenant wrote are counted in "foreign", for the
    caller to check (main fails the run on any)."""
    rss = {g.port: [g.rss_mb()] for g in gateways}
    totals = {"records": 0, "duplicates": 0, "foreign": 0, "tenants": 0}
    seconds = []
    for round_no in range(rounds):
        procs = []
        t0 = time.monotonic()
        debug_logs = Path(tempfile.mkdtemp(prefix="vkafka-rel-load-"))
        for i in range(vclusters):
            gateway = gateways[i % len(gateways)]
            vc = unique(f"load{i}x")
            procs.append(subprocess.Popen(
                [sys.executable, str(ROOT / "reliability" / "tenant_load.py"),
                 "--bootstrap", gateway.bootstrap, "--vcluster", vc,
                 "--token", AUTHORITY.issue(vc, "sa", 3600),
                 "--producers", str(producers), "--consumers", str(consumers),
                 "--records", str(records), "--debug-log", str(debug_logs / f"{vc}.log")],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True))
        peak = {g.port: 0.0 for g in gateways}
        while any(p.poll() is None for p in procs):
            for g in gateways:
                check(g.alive(), f"gateway {g.port} died under load")
                peak[g.port] = max(peak[g.port], g.rss_mb())
            time.sleep(0.5)
        seconds.append(time.monotonic() - t0)
        results, logs = [], []
        for p in procs:
            out, err = p.communicate()
            check(p.returncode == 0, f"tenant load failed: {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
            logs.append(err[-1500:])
        for result in results:  # every tenant's figures in the message: one or all?
            check(result["failed"] == 0 and result["acked"] == result["expected"],
                  f"producer losses: {results}")
            totals["foreign"] += result["foreign"]
            check(result["consumed"] == result["expected"],
                  f"consumer losses: {results}; client logs: {logs}; "
                  f"gateway warnings: {warnings(gateways)}; how its consumers' "
                  f"group was joined and assigned (librdkafka debug, whole in "
                  f"{debug_logs}/{result['vcluster']}.log):\n"
                  f"{assignment_lines(debug_logs / (result['vcluster'] + '.log'))}")
            totals["records"] += result["consumed"]
            totals["duplicates"] += result["duplicates"]
            totals["tenants"] += 1
        shutil.rmtree(debug_logs)  # kept only when a round fails
        for g in gateways:
            rss[g.port].append(max(peak[g.port], g.rss_mb()))
    # Flat: the last round's peak is within 10% (+16 MB) of the first round's.
    for port, series in rss.items():
        if len(series) > 2:
            check(series[-1] <= series[1] * 1.10 + 16,
                  f"gateway {port} memory grew across rounds: {series}")
    return {"vclusters": vclusters, "producers_per_vcluster": producers,
            "consumers_per_vcluster": consumers, "rounds": rounds,
            "records_checked": totals["records"], "duplicates": totals["duplicates"],
            "foreign": totals["foreign"], "seconds_per_round": [round(s) for s in seconds],
            "rss_mb": {str(p): [round(v, 1) for v in s] for p, s in rss.items()}}


GROUP_DEBUG = ("GRPLEADER", "GRPASSIGNMENT", "ASSIGNOR", "SUBSCRIPTION", "REJOIN",
               "REBALANCE", "CGRPMETADATA", "SYNCGROUP", "JOINGROUP", "CGRPCOORD")
"""librdkafka's debug tags that tell how a group was joined and assigned."""


def assignment_lines(path, first=30, last=50):
    """The lines of a tenant's librdkafka debug log (kept whole in *path*,
    on this machine only) that tell how its group was joined and assigned,
    and what its metadata said of topics: the first *first* and the last
    *last* of them, what a failed load run needs to be understood."""
    if not path.exists():
        return f"(no {path})"
    lines = [line[:300] for line in path.read_text(errors="replace").splitlines()
             if line.split(" ", 1)[0] in GROUP_DEBUG or
             (line.startswith("METADATA") and " Topic " in line
              and "] Leader" not in line)]
    if len(lines) > first + last:
        lines = lines[:first] + [f"... {len(lines) - first - last} lines ..."] + \
            lines[-last:]
    return "\n".join(lines)


# -- hostile input on the Kafka port ----------------------------------------

def _hostile_frames(rng, count):
    """Frames a fuzzing client sends: random, truncated, oversized, wrong versions."""
    for _ in range(count):
        kind = rng.randrange(6)
        if kind == 0:  # random bytes, framed
            body = rng.randbytes(rng.randrange(0, 300))
            yield struct.pack(">i", len(body)) + body
        elif kind == 1:  # a header for a random API and version, random body
            body = struct.pack(">hhih", rng.randrange(-5, 80), rng.randrange(-3, 20),
                               rng.randrange(1 << 31), rng.randrange(-1, 40))
            body += rng.randbytes(rng.randrange(0, 200))
            yield struct.pack(">i", len(body)) + body
        elif kind == 2:  # a size prefix far above the limit
            yield struct.pack(">i", rng.choice([1 << 30, 0x7FFFFFFF, -1, 2 << 20]))
        elif kind == 3:  # truncated frame, then the connection ends
            yield struct.pack(">i", 1000) + rng.randbytes(rng.randrange(0, 999))
        elif kind == 4:  # SaslHandshake with garbage mechanism
            mech = rng.randbytes(rng.randrange(0, 50))
            body = struct.pack(">hhih", 17, 1, 7, 0) + struct.pack(">h", len(mech)) + mech
            yield struct.pack(">i", len(body)) + body
        else:  # bad tagged fields in a flexible ApiVersions v3
            body = struct.pack(">hhih", 18, 3, 9, 0) + b"\x05" + rng.randbytes(8)
            yield struct.pack(">i", len(body)) + body


def hostile_input(gateway, connections, frames_per_connection, slow_loris=20, seed=1):
    """Fuzzing and slow clients on the Kafka port while a tenant works: the
    gateway stays up, its memory bounded, and the tenant's records are exact."""
    rng = random.Random(seed)
    before = gateway.rss_mb()
    sent = 0
    lorises = []
    for _ in range(slow_loris):  # open, send 2 bytes, then nothing
        s = socket.create_connection(("localhost", gateway.port))
        s.sendall(b"\x00\x00")
        lorises.append(s)
    vc = unique("relfuzz")
    tenant = subprocess.Popen(
        [sys.executable, str(ROOT / "reliability" / "tenant_load.py"),
         "--bootstrap", gateway.bootstrap, "--vcluster", vc,
         "--token", AUTHORITY.issue(vc, "sa", 3600), "--producers", "2",
         "--consumers", "2", "--records", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = before
    for _ in range(connections):
        try:
            with socket.create_connection(("localhost", gateway.port), timeout=5) as s:
                for frame in _hostile_frames(rng, frames_per_connection):
                    s.sendall(frame)
                    sent += 1
        except OSError:
            pass  # the gateway closed a misbehaving connection: expected
        peak = max(peak, gateway.rss_mb())
        check(gateway.alive(), "gateway died under hostile input")
    out, err = tenant.communicate(timeout=600)
    check(tenant.returncode == 0, f"tenant load failed: {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    check(result["consumed"] == result["expected"] and result["foreign"] == 0,
          f"tenant affected by hostile clients: {result}")
    # Slow-loris connections are cut at the authentication deadline.
    closed = 0
    for s in lorises:
        s.settimeout(30)
        try:
            closed += s.recv(1) == b""
        except OSError:
            closed += 1
        s.close()
    check(closed == len(lorises), f"only {closed}/{len(lorises)} slow clients cut")
    after = gateway.rss_mb()
    check(peak - before < 64, f"memory grew {peak - before:.0f} MB under hostile input")
    check((gateway.health() or (0,))[0] == 200, "gateway not healthy afterwards")
    check("Traceback" not in gateway.log(), "a traceback in the gateway log")
    return {"connections": connections, "frames": sent, "slow_loris_cut": closed,
            "tenant_records": result["consumed"], "rss_mb_before": round(before, 1),
            "rss_mb_peak": round(peak, 1), "rss_mb_after": round(after, 1)}


# -- the runner ----------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--vclusters", type=int, default=20)
    p.add_argument("--producers", type=int, default=5)
    p.add_argument("--consumers", type=int, default=5)
    p.add_argument("--records", type=int, default=2000, help="per producer per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fault-records", type=int, default=3000)
    p.add_argument("--fuzz-connections", type=int, default=2000)
    p.add_argument("--fuzz-frames", type=int, default=20)
    p.add_argument("--atheris-seconds", type=int, default=120)
    p.add_argument("--skip", action="append", default=[],
                   help="scenario to leave out (faults, load, hostile, atheris, "
                        "schemathesis, cluster-down, gateway-cluster)")
    p.add_argument("--out", default=str(ROOT / "docs"))
    args = p.parse_args(argv)

    devstack.require_java()
    devstack.ensure_jars()
    if devstack.brokers_up() != sorted(devstack.NODES):
        devstack.start_cluster()
    results = {}
    started = time.monotonic()
    state_topic = unique("_vkafka_state_rel_")
    a = Gateway(state_topic)
    b = Gateway(state_topic)
    try:
        if "faults" not in args.skip:
            results["leader kill"] = leader_kill(b, args.fault_records)
            results["gateway kill"] = gateway_kill(a, b, args.fault_records)
            a = Gateway(state_topic)
            results["broker back, still unlisted"] = broker_back_unlisted(a)
            results["state outage"] = state_outage()
        if "load" not in args.skip:
            results["load"] = load([a, b], args.vclusters, args.producers,
                                   args.consumers, args.records, args.rounds)
            check(results["load"]["foreign"] == 0,
                  f"tenants read records of another tenant: {results['load']}")
        if "hostile" not in args.skip:
            results["hostile input"] = hostile_input(a, args.fuzz_connections,
                                                     args.fuzz_frames)
    finally:
        a.stop()
        b.stop()
    if "cluster-down" not in args.skip:
        results["cluster down at start"] = cluster_down_start(state_topic)
    if "gateway-cluster" not in args.skip:
        from reliability.cluster import scenarios
        results.update(scenarios())
    if "atheris" not in args.skip:
        results["atheris"] = run_atheris(args.atheris_seconds)
    if "schemathesis" not in args.skip:
        results["schemathesis"] = run_schemathesis()
    results["seconds"] = round(time.monotonic() - started)
    write_report(results, Path(args.out))
    print(json.dumps(results, indent=2))
    return 0


def run_atheris(seconds):
    """The coverage-guided fuzzer of the gateway's Kafka port (in memory)."""
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzz_gateway.py"),
                             f"-max_total_time={seconds}"], capture_output=True,
                            text=True, timeout=seconds + 300)
    check(result.returncode == 0, f"atheris found a crash: {result.stderr[-3000:]}")
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if line.startswith("fuzz:")]
    return {"seconds": seconds, "summary": lines[-1] if lines else "(no summary)"}


def run_schemathesis():
    """schemathesis against the admin API's own OpenAPI document."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s",
                             str(ROOT / "tests" / "test_admin_schemathesis.py")],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    check(result.returncode == 0, f"schemathesis failed: {result.stdout[-3000:]}")
    lines = [line for line in result.stdout.splitlines() if "schemathesis:" in line]
    return {"summary": lines[-1].strip() if lines else result.stdout.strip()[-200:]}


def write_report(results, out):
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# Reliability", "",
             "Written by `make reliability` (reliability/run.py); the test suite runs "
             "the same scenarios at a small size (tests/test_reliability.py).", "",
             f"Machine: {platform.node()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}; run took {results.get('seconds', '?')} s.",
             "",
             "Every scenario fails the run if its check fails: acknowledged records "
             "are all consumed (counted and checksummed), no tenant reads another's "
             "record, the gateways stay up. Memory bounds: under load, each "
             "gateway's peak RSS in the last round is at most 10% + 16 MB above "
             "the first round's; under hostile input, growth stays below 64 MB. "
             "The cross-tenant attack catalogue (each attack a test) is in "
             "docs/security.md.",
             "",
             "A tenant's consumers start once every broker, asked on its own port "
             "of the gateway, lists the tenant's new topic: after a fault a broker "
             "may apply a creation seconds after the others, and a librdkafka group "
             "leader that asks it while assigning gives every member nothing and "
             "does not assign again while its metadata from the other brokers stays "
             "the same (reliability/tenant_load.py, `known_to_every_broker`). A "
             "failed load run prints each failing tenant's librdkafka group and "
             "metadata debug lines.",
             ""]
    for name, figures in results.items():
        if name == "seconds":
            continue
        lines.append(f"## {name}")
        lines.append("")
        for key, value in figures.items():
            lines.append(f"- {key.replace('_', ' ')}: {value}")
        lines.append("")
    (out / "reliability.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
