# -*- test-case-name: tests.test_admin -*-
"""The admin REST API (Klein), mounted at ``/admin`` behind HTTP basic auth.

Every error is JSON ``{"error": ..., "message": ...}`` with a 4xx status (503
when the state store cannot take writes); bad input never causes a 500.
An address that keeps failing to log in gets 429 with ``Retry-After``.

Request bodies and path parameters are checked by the served OpenAPI
document itself (``openapi.Contract``: a 400 naming the ``field``); the
handlers here keep only what a schema cannot say, and the state store the
checks against other state (conflicts: 409).
"""

import json
import math
import re
import time
from functools import lru_cache, wraps

from klein import Klein
from twisted.cred import error as cred_error
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from ..auth.acls import AclFilter
from ..state.model import StateError
from ..state.store import StoreUnavailable
from ..usage.report import Usage
from . import resources
from .audit import NO_AUDIT, parse_time
from .dashboard import Dashboard, render_page
from .openapi import Contract, InvalidRequest, document
from .users import LoginThrottle

log = Logger()
DEFAULT_LIFETIME = 90 * 24 * 3600
V1 = "/vclusters/v1"
RESOURCES = "/resources/v1"
ACL_FILTER_QUERY = {"resourceType": "resource_type", "name": "name",
                    "patternType": "pattern_type", "principal": "principal",
                    "host": "host", "operation": "operation",
                    "permission": "permission"}
"""DELETE .../acls query parameters -> auth.acls.AclFilter fields (absent: ANY)."""
MOUNT = "/admin"  # where admin_root mounts the app: its paths' prefix in the document


def audit(user, request, status, log_to=None, vcluster=None, details=None):
    """One audit event per admin write: logged when it took effect, and every
    attempt, with its result, on the audit log (``audit.AuditLog``)."""
    if status < 400:
        log.info("audit: {user} {method} {path} -> {status}", audit=True, user=user,
                 method=request.method.decode(), path=request.path.decode(),
                 status=status)
    if log_to is not None:
        log_to.admin(user, request.method.decode(), request.path.decode(errors="replace"),
                     status, vcluster, details)


def _instant(text, name):
    """Seconds of a query's ISO 8601 time; 400 if the calendar has no such day."""
    try:
        return parse_time(text)
    except ValueError:
        raise InvalidRequest("bad_field", f"invalid {name}: {text!r} is no time", name)


def _json(request, status, body):
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode()


class Download:
    """A handler's answer that is a file, not JSON (the CSV usage export)."""

    def __init__(self, content_type, text, filename):
        self.content_type, self.text, self.filename = content_type, text, filename

    def render(self, request, status):
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", self.content_type.encode())
        request.setHeader(b"Content-Disposition",
                          f'attachment; filename="{self.filename}"'.encode())
        return self.text.encode()


@lru_cache(maxsize=None)
def document_path(endpoint_name):
    """The document's path of the Klein route named *endpoint_name*."""
    rule = next(rule for rule in AdminApp.app.url_map.iter_rules()
                if rule.endpoint == endpoint_name)
    return MOUNT + re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule)


class Audited:
    """A handler's answer *body* with what its audit event should say of it."""

    def __init__(self, body, audit):
        self.body, self.audit = body, audit


@defer.inlineCallbacks
def _run(self, fn, request, kwargs):
    """(status, body) of a handler: the request checked by the document, the
    errors mapped to statuses, never a 500 for bad input."""
    try:
        operation = self.contract.operation(document_path(fn.__name__),
                                            request.method)
        body = operation.check(kwargs, request.content.read()
                               if request.content is not None else b"")
        if operation.body is not None:
            kwargs["body"] = body
        if operation.query:
            kwargs["query"] = operation.check_query(request.args)
        result = yield fn(self, request, **kwargs)
    except InvalidRequest as e:
        return 400, e.body()
    except StateError as e:
        return e.status, {**e.details, "error": e.error, "message": e.message}
    except StoreUnavailable as e:
        return 503, {"error": "unavailable", "message": str(e)}
    except Exception:
        log.failure("admin API {path} failed", path=request.path)
        return 500, {"error": "internal", "message": "internal error, see the log"}
    return result if isinstance(result, tuple) else (200, result)


def read_only_users_too(fn):
    """Let read-only users reach a write handler, which refuses them what
    they may not do itself (apply: a dry run is allowed)."""
    fn.reads_only = True
    return fn


def _cross_site(request):
    """A write sent by a browser for another site's page: its Origin header
    names another host.  A browser that holds the operator's Basic
    credentials (the dashboard was open) sends them along, and a JSON body
    sent as text/plain needs no preflight.  curl and the CLI send no Origin."""
    origin = request.getHeader(b"origin")
    if origin is None:
        return False
    if isinstance(origin, str):
        origin = origin.encode()
    host = request.getHeader(b"host") or b""
    if isinstance(host, str):
        host = host.encode()
    return origin.lower().split(b"://", 1)[-1].rstrip(b"/") != host.lower()


def endpoint(write=False):
    """Wrap a handler: JSON in and out, errors mapped to statuses, never a 500.

    The request is first checked by the document's operation for this route
    and method (``AdminApp.contract``); the handler of an operation with a
    request body gets the checked body as ``body``, one with query parameters
    those given as ``query`` (a dict).
    """
    def decorate(fn):
        @wraps(fn)
        @defer.inlineCallbacks
        def wrapper(self, request, **kwargs):
            vcluster = kwargs.get("vcluster")
            if write and self.user.read_only and not getattr(fn, "reads_only", False):
                status, body = 403, {"error": "forbidden", "message":
                                     f"user {self.user.name!r} is read-only"}
            elif write and _cross_site(request):
                status, body = 403, {"error": "forbidden", "message":
                                     "a write from another site's page (its Origin "
                                     "is not this host) is refused"}
            else:
                status, body = yield _run(self, fn, request, kwargs)
            if write:
                details = body if status >= 400 else (
                    body.audit if isinstance(body, Audited) else None)
                audit(self.user.name, request, status, self.audit, vcluster, details)
            if isinstance(body, Audited):
                body = body.body
            if status == 204:
                request.setResponseCode(204)
                return b""
            if isinstance(body, Download):
                return body.render(request, status)
            return _json(request, status, body)
        return wrapper
    return decorate


class AdminApp:
    """The routes, bound to one authenticated user."""

    app = Klein()
    # The served document and the request checks are one object: a field
    # added to the document is accepted (a test swaps in another document).
    contract = Contract(document())

    def __init__(self, state, user, dashboard=None, usage=None, audit=None,
                 workers=None):
        self.state = state
        self.user = user
        self.dashboard = dashboard
        self.usage = usage
        self.audit = audit
        self.workers = workers

    def _measured(self):
        if self.usage is None:
            raise StateError(503, "unavailable", "usage is not measured here")
        return self.usage

    @app.route(f"{V1}", methods=["GET"])
    @endpoint()
    def list_vclusters(self, request):
        return defer.succeed({"vclusters": [
            self.state.describe(name) for name in sorted(self.state.clusters)]})

    @app.route(f"{V1}/vcluster/<vcluster>", methods=["GET"])
    @endpoint()
    def show_vcluster(self, request, vcluster):
        return defer.succeed(self.state.describe(vcluster))

    @app.route(f"{V1}/vcluster/<vcluster>", methods=["POST"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def create_vcluster(self, request, vcluster, body):
        yield self.state.ensure_vcluster(vcluster, body.get("prefix"))
        return self.state.describe(vcluster)

    @app.route(f"{V1}/vcluster/<vcluster>", methods=["DELETE"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def delete_vcluster(self, request, vcluster):
        yield self.state.delete_vcluster(vcluster)
        return 204, None

    @app.route(f"{V1}/vcluster/<vcluster>/username", methods=["GET"])
    @endpoint()
    def list_accounts(self, request, vcluster):
        self.state.vcluster(vcluster)
        return defer.succeed({"serviceAccounts": self.state.accounts_of(vcluster)})

    @app.route(f"{V1}/vcluster/<vcluster>/username/<username>", methods=["POST"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def create_account(self, request, vcluster, username, body):
        lifetime = body.get("lifeTimeSeconds", DEFAULT_LIFETIME)
        token = yield self.state.create_account(vcluster, username, lifetime)
        return {"token": token}

    @app.route(f"{V1}/vcluster/<vcluster>/username/<username>/revoke",
               methods=["POST"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def revoke(self, request, vcluster, username, body):
        yield self.state.revoke(vcluster, username)
        return {"vcluster": vcluster, "username": username, "revoked": True}

    @app.route(f"{V1}/vcluster/<vcluster>/topics", methods=["GET"])
    @endpoint()
    def list_mappings(self, request, vcluster):
        self.state.vcluster(vcluster)
        return defer.succeed({"topicMappings": self.state.mappings_of(vcluster)})

    @app.route(f"{V1}/vcluster/<vcluster>/topics/<topic>", methods=["POST"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def put_mapping(self, request, vcluster, topic, body):
        concentrated = body.get("concentrated", False)
        mapping = yield self.state.put_mapping(vcluster, topic, {
            "physicalTopicName": body["physicalTopicName"],
            "readOnly": body.get("readOnly", False),
            "concentrated": concentrated,
            # a plain alias has the physical topic's partitions: ignored there
            **({"partitions": body["partitions"]}
               if concentrated and "partitions" in body else {}),
            **({"create": body["create"]} if "create" in body else {})})
        return mapping

    @app.route(f"{V1}/vcluster/<vcluster>/concentration-rules", methods=["GET"])
    @endpoint()
    def list_rules(self, request, vcluster):
        self.state.vcluster(vcluster)
        return defer.succeed({"concentrationRules": self.state.rules_of(vcluster)})

    @app.route(f"{V1}/vcluster/<vcluster>/concentration-rules/<rule>", methods=["POST"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def put_rule(self, request, vcluster, rule, body):
        result = yield self.state.put_rule(vcluster, rule, body)
        return result

    @app.route(f"{V1}/vcluster/<vcluster>/concentration-rules/<rule>",
               methods=["DELETE"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def delete_rule(self, request, vcluster, rule):
        yield self.state.delete_rule(vcluster, rule)
        return 204, None

    @app.route(f"{V1}/vcluster/<vcluster>/topics/<topic>", methods=["DELETE"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def delete_mapping(self, request, vcluster, topic):
        yield self.state.delete_mapping(vcluster, topic)
        return 204, None

    @app.route(f"{V1}/vcluster/<vcluster>/limits", methods=["GET"])
    @endpoint()
    def show_limits(self, request, vcluster):
        self.state.vcluster(vcluster)
        return defer.succeed(self.state.limits_of(vcluster).to_json())

    @app.route(f"{V1}/vcluster/<vcluster>/limits", methods=["POST"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def put_limits(self, request, vcluster, body):
        limits = yield self.state.put_limits(vcluster, body)
        return limits.to_json()

    @app.route(f"{V1}/vcluster/<vcluster>/limits", methods=["DELETE"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def delete_limits(self, request, vcluster):
        yield self.state.delete_limits(vcluster)
        return 204, None

    @app.route(f"{V1}/vcluster/<vcluster>/usage", methods=["GET"])
    @endpoint()
    def show_usage(self, request, vcluster, query):
        return self._measured().of(vcluster, query.get("from"), query.get("to"))

    @app.route(f"{V1}/usage", methods=["GET"])
    @endpoint()
    def export_usage(self, request, query):
        export = self._measured().export(query.get("from"), query.get("to"))
        if query.get("format") == "csv":
            name = f"vkafka-usage-{export['from'][:13]}-{export['to'][:13]}.csv"
            export = Download("text/csv; charset=utf-8", Usage.csv(export), name)
        return defer.succeed(export)

    # rights inside a virtual cluster (docs/rights.md)

    @app.route(f"{V1}/vcluster/<vcluster>/username/<username>", methods=["DELETE"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def delete_account(self, request, vcluster, username):
        self.state.vcluster(vcluster)
        if (vcluster, username) not in self.state.accounts:  # "*" too: no account
            raise StateError(404, "not_found", f"service account {username!r} does "
                             f"not exist in {vcluster!r}")
        yield self.state.delete_account(vcluster, username)
        return 204, None

    @app.route(f"{V1}/vcluster/<vcluster>/rights", methods=["GET"])
    @endpoint()
    def show_rights(self, request, vcluster):
        self.state.vcluster(vcluster)
        return defer.succeed(self.state.rights_of(vcluster))

    @app.route(f"{V1}/vcluster/<vcluster>/rights", methods=["PUT"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def put_rights(self, request, vcluster, body):
        wanted = {"acls": body["acls"],
                  "superUsers": sorted(set(body.get("superUsers", ())))}
        self.state.vcluster(vcluster)
        if self.state.rights_of(vcluster) != wanted:  # idempotent: no write
            yield self.state.put_rights(vcluster, wanted["acls"], wanted["superUsers"])
        return self.state.rights_of(vcluster)

    @app.route(f"{V1}/vcluster/<vcluster>/acls", methods=["GET"])
    @endpoint()
    def list_acls(self, request, vcluster):
        self.state.vcluster(vcluster)
        return defer.succeed(self._acls(vcluster))

    def _acls(self, vcluster):
        return {"acls": [acl.to_json() for acl in self.state.acls_of(vcluster)]}

    @app.route(f"{V1}/vcluster/<vcluster>/acls", methods=["PUT"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def replace_acls(self, request, vcluster, body):
        self.state.vcluster(vcluster)
        added, removed = yield resources.replace_acls(
            self.state, vcluster, resources.acls_from_json(body["acls"]))
        return Audited(self._acls(vcluster), {"added": added, "removed": removed})

    @app.route(f"{V1}/vcluster/<vcluster>/acls", methods=["POST"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def add_acls(self, request, vcluster, body):
        self.state.vcluster(vcluster)
        acls = resources.acls_from_json(body["acls"])
        held = set(self.state.acls_of(vcluster))
        yield self.state.add_acls(vcluster, acls)
        return Audited(self._acls(vcluster), {"added": len(set(acls) - held)})

    @app.route(f"{V1}/vcluster/<vcluster>/acls", methods=["DELETE"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def delete_acls(self, request, vcluster, query):
        self.state.vcluster(vcluster)
        acl_filter = AclFilter(**{field: query[name]
                                  for name, field in ACL_FILTER_QUERY.items()
                                  if name in query})
        [removed] = yield self.state.delete_acls(vcluster, [acl_filter])
        return Audited({"deleted": [acl.to_json() for acl in removed]},
                       {"removed": len(removed)})

    # declarative admin (vkafka/admin/resources.py, docs/rights.md)

    @app.route(f"{RESOURCES}", methods=["GET"])
    @endpoint()
    def list_resources(self, request, query):
        names = [query["vcluster"]] if "vcluster" in query else sorted(
            self.state.clusters)
        return defer.succeed({"resources": [
            item.to_json() for vc in names for item in resources.current(
                self.state, vc)]})

    @app.route(f"{RESOURCES}/apply", methods=["POST"])
    @endpoint(write=True)
    @read_only_users_too
    @defer.inlineCallbacks
    def apply_resources(self, request, body):
        dry = body.get("dryRun", False)
        if self.user.read_only and not dry:
            raise StateError(403, "forbidden", f"user {self.user.name!r} is "
                             "read-only: it may only ask for a dry run")
        wanted = resources.parse(body["resources"])
        changes = resources.plan(self.state, wanted, body.get("prune", True))
        if not dry:
            yield resources.execute(self.state, changes)
        answer = {"dryRun": dry, "changes": [c.to_json() for c in changes],
                  "unchanged": len(wanted) - sum(
                      1 for c in changes if c.action != "delete")}
        return Audited(answer, None if dry else {
            "changes": [f"{c.action} {c.summary()}" for c in changes]})

    @defer.inlineCallbacks
    def _put(self, kind, vcluster, name, spec):
        wanted = resources.resource(kind, vcluster, name, spec)
        change = resources.diff(self.state, wanted)
        if change is not None:
            yield resources.execute(self.state, [change])
        now = resources.current_one(self.state, kind, vcluster, name) or wanted
        answer = {"resource": now.to_json(),
                  "result": "unchanged" if change is None else
                  resources.PAST[change.action]}
        return Audited(answer, {"result": answer["result"]})

    def _get(self, kind, vcluster, name=""):
        self.state.vcluster(vcluster)
        found = resources.current_one(self.state, kind, vcluster, name)
        if found is None or resources.empty(found):  # none: as `vkafka get` shows
            raise StateError(404, "not_found", f"no {kind} {name!r} in {vcluster!r}")
        return defer.succeed(found.to_json())

    @defer.inlineCallbacks
    def _delete(self, kind, vcluster, name=""):
        if vcluster in self.state.clusters:
            change = resources.removal(self.state, kind, vcluster, name)
            if change is not None:
                yield resources.execute(self.state, [change])
        return 204, None

    @app.route(f"{RESOURCES}/vclusters/<vcluster>", methods=["GET"])
    @endpoint()
    def get_vcluster_resource(self, request, vcluster):
        return self._get("VirtualCluster", vcluster)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>", methods=["PUT"])
    @endpoint(write=True)
    def put_vcluster_resource(self, request, vcluster, body):
        return self._put("VirtualCluster", vcluster, "", body)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>", methods=["DELETE"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def delete_vcluster_resource(self, request, vcluster):
        if vcluster in self.state.clusters:
            yield self.state.delete_vcluster(vcluster)
        return 204, None

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/serviceaccounts/<username>",
               methods=["GET"])
    @endpoint()
    def get_account_resource(self, request, vcluster, username):
        return self._get("ServiceAccount", vcluster, username)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/serviceaccounts/<username>",
               methods=["PUT"])
    @endpoint(write=True)
    def put_account_resource(self, request, vcluster, username, body):
        return self._put("ServiceAccount", vcluster, username, body)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/serviceaccounts/<username>",
               methods=["DELETE"])
    @endpoint(write=True)
    def delete_account_resource(self, request, vcluster, username):
        return self._delete("ServiceAccount", vcluster, username)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/topicmappings/<topic>",
               methods=["GET"])
    @endpoint()
    def get_mapping_resource(self, request, vcluster, topic):
        return self._get("TopicMapping", vcluster, topic)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/topicmappings/<topic>",
               methods=["PUT"])
    @endpoint(write=True)
    def put_mapping_resource(self, request, vcluster, topic, body):
        return self._put("TopicMapping", vcluster, topic, body)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/topicmappings/<topic>",
               methods=["DELETE"])
    @endpoint(write=True)
    def delete_mapping_resource(self, request, vcluster, topic):
        return self._delete("TopicMapping", vcluster, topic)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/aclset", methods=["GET"])
    @endpoint()
    def get_aclset_resource(self, request, vcluster):
        return self._get("AclSet", vcluster)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/aclset", methods=["PUT"])
    @endpoint(write=True)
    def put_aclset_resource(self, request, vcluster, body):
        return self._put("AclSet", vcluster, "", body)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/aclset", methods=["DELETE"])
    @endpoint(write=True)
    def delete_aclset_resource(self, request, vcluster):
        return self._delete("AclSet", vcluster)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/limits", methods=["GET"])
    @endpoint()
    def get_limits_resource(self, request, vcluster):
        return self._get("Limits", vcluster)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/limits", methods=["PUT"])
    @endpoint(write=True)
    def put_limits_resource(self, request, vcluster, body):
        return self._put("Limits", vcluster, "", body)

    @app.route(f"{RESOURCES}/vclusters/<vcluster>/limits", methods=["DELETE"])
    @endpoint(write=True)
    def delete_limits_resource(self, request, vcluster):
        return self._delete("Limits", vcluster)

    # the audit log (vkafka/admin/audit.py)

    @app.route(f"{V1}/audit", methods=["GET"])
    @endpoint()
    def show_audit(self, request, query):
        since, until = (None if query.get(name) is None else _instant(query[name], name)
                        for name in ("from", "to"))
        log_of = self.audit or NO_AUDIT
        return defer.succeed({"events": log_of.recent(
            since, until, query.get("vcluster"), query.get("type"),
            int(query.get("limit", 100)))})

    @app.route("/dashboard", methods=["GET"])
    def dashboard_page(self, request):
        return render_page(request)

    @app.route("/dashboard.json", methods=["GET"])
    @endpoint()
    def dashboard_snapshot(self, request):
        request.setHeader(b"Cache-Control", b"no-store")
        return defer.succeed(self.dashboard.snapshot_for(request))

    @app.route("/workers", methods=["GET"])
    @endpoint()
    def show_workers(self, request):
        """Behind credentials, unlike ``/health``: it names virtual clusters."""
        if self.workers is None:
            raise StateError(404, "not_found", "this gateway runs no workers "
                                               "(--workers 1)")
        return defer.succeed({"workers": self.workers.details(names=True)})

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request):
        return _json(request, 200, self.contract.document)

    @app.handle_errors(Exception)
    def unexpected(self, request, failure):
        from werkzeug.exceptions import MethodNotAllowed, NotFound
        from werkzeug.routing import RequestRedirect
        if failure.check(NotFound, RequestRedirect):  # also a path with "//"
            return _json(request, 404, {"error": "not_found",
                                        "message": "no such endpoint"})
        if failure.check(MethodNotAllowed):
            allowed = sorted(failure.value.valid_methods or ())
            request.setHeader(b"Allow", ", ".join(allowed).encode())
            return _json(request, 405, {"error": "method_not_allowed",
                                        "message": "method not allowed here"})
        log.failure("admin API error", failure)
        return _json(request, 500, {"error": "internal", "message": "internal error"})


@implementer(IRealm)
class AdminRealm:
    def __init__(self, state, dashboard=None, usage=None, audit=None, workers=None):
        self.state = state
        self.dashboard = dashboard or Dashboard(state)
        self.usage = usage
        self.audit = audit
        self.workers = workers

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if IResource not in interfaces:
            raise NotImplementedError()
        app = AdminApp(self.state, avatar_id, self.dashboard, self.usage, self.audit,
                       self.workers)
        return IResource, app.app.resource(), lambda: None


@implementer(IRealm)
class ResourceRealm:
    """Any admin user, read-only ones too, gets one resource (``/metrics``)."""

    def __init__(self, resource):
        self.resource = resource

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if IResource not in interfaces:
            raise NotImplementedError()
        return IResource, self.resource, lambda: None


class Health(Resource):
    """``GET /health``: 200 when the gateway can serve, 503 with the reason if not."""

    isLeaf = True

    def __init__(self, check):
        super().__init__()
        self.check = check

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):  # not Twisted's 501 "Huh?"
            request.setHeader(b"Allow", b"GET, HEAD")
            return _json(request, 405, {"error": "method_not_allowed",
                                        "message": "GET /health only"})
        return super().render(request)

    def render_GET(self, request):
        reason, details = self.check()
        if reason is None:
            return _json(request, 200, {"status": "ready", **details})
        return _json(request, 503, {"status": "not ready", "reason": reason, **details})


def client_host(request):
    """The address a request came from (the TCP peer; no proxy header is trusted)."""
    return getattr(request.getClientAddress(), "host", None)


class SourcedBasicCredentialFactory(BasicCredentialFactory):
    """Basic auth credentials that also carry the client's address."""

    def decode(self, response, request):
        credentials = super().decode(response, request)
        credentials.source = client_host(request)
        return credentials


class ThrottledPortal:
    """A portal that tells the throttle how each password login ended."""

    def __init__(self, portal, throttle):
        self.portal, self.throttle = portal, throttle

    def login(self, credentials, mind, *interfaces):
        source = getattr(credentials, "source", None)
        d = self.portal.login(credentials, mind, *interfaces)
        if source is None:  # anonymous: a challenge, not a guess
            return d

        def succeeded(result):
            self.throttle.succeeded(source)
            return result

        def failed(failure):
            if failure.check(cred_error.LoginFailed):
                self.throttle.failed(source)
            return failure
        return d.addCallbacks(succeeded, failed)


class TooManyAttempts(Resource):
    """429 with Retry-After: this address must wait before its next login."""

    isLeaf = True

    def __init__(self, wait):
        super().__init__()
        self.wait = max(1, math.ceil(wait))

    def render(self, request):
        request.setHeader(b"Retry-After", str(self.wait).encode())
        return _json(request, 429, {
            "error": "too_many_attempts",
            "message": f"too many failed logins from this address; retry in "
                       f"{self.wait} s"})


@implementer(IResource)
class LoginGuard:
    """In front of basic auth: refuse an address that must wait, check nothing."""

    isLeaf = False

    def __init__(self, wrapped, throttle):
        self.wrapped, self.throttle = wrapped, throttle

    def _refusal(self, request):
        wait = self.throttle.wait(client_host(request))
        return TooManyAttempts(wait) if wait > 0 else None

    def getChildWithDefault(self, path, request):
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        return self.wrapped.getChildWithDefault(path, request)

    def render(self, request):
        refusal = self._refusal(request)
        return (self.wrapped if refusal is None else refusal).render(request)

    def putChild(self, path, child):
        raise NotImplementedError("the admin API's children are Klein routes")


def admin_root(state, checker, health_check, dashboard=None, throttle=None,
               metrics=None, usage=None, audit=None, workers=None):
    """The admin port's resource tree: /health open, everything else behind
    basic auth: /admin/* and *metrics* (a resource) at /metrics, whose series
    name every virtual cluster and its traffic.

    *dashboard* (a Dashboard) feeds /admin/dashboard; without one the page
    shows the state only, with no traffic.  *throttle* (a LoginThrottle)
    slows down addresses whose logins keep failing.  *usage* (a
    usage.report.Usage) answers the usage endpoints (503 without one).
    *audit* (an audit.AuditLog) records every admin write and answers
    ``GET .../audit`` (without one: writes are only logged).  *workers* (a
    supervisor's Workers) answers ``GET /admin/workers``.
    """
    root = Resource()
    root.putChild(b"health", Health(health_check))
    if throttle is None:
        throttle = LoginThrottle(time.monotonic)

    def guarded(realm):
        portal = ThrottledPortal(Portal(realm, [checker]), throttle)
        return LoginGuard(HTTPAuthSessionWrapper(
            portal, [SourcedBasicCredentialFactory(b"vkafka admin")]), throttle)
    if metrics is not None:
        root.putChild(b"metrics", guarded(ResourceRealm(metrics)))
    if state is None:  # passthrough mode: no virtual clusters to administer
        return root
    root.putChild(b"admin", guarded(AdminRealm(state, dashboard, usage, audit,
                                               workers)))
    return root


MAX_BODY = 8 * 1024 * 1024
"""Bytes an admin request's body may hold (the largest apply of every
resource is far less)."""


class BoundedRequest(server.Request):
    """An admin request whose body is at most MAX_BODY bytes.  A larger
    Content-Length, or a chunked body growing past it, is answered 413 and
    the connection closed before the body is read, with or without
    credentials: Twisted would spool any length to a temporary file first,
    so one unauthenticated request filled the disk."""

    refused = False

    def gotLength(self, length):
        if length is not None and length > MAX_BODY:
            self._refuse()
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data):
        if not self.refused and self.content.tell() + len(data) > MAX_BODY:
            self._refuse()
        if not self.refused:
            super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if not self.refused:
            super().requestReceived(command, path, version)

    def _refuse(self):
        self.refused = True
        body = json.dumps({"error": "too_large", "message":
                           f"a request body of at most {MAX_BODY} bytes"}).encode()
        self.channel.transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        self.channel.transport.loseConnection()


class AdminSite(server.Site):
    """The admin port's site: request bodies bounded (BoundedRequest)."""

    requestFactory = BoundedRequest
