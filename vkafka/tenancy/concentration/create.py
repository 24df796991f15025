# -*- test-case-name: tests.test_concentration -*-
"""CreateTopics by a concentration rule: a logical name the rule matches
becomes a concentrated mapping in the shared state, not a topic on the
cluster (rules/topics.py decides which names go here)."""

from twisted.internet import defer

from ...state.model import StateError
from ...state.store import StoreUnavailable
from .shared import INVALID_CONFIG, INVALID_REQUEST, TOPIC_ALREADY_EXISTS

INVALID_PARTITIONS, REQUEST_TIMED_OUT = 37, 7


def create_by_rule(services, rctx, rule, topic, validate_only):
    """A CreateTopics entry a concentration rule matches: a concentrated mapping
    in the shared state instead of a topic.  Fires with (error code, message,
    partitions).  Only cleanup.policy can be set: it picks the physical topic;
    every other key would apply to the whole physical topic, so it is refused."""
    configs = {c.name: c.value for c in topic.configs or ()}
    others = sorted(set(configs) - {"cleanup.policy"})
    if others:
        return defer.succeed((INVALID_CONFIG, f"only cleanup.policy can be set on a "
                              f"concentrated topic (rule {rule.name!r}), not "
                              f"{', '.join(others)}", -1))
    policy = configs.get("cleanup.policy")
    target = rule.target(policy)
    if target is None:
        return defer.succeed((INVALID_CONFIG, f"concentration rule {rule.name!r} has "
                              f"no physical topic for cleanup.policy="
                              f"{policy or 'delete'}", -1))
    partitions = topic.num_partitions if topic.num_partitions > 0 else None
    state = services.state

    @defer.inlineCallbacks
    def run():
        try:
            if validate_only:
                count = (yield state.topic_exists(target)) if state.topic_exists else 0
                if partitions and count and partitions > count:
                    return (INVALID_PARTITIONS, f"at most the {count} partitions of "
                            f"{target!r}", -1)
                return 0, None, partitions or count or -1
            value = yield state.put_mapping(rctx.namespace.name, topic.name, {
                "physicalTopicName": target, "readOnly": False, "concentrated": True,
                **({"partitions": partitions} if partitions else {})})
            return 0, None, value.get("partitions", -1)
        except StateError as e:
            code = {400: INVALID_PARTITIONS, 409: TOPIC_ALREADY_EXISTS}.get(
                e.status, INVALID_REQUEST)
            return code, e.message, -1
        except StoreUnavailable as e:
            return REQUEST_TIMED_OUT, f"cannot record the topic: {e}", -1
    return run()
