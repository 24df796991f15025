"""Integration-test harness: one real Kafka cluster per test run, real gateways.

The cluster is started if it is not already running (``make up`` leaves one
up) and, if this run started it, stopped when the run ends.  A missing Java
or Maven is a failure that says what is missing, never a skip.
"""

import atexit
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from vkafka import devstack

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


def create_topic(name, partitions=1, replication=3):
    """Create a topic directly on the cluster (not through a gateway)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(name, partitions, replication)])[name].result(30)


def delete_topics(names):
    """Remove topics a test created directly on the cluster."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
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


def unique(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def cli(tool, *args, input=None, timeout=120, check=True):
    """Run a stock Kafka CLI tool from the virtualenv; return its stdout."""
    path = BIN / tool
    if not path.exists():
        raise AssertionError(f"{path} is missing: run `make setup` (it writes the "
                             "Kafka CLI wrappers into .venv/bin)")
    result = subprocess.run([str(path), *args], input=input, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stderr[-3000:]}")
    return result.stdout


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


class GatewayProcess:
    """A ``twistd -n vkafka`` subprocess in front of the test cluster."""

    def __init__(self, start_port, admin_port, extra=()):
        self.start_port = start_port
        self.admin_port = admin_port
        self.logfile = Path(tempfile.mkdtemp(prefix="vkafka-gw-")) / "gateway.log"
        self.argv = devstack.gateway_argv(start_port, admin_port, self.logfile, extra)
        self.process = None

    @property
    def bootstrap(self):
        return f"localhost:{self.start_port}"

    def start(self):
        self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        try:
            wait_until(self._ready, f"gateway on {self.start_port} to be ready", 60)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self):
        if self.process.poll() is not None:
            raise AssertionError(
                f"gateway exited {self.process.returncode}: "
                f"{self.process.stderr.read().decode()[-2000:]}\n{self.log()[-2000:]}")
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
