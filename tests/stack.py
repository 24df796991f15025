"""Integration-test harness: real Kafka clusters, real gateways, free ports.

Most tests share the 3-broker cluster of ``make up``: it is started if it is
not already running and, if this run started it, stopped when the run ends.
Tests that stop, kill or add brokers get a cluster of their own
(``private_cluster``), so they never disturb anyone using the shared one.
Every gateway a test starts listens on ports chosen at run time
(``GatewayProcess``).  A missing Java or Maven is a failure that says what is
missing, never a skip.
"""

import atexit
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_devstack():
    """compose/devstack.py, loaded by path: a development tool with a demo
    secret, kept out of the installed package, whatever sys.path holds."""
    path = ROOT / "compose" / "devstack.py"
    module = sys.modules.get("devstack")
    if module is not None and Path(module.__file__).resolve() == path:
        return module
    spec = importlib.util.spec_from_file_location("devstack", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["devstack"] = module  # one instance: it remembers ports handed out
    spec.loader.exec_module(module)
    return module


devstack = _load_devstack()

BOOTSTRAP = devstack.BOOTSTRAP
BIN = Path(sys.executable).parent
_started_here = False


def ensure_cluster():
    """Make sure the 3-broker cluster answers; return its bootstrap string."""
    global _started_here
    if devstack.brokers_up() == sorted(devstack.NODES):
        return BOOTSTRAP
    devstack.require_java()
    devstack.ensure_jars()
    if not devstack.cluster_running():
        _started_here = True
        atexit.register(devstack.stop_cluster)
    devstack.start_cluster()
    return BOOTSTRAP


def private_cluster(extra_node_ids=()):
    """A 3-broker KRaft cluster of the caller's own, on free ports, in a
    directory of its own: for tests that stop, kill or add brokers (nodes
    *extra_node_ids* may be added later with ``start_broker``).  Stop it with
    ``discard``; whatever is left is stopped when the run ends."""
    devstack.require_java()
    devstack.ensure_jars()
    for attempt in range(3):
        directory = Path(tempfile.mkdtemp(prefix="vkafka-cluster-"))
        cluster = devstack.Cluster.private(directory, extra_node_ids=extra_node_ids)
        atexit.register(discard, cluster)
        try:
            return cluster.start()
        except devstack.StackError as e:
            discard(cluster)
            # another process took one of its ports between the probe and the bind
            if "Address already in use" not in str(e) or attempt == 2:
                raise


def secure_broker(keystore, truststore, directory):
    """The one-node secure cluster of the TLS tests (a listener per security
    protocol) on free ports, under *directory*; returns protocol -> port.
    Stop it with ``devstack.stop_secure_broker(directory)``."""
    devstack.require_java()
    for attempt in range(3):
        ports = {name: devstack.free_ports(1) for name in devstack.SECURE_PORTS}
        try:
            devstack.start_secure_broker(keystore, truststore, ports, directory)
            return ports
        except devstack.StackError as e:
            devstack.stop_secure_broker(directory)
            if "Address already in use" not in str(e) or attempt == 2:
                raise


def discard(cluster):
    """Stop a private cluster and remove its directory (data, logs)."""
    cluster.stop(wipe=True)
    shutil.rmtree(cluster.directory, ignore_errors=True)


def create_topic(name, partitions=1, replication=3, servers=BOOTSTRAP):
    """Create a topic directly on the cluster (not through a gateway)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": servers})
    admin.create_topics([NewTopic(name, partitions, replication)])[name].result(30)


def delete_topics(names, servers=BOOTSTRAP):
    """Remove topics a test created directly on the cluster."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": servers})
    for future in admin.delete_topics(list(names)).values():
        future.result(30)


def physical_topic(vcluster, logical):
    """The broker's name of a tenant's topic, by the one naming rule."""
    from vkafka.tenancy.naming import TOPIC
    from vkafka.tenancy.vclusters import VirtualClusters
    return VirtualClusters().namespace(vcluster).physical(TOPIC, logical)


ADMIN_AUTH = ("admin", "conduktor")
"""The admin user of devstack.TENANT_OPTIONS."""


def scrape(url, auth=ADMIN_AUTH, context=None, timeout=10):
    """GET an admin-port URL with basic auth, as Prometheus scrapes /metrics
    (it answers nothing but /health without credentials); return the text."""
    import base64
    import urllib.request
    request = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()})
    with urllib.request.urlopen(request, context=context, timeout=timeout) as r:
        return r.read().decode()


def admin(port, method, path, body=None):
    """A call to the admin API on *port* (``/admin`` + *path*), as the admin
    user: (status, JSON body or None); a 4xx or 5xx is returned, not raised."""
    import base64
    import json
    import urllib.error
    import urllib.request
    request = urllib.request.Request(
        f"http://localhost:{port}/admin{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(
            ":".join(ADMIN_AUTH).encode()).decode(),
            "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def read_all(topic, servers=BOOTSTRAP, timeout=60.0):
    """Every value (text) of *topic* up to its end offsets now, read from the
    brokers directly."""
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": servers, "group.id": unique("read-all"),
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                  timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        values, done = [], {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: read {len(values)} records, "
                                     f"partitions {sorted(set(ends) - done)} not to "
                                     f"their end in {timeout} s")
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            values.append(message.value().decode())
            if message.offset() + 1 >= ends[message.partition()]:
                done.add(message.partition())
        return values
    finally:
        consumer.close()


def unique(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def cli(tool, *args, input=None, timeout=120, check=True):
    """Run a stock Kafka CLI tool from the virtualenv; return its stdout."""
    result = run_cli(tool, *args, input=input, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stderr[-3000:]}")
    return result.stdout


def run_cli(tool, *args, input=None, timeout=120):
    """Run a stock Kafka CLI tool; the whole CompletedProcess, for tests that
    expect it to fail and check how."""
    path = BIN / tool
    if not path.exists():
        raise AssertionError(f"{path} is missing: run `make setup` (it writes the "
                             "Kafka CLI wrappers into .venv/bin)")
    return subprocess.run([str(path), *args], input=input, capture_output=True,
                          text=True, timeout=timeout)


def wait_until(predicate, what, timeout=60.0, interval=0.2):
    """Poll *predicate* until it returns a true value, or fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def drain(consumer, count, what, timeout=60):
    """Poll a subscribed confluent-kafka consumer until *count* records; return them."""
    got = []

    def enough():
        got.extend(m for m in consumer.consume(500, 1.0) if m.error() is None)
        return len(got) >= count
    wait_until(enough, what, timeout, interval=0)
    return got


def _port_count(extra):
    """The Kafka ports a gateway with options *extra* listens on."""
    from vkafka.tap import SETTINGS
    count = next(default for name, _, default, *_ in SETTINGS if name == "port-count")
    for option in extra:
        if option.startswith("--port-count="):
            count = int(option.split("=", 1)[1])
    return count


class PortTaken(AssertionError):
    """The gateway exited because another process holds one of its ports."""


class GatewayProcess:
    """A ``twistd -n vkafka`` subprocess in front of *cluster* (the shared one
    unless given) or *servers*, on free ports chosen at run time: a run never
    meets another run's gateways or a port someone else holds."""

    def __init__(self, extra=(), cluster=None, servers=None):
        self.extra = tuple(extra)
        self.servers = servers or (cluster or devstack.DEFAULT).bootstrap
        self.logfile = Path(tempfile.mkdtemp(prefix="vkafka-gw-")) / "gateway.log"
        self.process = None
        self.choose_ports()

    def choose_ports(self):
        self.start_port = devstack.free_ports(_port_count(self.extra))
        self.admin_port = devstack.free_ports(1)
        self.argv = devstack.gateway_argv(self.start_port, self.admin_port,
                                          self.logfile, self.extra, self.servers)

    @property
    def bootstrap(self):
        return f"localhost:{self.start_port}"

    def spawn(self):
        """Start the process without waiting (``start`` waits until ready)."""
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        return self

    def start(self, attempts=3):
        """Spawn and wait for /health 200 from this very process; on ports
        taken between the probe and the bind, again on fresh ones."""
        for attempt in range(attempts):
            self.spawn()
            try:
                wait_until(self.ready, f"gateway on {self.start_port} to be ready", 60)
                return self
            except PortTaken:
                self.stop()
                if attempt == attempts - 1:
                    raise
                self.choose_ports()
            except BaseException:
                self.stop()
                raise

    def answering(self):
        """Whether this process listens on its admin port (an answer there is
        its own); fails, with its log, if it has exited."""
        if self.process.poll() is not None:
            stderr = self.process.stderr
            said = stderr.read().decode() if stderr and not stderr.closed else ""
            said = f"{said[-2000:]}\n{self.log()[-2000:]}"
            error = PortTaken if "Address already in use" in said else AssertionError
            raise error(f"gateway exited {self.process.returncode}: {said}")
        return devstack.listening(self.process.pid, self.admin_port)

    def ready(self):
        """/health answers 200, from this process."""
        if not self.answering():
            return False
        answer = devstack.health(self.admin_port)
        return answer is not None and answer[0] == 200

    def log(self):
        try:
            return self.logfile.read_text()
        except OSError:
            return ""

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process and self.process.stderr:
            self.process.stderr.close()
