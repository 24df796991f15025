"""Kafka ACL semantics of one virtual cluster (vkafka/auth/acls.py), and
their records in the shared state (vkafka/state/model.py)."""

from twisted.trial import unittest

from vkafka.auth.acls import Acl, AclFilter, Authorizer, InvalidAcl, OFF
from vkafka.auth.tokens import TokenAuthority
from vkafka.state.model import GatewayState
from vkafka.state.store import MemoryStore
from vkafka.tenancy.vclusters import VirtualClusters


def acl(rtype, name, principal, op, permission="ALLOW", pattern="LITERAL", host="*"):
    return Acl.checked(rtype, pattern, name, principal, host, op, permission)


def authorizer(*acls, super_users=()):
    return Authorizer(True, super_users, acls)


class DecisionTests(unittest.TestCase):
    """Each case as Kafka's StandardAuthorizer decides it."""

    def allowed(self, auth, op, name, rtype="TOPIC", principal="User:app", host="10.0.0.1"):
        return auth.allowed(principal, host, op, rtype, name)

    def test_off_allows_everything(self):
        self.assertTrue(OFF.allowed("User:x", "h", "WRITE", "TOPIC", "t"))
        self.assertTrue(OFF.allowed_any("User:x", "h", "WRITE", "TOPIC"))

    def test_no_acl_denies(self):
        self.assertFalse(self.allowed(authorizer(), "READ", "orders"))

    def test_literal_allow_is_exact(self):
        auth = authorizer(acl("TOPIC", "orders", "User:app", "READ"))
        self.assertTrue(self.allowed(auth, "READ", "orders"))
        self.assertFalse(self.allowed(auth, "READ", "orders2"))
        self.assertFalse(self.allowed(auth, "WRITE", "orders"))
        self.assertFalse(self.allowed(auth, "READ", "orders", principal="User:other"))
        self.assertFalse(self.allowed(auth, "READ", "orders", rtype="GROUP"))

    def test_prefixed_and_wildcard(self):
        auth = authorizer(acl("TOPIC", "app.", "User:app", "WRITE", pattern="PREFIXED"),
                          acl("GROUP", "*", "User:*", "READ"))
        self.assertTrue(self.allowed(auth, "WRITE", "app.events"))
        self.assertTrue(self.allowed(auth, "WRITE", "app."))
        self.assertFalse(self.allowed(auth, "WRITE", "ap"))
        self.assertTrue(self.allowed(auth, "READ", "any-group", "GROUP", "User:anyone"))

    def test_deny_wins(self):
        auth = authorizer(acl("TOPIC", "app.", "User:app", "WRITE", pattern="PREFIXED"),
                          acl("TOPIC", "app.secret", "User:app", "WRITE", "DENY"))
        self.assertTrue(self.allowed(auth, "WRITE", "app.open"))
        self.assertFalse(self.allowed(auth, "WRITE", "app.secret"))
        # a DENY of ALL denies every operation; a DENY of WRITE does not deny DESCRIBE
        self.assertTrue(self.allowed(auth, "DESCRIBE", "app.secret"))
        auth = authorizer(acl("TOPIC", "*", "User:app", "ALL"),
                          acl("TOPIC", "x", "User:*", "ALL", "DENY"))
        self.assertFalse(self.allowed(auth, "DESCRIBE", "x"))
        self.assertTrue(self.allowed(auth, "DELETE", "y"))

    def test_implications(self):
        for op in ("READ", "WRITE", "DELETE", "ALTER", "ALL"):
            auth = authorizer(acl("TOPIC", "t", "User:app", op))
            self.assertTrue(self.allowed(auth, "DESCRIBE", "t"), op)
        for op in ("CREATE", "ALTER_CONFIGS", "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"):
            auth = authorizer(acl("TOPIC", "t", "User:app", op))
            self.assertFalse(self.allowed(auth, "DESCRIBE", "t"), op)
        auth = authorizer(acl("TOPIC", "t", "User:app", "ALTER_CONFIGS"))
        self.assertTrue(self.allowed(auth, "DESCRIBE_CONFIGS", "t"))
        self.assertFalse(self.allowed(auth, "READ", "t"))

    def test_hosts(self):
        auth = authorizer(acl("TOPIC", "t", "User:app", "READ", host="10.0.0.1"))
        self.assertTrue(self.allowed(auth, "READ", "t", host="10.0.0.1"))
        self.assertFalse(self.allowed(auth, "READ", "t", host="10.0.0.2"))

    def test_super_users_bypass(self):
        auth = authorizer(acl("TOPIC", "*", "User:*", "ALL", "DENY"), super_users=["root"])
        self.assertTrue(self.allowed(auth, "DELETE", "t", principal="User:root"))
        self.assertFalse(self.allowed(auth, "DELETE", "t"))

    def test_by_resource_type(self):
        """KIP-679: an idempotent producer needs WRITE on some topic."""
        any_write = lambda *acls: authorizer(*acls).allowed_any(  # noqa: E731
            "User:app", "h", "WRITE", "TOPIC")
        self.assertFalse(any_write())
        self.assertTrue(any_write(acl("TOPIC", "t", "User:app", "WRITE")))
        self.assertTrue(any_write(acl("TOPIC", "t", "User:app", "ALL")))
        self.assertFalse(any_write(acl("TOPIC", "t", "User:app", "READ")))
        self.assertFalse(any_write(acl("TOPIC", "t", "User:app", "WRITE"),
                                   acl("TOPIC", "t", "User:app", "WRITE", "DENY")))
        self.assertFalse(any_write(acl("TOPIC", "app.x", "User:app", "WRITE"),
                                   acl("TOPIC", "app", "User:app", "WRITE", "DENY",
                                       "PREFIXED")))
        self.assertTrue(any_write(acl("TOPIC", "*", "User:app", "WRITE"),
                                  acl("TOPIC", "app", "User:app", "WRITE", "DENY",
                                      "PREFIXED")))
        self.assertFalse(any_write(acl("TOPIC", "t", "User:app", "WRITE"),
                                   acl("TOPIC", "*", "User:*", "WRITE", "DENY")))

    def test_a_decision_looks_at_the_acls_that_can_match(self):
        """Many ACLs do not make each decision slower: literal ones are found
        by name, prefixed ones by the prefix lengths present."""
        acls = [acl("TOPIC", f"t{i}", "User:app", "READ") for i in range(900)]
        acls += [acl("TOPIC", f"p{i}.", "User:app", "READ", pattern="PREFIXED")
                 for i in range(90)]
        auth = authorizer(*acls, acl("TOPIC", "*", "User:app", "DESCRIBE"))
        self.assertEqual(len(list(auth._candidates("TOPIC", "t5"))), 2)
        self.assertEqual(len(list(auth._candidates("TOPIC", "p7.x" + "y" * 30000))), 2)
        self.assertTrue(self.allowed(auth, "READ", "p89.events"))
        self.assertFalse(self.allowed(auth, "READ", "p90.events"))

    def test_memo_is_bounded(self):
        """In entries, and in bytes: a decision on a long name (a Produce may
        name a topic of megabytes) is not remembered."""
        auth = authorizer(acl("TOPIC", "t", "User:app", "READ"))
        for i in range(Authorizer.MEMO + 10):
            self.allowed(auth, "READ", f"t{i}")
        self.assertLessEqual(len(auth._memo), Authorizer.MEMO)
        auth._memo.clear()
        self.assertFalse(self.allowed(auth, "READ", "x" * 4_000_000))
        self.assertEqual(auth._memo, {})

    def test_by_resource_type_linear_in_the_names(self):
        """allowed_any compares each ALLOW with the DENY prefixes: linear in
        the names' length (every prefix of each name, sliced, was quadratic:
        an InitProducerId took 1 s with one ACL of 80,000 characters)."""
        from vkafka.auth.acls import MAX_NAME
        long = "a" * MAX_NAME
        auth = authorizer(*[acl("TOPIC", long[:-i] + "b", "User:app", "WRITE")
                            for i in range(1, 300)],
                          *[acl("TOPIC", long[:-i] + "c", "User:app", "WRITE", "DENY",
                                "PREFIXED") for i in range(1, 300)],
                          acl("TOPIC", long[:500], "User:app", "WRITE", "DENY", "PREFIXED"))
        self.assertFalse(auth.allowed_any("User:app", "h", "WRITE", "TOPIC"))
        auth = authorizer(acl("TOPIC", long, "User:app", "WRITE"),
                          acl("TOPIC", "ab", "User:app", "WRITE", "DENY", "PREFIXED"))
        self.assertTrue(auth.allowed_any("User:app", "h", "WRITE", "TOPIC"))


class AclFormTests(unittest.TestCase):
    def test_json_round_trip_and_key(self):
        a = acl("GROUP", "g", "User:app", "READ")
        self.assertEqual(Acl.from_json(a.to_json()), a)
        self.assertEqual(a.key(), Acl.from_json(a.to_json()).key())
        self.assertNotEqual(a.key(), acl("GROUP", "g", "User:app", "DESCRIBE").key())

    def test_refused_forms(self):
        bad = [("DELEGATION_TOKEN", "LITERAL", "x", "User:a", "*", "READ", "ALLOW"),
               ("USER", "LITERAL", "x", "User:a", "*", "READ", "ALLOW"),
               ("TOPIC", "MATCH", "x", "User:a", "*", "READ", "ALLOW"),
               ("TOPIC", "LITERAL", "", "User:a", "*", "READ", "ALLOW"),
               ("TOPIC", "PREFIXED", "*", "User:a", "*", "READ", "ALLOW"),
               ("CLUSTER", "LITERAL", "other", "User:a", "*", "ALTER", "ALLOW"),
               ("TOPIC", "LITERAL", "x", "Group:a", "*", "READ", "ALLOW"),
               ("TOPIC", "LITERAL", "x", "User:", "*", "READ", "ALLOW"),
               ("TOPIC", "LITERAL", "x", "User:a", "*", "CLUSTER_ACTION", "ALLOW"),
               ("TOPIC", "LITERAL", "x", "User:a", "*", "ANY", "ALLOW"),
               ("TOPIC", "LITERAL", "x", "User:a", "*", "READ", "ANY"),
               ("TOPIC", "LITERAL", "x" * 1001, "User:a", "*", "READ", "ALLOW"),
               ("TOPIC", "LITERAL", "x", "User:" + "a" * 300, "*", "READ", "ALLOW"),
               ("TOPIC", "LITERAL", "x", "User:a", "h" * 257, "READ", "ALLOW")]
        for parts in bad:
            self.assertRaises(InvalidAcl, Acl.checked, *parts)
        self.assertRaises(InvalidAcl, Acl.from_json, {"resourceType": "TOPIC"})
        self.assertRaises(InvalidAcl, Acl.from_json, [])

    def test_filters(self):
        a = acl("TOPIC", "app.", "User:app", "WRITE", pattern="PREFIXED")
        b = acl("TOPIC", "app.x", "User:app", "READ")
        c = acl("TOPIC", "*", "User:other", "READ")
        everything = AclFilter()
        self.assertTrue(all(everything.matches(x) for x in (a, b, c)))
        match = AclFilter("TOPIC", "app.x", "MATCH")
        self.assertEqual([x for x in (a, b, c) if match.matches(x)], [a, b, c])
        literal = AclFilter("TOPIC", "app.x", "LITERAL")
        self.assertEqual([x for x in (a, b, c) if literal.matches(x)], [b])
        self.assertFalse(AclFilter(principal="User:nobody").matches(a))
        self.assertFalse(AclFilter(operation="READ").matches(a))
        self.assertFalse(AclFilter(resource_type="GROUP").matches(a))


class StateTests(unittest.TestCase):
    """ACLs and rights are records every gateway applies."""

    def setUp(self):
        self.store = MemoryStore()
        self.state = GatewayState(self.store, TokenAuthority("a" * 32, lambda: 1000.0),
                                  VirtualClusters(), lambda: 1000.0)
        self.successResultOf(self.state.ensure_vcluster("shop"))
        self.successResultOf(self.state.ensure_vcluster("bank"))

    def test_off_until_turned_on(self):
        self.assertIs(self.state.authorizer("shop"), OFF)
        self.successResultOf(self.state.put_rights("shop", True, ["root"]))
        auth = self.state.authorizer("shop")
        self.assertTrue(auth.enabled)
        self.assertEqual(auth.super_users, {"root"})
        self.assertIs(self.state.authorizer("bank"), OFF)
        self.assertEqual(self.state.rights_of("shop"), {"acls": True,
                                                        "superUsers": ["root"]})

    def test_acls_per_virtual_cluster_and_idempotent(self):
        a = acl("TOPIC", "orders", "User:app", "READ")
        self.successResultOf(self.state.put_rights("shop", True))
        self.successResultOf(self.state.add_acls("shop", [a, a]))
        writes = len(self.store.data)
        self.successResultOf(self.state.add_acls("shop", [a]))
        self.assertEqual(len(self.store.data), writes)
        self.assertEqual(self.state.acls_of("shop"), [a])
        self.assertEqual(self.state.acls_of("bank"), [])
        before = self.state.authorizer("shop")
        self.assertTrue(before.allowed("User:app", "h", "READ", "TOPIC", "orders"))
        removed = self.successResultOf(self.state.delete_acls("shop", [AclFilter()]))
        self.assertEqual(removed, [[a]])
        after = self.state.authorizer("shop")
        self.assertIsNot(after, before)
        self.assertNotEqual(after.generation, before.generation)
        self.assertFalse(after.allowed("User:app", "h", "READ", "TOPIC", "orders"))

    def test_at_most_max_acls(self):
        from vkafka.auth.acls import MAX_ACLS
        from vkafka.state.model import StateError
        many = [acl("TOPIC", f"t{i}", "User:a", "READ") for i in range(MAX_ACLS)]
        self.successResultOf(self.state.add_acls("shop", many))
        self.successResultOf(self.state.add_acls("shop", many[:3]))  # held already
        failure = self.failureResultOf(self.state.add_acls(
            "shop", [acl("TOPIC", "one-more", "User:a", "READ")]), StateError)
        self.assertIn(str(MAX_ACLS), failure.value.message)

    def test_bad_super_user_refused(self):
        from vkafka.state.model import StateError
        for user in ("", "a/b", "*"):
            self.failureResultOf(self.state.put_rights("shop", True, [user]), StateError)

    def test_an_unreadable_record_is_not_applied(self):
        self.state.apply("acl/shop/k", {"resourceType": "USER"})
        self.assertEqual(self.state.acls_of("shop"), [])

    def test_deleting_the_vcluster_removes_acls_and_rights(self):
        self.successResultOf(self.state.put_rights("shop", True))
        self.successResultOf(self.state.add_acls("shop", [acl("GROUP", "g", "User:a",
                                                               "READ")]))
        self.successResultOf(self.state.delete_vcluster("shop"))
        self.assertEqual(self.state.acls_of("shop"), [])
        self.assertEqual(self.state.rights_of("shop"), {"acls": False, "superUsers": []})
        self.assertFalse([k for k in self.store.data if k.startswith(("acl/", "rights/"))])

    def test_deleting_an_account_revokes_it_only(self):
        self.successResultOf(self.state.create_account("shop", "a", 60))
        self.successResultOf(self.state.create_account("shop", "b", 60))
        self.successResultOf(self.state.delete_account("shop", "a"))
        self.assertEqual([x["username"] for x in self.state.accounts_of("shop")], ["b"])
