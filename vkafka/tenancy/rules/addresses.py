# -*- test-case-name: tests.test_rules -*-
"""Rules that make broker addresses the gateway's (Metadata, DescribeCluster,
FindCoordinator, KIP-951 node endpoints) and cut ApiVersions to the table.

These run in passthrough mode too (the request context is then None)."""

import dataclasses
from dataclasses import replace

from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.static.constants import EntityType


from ...protocol.codec import encode_body
from ...protocol.headers import API_VERSIONS


# --- response rewriters -------------------------------------------------------

def rewrite_metadata(services, rctx, response):
    topology = services.topology
    if rctx is None:  # passthrough: the gateway's own state topics stay hidden
        from ..naming import GATEWAY_TOPIC_PREFIX
        if any(t.name and t.name.startswith(GATEWAY_TOPIC_PREFIX)
               for t in response.topics):
            response = replace(response, topics=tuple(
                t for t in response.topics
                if not (t.name and t.name.startswith(GATEWAY_TOPIC_PREFIX))))
    return replace(response, brokers=_at_gateway(services, response.brokers))


def rewrite_describe_cluster(services, rctx, response):
    return replace(response, brokers=_at_gateway(
        services, response.brokers, lambda b: b.broker_id))


def gateway_address(services, node_id):
    """The (host, port) this client must use for broker *node_id*: in a
    gateway cluster, the live node its mapping gives (state/membership.py);
    else, or if that node has no port for it, this gateway's own."""
    membership = services.membership
    if membership is not None:
        node = membership.mapping(services.client_key,
                                  services.topology.brokers).get(node_id)
        address = None if node is None else node.address(node_id)
        if address is not None:
            return address
    return services.topology.gateway_address(node_id)


def mapping_key(services):
    """The client's brokers-to-gateways mapping as a key (None: this gateway's
    own addresses), for answers kept and shared between clients."""
    membership = services.membership
    if membership is None:
        return None
    mapping = membership.mapping(services.client_key, services.topology.brokers)
    return tuple(sorted((b, n.id) for b, n in mapping.items())) or None


def _at_gateway(services, brokers, node_of=lambda b: b.node_id):
    """Brokers (or KIP-951 endpoints) learnt, then given the gateway's address
    for them; one the gateway has no port for is left out (clients would
    otherwise connect to it directly)."""
    services.topology.learn((node_of(b), b.host, b.port) for b in brokers)
    found = []
    for broker in brokers:
        address = gateway_address(services, node_of(broker))
        if address is not None:
            found.append(replace(broker, host=address[0], port=address[1]))
    return tuple(found)


def _rewrite_coordinator(services, item):
    if item.node_id < 0 or item.error_code != 0:
        return item
    services.topology.learn([(item.node_id, item.host, item.port)])
    address = gateway_address(services, item.node_id)
    if address is None:
        return replace(item, node_id=-1, host="", port=-1,  # the client retries
                       error_code=ErrorCode.coordinator_not_available)
    return replace(item, host=address[0], port=address[1])


def rewrite_find_coordinator(services, rctx, response):
    if hasattr(response, "coordinators"):
        return replace(response, coordinators=tuple(
            _rewrite_coordinator(services, c) for c in response.coordinators
        ))
    return _rewrite_coordinator(services, response)


def rewrite_node_endpoints(services, rctx, response):
    """KIP-951: Produce and Fetch name the new leader's address on errors."""
    if not response.node_endpoints:
        return response
    return replace(response, node_endpoints=_at_gateway(services,
                                                        response.node_endpoints))


def rewrite_api_versions(services, rctx, response):
    """Offer the intersection of the broker's versions and this table."""
    return _intersected(services.rules, response)


def _intersected(table, response):
    kept = []
    for api in response.api_keys:
        rule = table.get(api.api_key)
        if rule is None:
            continue
        low = max(api.min_version, rule.min_version)
        high = min(api.max_version, rule.max_version)
        if low <= high:
            kept.append(replace(api, min_version=low, max_version=high))
    # APIs the gateway answers itself (SASL) are offered whatever the broker says.
    present = {api.api_key for api in kept}
    template = response.api_keys[0] if response.api_keys else None
    for rule in table.values():
        if rule.local and rule.api_key not in present and template is not None:
            kept.append(replace(template, api_key=rule.api_key,
                                min_version=rule.min_version,
                                max_version=rule.max_version))
    return replace(response, api_keys=tuple(sorted(kept, key=lambda a: a.api_key)))


def offered_rules(table, response):
    """*table* narrowed to the versions its ApiVersions answer offers, given the
    brokers' *response*: a request at a version the table knows but the brokers
    do not (a raw client may send one) is refused at the gateway, as one never
    offered, instead of reaching a broker that closes the connection on it."""
    offered = {api.api_key: replace(table[api.api_key], min_version=api.min_version,
                                    max_version=api.max_version)
               for api in _intersected(table, response).api_keys}
    for key, rule in table.items():  # answered here, whatever the brokers say
        if rule.local or key == API_VERSIONS:
            offered.setdefault(key, rule)
    return offered


def local_api_versions(services, version, error=ErrorCode.none):
    """The ApiVersions answer body for a tenant at *version*, made by the
    gateway from the brokers' own answer (learnt by its refresh) cut to this
    table: tenants are answered before any broker connection is opened for
    them (that waits for authentication).  None if the brokers' answer is not
    known yet.  *error* UNSUPPORTED_VERSION: the v0 answer to a version past
    the table's, from which a client picks one offered (KIP-511).

    Made once per version and kept while the brokers' answer and the table
    stay the same objects: it is answered before login, to anyone, so a
    flood of them must cost a lookup each, not a conversion and an encoding."""
    known = services.topology.api_versions
    if known is None:
        return None
    key = (version, error)
    kept = _ANSWERED.get(key)
    if kept is not None and kept[0] is known and kept[1] is services.rules:
        return kept[2]
    module = load_payload_module(18, version, EntityType.response)
    response = rewrite_api_versions(services, None, replace(
        _convert(known, module), error_code=error))
    if error != ErrorCode.none:  # as a broker does: the versions of ApiVersions alone
        response = replace(response, api_keys=tuple(
            a for a in response.api_keys if a.api_key == API_VERSIONS))
    elif version == 3:  # as a broker does (KIP-1022): older clients refuse min 0
        response = replace(response, supported_features=tuple(
            f for f in response.supported_features if f.min_version > 0))
    body = encode_body(response)
    _ANSWERED[key] = (known, services.rules, body)
    return body


_ANSWERED = {}
"""(version, error) -> (the brokers' answer, the table, the body made of them)."""


def _convert(value, module):
    """A kio entity as the class of the same name in *module* (another version
    of the same message): fields it lacks are left out, fields it adds take
    their defaults."""

    cls = getattr(module, type(value).__name__)
    values = {}
    for f in dataclasses.fields(cls):
        if not hasattr(value, f.name):
            continue
        current = getattr(value, f.name)
        if dataclasses.is_dataclass(current):
            current = _convert(current, module)
        elif isinstance(current, tuple) and current and dataclasses.is_dataclass(
                current[0]):
            current = tuple(_convert(v, module) for v in current)
        values[f.name] = current
    return cls(**values)


def node_endpoints(services, rctx, response):
    """KIP-951 addresses, in the versions that carry them."""
    if hasattr(response, "node_endpoints"):
        return rewrite_node_endpoints(services, rctx, response)
    return response
