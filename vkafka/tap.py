# -*- test-case-name: tests.test_tap -*-
"""``twistd vkafka``: options and the service tree.

Every option can also come from an environment variable (the demo's names
where the demo has one); a command-line option wins over the environment.
"""

import os

from twisted.application import internet, service
from twisted.internet.endpoints import serverFromString
from twisted.python import usage
from twisted.web.server import Site

from .protocol.framing import DEFAULT_MAX_FRAME_SIZE

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
     "Client-side security protocol: PLAINTEXT (passthrough) or SASL_PLAINTEXT "
     "(virtual clusters, with multi-tenancy on)"),
    ("multi-tenancy", "GATEWAY_FEATURE_FLAGS_MULTI_TENANCY", "false", str,
     "Virtual clusters (true/false); needs SASL_PLAINTEXT"),
    ("token-secret", "GATEWAY_USER_POOL_SECRET_KEY", None, str,
     "Secret (32+ characters) that signs tenant tokens; the same on every gateway"),
    ("max-frame-size", "GATEWAY_MAX_FRAME_SIZE", DEFAULT_MAX_FRAME_SIZE, int,
     "Largest request frame accepted from a client, in bytes"),
    ("admin-port", "GATEWAY_HTTP_PORT", 8888, int, "Port of the admin HTTP API"),
    ("refresh-interval", "GATEWAY_METADATA_REFRESH_SECONDS", 30.0, float,
     "Seconds between the gateway's own metadata refreshes"),
]

SUPPORTED_SECURITY = {"PLAINTEXT", "SASL_PLAINTEXT"}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("vkafka: a Kafka gateway. Options also come from the environment "
                "variables named in brackets; options win.")
    optParameters = [
        [name, None, None, f"{text} [{env}] (default: {default})"]
        for name, env, default, _, text in SETTINGS
    ]

    def __init__(self, environ=None):
        super().__init__()
        self.environ = os.environ if environ is None else environ

    def postOptions(self):
        for name, env, default, convert, _ in SETTINGS:
            raw = self[name]
            source = f"--{name}"
            if raw is None and env in self.environ:
                raw, source = self.environ[env], env
            if raw is None:
                self[name] = default
                continue
            try:
                self[name] = convert(raw)
            except ValueError:
                raise usage.UsageError(f"{source}: invalid value {raw!r}")
        if self["security-protocol"] not in SUPPORTED_SECURITY:
            raise usage.UsageError(
                f"security protocol {self['security-protocol']!r} is not supported "
                f"yet (supported: {', '.join(sorted(SUPPORTED_SECURITY))})")
        tenancy = str(self["multi-tenancy"]).lower()
        if tenancy not in _TRUE + _FALSE:
            raise usage.UsageError(
                f"--multi-tenancy / GATEWAY_FEATURE_FLAGS_MULTI_TENANCY: expected "
                f"true or false, not {self['multi-tenancy']!r}")
        self["multi-tenancy"] = tenancy in _TRUE
        sasl = self["security-protocol"] == "SASL_PLAINTEXT"
        if sasl != self["multi-tenancy"]:
            raise usage.UsageError(
                "virtual clusters need both GATEWAY_SECURITY_PROTOCOL=SASL_PLAINTEXT "
                "and GATEWAY_FEATURE_FLAGS_MULTI_TENANCY=true; PLAINTEXT runs "
                "without them (passthrough)")
        if sasl and (not self["token-secret"] or len(self["token-secret"]) < 32):
            raise usage.UsageError(
                "--token-secret / GATEWAY_USER_POOL_SECRET_KEY: a secret of at least "
                "32 characters is required with SASL_PLAINTEXT (the same on every "
                "gateway)")
        for name in ("start-port", "port-count", "max-frame-size", "admin-port"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")
        from .proxy.topology import parse_servers
        try:
            self["servers"] = parse_servers(self["bootstrap-servers"])
        except ValueError as e:
            raise usage.UsageError(f"--bootstrap-servers: {e}")


def makeService(config, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    from .admin.app import AdminApp
    from .proxy.discovery import Refresher
    from .proxy.gateway import Gateway, tcp_endpoint
    from .proxy.topology import Topology
    from .tenancy.rules import passthrough_rules, tenant_rules

    tenancy = None
    rules = passthrough_rules()
    if config["multi-tenancy"]:
        from .auth.tokens import TokenAuthority
        from .tenancy.mode import Tenancy

        tenancy = Tenancy(TokenAuthority(config["token-secret"]))
        rules = tenant_rules()
    topology = Topology(config["servers"], config["advertised-host"],
                        config["start-port"], config["port-count"],
                        config["min-broker-id"])
    refresher = Refresher(reactor, topology, tcp_endpoint,
                          all_topics=tenancy is not None)
    gateway = Gateway(reactor, topology, rules,
                      max_frame_size=config["max-frame-size"],
                      refresher=refresher, tenancy=tenancy)
    top = service.MultiService()
    bind = config["bind-host"]

    def listen(port, factory):
        endpoint = serverFromString(reactor, f"tcp:{port}:interface={bind}")
        internet.StreamServerEndpointService(endpoint, factory).setServiceParent(top)

    for port in topology.ports:
        listen(port, gateway.factory_for_port(port))
    admin = AdminApp(refresher, topology)
    listen(config["admin-port"], Site(admin.resource()))
    timer = internet.TimerService(config["refresh-interval"], refresher.refresh)
    timer.clock = reactor
    timer.setServiceParent(top)
    return top
