"""twistd options: environment variables, precedence, refusal of bad settings."""

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial import unittest

from vkafka.tap import Options, makeService
from vkafka.proxy.topology import Topology


def parse(argv, environ=None):
    options = Options(environ or {})
    options.parseOptions(argv)
    return options


class OptionsTests(unittest.TestCase):
    def test_environment(self):
        """The demo's environment variable names configure the gateway."""
        options = parse([], {"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9093",
                             "GATEWAY_START_PORT": "7969",
                             "GATEWAY_ADVERTISED_HOST": "gw"})
        self.assertEqual(options["servers"], [("k1", 9092), ("k2", 9093)])
        self.assertEqual(options["start-port"], 7969)
        self.assertEqual(options["advertised-host"], "gw")

    def test_option_wins(self):
        """A command-line option wins over its environment variable."""
        options = parse(["--start-port", "1234"], {"GATEWAY_START_PORT": "7969"})
        self.assertEqual(options["start-port"], 1234)

    def test_defaults(self):
        """Without options or environment, the documented defaults hold."""
        options = parse([])
        self.assertEqual((options["start-port"], options["port-count"],
                          options["admin-port"]), (6969, 6, 8888))

    def test_bad_value_names_setting(self):
        """An invalid value stops the start with a message naming the setting."""
        e = self.assertRaises(usage.UsageError, parse, [],
                              {"GATEWAY_START_PORT": "abc"})
        self.assertIn("GATEWAY_START_PORT", str(e))
        e = self.assertRaises(usage.UsageError, parse, ["--bootstrap-servers", "nope"])
        self.assertIn("--bootstrap-servers", str(e))

    def test_tenant_loop_share_range(self):
        self.assertEqual(parse([])["tenant-loop-share"], 0.25)
        self.assertEqual(parse(["--tenant-loop-share", "0"])["tenant-loop-share"], 0)
        e = self.assertRaises(usage.UsageError, parse, [],
                              {"GATEWAY_TENANT_LOOP_SHARE": "1.5"})
        self.assertIn("--tenant-loop-share", str(e))

    def test_max_fetch_sessions_positive(self):
        self.assertEqual(parse([])["max-fetch-sessions"], 250)
        self.assertEqual(parse([], {"GATEWAY_MAX_FETCH_SESSIONS": "40"})
                         ["max-fetch-sessions"], 40)
        e = self.assertRaises(usage.UsageError, parse, ["--max-fetch-sessions", "0"])
        self.assertIn("--max-fetch-sessions", str(e))

    def test_config_file_precedence(self):
        """A YAML file sets options; the environment and the command line win over it."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("start-port: 5969\nadvertised-host: from-file\nport-count: 4\n")
        options = parse(["--config", path, "--port-count", "9"],
                        {"GATEWAY_ADVERTISED_HOST": "from-env"})
        self.assertEqual((options["start-port"], options["advertised-host"],
                          options["port-count"]), (5969, "from-env", 9))

    def test_config_file_errors_name_the_setting(self):
        """An unknown key or a bad value in the file stops the start, naming it."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("start-prot: 1\n")
        e = self.assertRaises(usage.UsageError, parse, ["--config", path])
        self.assertIn("start-prot", str(e))
        with open(path, "w") as f:
            f.write("start-port: soon\n")
        e = self.assertRaises(usage.UsageError, parse, [], {"GATEWAY_CONFIG_FILE": path})
        self.assertIn("start-port in", str(e))

    def test_unsupported_security_refused(self):
        """A security protocol not built yet is refused, not silently ignored."""
        e = self.assertRaises(usage.UsageError, parse, [],
                              {"GATEWAY_SECURITY_PROTOCOL": "SASL_SSL"})
        self.assertIn("SASL_SSL", str(e))

    def test_previous_token_secrets(self):
        """GATEWAY_USER_POOL_PREVIOUS_SECRET_KEYS lets the gateway accept tokens of
        former secrets; new ones are signed with the current secret."""
        from vkafka.auth.tokens import TokenAuthority
        old, older = "o" * 32, "p" * 32
        options = parse([], {"GATEWAY_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                             "GATEWAY_FEATURE_FLAGS_MULTI_TENANCY": "true",
                             "GATEWAY_USER_POOL_SECRET_KEY": "n" * 32,
                             "GATEWAY_USER_POOL_PREVIOUS_SECRET_KEYS":
                                 f" {old}, {older},"})
        self.assertEqual(options["previous-secrets"], (old, older))
        clock = MemoryReactorClock()
        options["tuning"] = False  # never the process-wide tuning under test
        options["workers"] = 1
        service = makeService(options, clock)
        authority = next(s.factory.gateway.tenancy.authority for s in service
                         if hasattr(s, "factory") and hasattr(s.factory, "gateway"))
        for secret in (old, older):
            token = TokenAuthority(secret, clock.seconds).issue("london", "sa", 60)
            self.assertEqual(authority.verify("sa", token).vcluster, "london")
        TokenAuthority("n" * 32, clock.seconds).verify(
            "sa", authority.issue("london", "sa", 60))
        self.assertEqual(parse([])["previous-secrets"], ())

    def test_config_file_lists(self):
        """A YAML list is the comma-separated form (secrets, servers)."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"previous-token-secrets:\n  - {'o' * 32}\n  - {'p' * 32}\n"
                    f"bootstrap-servers: [k1:9092, k2:9093]\n")
        options = parse(["--config", path])
        self.assertEqual(options["previous-secrets"], ("o" * 32, "p" * 32))
        self.assertEqual(options["servers"], [("k1", 9092), ("k2", 9093)])

    def test_short_previous_token_secret_refused(self):
        """A previous secret under 32 characters stops the start, naming the setting."""
        e = self.assertRaises(usage.UsageError, parse,
                              ["--previous-token-secrets", "p" * 32 + ",short"])
        self.assertIn("--previous-token-secrets", str(e))
        self.assertIn("secret 2", str(e))

    def test_service_listens_per_port(self):
        """makeService opens one Kafka port per configured broker slot plus admin."""
        reactor = MemoryReactorClock()
        service = makeService(parse(["--port-count", "4", "--start-port", "5000",
                                     "--tuning", "false", "--workers", "1"]),
                              reactor)
        service.privilegedStartService()
        service.startService()
        ports = sorted(p[0] for p in reactor.tcpServers)
        self.assertEqual(ports, [5000, 5001, 5002, 5003, 8888])


class ReferenceTests(unittest.TestCase):
    def test_docs_match_code(self):
        """docs/configuration.md is exactly what the SETTINGS table generates."""
        from pathlib import Path

        from vkafka.tap import markdown_settings
        path = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
        self.assertEqual(path.read_text(), markdown_settings(),
                         "regenerate: python -m vkafka.tap > docs/configuration.md")


class TopologyTests(unittest.TestCase):
    def test_port_map(self):
        """Port start+i stands for broker min+i; outside the range, nothing."""
        topology = Topology([("b", 1)], "gw", 6969, 3, min_broker_id=1)
        self.assertEqual(topology.gateway_address(3), ("gw", 6971))
        self.assertIsNone(topology.gateway_address(4))
        self.assertEqual(topology.node_for_port(6970), 2)
        self.assertIsNone(topology.node_for_port(6972))

    def test_min_broker_id_fixed_at_first_sight(self):
        """Unset, the base id is the lowest seen first and does not move later."""
        topology = Topology([("b", 1)], "gw", 6969, 3)
        topology.learn([(2, "h2", 2), (3, "h3", 3)])
        topology.learn([(1, "h1", 1)])
        self.assertEqual(topology.min_broker_id, 2)

    def test_candidates_prefer_own_broker(self):
        """A port's own broker is tried first, then every other known address."""
        topology = Topology([("boot", 1)], "gw", 6969, 3, 1)
        topology.learn([(1, "h1", 1), (2, "h2", 2)])
        self.assertEqual(topology.upstream_candidates(2),
                         [("h2", 2), ("h1", 1), ("boot", 1)])

    def test_unlisted_brokers_last(self):
        """A broker the cluster's broker list lacks (fenced: stopped or wedged,
        maybe still taking connections) is tried after the listed ones, even
        for its own port (the bootstrap port's), until it is listed again;
        the inventory leaves it out."""
        topology = Topology([("boot", 1)], "gw", 6969, 3, 1)
        topology.learn([(1, "h1", 1), (2, "h2", 2), (3, "h3", 3)])
        topology.learn_listed([2, 3])
        self.assertEqual(topology.upstream_candidates(1),
                         [("h2", 2), ("h3", 3), ("h1", 1), ("boot", 1)])
        self.assertEqual(topology.upstream_candidates(None)[0], ("h2", 2))
        self.assertEqual(topology.upstream_candidates(3)[0], ("h3", 3))
        self.assertEqual(sorted(topology.live_brokers()), [2, 3])
        topology.learn_listed([1, 2, 3])
        self.assertEqual(topology.upstream_candidates(1)[0], ("h1", 1))

    def test_health_names_unlisted_brokers(self):
        """/health stays ready with a broker fenced (the gateway serves
        through the others) and names it."""
        import types

        from vkafka.tap import _health_details
        topology = Topology([("boot", 1)], "gw", 6969, 3, 1)
        topology.learn([(1, "h1", 1), (2, "h2", 2)])
        refresher = types.SimpleNamespace(last_error=None)
        self.assertEqual(_health_details(topology, refresher, None, None),
                         (None, {"brokers": [1, 2]}))
        topology.learn_listed([2])
        self.assertEqual(_health_details(topology, refresher, None, None),
                         (None, {"brokers": [1, 2], "unlistedBrokers": [1]}))


class StateGaugesTests(unittest.TestCase):
    """The gauges a scrape reads from the shared state and the gateway cluster."""

    def test_cluster_nodes(self):
        from vkafka.metrics import Metrics
        from vkafka.tap import _state_gauges

        class Membership:
            def __init__(self, nodes):
                self.found = nodes

            def nodes(self):
                return self.found

        metrics = Metrics()
        membership = [None]
        refresh = _state_gauges(metrics, None, lambda: membership[0])
        refresh()
        self.assertEqual(metrics.cluster_nodes._value.get(), 0)  # no cluster
        membership[0] = Membership(("a", "b", "c"))
        refresh()
        self.assertEqual(metrics.cluster_nodes._value.get(), 3)
        membership[0] = Membership(())  # outside cluster mode
        refresh()
        self.assertEqual(metrics.cluster_nodes._value.get(), 0)
        self.assertIn(b"vkafka_gateway_cluster_nodes 0.0", metrics.text())
