# -*- test-case-name: tests.test_concentration -*-
"""Fail closed: an API this layer has no rule for must not reach a physical
topic that other logical topics share.  Each concentrated name or id in such
a request becomes a decoy the broker refuses, and the tenant rewrite of the
response answers with a Kafka error saying why."""

import dataclasses
import uuid

from .. import walker
from ..naming import TOPIC
from .shared import INVALID_CONFIG, INVALID_REQUEST, TOPIC_ALREADY_EXISTS

_CONFIG_REASON = ("{}'s configuration is its physical topic's (concentrated): not "
                  "changeable per logical topic")
_REFUSALS = {
    19: ("{} is a concentrated topic: it exists", TOPIC_ALREADY_EXISTS),
    33: (_CONFIG_REASON, INVALID_CONFIG),
    44: (_CONFIG_REASON, INVALID_CONFIG),
}


class _Refuser:
    """A walker context that turns concentrated names and ids into decoys."""

    def __init__(self, rctx, api_key, refusal=None):
        self.rctx = rctx
        self.reason, self.code = refusal or _REFUSALS.get(api_key, (
            f"{{}} is a concentrated topic: API {api_key} is not available on it",
            INVALID_REQUEST))

    def _why(self, alias):
        return self.reason.format(repr(alias.logical))

    def to_physical(self, kind, name):
        alias = self.rctx.concentrated.get(name) if kind == TOPIC else None
        if alias is None:
            return name
        return self.rctx.decoy_name(TOPIC, alias.logical, self._why(alias), self.code)

    def check_topic_id(self, topic_id):
        alias = self.rctx.concentrated.get(self.rctx.topic_ids.get(topic_id))
        if alias is None:
            return topic_id
        decoy = uuid.uuid4()
        self.rctx.decoy_ids[decoy] = (topic_id, self._why(alias), self.code)
        self.rctx.refusals += 1
        return decoy


def refuse(rctx, api_key, request, refusal=None):
    """*request* with every concentrated topic in it a decoy; *refusal*:
    (reason, with ``{}`` for the logical topic, error code) if not the API's."""
    refuser = _Refuser(rctx, api_key, refusal)
    if api_key in (33, 44):  # config resources name topics as plain strings
        return dataclasses.replace(request, resources=tuple(
            dataclasses.replace(r, resource_name=refuser.to_physical(
                TOPIC, r.resource_name)) if r.resource_type == 2 else r
            for r in request.resources))
    return walker.rewrite_request(request, refuser)
