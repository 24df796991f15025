"""The local stack without Docker: a 3-broker KRaft Kafka cluster and two gateways.

``make up`` / ``make down`` / ``make status`` run this script
(``python compose/devstack.py up``).  It is a development tool with a demo
secret, so it lives beside the Compose file, outside the installed package;
the tests load it through ``tests/stack.py``.  Kafka comes from Maven Central
(``compose/pom.xml``) as jars under ``.stack/kafka/libs`` and runs on the
machine's Java; each broker is also a KRaft controller.  Data, logs and pid
files live under ``.stack/`` (git-ignored); ``down`` removes the data, as
``docker compose down --volumes`` does in the demo.  Tests that stop or add
brokers build a ``Cluster`` of their own on free ports (``free_ports``).
"""

import argparse
import base64
import errno
import json
import os
import random
import shutil
import socket
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK = Path(os.environ.get("VKAFKA_STACK_DIR", ROOT / ".stack"))
LIBS = STACK / "kafka" / "libs"
CLUSTER_ID = "dmthYWZrYS1zdGFjay0wMQ"  # any 22-char base64 uuid; fixed for repeatability

NODES = {1: 29092, 2: 29093, 3: 29094}
EXTRA_NODES = {4: 29095}
"""Broker-only nodes a test may add at runtime (a broker joining the cluster)."""
CONTROLLER_PORT = {1: 39092, 2: 39093, 3: 39094}
FORWARDED = {n: (port + 100, port + 200) for n, port in NODES.items()}
"""node -> (its HOP listener, the address that listener advertises).  `make
bench` puts a bare TCP forwarder (bench/forwarder.py) on the advertised ports
in front of the listeners, so a client bootstrapped through the forwarder
stays behind it: the cost of a proxy process that does nothing, measured in
the same run as the gateway."""
BOOTSTRAP = ",".join(f"localhost:{p}" for p in NODES.values())
HEAP = os.environ.get("VKAFKA_BROKER_HEAP", "-Xms256m -Xmx768m")

# The demo's two gateways: (name, first Kafka port, admin port).
GATEWAYS = [("gateway1", 6969, 8888), ("gateway2", 7969, 8889)]
# The demo's gateway settings (as in its compose file), plus the token secret
# both gateways share.  A development secret: set your own in production.
DEMO_SECRET = os.environ.get("GATEWAY_USER_POOL_SECRET_KEY",
                             "vkafka-local-development-secret-change-me")
TENANT_OPTIONS = ("--security-protocol=SASL_PLAINTEXT", "--multi-tenancy=true",
                  f"--token-secret={DEMO_SECRET}",
                  "--admin-users=admin:conduktor", "--admin-allow-plain=true")
DEMO_CLUSTER = ("--gateway-cluster-id=vkafka-demo",)
"""The demo's gateways form one cluster (tests' gateways stay out of it)."""

# CLI name -> main class, as in the bin/*.sh scripts of Kafka 4.1.
CLI_TOOLS = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "kafka-e2e-latency": "org.apache.kafka.tools.EndToEndLatency",
    "kafka-verifiable-producer": "org.apache.kafka.tools.VerifiableProducer",
    "kafka-verifiable-consumer": "org.apache.kafka.tools.VerifiableConsumer",
    "kafka-configs": "kafka.admin.ConfigCommand",
    "kafka-acls": "org.apache.kafka.tools.AclCommand",
    "kafka-storage": "kafka.tools.StorageTool",
}

SHARED_CLUSTER_BOUNDS = {
    "group.max.size": 1000,
    "group.consumer.max.size": 1000,
    "group.max.session.timeout.ms": 300_000,
}
"""Broker settings a cluster shared by tenants needs (docs/operations.md,
Brokers shared by tenants): members per group and how long a silent one is
kept bound the group coordinator's heap, which the gateway cannot count."""


class StackError(RuntimeError):
    """Something the stack needs is missing; the message says what."""


def _log4j(path, level):
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="err" target="SYSTEM_ERR">
    <PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="{level}"><AppenderRef ref="err"/></Root></Loggers>
</Configuration>
""")


def require_java():
    java = shutil.which("java")
    if java is None:
        raise StackError("Java is missing: install a Java 17+ runtime (java on PATH)")
    return java


def ensure_jars():
    """Resolve the Kafka jars with Maven unless already present."""
    import hashlib

    pom = ROOT / "compose" / "pom.xml"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    marker = LIBS / ".resolved"
    if marker.exists() and marker.read_text().strip() == digest:
        return
    if shutil.which("mvn") is None:
        raise StackError("Maven is missing: install Maven (mvn on PATH) to fetch Kafka")
    shutil.rmtree(LIBS, ignore_errors=True)
    LIBS.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom),
         "dependency:copy-dependencies", f"-DoutputDirectory={LIBS}",
         "-DincludeScope=runtime"],
        check=True,
    )
    marker.write_text(digest + "\n")


def install_cli(bindir=None):
    """Write the stock Kafka CLI tools as scripts into the virtualenv's bin/."""
    ensure_jars()
    bindir = Path(bindir or Path(sys.executable).parent)
    config = STACK / "kafka" / "tools-log4j2.xml"
    _log4j(config, "WARN")
    for name, cls in CLI_TOOLS.items():
        script = bindir / name
        script.write_text(
            "#!/bin/sh\n"
            f"# {name} from Apache Kafka's jars (written by compose/devstack.py)\n"
            f'exec java ${{KAFKA_HEAP_OPTS:--Xmx512m}} $KAFKA_OPTS '
            f'-Dlog4j2.configurationFile="{config}" '
            f'-cp "{LIBS}/*" {cls} "$@"\n'
        )
        script.chmod(0o755)
    return bindir


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return True


def _pidfile(name, base=None):
    return Path(base or STACK) / "run" / f"{name}.pid"


def running(name, base=None):
    """The pid of stack process *name* (pid file under *base*) if it runs, else None."""
    path = _pidfile(name, base)
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _logfile(name, base=None):
    return Path(base or STACK) / "logs" / f"{name}.out"


def _spawn(name, argv, env=None, base=None):
    _pidfile(name, base).parent.mkdir(parents=True, exist_ok=True)
    _logfile(name, base).parent.mkdir(parents=True, exist_ok=True)
    with open(_logfile(name, base), "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=env, cwd=str(ROOT))
    _pidfile(name, base).write_text(str(proc.pid))
    return proc.pid


def log_tail(name, base=None, size=3000):
    try:
        return _logfile(name, base).read_text(errors="replace")[-size:]
    except OSError:
        return ""


class Cluster:
    """A KRaft cluster: *nodes* (id -> client port) are brokers and controllers
    (id -> *controllers* port), *extra_nodes* broker-only nodes a test may add.

    ``make up`` runs ``DEFAULT`` under ``.stack/``.  Tests that stop or add
    brokers run one of their own (``private``) on free ports in a directory
    of their own, so they never disturb whoever uses the shared one."""

    def __init__(self, directory, nodes, controllers, extra_nodes=None,
                 forwarded=None, cluster_id=CLUSTER_ID):
        self.directory = Path(directory)
        self.nodes = dict(nodes)
        self.controllers = dict(controllers)
        self.extra_nodes = dict(extra_nodes or {})
        self.forwarded = dict(forwarded or {})
        self.cluster_id = cluster_id

    @classmethod
    def private(cls, directory, node_ids=(1, 2, 3), extra_node_ids=()):
        """A cluster on free ports, with a fresh cluster id, under *directory*."""
        ports = iter(free_ports(1) for _ in range(2 * len(node_ids) + len(extra_node_ids)))
        nodes = {n: next(ports) for n in node_ids}
        controllers = {n: next(ports) for n in node_ids}
        extra = {n: next(ports) for n in extra_node_ids}
        return cls(directory, nodes, controllers, extra, cluster_id=new_cluster_id())

    @property
    def bootstrap(self):
        return ",".join(f"localhost:{p}" for p in self.nodes.values())

    def node_directory(self, node_id):
        return self.directory / f"kafka{node_id}"

    def _config(self, node_id):
        directory = self.node_directory(node_id)
        voters = ",".join(f"{n}@localhost:{p}" for n, p in self.controllers.items())
        port = self.nodes.get(node_id) or self.extra_nodes[node_id]
        extra = node_id in self.extra_nodes
        listeners = [f"PLAINTEXT://localhost:{port}"]
        advertised = [f"PLAINTEXT://localhost:{port}"]
        if not extra:
            listeners.append(f"CONTROLLER://localhost:{self.controllers[node_id]}")
        if node_id in self.forwarded:
            listeners.append(f"HOP://localhost:{self.forwarded[node_id][0]}")
            advertised.append(f"HOP://localhost:{self.forwarded[node_id][1]}")
        replicas = min(3, len(self.nodes))
        props = {
            "process.roles": "broker" if extra else "broker,controller",
            "node.id": node_id,
            "controller.quorum.voters": voters,
            "listeners": ",".join(listeners),
            "advertised.listeners": ",".join(advertised),
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map":
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,HOP:PLAINTEXT",
            "log.dirs": directory / "data",
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": 0,
            **SHARED_CLUSTER_BOUNDS,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min(2, replicas),
            "transaction.state.log.num.partitions": 10,
            "num.partitions": 1,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "log.segment.bytes": 256 * 1024 * 1024,
        }
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return directory, path

    def running_pid(self, node_id):
        return running(f"kafka{node_id}", self.directory)

    def start_broker(self, node_id):
        if self.running_pid(node_id):
            return
        directory, config = self._config(node_id)
        _start_node(f"kafka{node_id}", directory, config, self.cluster_id,
                    self.directory)

    def stop_broker(self, node_id, timeout=30):
        """SIGTERM, then SIGKILL after *timeout* seconds (0: at once)."""
        stop(f"kafka{node_id}", timeout, self.directory)

    def remove_broker(self, node_id):
        """Stop a node and forget it: its data goes (an added broker leaving)."""
        self.stop_broker(node_id)
        shutil.rmtree(self.node_directory(node_id), ignore_errors=True)

    def brokers_up(self):
        return brokers_up(self.bootstrap)

    def wait(self, timeout=120, count=None):
        """Until *count* (default: all) brokers answer; fail at once, with its
        log, if a node of this cluster has exited (a port taken, a bad config)."""
        count = len(self.nodes) if count is None else count

        def ready():
            for node_id in self.nodes:
                if not self.running_pid(node_id):
                    raise StackError(
                        f"kafka{node_id} of {self.directory} is not running; its log "
                        f"ends:\n{log_tail(f'kafka{node_id}', self.directory)}")
            return len(self.brokers_up()) >= count
        wait_for(ready, f"{count} brokers to answer on {self.bootstrap}", timeout)

    def running(self):
        return any(self.running_pid(n) for n in self.nodes)

    def start(self):
        for node_id in self.nodes:
            self.start_broker(node_id)
        self.wait()
        return self

    def stop(self, wipe=True):
        for node_id in list(self.nodes) + list(self.extra_nodes):
            self.stop_broker(node_id)
        if wipe:
            for node_id in list(self.nodes) + list(self.extra_nodes):
                shutil.rmtree(self.node_directory(node_id), ignore_errors=True)


DEFAULT = Cluster(STACK, NODES, CONTROLLER_PORT, EXTRA_NODES, FORWARDED)
"""The cluster of ``make up`` on 29092-29094, shared by whoever works here."""


def start_broker(node_id):
    DEFAULT.start_broker(node_id)


# A one-node cluster with a listener per security protocol, for the TLS tests:
# protocol -> port.  Its users are SASL/PLAIN users of every SASL listener.
SECURE_PORTS = {"PLAINTEXT": 29392, "SSL": 29393, "SASL_PLAINTEXT": 29394,
                "SASL_SSL": 29395, "CONTROLLER": 29396}
SECURE_USERS = {"admin": "admin-secret", "vkafka": "vkafka-secret"}
SECURE_CLUSTER_ID = "dmthYWZrYS1zZWN1cmUtMQ"


def start_secure_broker(keystore, truststore, ports=None, directory=None):
    """Start (or restart) the secure node with a PEM key store and trust store.

    *ports* (protocol -> port, as SECURE_PORTS) and *directory* let a test
    run one of its own; stop it with ``stop_secure_broker(directory)``."""
    ports = ports or SECURE_PORTS
    directory = Path(directory or STACK / "kafka-secure")
    base = _secure_base(directory)
    stop("kafka-secure", base=base)
    shutil.rmtree(directory / "data", ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    users = " ".join(f'user_{u}="{p}"' for u, p in SECURE_USERS.items())
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="admin" password="{SECURE_USERS["admin"]}" {users};')
    listeners = ",".join(f"{name}://localhost:{port}" for name, port in ports.items())
    props = {
        "process.roles": "broker,controller", "node.id": 1,
        "controller.quorum.voters": f"1@localhost:{ports['CONTROLLER']}",
        "listeners": listeners,
        "advertised.listeners": ",".join(
            f"{n}://localhost:{p}" for n, p in ports.items() if n != "CONTROLLER"),
        "listener.security.protocol.map": ",".join(
            f"{n}:{'PLAINTEXT' if n == 'CONTROLLER' else n}" for n in ports),
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM", "ssl.keystore.location": keystore,
        "ssl.truststore.type": "PEM", "ssl.truststore.location": truststore,
        "log.dirs": directory / "data", "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0, **SHARED_CLUSTER_BOUNDS,
        "offsets.topic.replication.factor": 1, "offsets.topic.num.partitions": 3,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1, "num.partitions": 1,
        "num.network.threads": 2, "num.io.threads": 2,
    }
    config = directory / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    _start_node("kafka-secure", directory, config, SECURE_CLUSTER_ID, base)
    servers = f"localhost:{ports['PLAINTEXT']}"

    def ready():
        if not running("kafka-secure", base):
            raise StackError("the secure broker exited; its log ends:\n"
                             + log_tail("kafka-secure", base))
        return brokers_up(servers) == [1]
    wait_for(ready, f"the secure broker on {servers}", 90)


def _secure_base(directory):
    """Where the secure node's pid file lives: .stack/run for the shared one
    (``make down`` stops it), its own directory otherwise."""
    return STACK if Path(directory) == STACK / "kafka-secure" else Path(directory)


def stop_secure_broker(directory=None):
    directory = Path(directory or STACK / "kafka-secure")
    stop("kafka-secure", base=_secure_base(directory))


# A one-node cluster with Kafka's own authorizer, for comparing a virtual
# cluster's ACL decisions with a broker's (tests/test_acls_integration.py).
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ACL_BROKER_LISTENERS = ("SASL_PLAINTEXT", "PLAINTEXT", "CONTROLLER")


def start_acl_broker(users, directory, ports=None):
    """Start a one-node KRaft broker with the StandardAuthorizer under
    *directory* (data, logs and pid file there); return its ports
    (listener -> port, free ports unless *ports* given).

    *users* ({name: password}) are the PLAIN users of its SASL_PLAINTEXT
    listener and must hold "admin", a super user.  PLAINTEXT (the
    inter-broker listener) and CONTROLLER authenticate no one: their
    principal, User:ANONYMOUS, is a super user too.  No ACL, no access
    (``allow.everyone.if.no.acl.found=false``).  Stop it with
    ``stop_acl_broker(directory)``."""
    if "admin" not in users:
        raise StackError("the ACL broker needs an 'admin' user (its super user)")
    directory = Path(directory)
    ports = ports or {name: free_ports(1) for name in ACL_BROKER_LISTENERS}
    stop("kafka-acl", base=directory)
    shutil.rmtree(directory / "data", ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    accounts = " ".join(f'user_{u}="{p}"' for u, p in users.items())
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="admin" password="{users["admin"]}" {accounts};')
    props = {
        "process.roles": "broker,controller", "node.id": 1,
        "controller.quorum.voters": f"1@localhost:{ports['CONTROLLER']}",
        "listeners": ",".join(f"{n}://localhost:{ports[n]}"
                              for n in ACL_BROKER_LISTENERS),
        "advertised.listeners": ",".join(f"{n}://localhost:{ports[n]}"
                                         for n in ACL_BROKER_LISTENERS
                                         if n != "CONTROLLER"),
        "listener.security.protocol.map":
            "SASL_PLAINTEXT:SASL_PLAINTEXT,PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        "authorizer.class.name": AUTHORIZER,
        "super.users": "User:admin;User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
        "log.dirs": directory / "data", "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0, **SHARED_CLUSTER_BOUNDS,
        "offsets.topic.replication.factor": 1, "offsets.topic.num.partitions": 3,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 3, "num.partitions": 1,
        "default.replication.factor": 1,
        "num.network.threads": 2, "num.io.threads": 2,
    }
    config = directory / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    _start_node("kafka-acl", directory, config, new_cluster_id(), directory)
    servers = f"localhost:{ports['PLAINTEXT']}"

    def ready():
        if not running("kafka-acl", directory):
            raise StackError("the ACL broker exited; its log ends:\n"
                             + log_tail("kafka-acl", directory))
        return brokers_up(servers) == [1]
    wait_for(ready, f"the ACL broker on {servers}", 90)
    return ports


def stop_acl_broker(directory):
    stop("kafka-acl", base=Path(directory))


def new_cluster_id():
    """A random KRaft cluster id, as Kafka's Uuid.randomUuid makes it: never
    starting with "-", which kafka-storage would read as an option (one id in
    64 did, and its cluster failed to format)."""
    while True:
        found = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not found.startswith("-"):
            return found


def _start_node(name, directory, config, cluster_id=CLUSTER_ID, base=None):
    java = require_java()
    ensure_jars()
    log4j = directory / "log4j2.xml"
    _log4j(log4j, "WARN")
    classpath = f"{LIBS}/*"
    if not (directory / "data" / "meta.properties").exists():
        subprocess.run(
            [java, "-Xmx256m", f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath,
             "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
            check=True, stdout=subprocess.DEVNULL)
    _spawn(name, [
        java, *HEAP.split(), "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={directory / 'logs'}",
        "-cp", classpath, "kafka.Kafka", str(config),
    ], base=base)


def stop(name, timeout=30, base=None):
    pid = running(name, base)
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    _pidfile(name, base).unlink(missing_ok=True)


def brokers_up(servers=None):
    """The ids of the brokers that answer Metadata, or []."""
    from vkafka.proxy.discovery import fetch_brokers_blocking
    from vkafka.proxy.topology import parse_servers

    brokers = fetch_brokers_blocking(parse_servers(servers or BOOTSTRAP), timeout=3)
    return sorted(b[0] for b in brokers or [])


def wait_for(predicate, what, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise StackError(f"timed out after {timeout}s waiting for {what}")


def wait_cluster(timeout=120, count=len(NODES)):
    DEFAULT.wait(timeout, count)


def cluster_running():
    return DEFAULT.running()


def start_cluster():
    DEFAULT.start()


def stop_cluster(wipe=True):
    stop("kafka-secure")
    DEFAULT.stop(wipe)
    if wipe:
        shutil.rmtree(STACK / "kafka-secure", ignore_errors=True)


# -- ports -------------------------------------------------------------------

PORT_RANGE = (15000, 29000)
"""Where ``free_ports`` looks: below Linux's ephemeral range (32768+, taken by
outgoing connections at any time) and below every fixed port of this stack."""


def _fixed_ports():
    ports = {*NODES.values(), *EXTRA_NODES.values(), *CONTROLLER_PORT.values(),
             *SECURE_PORTS.values()}
    for listener, advertised in FORWARDED.values():
        ports.update((listener, advertised))
    for _, first, admin in GATEWAYS:
        ports.update(range(first, first + 6))
        ports.add(admin)
    return ports


_handed_out = set()


def _bindable(port):
    """Nothing holds *port* now (IPv4 any address, and IPv6 where there is one)."""
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here
        try:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((address, port))
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL:
                return False
        finally:
            s.close()
    return True


def free_ports(count=1):
    """The first of *count* consecutive ports that nothing holds now and that
    this process has not handed out before (a gateway needs consecutive Kafka
    ports).  Random, so concurrent runs on one machine rarely meet; whoever
    then binds must still retry if another process took a port in between."""
    rng = random.SystemRandom()
    fixed = _fixed_ports()
    low, high = PORT_RANGE
    for _ in range(500):
        first = rng.randrange(low, high - count)
        ports = set(range(first, first + count))
        if ports & (fixed | _handed_out):
            continue
        if all(_bindable(p) for p in sorted(ports)):
            _handed_out.update(ports)
            return first
    raise StackError(f"no {count} consecutive free ports in {low}-{high}")


def listening(pid, port):
    """Whether process *pid* itself listens on TCP *port*: then an answer on
    that port is its own, not that of another process holding the port."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            continue
    return False


def gateway_argv(start_port, admin_port, logfile=None, extra=(), servers=None):
    """The command line of a gateway in front of the local cluster (or *servers*)."""
    twistd = str(Path(sys.executable).parent / "twistd")
    # One process unless *extra* says otherwise (--workers, docs/operations.md):
    # what tests measure per gateway stays one process's.
    workers = () if any(o.startswith("--workers") for o in extra) else ("--workers=1",)
    return [twistd, "-n", "--pidfile=", f"--logfile={logfile or '-'}", "vkafka",
            f"--bootstrap-servers={servers or BOOTSTRAP}", f"--start-port={start_port}",
            f"--admin-port={admin_port}", "--min-broker-id=1", *workers, *extra]


def health(admin_port):
    """The gateway's /health answer as (status code, json), or None."""
    try:
        with urllib.request.urlopen(f"http://localhost:{admin_port}/health",
                                    timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
    except (OSError, ValueError):
        return None


def start_gateways():
    for name, port, admin in GATEWAYS:
        if not running(name):
            _spawn(name, gateway_argv(port, admin, extra=(*TENANT_OPTIONS,
                                                          *DEMO_CLUSTER)))
    for name, port, admin in GATEWAYS:
        def ready():
            pid = running(name)
            if pid is None:
                raise StackError(f"{name} exited (a port of {port}.. or {admin} "
                                 f"taken?); its log ends:\n{log_tail(name)}")
            return listening(pid, admin) and (health(admin) or (0,))[0] == 200
        wait_for(ready, f"{name} to be ready on admin port {admin}", 60)


def stop_gateways():
    for name, _, _ in GATEWAYS:
        stop(name)


def _strays():
    """Pids of any process still holding our stack directory (left by a crash)."""
    found = []
    marker = str(STACK).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and b"kafka.Kafka" in cmdline:
            found.append(int(entry.name))
    return found


def up():
    t0 = time.monotonic()
    start_cluster()
    start_gateways()
    print(f"stack up in {time.monotonic() - t0:.0f}s: Kafka on {BOOTSTRAP}; "
          + ", ".join(f"{n} on {p} (admin {a})" for n, p, a in GATEWAYS))


def down():
    stop_gateways()
    stop_cluster()
    for pid in _strays():
        os.kill(pid, signal.SIGKILL)
    print("stack down")


def status():
    names = [f"kafka{n}" for n in NODES] + [g[0] for g in GATEWAYS]
    for name in names:
        pid = running(name)
        print(f"{name:10} {'running pid ' + str(pid) if pid else 'stopped'}")
    try:
        answering = brokers_up() or "none"
    except ImportError:  # no virtualenv yet (make status before make setup)
        answering = "unknown (vkafka is not installed)"
    print(f"brokers answering: {answering}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "install-cli",
                                            "cluster-up"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
        elif args.command == "cluster-up":
            start_cluster()
        elif args.command == "down":
            down()
        elif args.command == "status":
            status()
        elif args.command == "install-cli":
            print(f"Kafka CLI tools written to {install_cli()}")
    except (StackError, subprocess.CalledProcessError) as e:
        print(f"devstack: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
