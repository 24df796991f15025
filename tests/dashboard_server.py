"""An admin port with two busy virtual clusters, in memory, for the dashboard tests.

``python -m tests.dashboard_server [PORT]`` serves it on 127.0.0.1:PORT (user
``admin``, password ``dashpw``; PORT 0 or none: any free port) with steady
fake traffic, and prints ``ready PORT`` once it listens; the browser test
drives Chromium against it.
No Kafka is involved: the state is a MemoryStore, the traffic goes straight
into the gateway's Metrics.
"""

import sys

from vkafka.admin.app import admin_root
from vkafka.admin.dashboard import Dashboard
from vkafka.admin.users import UserChecker, parse_users
from vkafka.auth.tokens import TokenAuthority
from vkafka.metrics import Metrics
from vkafka.proxy.topology import Topology
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore
from vkafka.tenancy.naming import TOPIC
from vkafka.tenancy.vclusters import VirtualClusters

USER, PASSWORD = "admin", "dashpw"
TOPICS = {"london": ["londonTopic", "orders", "payments"],
          "paris": ["parisTopic", "clicks"]}
MAPPINGS = {"london": [("existingLondonTopic", "existingLondonTopic", False),
                       ("shared", "existingSharedTopic", True)],
            "paris": [("shared", "existingSharedTopic", True)]}
CONNECTIONS = {"london": 3, "paris": 2, "unauthenticated": 1}


def build(clock):
    """GatewayState, Topology and Metrics holding the two virtual clusters."""
    state = GatewayState(MemoryStore(), TokenAuthority("d" * 32, clock),
                         VirtualClusters(), clock)
    for vc in TOPICS:
        state.create_account(vc, "sa", 3600)
    state.create_account("london", "ops", 3600)
    for vc, mappings in MAPPINGS.items():
        for logical, physical, read_only in mappings:
            state.put_mapping(vc, logical, {"physicalTopicName": physical,
                                            "readOnly": read_only,
                                            "concentrated": False})
    physical = {"existingLondonTopic", "existingSharedTopic", "_vkafka_state",
                "__consumer_offsets"}
    for vc, logical in TOPICS.items():
        namespace = state.vclusters.namespace(vc)
        physical.update(namespace.physical(TOPIC, name) for name in logical)
    topology = Topology([("localhost", 29092)], "localhost", 6969, 3)
    topology.learn_listing(physical, clock())
    metrics = Metrics()
    for label, count in CONNECTIONS.items():
        metrics.connections.labels(label).inc(count)
    return state, topology, metrics


def traffic(metrics):
    """One tick of fake traffic: london produces, paris mostly fetches."""
    london, paris = metrics.for_connection("london"), metrics.for_connection("paris")
    ticks = iter(range(10 ** 9))

    def tick():
        # A little swing, so the sparklines have a shape.
        for _ in range(3 + next(ticks) // 10 % 5):
            london.request("Produce", 4096)
            london.response("Produce", 120, 0.002)
        london.request("Fetch", 90)
        london.response("Fetch", 2048, 0.1)
        paris.request("Metadata", 60)
        paris.response("Metadata", 400, 0.001)
        for _ in range(3):
            paris.request("Fetch", 90)
            paris.response("Fetch", 16384, 0.05)
    return tick


def main(port):
    from twisted.internet import reactor, task
    from twisted.web.server import Site

    state, topology, metrics = build(reactor.seconds)
    dashboard = Dashboard(state, metrics, topology, reactor, interval=0.5, window=2.0)
    dashboard.startService()
    task.LoopingCall(traffic(metrics)).start(0.1)
    checker = UserChecker(parse_users(f"{USER}:{PASSWORD}", allow_plain=True))
    root = admin_root(state, checker, lambda: (None, {}), dashboard)
    listening = reactor.listenTCP(port, Site(root), interface="127.0.0.1")
    reactor.callWhenRunning(
        lambda: print(f"ready {listening.getHost().port}", flush=True))
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
