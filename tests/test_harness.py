"""The test harness itself (no Kafka): free ports, whose port an answer comes
from, private clusters' settings, the development stack outside the package,
and test-case-name headers that name real test modules."""

import configparser
import http.server
import importlib.util
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from twisted.scripts.trial import getTestModules
from twisted.trial import unittest

from . import stack
from .stack import devstack

ROOT = Path(__file__).resolve().parent.parent


class HeaderTests(unittest.TestCase):
    def test_test_case_names_exist(self):
        """Every `-*- test-case-name: ... -*-` header names test modules that exist."""
        sources = sorted((ROOT / "vkafka").rglob("*.py")) + \
            sorted((ROOT / "twisted" / "plugins").glob("*.py"))
        named = 0
        for source in sources:
            for module in getTestModules(str(source)):
                named += 1
                path = ROOT / (module.strip().replace(".", "/") + ".py")
                self.assertTrue(path.exists(), f"{source.relative_to(ROOT)} names "
                                               f"{module}, which does not exist")
        self.assertGreater(named, 20)


class DevstackPlaceTests(unittest.TestCase):
    def test_not_in_the_package(self):
        """The dev stack (a demo secret) is neither a module nor a script of the
        installed package; the harness loads it from compose/."""
        self.assertIsNone(importlib.util.find_spec("vkafka.devstack"))
        self.assertEqual(Path(devstack.__file__).resolve(), ROOT / "compose" / "devstack.py")
        config = configparser.ConfigParser()
        config.read(ROOT / "setup.cfg")
        scripts = config["options.entry_points"]["console_scripts"]
        self.assertNotIn("devstack", scripts)
        self.assertNotIn("vkafka-stack", scripts)

    def test_script_runs(self):
        """`python compose/devstack.py --help`, as the Makefile runs it."""
        result = subprocess.run([sys.executable, str(ROOT / "compose" / "devstack.py"),
                                 "--help"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("up,down,status", result.stdout)


class ClusterIdTests(unittest.TestCase):
    def test_never_an_option(self):
        """A private cluster's id never starts with "-": kafka-storage read
        one such id as an option and the cluster failed to format (a CI run).
        uuid4 is patched to give such an id first."""
        import uuid
        ids = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=bytes(16))])
        self.patch(devstack.uuid, "uuid4", lambda: next(ids))
        self.assertEqual(devstack.new_cluster_id(), "AAAAAAAAAAAAAAAAAAAAAA")


class FreePortTests(unittest.TestCase):
    def test_consecutive_free_and_never_twice(self):
        taken = set()
        for _ in range(20):
            first = devstack.free_ports(6)
            ports = set(range(first, first + 6))
            self.assertFalse(ports & taken, "a port handed out twice")
            self.assertFalse(ports & devstack._fixed_ports(), "a port of the stack")
            self.assertTrue(all(devstack.PORT_RANGE[0] <= p < devstack.PORT_RANGE[1]
                                for p in ports))
            taken |= ports
        with socket.socket() as s:  # and free indeed: bindable now
            s.bind(("0.0.0.0", first))

    def test_held_port_skipped(self):
        """A port some socket holds is never handed out."""
        held = []
        for _ in range(30):
            s = socket.socket()
            s.bind(("127.0.0.1", devstack.free_ports(1)))
            s.listen()
            self.addCleanup(s.close)
            held.append(s.getsockname()[1])
        devstack._handed_out.difference_update(held)  # forget: only the bind protects
        for _ in range(200):
            self.assertNotIn(devstack.free_ports(1), held)


class ListeningTests(unittest.TestCase):
    def test_own_and_foreign_listeners(self):
        """listening(pid, port): true for the process holding the port only."""
        mine = socket.socket()
        mine.bind(("127.0.0.1", devstack.free_ports(1)))
        mine.listen()
        self.addCleanup(mine.close)
        port = mine.getsockname()[1]
        self.assertTrue(devstack.listening(os.getpid(), port))
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.addCleanup(other.wait)
        self.addCleanup(other.kill)
        self.assertFalse(devstack.listening(other.pid, port))
        self.assertFalse(devstack.listening(os.getpid(), devstack.free_ports(1)))


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"status": "ready"}')

    def log_message(self, *args):
        pass


class GatewayProcessTests(unittest.TestCase):
    """Real ``twistd vkafka`` processes, in front of an address nothing answers."""

    timeout = 120

    def gateway(self):
        gateway = stack.GatewayProcess(servers=f"localhost:{devstack.free_ports(1)}")
        self.addCleanup(gateway.stop)
        return gateway

    def test_foreign_health_does_not_fool_start(self):
        """Another process answers /health 200 on the admin port: the gateway,
        which cannot bind it, is reported as having lost its port, not ready."""
        gateway = self.gateway()
        foreign = http.server.HTTPServer(("0.0.0.0", gateway.admin_port), _Healthy)
        self.addCleanup(foreign.server_close)
        threading.Thread(target=foreign.serve_forever, daemon=True).start()
        self.addCleanup(foreign.shutdown)
        self.assertEqual(devstack.health(gateway.admin_port)[0], 200)
        with self.assertRaises(stack.PortTaken) as caught:
            gateway.start(attempts=1)
        self.assertIn("Address already in use", str(caught.exception))

    def test_kafka_port_taken_retried_on_fresh_ports(self):
        """One of its Kafka ports taken: the next attempt runs on fresh ports."""
        gateway = self.gateway()
        holder = socket.socket()
        holder.bind(("0.0.0.0", gateway.start_port + 3))
        holder.listen()
        self.addCleanup(holder.close)
        first = (gateway.start_port, gateway.admin_port)
        gateway.spawn()
        with self.assertRaises(stack.PortTaken):
            stack.wait_until(gateway.answering, "the gateway to exit", 60)
        gateway.stop()
        gateway.choose_ports()
        self.assertNotEqual((gateway.start_port, gateway.admin_port), first)
        gateway.spawn()
        stack.wait_until(gateway.answering, "the gateway's own admin port", 60)
        code, body = devstack.health(gateway.admin_port)
        self.assertEqual(code, 503)  # its own answer: nothing behind that address
        self.assertIn("cannot reach the Kafka cluster", body["reason"])


class PrivateClusterTests(unittest.TestCase):
    def test_settings(self):
        """A private cluster's nodes use its own ports, directory and cluster id."""
        directory = Path(self.mktemp())
        cluster = devstack.Cluster.private(directory, extra_node_ids=(4,))
        ports = [*cluster.nodes.values(), *cluster.controllers.values(),
                 *cluster.extra_nodes.values()]
        self.assertEqual(len(set(ports)), 7)
        self.assertFalse(set(ports) & devstack._fixed_ports())
        self.assertNotEqual(cluster.cluster_id, devstack.CLUSTER_ID)
        self.assertEqual(len(cluster.cluster_id), 22)
        self.assertEqual(cluster.bootstrap,
                         ",".join(f"localhost:{cluster.nodes[n]}" for n in (1, 2, 3)))
        _, path = cluster._config(1)
        props = dict(line.split("=", 1) for line in path.read_text().splitlines())
        self.assertEqual(props["controller.quorum.voters"], ",".join(
            f"{n}@localhost:{cluster.controllers[n]}" for n in (1, 2, 3)))
        self.assertEqual(props["listeners"],
                         f"PLAINTEXT://localhost:{cluster.nodes[1]},"
                         f"CONTROLLER://localhost:{cluster.controllers[1]}")
        self.assertTrue(props["log.dirs"].startswith(str(directory)))
        _, path = cluster._config(4)
        props = dict(line.split("=", 1) for line in path.read_text().splitlines())
        self.assertEqual(props["process.roles"], "broker")
        self.assertEqual(props["listeners"], f"PLAINTEXT://localhost:{cluster.extra_nodes[4]}")

    def test_shared_cluster_unchanged(self):
        """`make up`'s cluster keeps its ports and the bench's HOP listeners."""
        cluster = devstack.Cluster(Path(self.mktemp()), devstack.NODES,
                                   devstack.CONTROLLER_PORT, devstack.EXTRA_NODES,
                                   devstack.FORWARDED)
        _, path = cluster._config(2)
        props = dict(line.split("=", 1) for line in path.read_text().splitlines())
        self.assertEqual(props["listeners"], "PLAINTEXT://localhost:29093,"
                         "CONTROLLER://localhost:39093,HOP://localhost:29193")
        self.assertEqual(props["advertised.listeners"],
                         "PLAINTEXT://localhost:29093,HOP://localhost:29293")
        self.assertEqual(devstack.DEFAULT.bootstrap, devstack.BOOTSTRAP)
        self.assertEqual(devstack.DEFAULT.directory, devstack.STACK)


class LoadDiagnosticsTests(unittest.TestCase):
    def test_group_story_kept_noise_dropped(self):
        """A failed load run shows, of a tenant's librdkafka debug log, the
        lines on joins, assignments and the topic's metadata (partition by
        partition leaders and everything else left out), its first and last
        ones when there are many."""
        from reliability.run import assignment_lines

        log = Path(self.mktemp())
        story = [
            'JOINGROUP [rdkafka#consumer-2] [thrd:main]: I am elected leader @1.0',
            'METADATA [rdkafka#consumer-2] [thrd:main]: GroupCoordinator/1:   Topic load '
            'with 0 partitions: Broker: Unknown topic or partition @1.1',
            'ASSIGNOR [rdkafka#consumer-2] [thrd:main]: "range" assignor run @1.2',
        ]
        noise = [
            'METADATA [rdkafka#consumer-2] [thrd:main]: Topic load [0] Leader 3 Epoch 0',
            'FETCH [rdkafka#consumer-2] [thrd:main]: fetching',
            'METADATA [rdkafka#consumer-2] [thrd:main]: 3 brokers, 1 topics',
        ]
        log.write_text("\n".join(story[:1] + noise + story[1:]) + "\n")
        self.assertEqual(assignment_lines(log).splitlines(), story)

        log.write_text("\n".join(f"REJOIN line {i}" for i in range(100)) + "\n")
        shown = assignment_lines(log, first=2, last=3).splitlines()
        self.assertEqual(shown, ["REJOIN line 0", "REJOIN line 1", "... 95 lines ...",
                                 "REJOIN line 97", "REJOIN line 98", "REJOIN line 99"])
        self.assertIn("no ", assignment_lines(Path(self.mktemp())))
