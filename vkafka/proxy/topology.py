# -*- test-case-name: tests.test_tap,tests.test_splice -*-
"""What the gateway knows of the cluster: broker addresses and the port map.

Port-per-broker: the gateway listens on ``start_port .. start_port +
port_count - 1`` and port ``start_port + (node_id - min_broker_id)`` stands
for broker ``node_id``.  Every broker address a client sees is rewritten to
that port on the advertised host, and a connection to that port is spliced
to that broker.
"""

from twisted.logger import Logger


def parse_servers(text):
    """``"h1:p1,h2:p2"`` -> ``[("h1", p1), ("h2", p2)]``."""
    servers = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"bad server address {item!r}: expected host:port")
        servers.append((host.strip("[]"), int(port)))
    if not servers:
        raise ValueError("no bootstrap servers given")
    return servers


class TopicIds(dict):
    """Topic id -> physical name.  An id not known here calls ``on_unknown``
    (a gateway cluster: a client's Fetch reaches gateways its Metadata did not
    pass through, so they have not learnt a new topic's id from it)."""

    __slots__ = ("on_unknown",)

    def __init__(self):
        super().__init__()
        self.on_unknown = None

    def get(self, key, default=None):
        found = dict.get(self, key, self)
        if found is self:
            if self.on_unknown is not None:
                self.on_unknown()
            return default
        return found


class Topology:
    """Broker addresses learnt from metadata, and the gateway's port map."""

    log = Logger()

    def __init__(self, bootstrap, advertised_host, start_port, port_count,
                 min_broker_id=None, sni=None):
        self.bootstrap = list(bootstrap)
        self.sni = sni
        """A SniRouter when one TLS port serves every broker, chosen by host name."""
        self.advertised_host = advertised_host
        self.start_port = start_port
        self.port_count = port_count
        self.min_broker_id = min_broker_id
        self.brokers = {}
        self.unlisted = frozenset()
        """Brokers the gateway's last full broker list lacked (fenced: stopped,
        wedged or gone); tried last (``upstream_candidates``)."""
        self.topic_ids = TopicIds()
        """Topic id -> physical name, learnt from every answer that pairs them."""
        self.topic_names = set()
        """Every physical topic name, from full listings and creations seen."""
        self.partitions = {}
        """Physical topic name -> its partition count, from the same (capacity
        limits, tenancy/policy.py)."""
        self.reserved = {}
        """Physical topic -> (partitions, until): creations (and partition
        increases) admitted under a tenant's capacity limit whose answer has
        not come back; they count as held until it has, or until *until*."""
        self.listing_at = None
        """When a full topic listing last replaced ``topic_names``."""
        self._api_versions = None
        self.api_versions_learnt = []
        """Called with the brokers' answer each time it is learnt (the gateway
        narrows its table to what the brokers offer)."""
        self.names_version = 0
        """Bumped whenever the topic set (or a partition count) is seen to change."""
        self._warned = set()

    @property
    def api_versions(self):
        """The brokers' ApiVersions answer (v4, decoded), learnt by the gateway's
        own refresh: tenants are answered from it before they authenticate."""
        return self._api_versions

    @api_versions.setter
    def api_versions(self, response):
        self._api_versions = response
        for learnt in self.api_versions_learnt:
            learnt(response)

    @property
    def ports(self):
        if self.sni is not None:
            return range(self.start_port, self.start_port + 1)
        return range(self.start_port, self.start_port + self.port_count)

    def learn(self, brokers):
        """Record ``(node_id, host, port)`` triples seen in a broker's answer."""
        for node_id, host, port in brokers:
            self.brokers[node_id] = (host, port)
        if self.min_broker_id is None and self.brokers:
            # Fixed once, so ports never shift while the gateway runs.
            self.min_broker_id = min(self.brokers)
            self.log.info("port map: broker {base} on port {port}",
                          base=self.min_broker_id, port=self.start_port)

    def learn_listed(self, node_ids):
        """The brokers a full broker list (the refresher's Metadata) names:
        the cluster's own view of which are alive.  A broker left out is
        tried last, so a stopped or wedged one, which may still take
        connections, holds no bootstrap connection or lookup while others
        answer."""
        unlisted = frozenset(self.brokers.keys() - set(node_ids))
        if unlisted != self.unlisted:
            self.log.info("brokers not listed by the cluster: {ids}", ids=sorted(unlisted))
            self.unlisted = unlisted

    def live_brokers(self):
        """``{node id: (host, port)}`` of the brokers the cluster lists."""
        return {n: a for n, a in self.brokers.items() if n not in self.unlisted}

    def learn_listing(self, names, now, partitions=None):
        """A full listing of the cluster's topics (all-topics Metadata), with
        their partition counts if known."""
        if partitions is not None:
            self.partitions = dict(partitions)
        names = set(names)
        if names != self.topic_names:
            self.topic_names = names
            self.names_version += 1
        self.listing_at = now

    def learn_listed_ids(self, listed):
        """The topic ids of a full listing (id -> name): learnt, and ids that
        two listings in a row lack (deleted topics') forgotten, so topics
        created and deleted for ever do not grow the map for ever.  An id
        learnt since the last listing began may be missing from it (a topic
        created a moment ago): it is kept until the next one."""
        ids = self.topic_ids
        ids.update(listed)
        missing = ids.keys() - listed.keys()
        for gone in missing & self._unlisted:
            dict.pop(ids, gone, None)
        self._unlisted = missing - self._unlisted

    _unlisted = frozenset()

    def learn_topic(self, name, exists=True, partitions=None):
        """One topic seen created (or deleted) through this gateway."""
        if not exists:
            self.partitions.pop(name, None)
        elif partitions is not None and partitions > 0:
            self.partitions[name] = partitions
        if exists and name not in self.topic_names:
            self.topic_names.add(name)
            self.names_version += 1
        elif not exists and name in self.topic_names:
            self.topic_names.discard(name)
            self.names_version += 1

    def reserve(self, name, partitions, until):
        self.reserved[name] = (partitions, until)

    def release(self, names):
        for name in names:
            self.reserved.pop(name, None)

    def topics_changed(self):
        """Topics changed in a way names do not show (partitions added)."""
        self.names_version += 1

    def gateway_address(self, node_id):
        """The (host, port) clients must use for *node_id*, or None."""
        if self.sni is not None:
            return self.sni.host_for(node_id), self.start_port
        if self.min_broker_id is None:
            return None
        offset = node_id - self.min_broker_id
        if 0 <= offset < self.port_count:
            return self.advertised_host, self.start_port + offset
        if node_id not in self._warned:
            self._warned.add(node_id)
            self.log.error(
                "broker {node} has no gateway port (ports {first}..{last} cover "
                "brokers {low}..{high}); raise the port count",
                node=node_id, first=self.start_port, last=self.ports[-1],
                low=self.min_broker_id, high=self.min_broker_id + self.port_count - 1,
            )
        return None

    def node_for(self, port, server_name=None):
        """The broker a client connection stands for: by SNI name or by port."""
        if self.sni is not None:
            return self.sni.node_for(server_name)
        return self.node_for_port(port)

    def node_for_port(self, port):
        if self.min_broker_id is None or port not in self.ports:
            return None
        return self.min_broker_id + (port - self.start_port)

    def upstream_candidates(self, node_id):
        """Broker addresses to try, in order, for a connection meant for *node_id*.

        The broker itself first.  Should it be unknown or down, any other
        broker will do: Kafka brokers check leadership and coordinatorship on
        every request and answer NOT_LEADER / NOT_COORDINATOR, which makes a
        client refresh its metadata; so a fallback never misdelivers, and any
        gateway port works as a bootstrap.  Brokers the cluster no longer
        lists (``unlisted``) come after those it does, even for their own
        port: clients learn only listed brokers, so what still reaches an
        unlisted one's port is a bootstrap.
        """
        seen = []
        if node_id is not None and node_id in self.brokers and \
                node_id not in self.unlisted:
            seen.append(self.brokers[node_id])
        listed = [a for n, a in self.brokers.items() if n not in self.unlisted]
        unlisted = [a for n, a in self.brokers.items() if n in self.unlisted]
        for address in listed + unlisted + self.bootstrap:
            if address not in seen:
                seen.append(address)
        return seen
