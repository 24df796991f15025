# -*- test-case-name: tests.test_naming -*-
"""Facts about names that every layer needs: which topic and virtual cluster
names are valid, how Kafka folds topic names for collisions, and what a
concentration rule is.

They sit below tokens (auth), the state and the tenancy layer, which all
check names: keeping them out of ``tenancy.naming`` is what lets auth and the
state import them without importing the tenancy layer that imports both
(docs/architecture.md, "Layers").  The naming rule itself (prefixes,
aliases, ``Namespace``) stays in ``vkafka/tenancy/naming.py``.
"""

import re
from dataclasses import dataclass

import re2

MAX_TOPIC_LENGTH = 249
TOPIC_CHARS = re.compile(r"[a-zA-Z0-9._-]+\Z")  # \Z: no trailing newline
VCLUSTER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}\Z")

# The gateway's own state topics: never visible to, or creatable by, a tenant.
GATEWAY_TOPIC_PREFIX = "_vkafka"


def valid_topic_name(name):
    """A valid physical Kafka topic name."""
    return (bool(name) and len(name) <= MAX_TOPIC_LENGTH
            and bool(TOPIC_CHARS.match(name)) and name not in (".", ".."))


def valid_vcluster_name(name):
    return bool(VCLUSTER_NAME.match(name or ""))


def folded(name):
    """*name* as Kafka compares topics for collisions: '.' and '_' are one."""
    return name.replace(".", "_")


def overlap(prefix, other):
    """Two prefixes overlap when, folded, one starts the other (equal included):
    a name of one could then be, or collide with, a name of the other."""
    a, b = folded(prefix), folded(other)
    return a.startswith(b) or b.startswith(a)


def inside(prefix, physical):
    """*physical* lies in *prefix*'s namespace, or would collide with a name there."""
    return folded(physical).startswith(folded(prefix))


@dataclass(frozen=True)
class ConcentrationRule:
    """CreateTopics of a logical name matching *pattern* makes a concentrated
    topic in the physical topic *targets* gives for its cleanup policy."""
    name: str
    pattern: str
    targets: tuple  # ((cleanup policy, physical topic), ...)

    def matches(self, logical):
        """RE2 (linear time): the tenant chooses the names a rule is matched
        against, and a backtracking pattern such as ``(a+)+b`` took seconds of
        the event loop for a 28-character name."""
        return re2.fullmatch(self.pattern, logical) is not None

    def target(self, policy):
        policy = ",".join(sorted(p.strip() for p in (policy or "delete").split(",")))
        return dict(self.targets).get(policy)
