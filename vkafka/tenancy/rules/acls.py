# -*- test-case-name: tests.test_rights -*-
"""DescribeAcls, CreateAcls and DeleteAcls, answered by the gateway.

A virtual cluster's ACLs live in the gateways' shared state (state/model.py,
``acl/<vc>/<key>``) under logical names; the brokers never see them, and a
tenant sees and changes only its own.  ``kafka-acls --bootstrap-server
<gateway> --command-config tenant.properties --add/--list/--remove`` works
unchanged.  While the ACLs are on, DescribeAcls needs DESCRIBE and the
others ALTER on the cluster (``kafka-cluster``), as on a broker.
"""

from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.static.constants import EntityType
from kio.static.primitive import i8

from ...auth.acls import (MAX_ACLS, OPERATIONS, PATTERN_TYPES, PERMISSIONS,
                          RESOURCE_TYPES, Acl, AclFilter, InvalidAcl, name_of)
from ...protocol.codec import encode_body
from ...state.model import StateError
from .common import NO_THROTTLE, StateWrites

DESCRIBE_ACLS, CREATE_ACLS, DELETE_ACLS = 29, 30, 31
_NOT_HERE = "ACLs are kept by the gateway's state, which this gateway cannot reach"


def _response(api_key, version):
    module = load_payload_module(api_key, version, EntityType.response)
    return module, getattr(module, {DESCRIBE_ACLS: "DescribeAclsResponse",
                                    CREATE_ACLS: "CreateAclsResponse",
                                    DELETE_ACLS: "DeleteAclsResponse"}[api_key])


def _filter(item):
    """An AclFilter from a DescribeAcls request or a DeleteAcls filter."""
    return AclFilter(name_of(RESOURCE_TYPES, item.resource_type_filter),
                     item.resource_name_filter,
                     name_of(PATTERN_TYPES, item.pattern_type_filter),
                     item.principal_filter, item.host_filter,
                     name_of(OPERATIONS, item.operation),
                     name_of(PERMISSIONS, item.permission_type))


def _cluster_refusal(rctx, operation):
    """(code, message) when the principal may not *operation* the cluster."""
    rights = rctx.rights
    if rights is None or rights.on_cluster(operation):
        return None
    rights.tell(operation, "CLUSTER", "kafka-cluster")
    return (ErrorCode.cluster_authorization_failed,
            f"not authorized: {rights.principal} may not {operation} the cluster")


def _state_of(services):
    state = services.state
    return None if state is None or not hasattr(state, "acls_of") else state


def describe_acls(services, rctx, request):
    version = request.__version__
    module, cls = _response(DESCRIBE_ACLS, version)
    refused = _cluster_refusal(rctx, "DESCRIBE")
    state = _state_of(services)
    if refused is None and state is None:
        refused = (ErrorCode.unknown_server_error, _NOT_HERE)
    if refused is None:
        acl_filter = _filter(request)
        if acl_filter.resource_type == "UNKNOWN" or acl_filter.pattern_type == "UNKNOWN":
            refused = (ErrorCode.invalid_request, "unknown resource or pattern type")
    if refused is not None:
        rctx.answer = encode_body(cls(throttle_time=NO_THROTTLE, error_code=refused[0],
                                      error_message=refused[1], resources=()))
        return request
    grouped = {}
    for acl in state.acls_of(rctx.namespace.name):
        if acl_filter.matches(acl):
            grouped.setdefault((acl.resource_type, acl.name, acl.pattern_type),
                               []).append(acl)
    resources = tuple(module.DescribeAclsResource(
        resource_type=i8(RESOURCE_TYPES[rtype]), resource_name=name,
        pattern_type=i8(PATTERN_TYPES[ptype]),
        acls=tuple(module.AclDescription(
            principal=a.principal, host=a.host, operation=i8(OPERATIONS[a.operation]),
            permission_type=i8(PERMISSIONS[a.permission])) for a in acls))
        for (rtype, name, ptype), acls in sorted(grouped.items()))
    rctx.answer = encode_body(cls(throttle_time=NO_THROTTLE, error_code=ErrorCode.none,
                                  error_message=None, resources=resources))
    return request


def create_acls(services, rctx, request):
    """Each creation checked (the kinds a virtual cluster holds, a principal
    of its own), then written to the state; the answer waits for the writes."""
    module, cls = _response(CREATE_ACLS, request.__version__)
    refused = _cluster_refusal(rctx, "ALTER")
    state = _state_of(services)
    if refused is None and state is None:
        refused = (ErrorCode.unknown_server_error, _NOT_HERE)
    if refused is None and services.acl_writes is not None and not \
            services.acl_writes.take(rctx.namespace.name, len(request.creations)):
        refused = (ErrorCode.throttling_quota_exceeded,
                   f"ACLs are created at most {StateWrites.RATE:g} a second per "
                   f"virtual cluster on a gateway, after {MAX_ACLS} at once")
    results, valid = [], []
    for c in request.creations:
        outcome = refused
        if outcome is None:
            try:
                valid.append(Acl.checked(
                    name_of(RESOURCE_TYPES, c.resource_type), name_of(
                        PATTERN_TYPES, c.resource_pattern_type), c.resource_name,
                    c.principal, c.host, name_of(OPERATIONS, c.operation),
                    name_of(PERMISSIONS, c.permission_type)))
            except InvalidAcl as e:
                outcome = (ErrorCode.invalid_request, str(e))
        results.append(outcome)

    def answer(failure=None):
        body = cls(throttle_time=NO_THROTTLE, results=tuple(
            module.AclCreationResult(
                error_code=ErrorCode.none if r is None and failure is None else
                (r[0] if r is not None else ErrorCode.unknown_server_error),
                error_message=None if r is None and failure is None else
                (r[1] if r is not None else _NOT_HERE)) for r in results))
        rctx.answer = encode_body(body)
        return request
    if not valid:
        return answer()

    def failed(failure):
        if failure.check(StateError):  # too many ACLs: each creation says why
            results[:] = [r or (ErrorCode.policy_violation, failure.value.message)
                          for r in results]
            return answer()
        return answer(failure)
    return state.add_acls(rctx.namespace.name, valid).addCallbacks(
        lambda _: answer(), failed)


MAX_FILTERS = 100
"""Filters one DeleteAcls may carry: each is matched against every ACL of the
virtual cluster on the event loop (7,800 filters held it for seconds)."""


def delete_acls(services, rctx, request):
    """Each filter's matching ACLs of the virtual cluster removed; the answer
    lists them, as a broker's does."""
    module, cls = _response(DELETE_ACLS, request.__version__)
    refused = _cluster_refusal(rctx, "ALTER")
    state = _state_of(services)
    if refused is None and state is None:
        refused = (ErrorCode.unknown_server_error, _NOT_HERE)

    def result(code, message, matched=()):
        return module.DeleteAclsFilterResult(
            error_code=code, error_message=message, matching_acls=tuple(
                module.DeleteAclsMatchingAcl(
                    error_code=ErrorCode.none, error_message=None,
                    resource_type=i8(RESOURCE_TYPES[a.resource_type]),
                    resource_name=a.name, pattern_type=i8(PATTERN_TYPES[a.pattern_type]),
                    principal=a.principal, host=a.host,
                    operation=i8(OPERATIONS[a.operation]),
                    permission_type=i8(PERMISSIONS[a.permission])) for a in matched))

    def answer(results):
        rctx.answer = encode_body(cls(throttle_time=NO_THROTTLE,
                                      filter_results=tuple(results)))
        return request
    if refused is None and len(request.filters) > MAX_FILTERS:
        refused = (ErrorCode.invalid_request, f"at most {MAX_FILTERS} filters a "
                   "DeleteAcls")
    if refused is not None:
        return answer([result(*refused) for _ in request.filters])
    filters = [_filter(f) for f in request.filters]
    d = state.delete_acls(rctx.namespace.name, filters)
    return d.addCallbacks(
        lambda removed: answer([result(ErrorCode.none, None, m) for m in removed]),
        lambda _: answer([result(ErrorCode.unknown_server_error, _NOT_HERE)
                          for _ in filters]))


RULES = {
    DESCRIBE_ACLS: ("DescribeAcls", describe_acls, None,
                    "answered by the gateway: the virtual cluster's own ACLs, under "
                    "logical names (DESCRIBE on the cluster while ACLs are on)"),
    CREATE_ACLS: ("CreateAcls", create_acls, None,
                  "answered by the gateway: ACLs on the virtual cluster's topics, "
                  "groups, transactional ids and cluster for its own principals, "
                  "kept in the shared state (ALTER on the cluster while ACLs are on)"),
    DELETE_ACLS: ("DeleteAcls", delete_acls, None,
                  "answered by the gateway: only the virtual cluster's own ACLs "
                  "match (ALTER on the cluster while ACLs are on)"),
}
"""api key -> (name, request rule, response rule, why), rows of the tenant table."""
