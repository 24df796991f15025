"""The local stack without Docker: a 3-broker KRaft Kafka cluster and two gateways.

``make up`` / ``make down`` / ``make status`` call this module.  Kafka comes
from Maven Central (``compose/pom.xml``) as jars under ``.stack/kafka/libs``
and runs on the machine's Java; each broker is also a KRaft controller.
Data, logs and pid files live under ``.stack/`` (git-ignored); ``down``
removes the data, as ``docker compose down --volumes`` does in the demo.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
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

# CLI name -> main class, as in the bin/*.sh scripts of Kafka 4.1.
CLI_TOOLS = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "kafka-consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "kafka-e2e-latency": "org.apache.kafka.tools.EndToEndLatency",
    "kafka-configs": "org.apache.kafka.tools.ConfigCommand",
    "kafka-storage": "kafka.tools.StorageTool",
}


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
            f"# {name} from Apache Kafka's jars (written by vkafka.devstack)\n"
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


def _pidfile(name):
    return STACK / "run" / f"{name}.pid"


def running(name):
    """The pid of stack process *name* if it runs, else None."""
    path = _pidfile(name)
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _spawn(name, argv, env=None):
    (STACK / "run").mkdir(parents=True, exist_ok=True)
    (STACK / "logs").mkdir(parents=True, exist_ok=True)
    log = open(STACK / "logs" / f"{name}.out", "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env=env, cwd=str(ROOT))
    _pidfile(name).write_text(str(proc.pid))
    return proc.pid


def _broker_config(node_id):
    directory = STACK / f"kafka{node_id}"
    voters = ",".join(f"{n}@localhost:{p}" for n, p in CONTROLLER_PORT.items())
    port = NODES.get(node_id) or EXTRA_NODES[node_id]
    extra = node_id in EXTRA_NODES
    props = {
        "process.roles": "broker" if extra else "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://localhost:{port}" + (
            "" if extra else f",CONTROLLER://localhost:{CONTROLLER_PORT[node_id]}"
                             f",HOP://localhost:{FORWARDED[node_id][0]}"),
        "advertised.listeners": f"PLAINTEXT://localhost:{port}" + (
            "" if extra else f",HOP://localhost:{FORWARDED[node_id][1]}"),
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map":
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,HOP:PLAINTEXT",
        "log.dirs": directory / "data",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0,
        "offsets.topic.replication.factor": 3,
        "offsets.topic.num.partitions": 10,
        "transaction.state.log.replication.factor": 3,
        "transaction.state.log.min.isr": 2,
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


def start_broker(node_id):
    if running(f"kafka{node_id}"):
        return
    directory, config = _broker_config(node_id)
    _start_node(f"kafka{node_id}", directory, config)


# A one-node cluster with a listener per security protocol, for the TLS tests:
# protocol -> port.  Its users are SASL/PLAIN users of every SASL listener.
SECURE_PORTS = {"PLAINTEXT": 29392, "SSL": 29393, "SASL_PLAINTEXT": 29394,
                "SASL_SSL": 29395, "CONTROLLER": 29396}
SECURE_USERS = {"admin": "admin-secret", "vkafka": "vkafka-secret"}
SECURE_CLUSTER_ID = "dmthYWZrYS1zZWN1cmUtMQ"


def start_secure_broker(keystore, truststore):
    """Start (or restart) the secure node with a PEM key store and trust store."""
    stop("kafka-secure")
    directory = STACK / "kafka-secure"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    users = " ".join(f'user_{u}="{p}"' for u, p in SECURE_USERS.items())
    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="admin" password="{SECURE_USERS["admin"]}" {users};')
    listeners = ",".join(f"{name}://localhost:{port}"
                         for name, port in SECURE_PORTS.items())
    props = {
        "process.roles": "broker,controller", "node.id": 1,
        "controller.quorum.voters": f"1@localhost:{SECURE_PORTS['CONTROLLER']}",
        "listeners": listeners,
        "advertised.listeners": ",".join(
            f"{n}://localhost:{p}" for n, p in SECURE_PORTS.items() if n != "CONTROLLER"),
        "listener.security.protocol.map": ",".join(
            f"{n}:{'PLAINTEXT' if n == 'CONTROLLER' else n}" for n in SECURE_PORTS),
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        "listener.name.sasl_ssl.plain.sasl.jaas.config": jaas,
        "ssl.keystore.type": "PEM", "ssl.keystore.location": keystore,
        "ssl.truststore.type": "PEM", "ssl.truststore.location": truststore,
        "log.dirs": directory / "data", "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0,
        "offsets.topic.replication.factor": 1, "offsets.topic.num.partitions": 3,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1, "num.partitions": 1,
        "num.network.threads": 2, "num.io.threads": 2,
    }
    config = directory / "server.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    _start_node("kafka-secure", directory, config, SECURE_CLUSTER_ID)
    servers = f"localhost:{SECURE_PORTS['PLAINTEXT']}"
    wait_for(lambda: brokers_up(servers) == [1], f"the secure broker on {servers}", 90)


def _start_node(name, directory, config, cluster_id=CLUSTER_ID):
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
    ])


def stop(name, timeout=30):
    pid = running(name)
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
    _pidfile(name).unlink(missing_ok=True)


def brokers_up(servers=None):
    """The ids of the brokers that answer Metadata, or []."""
    from .proxy.discovery import fetch_brokers_blocking
    from .proxy.topology import parse_servers

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
    wait_for(lambda: len(brokers_up()) >= count,
             f"{count} brokers to answer on {BOOTSTRAP}", timeout)


def cluster_running():
    return any(running(f"kafka{n}") for n in NODES)


def start_cluster():
    for node_id in NODES:
        start_broker(node_id)
    wait_cluster()


def stop_cluster(wipe=True):
    stop("kafka-secure")
    for node_id in list(NODES) + list(EXTRA_NODES):
        stop(f"kafka{node_id}")
    if wipe:
        shutil.rmtree(STACK / "kafka-secure", ignore_errors=True)
        for node_id in list(NODES) + list(EXTRA_NODES):
            shutil.rmtree(STACK / f"kafka{node_id}", ignore_errors=True)


def gateway_argv(start_port, admin_port, logfile=None, extra=()):
    """The command line of a gateway in front of the local cluster."""
    twistd = str(Path(sys.executable).parent / "twistd")
    return [twistd, "-n", "--pidfile=", f"--logfile={logfile or '-'}", "vkafka",
            f"--bootstrap-servers={BOOTSTRAP}", f"--start-port={start_port}",
            f"--admin-port={admin_port}", "--min-broker-id=1", *extra]


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
            _spawn(name, gateway_argv(port, admin, extra=TENANT_OPTIONS))
    for name, port, admin in GATEWAYS:
        wait_for(lambda: (health(admin) or (0,))[0] == 200,
                 f"{name} to be ready on admin port {admin}", 60)


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
    print(f"brokers answering: {brokers_up() or 'none'}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vkafka-stack", description=__doc__)
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
        print(f"vkafka-stack: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
