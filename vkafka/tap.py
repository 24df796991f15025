# -*- test-case-name: tests.test_tap -*-
"""``twistd vkafka``: options and the service tree.

Every option can also come from an environment variable (the demo's names
where the demo has one); a command-line option wins over the environment.
"""

import os
import socket

from twisted.application import internet, service
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from .protocol.framing import DEFAULT_MAX_FRAME_SIZE

log = Logger(namespace="vkafka.tap")

# option name, environment variable, default, converter, help
SETTINGS = [
    ("bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", str,
     "Kafka brokers to bootstrap from, host:port[,host:port...]"),
    ("advertised-host", "GATEWAY_ADVERTISED_HOST", "localhost", str,
     "Host name clients use to reach this gateway"),
    ("bind-host", "GATEWAY_BIND_HOST", "0.0.0.0", str,
     "Interface the Kafka and admin ports listen on"),
    ("start-port", "GATEWAY_START_PORT", 6969, int,
     "First Kafka port; port start+i stands for broker min-broker-id+i"),
    ("port-count", "GATEWAY_PORT_COUNT", 6, int,
     "How many Kafka ports to open (brokers plus spares for brokers added later)"),
    ("min-broker-id", "GATEWAY_MIN_BROKERID", None, int,
     "Broker id served on the start port (default: lowest id seen at start)"),
    ("security-protocol", "GATEWAY_SECURITY_PROTOCOL", "PLAINTEXT", str,
     "Client-side security protocol: PLAINTEXT or SSL (passthrough), SASL_PLAINTEXT "
     "or SASL_SSL (virtual clusters, with multi-tenancy on)"),
    ("multi-tenancy", "GATEWAY_FEATURE_FLAGS_MULTI_TENANCY", "false", str,
     "Virtual clusters (true/false); needs SASL_PLAINTEXT or SASL_SSL"),
    ("ssl-certificate", "GATEWAY_SSL_CERTIFICATE_FILE", None, str,
     "PEM certificate chain (leaf first) of the SSL/SASL_SSL client listeners"),
    ("ssl-key", "GATEWAY_SSL_KEY_FILE", None, str,
     "PEM private key of --ssl-certificate"),
    ("routing", "GATEWAY_ROUTING_MECHANISM", "port", str,
     "port: one port per broker; sni: one TLS port, the broker chosen by the "
     "host name the client asks for (needs SSL or SASL_SSL)"),
    ("sni-host-pattern", "GATEWAY_SNI_HOST_PATTERN", None, str,
     "With --routing sni: advertised broker host names, {id} standing for the "
     "broker id (default: broker{id}.<advertised host>)"),
    ("backend-security-protocol", "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", str,
     "How the gateway connects to brokers: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ("backend-ssl-ca-file", "KAFKA_SSL_CA_FILE", None, str,
     "PEM CA certificates that sign the brokers' certificates (default: the "
     "system's trust store)"),
    ("backend-ssl-check-hostname", "KAFKA_SSL_CHECK_HOSTNAME", "true", str,
     "Verify that a broker's certificate names the host connected to (true/false)"),
    ("backend-ssl-certificate", "KAFKA_SSL_CERTIFICATE_FILE", None, str,
     "PEM client certificate the gateway shows brokers (mutual TLS)"),
    ("backend-ssl-key", "KAFKA_SSL_KEY_FILE", None, str,
     "PEM private key of --backend-ssl-certificate"),
    ("backend-sasl-username", "KAFKA_SASL_USERNAME", None, str,
     "The gateway's own SASL/PLAIN user on the brokers"),
    ("backend-sasl-password", "KAFKA_SASL_PASSWORD", None, str,
     "The gateway's own SASL/PLAIN password on the brokers"),
    ("token-secret", "GATEWAY_USER_POOL_SECRET_KEY", None, str,
     "Secret (32+ characters) that signs tenant tokens; the same on every gateway"),
    ("previous-token-secrets", "GATEWAY_USER_POOL_PREVIOUS_SECRET_KEYS", None, str,
     "Former token secrets, comma-separated: tokens they signed are still "
     "accepted, new ones are signed with --token-secret (rotation)"),
    ("max-frame-size", "GATEWAY_MAX_FRAME_SIZE", DEFAULT_MAX_FRAME_SIZE, int,
     "Largest request frame accepted from a client, in bytes"),
    ("admin-port", "GATEWAY_HTTP_PORT", 8888, int, "Port of the admin HTTP API"),
    ("admin-tls", "GATEWAY_HTTP_TLS", "false", str,
     "Serve the admin port (API, /health, /metrics, dashboard) over HTTPS with "
     "--ssl-certificate and --ssl-key (true/false)"),
    ("admin-users", "GATEWAY_ADMIN_API_USERS", None, str,
     "Admin users, name:bcrypt-hash[:ro],... (none: a random admin password is logged)"),
    ("admin-allow-plain", "GATEWAY_ADMIN_ALLOW_PLAIN_PASSWORDS", "false", str,
     "Accept plain-text admin passwords in --admin-users (true/false; demos only)"),
    ("authentication-timeout", "GATEWAY_AUTHENTICATION_TIMEOUT_SECONDS", 10.0, float,
     "Seconds a client has to authenticate before it is disconnected"),
    ("unauthenticated-frame-size", "GATEWAY_UNAUTHENTICATED_MAX_FRAME_SIZE", 16384,
     int, "Largest frame accepted before authentication, and of any SASL frame "
     "(a re-authentication too), in bytes (a login with a token takes under 1 "
     "KiB; each connection not yet logged in may hold this much)"),
    ("max-connections-per-ip", "GATEWAY_MAX_CONNECTIONS_PER_IP", 1000, int,
     "Open Kafka connections allowed from one client address"),
    ("max-connections-per-vcluster", "GATEWAY_MAX_CONNECTIONS_PER_VCLUSTER", 1000, int,
     "Authenticated Kafka connections allowed per virtual cluster, on this gateway"),
    ("max-decoded-request", "GATEWAY_MAX_DECODED_REQUEST_SIZE", 1048576, int,
     "Largest tenant request the gateway decodes and rewrites on its event loop, in "
     "bytes (Produce and Fetch are sliced, not decoded; Metadata is held to a "
     "quarter of this; a Produce to concentrated topics, decoded there, may exceed "
     "it by 64 KiB and is answered MESSAGE_TOO_LARGE past that); larger ones "
     "close the connection"),
    ("max-decoded-response", "GATEWAY_MAX_DECODED_RESPONSE_SIZE", 8388608, int,
     "Largest broker answer to a tenant the gateway decodes and rewrites on its "
     "event loop, in bytes (Fetch and Produce answers are sliced or streamed, "
     "not decoded); a larger one closes the client's connection as its size "
     "arrives, before it is read: a small request can ask for a huge answer "
     "(DescribeConfigs naming one topic thousands of times)"),
    ("max-fetch-sessions", "GATEWAY_MAX_FETCH_SESSIONS", 250, int,
     "Broker fetch sessions one virtual cluster's connections to one broker may "
     "hold through this gateway, split evenly over its workers (each takes a slot "
     "of the broker's session cache, 1,000 by default, shared by every tenant); "
     "past it, and past 4 on one connection, a full fetch goes on sessionless"),
    ("tenant-loop-share", "GATEWAY_TENANT_LOOP_SHARE", 0.25, float,
     "Seconds of event-loop work per second one virtual cluster's decoded "
     "requests and answers may take on a gateway process (0 to 1; 0: no limit), "
     "partitions it creates or deletes counting 4 ms each, logins 2 ms; beyond it "
     "the connection's reads are held (vkafka_throttle_seconds)"),
    ("tenant-request-buffer", "GATEWAY_TENANT_REQUEST_BUFFER", 64 * 1024 * 1024, int,
     "Bytes of requests one virtual cluster's connections may make a gateway "
     "process hold at once: those being received (the sizes their prefixes "
     "announce) and those a broker has not taken yet; past it a connection "
     "starting another waits until room is made (a request larger than this is "
     "read when the virtual cluster holds nothing else)"),
    ("tenant-answer-buffer", "GATEWAY_TENANT_ANSWER_BUFFER", 64 * 1024 * 1024, int,
     "Bytes of broker answers one virtual cluster's connections may make a "
     "gateway process hold at once: those being received whole (streamed Fetch "
     "answers are not), those waiting their turn behind one being rewritten, "
     "and those its clients have not read yet; past it the "
     "next answer waits, its broker connection not read, until room is made"),
    ("tuning", "GATEWAY_PROCESS_TUNING", "true", str,
     "Apply the process-wide tuning of vkafka/tuning.py (GIL switch interval, "
     "allocator, lean epoll dispatch) (true/false; tests run without it)"),
    ("state-topic", "GATEWAY_STATE_TOPIC", "_vkafka_state", str,
     "Compacted topic that holds the gateways' shared state"),
    ("usage-topic", "GATEWAY_USAGE_TOPIC", "_vkafka_usage", str,
     "Compacted topic where the gateways write each virtual cluster's traffic by "
     "hour (kept 35 days; docs/governance.md, Usage)"),
    ("audit-topic", "GATEWAY_AUDIT_TOPIC", "_vkafka_audit", str,
     "Topic of the audit log: admin writes with their result and sampled refused "
     "authorizations, from every gateway (kept 7 days; docs/rights.md)"),
    ("gateway-cluster-id", "GATEWAY_CLUSTER_ID", None, str,
     "Gateways with the same cluster id (and state topic) form one cluster: they "
     "find each other through the state topic and each client is sent to brokers "
     "spread over the live gateways (none: this gateway is on its own)"),
    ("advertise", "GATEWAY_ADVERTISE", "cluster", str,
     "cluster: with --gateway-cluster-id, broker addresses are mapped over the "
     "cluster's live gateways; self: this gateway advertises only itself (an "
     "external load balancer or DNS name spreads clients)"),
    ("rack", "GATEWAY_RACK_ID", None, str,
     "This gateway's rack (zone); in a cluster, its clients are sent to gateways "
     "of the same rack while one is alive"),
    ("drain-timeout", "GATEWAY_DRAIN_TIMEOUT_SECONDS", 10.0, float,
     "Seconds a cluster gateway stopping (SIGTERM) takes to hand its clients over "
     "to the others before it closes what is left (0: close at once)"),
    ("workers", "GATEWAY_WORKERS", "cores", str,
     "Gateway processes sharing the Kafka ports (SO_REUSEPORT, Linux): this "
     "process then supervises them and serves the admin port, summing their "
     "metrics (cores: one per CPU core; 1: one process, no supervisor; "
     "docs/operations.md, Workers)"),
    ("refresh-interval", "GATEWAY_METADATA_REFRESH_SECONDS", 30.0, float,
     "Seconds between the gateway's own metadata refreshes"),
    ("metadata-cache", "GATEWAY_METADATA_CACHE_SECONDS", 1.0, float,
     "Seconds a tenant's all-topics Metadata answer is reused (0: never); topic and "
     "mapping changes seen by this gateway end it sooner"),
]


STATE_TOPIC_CONFIGS = {"segment.ms": str(3600 * 1000)}
"""Should a gateway create the state topic: segments rolled hourly, so that
compaction keeps it small although every gateway writes there every second
(membership, rate shares); a gateway starting reads little more than the
live records."""


def markdown_settings():
    """docs/configuration.md, generated from SETTINGS so that it cannot drift."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `python -m vkafka.tap` from the `SETTINGS` table of",
        "`vkafka/tap.py`; a test fails if this file and the code disagree.",
        "",
        "Each setting comes, in order of precedence, from the command line",
        "(`twistd vkafka --name value`), its environment variable, a YAML file given",
        "with `--config FILE` (or `GATEWAY_CONFIG_FILE`; keys are the option names,",
        "e.g. `start-port: 7969`; a YAML list stands for a comma-separated value),",
        "then the default. An unknown key, a bad value or an inconsistent combination",
        "stops the start with a message naming the setting and where it came from.",
        "`twistd vkafka --help` prints the same list.",
        "",
        "| option | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    rows = [*SETTINGS, ("config", "GATEWAY_CONFIG_FILE", None, str,
                        "YAML file of the settings above (keys: option names)")]
    for name, env, default, _, text in rows:
        shown = "none" if default is None else f"`{default}`"
        text = text.replace("|", "/").replace("<", "&lt;").replace(">", "&gt;")
        lines.append(f"| `--{name}` | `{env}` | {shown} | {text} |")
    return "\n".join(lines) + "\n"


class StoreService(service.Service):
    """Starts and stops the state store with the gateway."""

    def __init__(self, store):
        self.store = store

    def startService(self):
        super().startService()
        self.store.start()

    def stopService(self):
        super().stopService()
        self.store.stop()


class RateSharesService(service.Service):
    """Splits tenants' rate limits with the other gateways every second."""

    def __init__(self, shares, reactor):
        self.shares = shares
        self.reactor = reactor

    def startService(self):
        super().startService()
        self.shares.start(self.reactor)

    def stopService(self):
        super().stopService()
        self.shares.stop()


class MembershipService(service.Service):
    """Says this gateway is alive every second (state/membership.py)."""

    def __init__(self, membership, reactor):
        self.membership = membership
        self.reactor = reactor

    def startService(self):
        super().startService()
        self.membership.start(self.reactor)

    def stopService(self):
        super().stopService()
        self.membership.stop()


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _flag(options, name):
    value = str(options[name]).lower()
    if value not in _TRUE + _FALSE:
        raise usage.UsageError(f"--{name}: expected true or false, not "
                               f"{options[name]!r}")
    return value in _TRUE


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("vkafka: a Kafka gateway. Options also come from the environment "
                "variables named in brackets; options win.")
    optParameters = [
        [name, None, None, f"{text} [{env}] (default: {default})"]
        for name, env, default, _, text in SETTINGS
    ] + [["config", None, None, "YAML file of settings (keys are the option names); "
          "command line > environment > this file > defaults [GATEWAY_CONFIG_FILE]"]]

    def __init__(self, environ=None):
        super().__init__()
        self.environ = os.environ if environ is None else environ

    def _config_file(self):
        path = self["config"] or self.environ.get("GATEWAY_CONFIG_FILE")
        if not path:
            return {}, None
        import yaml
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            raise usage.UsageError(f"--config {path}: {e}")
        if not isinstance(data, dict):
            raise usage.UsageError(f"--config {path}: expected a mapping of settings")
        unknown = sorted(set(data) - {name for name, *_ in SETTINGS})
        if unknown:
            raise usage.UsageError(f"--config {path}: unknown setting(s) "
                                   f"{', '.join(map(str, unknown))}")
        return data, path

    def postOptions(self):
        from_file, path = self._config_file()
        self.resolved = {}
        """Environment variable -> the value given (command line, environment
        or file, unconverted): a worker process's settings."""
        for name, env, default, convert, _ in SETTINGS:
            raw = self[name]
            source = f"--{name}"
            if raw is None and env in self.environ:
                raw, source = self.environ[env], env
            if raw is None and name in from_file:
                value = from_file[name]
                if isinstance(value, list):  # a YAML list: the comma-separated form
                    value = ",".join(map(str, value))
                raw, source = str(value), f"{name} in {path}"
            if raw is None:
                self[name] = default
                continue
            self.resolved[env] = str(raw)
            try:
                self[name] = convert(raw)
            except ValueError:
                raise usage.UsageError(f"{source}: invalid value {raw!r}")
        self._check_security()
        for name in ("start-port", "port-count", "max-frame-size", "admin-port",
                     "authentication-timeout", "unauthenticated-frame-size",
                     "max-connections-per-ip", "max-connections-per-vcluster",
                     "max-decoded-request", "max-decoded-response",
                     "max-fetch-sessions", "tenant-request-buffer",
                     "tenant-answer-buffer"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")
        if not 0 <= self["tenant-loop-share"] <= 1:
            raise usage.UsageError("--tenant-loop-share must be between 0 and 1")
        self["admin-allow-plain"] = _flag(self, "admin-allow-plain")
        self["tuning"] = _flag(self, "tuning")
        self._check_workers()
        from .admin.users import parse_users
        try:
            self["users"] = parse_users(self["admin-users"], self["admin-allow-plain"])
        except ValueError as e:
            raise usage.UsageError(f"--admin-users / GATEWAY_ADMIN_API_USERS: {e}")
        from .names import GATEWAY_TOPIC_PREFIX, valid_topic_name
        for name in ("state-topic", "usage-topic", "audit-topic"):
            if not (valid_topic_name(self[name])
                    and self[name].startswith(GATEWAY_TOPIC_PREFIX)):
                raise usage.UsageError(f"--{name}: must be a topic name starting "
                                       f"with {GATEWAY_TOPIC_PREFIX}")
        if self["advertise"] not in ("cluster", "self"):
            raise usage.UsageError(f"--advertise: expected cluster or self, not "
                                   f"{self['advertise']!r}")
        if self["drain-timeout"] < 0:
            raise usage.UsageError("--drain-timeout must not be negative")
        if self["gateway-cluster-id"] is not None and self["advertise"] == "cluster" \
                and self["routing"] == "sni":
            raise usage.UsageError(
                "--gateway-cluster-id with --routing sni: the brokers' host names "
                "are the same on every gateway; give them one DNS name and use "
                "--advertise self")
        if self["usage-topic"] == self["state-topic"]:
            raise usage.UsageError("--usage-topic: must not be the --state-topic")
        if self["audit-topic"] in (self["state-topic"], self["usage-topic"]):
            raise usage.UsageError("--audit-topic: must not be the --state-topic "
                                   "or the --usage-topic")
        from .proxy.topology import parse_servers
        try:
            self["servers"] = parse_servers(self["bootstrap-servers"])
        except ValueError as e:
            raise usage.UsageError(f"--bootstrap-servers: {e}")

    def _check_workers(self):
        from .workers import default_workers
        if self["workers"] == "cores":
            self["workers"] = default_workers()
            return
        try:
            self["workers"] = int(self["workers"])
        except ValueError:
            raise usage.UsageError(f"--workers / GATEWAY_WORKERS: expected a number "
                                   f"or cores, not {self['workers']!r}")
        if not 1 <= self["workers"] <= 256:
            raise usage.UsageError("--workers / GATEWAY_WORKERS: from 1 to 256")
        if self["workers"] > 1 and not hasattr(socket, "SO_REUSEPORT"):
            raise usage.UsageError("--workers above 1 needs SO_REUSEPORT (Linux)")

    def _check_security(self):
        """Client and broker side security; certificates are loaded now, so a
        bad file stops the start with the setting's name."""
        from .proxy import security

        protocol = self["security-protocol"]
        if protocol not in security.SECURITY_PROTOCOLS:
            raise usage.UsageError(
                f"--security-protocol / GATEWAY_SECURITY_PROTOCOL: {protocol!r} is "
                f"not one of {', '.join(security.SECURITY_PROTOCOLS)}")
        self["multi-tenancy"] = _flag(self, "multi-tenancy")
        sasl = security.uses_sasl(protocol)
        if sasl != self["multi-tenancy"]:
            raise usage.UsageError(
                "virtual clusters need GATEWAY_SECURITY_PROTOCOL=SASL_PLAINTEXT or "
                "SASL_SSL and GATEWAY_FEATURE_FLAGS_MULTI_TENANCY=true; PLAINTEXT "
                "and SSL run without them (passthrough)")
        if sasl and (not self["token-secret"] or len(self["token-secret"]) < 32):
            raise usage.UsageError(
                f"--token-secret / GATEWAY_USER_POOL_SECRET_KEY: a secret of at least "
                f"32 characters is required with {protocol} (the same on every "
                f"gateway)")
        previous = tuple(s.strip() for s in (self["previous-token-secrets"] or "")
                         .split(",") if s.strip())
        for i, secret in enumerate(previous, 1):
            if len(secret) < 32:
                raise usage.UsageError(
                    f"--previous-token-secrets / GATEWAY_USER_POOL_PREVIOUS_SECRET_KEYS:"
                    f" secret {i} is shorter than 32 characters")
        self["previous-secrets"] = previous
        self["admin-tls"] = _flag(self, "admin-tls")
        try:
            self["server-tls"] = None
            if security.uses_tls(protocol) or self["admin-tls"]:
                if not (self["ssl-certificate"] and self["ssl-key"]):
                    raise usage.UsageError(
                        f"--ssl-certificate and --ssl-key (GATEWAY_SSL_CERTIFICATE_FILE, "
                        f"GATEWAY_SSL_KEY_FILE) are required with "
                        f"{protocol if security.uses_tls(protocol) else '--admin-tls'}")
                self["server-tls"] = security.server_tls_options(
                    self["ssl-certificate"], self["ssl-key"])
            if self["routing"] not in ("port", "sni"):
                raise usage.UsageError(f"--routing: expected port or sni, not "
                                       f"{self['routing']!r}")
            self["sni"] = None
            if self["routing"] == "sni":
                if not security.uses_tls(protocol):
                    raise usage.UsageError("--routing sni needs an SSL or SASL_SSL "
                                           "--security-protocol")
                self["sni"] = security.SniRouter(
                    self["sni-host-pattern"] or f"broker{{id}}.{self['advertised-host']}")
            self["backend"] = security.BackendSecurity(
                self["backend-security-protocol"], self["backend-ssl-ca-file"],
                _flag(self, "backend-ssl-check-hostname"),
                self["backend-ssl-certificate"], self["backend-ssl-key"],
                self["backend-sasl-username"], self["backend-sasl-password"])
        except security.SecurityConfigError as e:
            raise usage.UsageError(str(e))


def makeService(config, reactor=None, worker=None):
    """The gateway's service tree; with ``--workers`` above 1 the
    supervisor's (vkafka/workers.py), and with *worker* (its index) one
    worker's: a gateway without the admin port, whose listeners share the
    Kafka ports and whose ``report()`` answers the supervisor."""
    if reactor is None:
        from twisted.internet import reactor
    if worker is None and config["workers"] > 1:
        return _supervisor(config, reactor)
    from .admin.app import AdminSite, admin_root
    from .admin.users import UserChecker, generated_admin
    from .proxy.discovery import Refresher
    from .filters.shares import RateShares
    from .proxy.gateway import Gateway
    from .proxy.topology import Topology
    from .tenancy.rules import passthrough_rules, tenant_rules

    tenancy = None
    rules = passthrough_rules()
    if config["multi-tenancy"]:
        from .auth.tokens import TokenAuthority
        from .tenancy.mode import Tenancy

        tenancy = Tenancy(TokenAuthority(config["token-secret"], reactor.seconds,
                                         previous_secrets=config["previous-secrets"]))
        rules = tenant_rules()
    topology = Topology(config["servers"], config["advertised-host"],
                        config["start-port"], config["port-count"],
                        config["min-broker-id"], sni=config["sni"])
    upstream = config["backend"].endpoint
    from .metrics import Metrics, MetricsResource

    metrics = Metrics()
    if config["tuning"]:
        from . import tuning
        log.info("process tuning applied: {applied}",
                 applied=", ".join(tuning.apply(reactor)))
    refresher = Refresher(reactor, topology, upstream,
                          all_topics=tenancy is not None)
    gateway = Gateway(reactor, topology, rules,
                      max_frame_size=config["max-frame-size"],
                      refresher=refresher, tenancy=tenancy,
                      authentication_timeout=config["authentication-timeout"],
                      unauthenticated_frame_size=config["unauthenticated-frame-size"],
                      max_connections_per_ip=config["max-connections-per-ip"],
                      max_connections_per_vcluster=config[
                          "max-connections-per-vcluster"],
                      max_decoded_request=config["max-decoded-request"],
                      max_decoded_response=config["max-decoded-response"],
                      max_fetch_sessions=config["max-fetch-sessions"],
                      metrics=metrics, endpoint_factory=upstream,
                      metadata_cache_seconds=config["metadata-cache"])
    if tenancy is not None:
        from .proxy.offload import CodecThread
        gateway.offload = CodecThread(reactor)
    if tenancy is not None:
        from .proxy.buffers import Buffers
        gateway.buffers = Buffers(config["tenant-request-buffer"],
                                  config["tenant-answer-buffer"])
    if tenancy is not None and config["tenant-loop-share"] > 0:
        from .filters.throttle import LoopShare
        gateway.loop_share = LoopShare(config["tenant-loop-share"], reactor.seconds,
                                        reactor.callLater)
    from .proxy.leave import LeavingService

    top = LeavingService(reactor)
    top.gateway, top.timeout = gateway, config["drain-timeout"]
    bind = config["bind-host"]

    def listen(port, factory, tls=None, shared=False):
        if shared:
            from .workers import ReusePortEndpoint
            endpoint = ReusePortEndpoint(reactor, port, bind, tls)
        elif tls is None:
            endpoint = TCP4ServerEndpoint(reactor, port, interface=bind)
        else:
            endpoint = SSL4ServerEndpoint(reactor, port, tls, interface=bind)
        svc = internet.StreamServerEndpointService(endpoint, factory)
        svc._raiseSynchronously = True  # a port in use stops the start (as strports)
        svc.setServiceParent(top)
        return svc

    for port in topology.ports:
        top.listeners.append(listen(
            port, gateway.factory_for_port(port),
            config["server-tls"] if config["security-protocol"] in ("SSL", "SASL_SSL")
            else None, shared=worker is not None))
    node_id = gateway_id = f"{socket.gethostname()}:{config['start-port']}"
    if worker is not None:  # a gateway of its own for the rate shares; '/' is a separator
        gateway_id = f"{node_id}#{worker}"

    state = store = measured = None
    if tenancy is not None:
        from .state.kafka import KafkaStore
        from .state.model import GatewayState

        store = KafkaStore(reactor, topology, upstream, topic=config["state-topic"],
                           configs=STATE_TOPIC_CONFIGS)
        state = GatewayState(store, tenancy.authority, tenancy.vclusters,
                             reactor.seconds)
        state.revoked_listeners.append(gateway.close_revoked)
        tenancy.vclusters.unavailable_listeners.append(gateway.close_unavailable)
        gateway.state = state
        gateway.state_loaded = store.ready
        state.topic_exists = refresher.topic_exists
        state.create_topic = refresher.create_topic
        StoreService(store).setServiceParent(top)
        _membership(config, reactor, top, gateway, store, gateway_id, node_id)
        gateway.rate_shares = RateShares(
            gateway_id, state, reactor.seconds,
            metrics, lambda vc: gateway.per_vcluster.get(vc, 0), gateway.membership)
        RateSharesService(gateway.rate_shares, reactor).setServiceParent(top)
        measured = _usage(config, reactor, top, state, metrics, topology, refresher,
                          gateway_id, lambda: gateway.per_vcluster)
        gateway.audit = _audit(config, reactor, top, topology, gateway_id, metrics)
        from .tenancy.naming import GROUP, TRANSACTION
        from .usage.inventory import IdsSeen

        inventory = measured.inventory
        gateway.group_ids, gateway.transactional_ids = (
            IdsSeen(inventory.latest_or_ask, kind, inventory.ids_renewed,
                    lambda physical, vc, kind=kind: inventory.exists(kind, physical, vc),
                    reactor.seconds)
            for kind in (GROUP, TRANSACTION))
        gateway.clear_group_configs = inventory.clear_group_configs

    if store is None and config["gateway-cluster-id"] is not None:
        from .state.kafka import KafkaStore  # passthrough: a store for membership

        store = KafkaStore(reactor, topology, upstream, topic=config["state-topic"],
                           configs=STATE_TOPIC_CONFIGS)
        StoreService(store).setServiceParent(top)
        _membership(config, reactor, top, gateway, store, gateway_id, node_id)

    def health():
        return _health_details(topology, refresher, store, gateway.membership)

    refresh_state_metrics = _state_gauges(metrics, store, lambda: gateway.membership)

    if worker is not None:
        from .workers import snapshot

        # A client's Metadata and its Fetch or Produce may reach different
        # workers, as with gateways of a cluster: an unknown topic id asks
        # for a listing (at most once a second) and the client's retry works.
        topology.topic_ids.on_unknown = _at_most_every(
            reactor, 1.0, refresher.refresh_listing)

        def report(only=None):
            if only is None or not STATE_GAUGES.isdisjoint(only):
                refresh_state_metrics()
            return {"pid": os.getpid(), "reason": health()[0],
                    "connections": len(gateway.connections),
                    "vclusters": dict(gateway.per_vcluster),
                    "ips": gateway.reported_ips(),
                    "families": None if only is None else sorted(only),
                    "metrics": snapshot(metrics, only) if only != set() else []}
        top.report = report
        _refreshing(config, reactor, top, refresher)
        return top
    users = config["users"] or generated_admin()
    dashboard = None
    if state is not None:
        from .admin.dashboard import Dashboard

        dashboard = Dashboard(state, metrics, topology, reactor,
                              usage=_latest_figures(measured))
        dashboard.setServiceParent(top)
    root = admin_root(state, UserChecker(users), health, dashboard,
                      metrics=MetricsResource(metrics, refresh_state_metrics),
                      usage=measured, audit=getattr(gateway, "audit", None))
    listen(config["admin-port"], AdminSite(root),
           config["server-tls"] if config["admin-tls"] else None)
    _refreshing(config, reactor, top, refresher)
    return top


class PortsReserved(service.Service):
    """The Kafka ports bound (not listened on) by the supervisor while it
    runs: a port another program holds stops the start (vkafka/workers.py)."""

    def __init__(self, ports, interface):
        self.ports, self.interface = ports, interface
        self.held = []

    def startService(self):
        from .workers import reserve_ports
        self.held = reserve_ports(self.ports, self.interface)
        super().startService()

    def stopService(self):
        super().stopService()
        for sock in self.held:
            sock.close()
        self.held = []


def worker_environment(config, environ=None):
    """A worker's environment: this one's, with every setting as it was given
    (command line, environment or file) in its environment variable, so that
    a worker reads the same settings without a command line (secrets stay
    out of ``ps``)."""
    env = dict(os.environ if environ is None else environ)
    env.pop("GATEWAY_CONFIG_FILE", None)
    for _, name, *_ in SETTINGS:
        env.pop(name, None)
    env.update(config.resolved)
    env["GATEWAY_WORKERS"] = "1"
    return env


def _supervisor(config, reactor):
    """``--workers N``: the admin port and N worker processes
    (vkafka/workers.py).  The admin API reads and writes through a state
    store of this process's own; traffic, connections and metrics are the
    workers' (``/metrics`` and the dashboard sum them)."""
    from .admin.app import AdminSite, admin_root
    from .admin.users import UserChecker, generated_admin
    from .metrics import Metrics
    from .proxy.discovery import Refresher
    from .proxy.topology import Topology
    from .workers import SummedMetricsResource, WorkerSupervisor, spawner

    tenancy = None
    if config["multi-tenancy"]:
        from .auth.tokens import TokenAuthority
        from .tenancy.mode import Tenancy

        tenancy = Tenancy(TokenAuthority(config["token-secret"], reactor.seconds,
                                         previous_secrets=config["previous-secrets"]))
    topology = Topology(config["servers"], config["advertised-host"],
                        config["start-port"], config["port-count"],
                        config["min-broker-id"], sni=config["sni"])
    upstream = config["backend"].endpoint
    metrics = Metrics()
    refresher = Refresher(reactor, topology, upstream, all_topics=tenancy is not None)
    top = service.MultiService()
    PortsReserved(topology.ports, config["bind-host"]).setServiceParent(top)
    workers = WorkerSupervisor(
        config["workers"], spawner(reactor, worker_environment(config),
                                   count=config["workers"]), reactor,
        stop_timeout=config["drain-timeout"] + 5.0)
    workers.setServiceParent(top)
    node_id = f"{socket.gethostname()}:{config['start-port']}"
    state = store = measured = audit = membership = None
    if tenancy is not None or config["gateway-cluster-id"] is not None:
        from .state.kafka import KafkaStore
        from .state.membership import Membership

        store = KafkaStore(reactor, topology, upstream, topic=config["state-topic"],
                           configs=STATE_TOPIC_CONFIGS)
        StoreService(store).setServiceParent(top)
        # Read only (the workers beat): which nodes /health shows.
        membership = Membership(node_id, store, reactor.seconds, _describe(topology),
                                config["gateway-cluster-id"], config["rack"],
                                advertise=config["advertise"] == "cluster")
    if tenancy is not None:
        from .state.model import GatewayState

        state = GatewayState(store, tenancy.authority, tenancy.vclusters,
                             reactor.seconds)
        state.topic_exists = refresher.topic_exists
        state.create_topic = refresher.create_topic
        measured = _usage(config, reactor, top, state, metrics, topology, refresher,
                          node_id, lambda: {})
        audit = _audit(config, reactor, top, topology, node_id, metrics)

    def health():
        reason, details = _health_details(topology, refresher, store, membership,
                                          workers=workers.details())
        if reason is None and not any(w["ready"] for w in details["workers"]):
            reason = f"no worker ready (of {config['workers']})"
        return reason, details

    refresh_state_metrics = _state_gauges(metrics, store, lambda: membership)
    summed = SummedMetricsResource(workers, metrics, refresh_state_metrics)
    dashboard = None
    if state is not None:
        from .admin.dashboard import Dashboard
        from .workers import SummedMetrics

        dashboard = Dashboard(state, SummedMetrics(workers.merged), topology, reactor,
                              usage=_latest_figures(measured))
        dashboard.setServiceParent(top)
    root = admin_root(state, UserChecker(config["users"] or generated_admin()), health,
                      dashboard, metrics=summed, usage=measured, audit=audit,
                      workers=workers)
    endpoint = (TCP4ServerEndpoint(reactor, config["admin-port"],
                                   interface=config["bind-host"])
                if not config["admin-tls"] else
                SSL4ServerEndpoint(reactor, config["admin-port"], config["server-tls"],
                                   interface=config["bind-host"]))
    admin = internet.StreamServerEndpointService(endpoint, AdminSite(root))
    admin._raiseSynchronously = True
    admin.setServiceParent(top)
    _refreshing(config, reactor, top, refresher)
    log.info("supervising {n} workers on Kafka ports {first}..{last}",
             n=config["workers"], first=min(topology.ports), last=max(topology.ports))
    return top


def _refreshing(config, reactor, top, refresher):
    timer = internet.TimerService(config["refresh-interval"], refresher.refresh)
    timer.clock = reactor
    timer.setServiceParent(top)
    RefresherService(refresher).setServiceParent(top)


STATE_GAUGES = frozenset({"vkafka_state_entries", "vkafka_state_lag_records",
                          "vkafka_gateway_cluster_nodes"})
"""The gauges ``_state_gauges`` sets, read when a scrape asks for them."""


def _state_gauges(metrics, store, membership):
    """What sets the gauges of the shared state and the gateway cluster, run
    at each scrape (*membership*: a callable, the Membership may come later)."""
    def refresh():
        if store is not None:
            metrics.state_entries.set(len(store.data))
            if store.high_watermark is not None:
                metrics.state_lag.set(max(0, store.high_watermark - store.offset))
        found = membership()
        metrics.cluster_nodes.set(0 if found is None else len(found.nodes()))
    return refresh


def _health_details(topology, refresher, store, membership, **extra):
    """``/health`` as a gateway and a supervisor share it: (the reason it
    cannot serve or None, the details).  The details are the brokers, then
    *extra* (a supervisor's workers), the gateway cluster and the state
    store's progress, in that order."""
    details = {"brokers": sorted(topology.brokers), **extra}
    if topology.unlisted:  # fenced (stopped, wedged): tried last, still serving
        details["unlistedBrokers"] = sorted(topology.unlisted)
    if membership is not None and membership.cluster_id is not None:
        details["cluster"] = {"id": membership.cluster_id, "node": membership.node_id,
                              "nodes": [n.id for n in membership.nodes()]}
    if refresher.last_error is not None or not topology.brokers:
        return f"cannot reach the Kafka cluster: {refresher.last_error}", details
    if store is not None:
        details["state"] = {"entries": len(store.data), "offset": store.offset}
        if not store.ready.called:
            return f"gateway state not loaded: {store.last_error}", details
    return None, details


def _describe(topology):
    return lambda: {"host": topology.advertised_host, "port": topology.start_port,
                    "ports": topology.port_count, "minBroker": topology.min_broker_id}


def _membership(config, reactor, top, gateway, store, gateway_id, node_id=None):
    """The gateway cluster (state/membership.py) over *store*; its beats."""
    from .state.membership import Membership

    topology = gateway.topology
    gateway.membership = Membership(
        gateway_id, store, reactor.seconds, _describe(topology),
        config["gateway-cluster-id"], config["rack"],
        advertise=config["advertise"] == "cluster", node=node_id)
    MembershipService(gateway.membership, reactor).setServiceParent(top)
    if config["gateway-cluster-id"] is not None and gateway.refresher is not None:
        topology.topic_ids.on_unknown = _at_most_every(
            reactor, 1.0, gateway.refresher.refresh_listing)


def _at_most_every(reactor, seconds, call):
    """*call*, skipped when it was called less than *seconds* ago."""
    last = [float("-inf")]

    def limited():
        now = reactor.seconds()
        if now - last[0] >= seconds:
            last[0] = now
            call()
    return limited


def _usage(config, reactor, top, state, metrics, topology, refresher, gateway_id,
           connections):
    """Usage per virtual cluster (vkafka/usage/): this gateway's traffic ledger
    and every gateway's, on the usage topic; the inventory of what the
    cluster holds."""
    from .client import Connector
    from .state.kafka import KafkaStore
    from .usage.inventory import Inventory, broker_asker
    from .usage.ledger import TOPIC_CONFIGS, Ledger, UsageBook
    from .usage.report import Usage, UsageService

    upstream = config["backend"].endpoint
    store = KafkaStore(reactor, topology, upstream, topic=config["usage-topic"],
                       configs=TOPIC_CONFIGS, keep=False)
    book = UsageBook(store)
    ledger = Ledger(gateway_id, metrics, book, store, reactor.seconds, connections)
    inventory = Inventory(reactor.seconds, topology, state.vclusters,
                          broker_asker(Connector(reactor, upstream, "vkafka-usage")),
                          refresher.refresh, metrics, reactor.callLater)
    measured = Usage(state, book, ledger, inventory, reactor.seconds)
    UsageService(measured, store, reactor).setServiceParent(top)
    return measured


class AuditService(service.Service):
    """Follows the audit topic with the gateway; stops the log's retries."""

    def __init__(self, audit, store):
        self.audit, self.store = audit, store

    def startService(self):
        super().startService()
        self.store.start()

    def stopService(self):
        super().stopService()
        self.audit.stop()
        self.store.stop()


def _audit(config, reactor, top, topology, gateway_id, metrics):
    """The audit log (admin/audit.py) on the audit topic, followed by every
    gateway; the gateway serves whether or not the topic can be written."""
    from .admin.audit import TOPIC_CONFIGS, AuditCollector, AuditLog
    from .state.kafka import KafkaStore

    store = KafkaStore(reactor, topology, config["backend"].endpoint,
                       topic=config["audit-topic"], configs=TOPIC_CONFIGS, keep=False)
    audit = AuditLog(reactor.seconds, gateway_id, store, reactor.callLater)
    AuditService(audit, store).setServiceParent(top)
    # an attribute too: a worker's snapshot reads what Metrics holds (workers.py)
    metrics.audit_collector = AuditCollector(audit)
    metrics.registry.register(metrics.audit_collector)
    return audit


def _latest_figures(measured):
    """``vc -> {storageBytes, consumerGroups, ...}`` from the last inventory
    (the dashboard asks per tenant and per point: never the cluster)."""
    if measured is None:
        return None

    def figures(vc):
        latest = measured.inventory.latest
        found = None if latest is None else latest.figures.get(vc)
        return None if found is None else found.to_json()
    return figures


class RefresherService(service.Service):
    """Cancels the refresher's pending retry when the gateway stops."""

    def __init__(self, refresher):
        self.refresher = refresher

    def stopService(self):
        super().stopService()
        self.refresher.stop()


if __name__ == "__main__":
    print(markdown_settings(), end="")
