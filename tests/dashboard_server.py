"""An admin port with two busy virtual clusters, in memory, for the dashboard tests.

``python -m tests.dashboard_server [PORT [TENANTS]]`` serves it on
127.0.0.1:PORT (user ``admin``, password ``dashpw``; PORT 0 or none: any free
port) with steady fake traffic, and prints ``ready PORT`` once it listens; the
browser test drives Chromium against it.  TENANTS (default 2): that many
virtual clusters in all, london and paris and ``tenant-NNN`` ones.
No Kafka is involved: the state is a MemoryStore, the traffic goes straight
into the gateway's Metrics.
"""

import sys

from vkafka.admin.app import admin_root
from vkafka.admin.dashboard import Dashboard, History
from vkafka.admin.users import UserChecker, parse_users
from vkafka.auth.tokens import TokenAuthority
from vkafka.metrics import Metrics
from vkafka.proxy.topology import Topology
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore
from vkafka.tenancy.naming import TOPIC
from vkafka.tenancy.vclusters import VirtualClusters

USER, PASSWORD = "admin", "dashpw"
HISTORY_POINTS = 120
"""Points of history the served dashboard keeps (one every 0.5 s)."""
TOPICS = {"london": ["londonTopic", "orders", "payments"],
          "paris": ["parisTopic", "clicks"]}
MAPPINGS = {"london": [("existingLondonTopic", "existingLondonTopic", False),
                       ("shared", "existingSharedTopic", True)],
            "paris": [("shared", "existingSharedTopic", True)]}
CONNECTIONS = {"london": 3, "paris": 2, "unauthenticated": 1}
LIMITS = {"london": {"capacity": {"connections": 4, "topics": 5, "partitions": 40},
                     "rates": {"produceBytesPerSecond": 250_000,
                               "fetchBytesPerSecond": 200_000}},
          "paris": {"capacity": {"topics": 20},
                    "rates": {"fetchBytesPerSecond": 1_000_000}}}
PARTITIONS = 6
"""Partitions of every physical topic in the listing."""
THROTTLED = 0.03
"""Seconds london's clients are held per tick (10 ticks a second)."""


def filler(index):
    """The name of the *index*-th extra virtual cluster."""
    return f"tenant-{index:03d}"


def build(clock, tenants=2):
    """GatewayState, Topology and Metrics holding the two virtual clusters
    (and ``tenant-NNN`` ones up to *tenants*: a few topics and connections
    each, limits on every third)."""
    state = GatewayState(MemoryStore(), TokenAuthority("d" * 32, clock),
                         VirtualClusters(), clock)
    for vc in TOPICS:
        state.create_account(vc, "sa", 3600)
    state.create_account("london", "ops", 3600)
    for vc, limits in LIMITS.items():
        state.put_limits(vc, limits)
    extra = {}
    for index in range(tenants - len(TOPICS)):
        vc = filler(index)
        state.create_account(vc, "sa", 3600)
        extra[vc] = [f"topic{j}" for j in range(index % 4)]
        if index % 3 == 0:
            state.put_limits(vc, {"capacity": {"connections": 5, "topics": 3}})
    for vc, mappings in MAPPINGS.items():
        for logical, physical, read_only in mappings:
            state.put_mapping(vc, logical, {"physicalTopicName": physical,
                                            "readOnly": read_only,
                                            "concentrated": False})
    physical = {"existingLondonTopic", "existingSharedTopic", "_vkafka_state",
                "__consumer_offsets"}
    for vc, logical in {**TOPICS, **extra}.items():
        namespace = state.vclusters.namespace(vc)
        physical.update(namespace.physical(TOPIC, name) for name in logical)
    topology = Topology([("localhost", 29092)], "localhost", 6969, 3)
    topology.learn_listing(physical, clock(), dict.fromkeys(physical, PARTITIONS))
    metrics = Metrics()
    for label, count in CONNECTIONS.items():
        metrics.connections.labels(label).inc(count)
    for index, vc in enumerate(extra):
        metrics.connections.labels(vc).inc(index % 7)
    return state, topology, metrics


def usage(clock):
    """A usage provider: storage growing with time and consumer groups, none
    for every third extra virtual cluster (the dashboard shows "-")."""
    start = clock()

    def of(vc):
        if vc in TOPICS:
            grown = 100_000 * (clock() - start)
            return {"london": {"storageBytes": 50_000_000 + grown, "consumerGroups": 3},
                    "paris": {"storageBytes": 20_000_000, "consumerGroups": 12}}[vc]
        index = int(vc.rpartition("-")[2])
        if index % 3 == 1:
            return None
        return {"storageBytes": index * 1_000_000, "consumerGroups": index % 5}
    return of


def traffic(metrics, tenants=2):
    """One tick of fake traffic: london produces (and is throttled), paris
    mostly fetches, the extra virtual clusters produce a little."""
    london, paris = metrics.for_connection("london"), metrics.for_connection("paris")
    extra = [metrics.for_connection(filler(index))
             for index in range(tenants - len(TOPICS))]
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
        metrics.throttled.labels("london").inc(THROTTLED)
        for index, connection in enumerate(extra):
            connection.request("Produce", 10 * index)
    return tick


def main(port, tenants):
    from twisted.internet import reactor, task
    from twisted.web.server import Site

    state, topology, metrics = build(reactor.seconds, tenants)
    dashboard = Dashboard(state, metrics, topology, reactor, interval=0.5, window=2.0,
                          usage=usage(reactor.seconds),
                          history=History(size=HISTORY_POINTS, every=0.5))
    dashboard.startService()
    task.LoopingCall(traffic(metrics, tenants)).start(0.1)
    checker = UserChecker(parse_users(f"{USER}:{PASSWORD}", allow_plain=True))
    root = admin_root(state, checker, lambda: (None, {}), dashboard)
    listening = reactor.listenTCP(port, Site(root), interface="127.0.0.1")
    reactor.callWhenRunning(
        lambda: print(f"ready {listening.getHost().port}", flush=True))
    reactor.run()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0,
         int(sys.argv[2]) if len(sys.argv) > 2 else 2)
