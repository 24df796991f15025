# -*- test-case-name: tests.test_membership -*-
"""Which gateways are alive, and which of them each client is sent to.

Every gateway says it is alive once a second with a ``gateway/<id>`` record
of the state topic (its cluster id, advertised host, ports, rack); every
gateway follows the topic, so each knows the others without any other
service.  A gateway is dead when nothing came from it for ``DEAD_AFTER``
seconds (a SIGKILL is known within about 4 s), or at once when its last
record says it is leaving (a SIGTERM, ``proxy/leave.py``).  Time is this
gateway's clock when a record arrives, so clocks of other hosts need not
agree; records read while catching up at start count from the time they
carry.

Gateways of one cluster id form a cluster: each client is given brokers
mapped over its live nodes (``assign``): balanced (a client's brokers are
spread evenly), stable for the client while membership is unchanged (the
same on every node, from the client's key alone), and moving few brokers
when a node joins or leaves (rendezvous hashing), preferring nodes of the
client's rack when ``rack`` is set.
"""

import hashlib
import math
from dataclasses import dataclass

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

BEAT_EVERY = 1.0
DEAD_AFTER = 3.5
"""Seconds without a record after which a gateway counts as dead."""
PREFIX = "gateway/"


@dataclass(frozen=True)
class Node:
    """A gateway of the cluster, as its records describe it."""

    id: str
    host: str
    port: int
    """Its start port (the bootstrap, and the first broker's)."""
    ports: int
    min_broker: int
    rack: str | None = None

    def address(self, broker_id):
        """Where this node serves *broker_id*, or None (no port for it)."""
        offset = broker_id - self.min_broker
        if 0 <= offset < self.ports:
            return self.host, self.port + offset
        return None

    @classmethod
    def from_record(cls, node_id, value):
        try:
            return cls(node_id, str(value["host"]), int(value["port"]),
                       int(value["ports"]), int(value["minBroker"]), value.get("rack"))
        except (KeyError, TypeError, ValueError):
            return None  # a gateway that is not (yet) in a cluster


def _weight(key, broker, node_id):
    digest = hashlib.blake2b(f"{key}\0{broker}\0{node_id}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(key, brokers, nodes, rack=None):
    """Broker id -> Node for the client *key*: a pure function, so every
    gateway answers a client alike.  Each node takes at most its fair share
    of the client's brokers; within that, the node that weighs most for
    (key, broker) wins, nodes of *rack* first."""
    if not nodes:
        return {}
    local = [n for n in nodes if rack is not None and n.rack == rack]
    pool = local or list(nodes)
    cap = math.ceil(len(brokers) / len(pool))
    load = dict.fromkeys((n.id for n in pool), 0)
    mapping = {}
    for broker in sorted(brokers):
        ranked = sorted(pool, key=lambda n: _weight(key, broker, n.id), reverse=True)
        node = next(n for n in ranked if load[n.id] < cap)
        load[node.id] += 1
        mapping[broker] = node
    return mapping


class Membership:
    """This gateway's beats, and the live gateways it hears of."""

    log = Logger()

    def __init__(self, node_id, store, clock, describe, cluster_id=None, rack=None,
                 advertise=True, node=None):
        self.node_id = node_id
        self.node = node or node_id
        """The node this gateway stands for in the mapping: the workers of one
        supervisor (vkafka/workers.py) beat each under its own id, alive
        for the rate shares, and are one node here."""
        self.store = store
        self.clock = clock
        self.describe = describe
        """``() -> {"host", "port", "ports", "minBroker"}`` of this gateway now
        (minBroker None until the port map is fixed)."""
        self.cluster_id = cluster_id
        self.rack = rack
        self.advertise = advertise
        """Map clients over the cluster (False: each gateway advertises itself)."""
        self.leaving = False
        self.seen = {}
        """gateway id -> (its last record, when it arrived here)."""
        self._loop = None
        self._noted = ()
        self._mappings = {}
        """(client key, brokers, nodes) -> its mapping: computed once, not per
        broker of each answer."""
        store.subscribe(self.apply)

    # following the store

    def apply(self, key, value):
        if not key.startswith(PREFIX):
            return
        node_id = key[len(PREFIX):]
        if not isinstance(value, dict):
            self.seen.pop(node_id, None)
            return
        now = self.clock()
        ready = getattr(self.store.ready, "called", True)
        at = value.get("at", 0)
        arrived = now if ready else min(now, at if isinstance(at, (int, float)) else 0)
        self.seen[node_id] = (value, arrived)
        if node_id != self.node_id:
            self._note()

    def _note(self):
        """Log the cluster's nodes when they changed (a join, a leave, a death)."""
        nodes = self.nodes()
        if nodes != self._noted:
            self._noted = nodes
            self._mappings.clear()
            if self.cluster_id is not None:
                self.log.info("gateway cluster {cluster}: {nodes}",
                              cluster=self.cluster_id,
                              nodes=", ".join(n.id for n in nodes) or "(none)")

    # liveness

    def alive(self):
        """Ids of the gateways alive now (any cluster), this one included."""
        now = self.clock()
        found = {gw for gw, (value, arrived) in self.seen.items()
                 if now - arrived < DEAD_AFTER and not value.get("leaving")}
        found.add(self.node_id)
        return found

    def nodes(self):
        """The live nodes of this gateway's cluster, sorted by id (this one
        unless it is leaving); empty outside cluster mode."""
        if self.cluster_id is None or not self.advertise:
            return ()
        now = self.clock()
        found = {}
        for gw, (value, arrived) in sorted(self.seen.items()):
            node_id = value.get("node") or gw
            if gw == self.node_id or node_id == self.node or node_id in found:
                continue
            if now - arrived < DEAD_AFTER and not value.get("leaving") \
                    and value.get("cluster") == self.cluster_id:
                node = Node.from_record(node_id, value)
                if node is not None:
                    found[node_id] = node
        if not self.leaving:
            own = Node.from_record(self.node, self.record())
            if own is not None:
                found[self.node] = own
        return tuple(sorted(found.values(), key=lambda n: n.id))

    # the mapping

    def mapping(self, key, brokers):
        """Broker id -> Node for the client *key*, or {} (advertise self)."""
        nodes = self.nodes()
        if len(nodes) < 2 and all(n.id == self.node for n in nodes):
            return {}
        cache_key = (key, tuple(sorted(brokers)), nodes)
        found = self._mappings.get(cache_key)
        if found is None:
            if len(self._mappings) >= 4096:
                self._mappings.clear()
            # With racks: the client reached this gateway, so this rack is its own.
            found = self._mappings[cache_key] = assign(key, brokers, nodes, self.rack)
        return found

    # beating

    def record(self):
        cluster = self.cluster_id if self.advertise else None  # not a node to map to
        value = {"at": self.clock(), "cluster": cluster, "rack": self.rack,
                 **self.describe()}
        if self.node != self.node_id:
            value["node"] = self.node
        if self.leaving:
            value["leaving"] = True
        return value

    def beat(self):
        self._note()  # deaths are noticed by time, not by a record
        d = self.store.put(PREFIX + self.node_id, self.record())
        d.addErrback(lambda f: self.log.debug("membership: cannot publish: {why}",
                                              why=f.getErrorMessage()))
        return d

    def start(self, reactor):
        self._loop = LoopingCall(self.beat)
        self._loop.clock = reactor
        self._loop.start(BEAT_EVERY, now=True)

    def stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def leave(self):
        """Stop being advertised: every gateway drops this one at its next
        Metadata answer (the record says so; no timeout to wait for)."""
        self.leaving = True
        return self.beat()
