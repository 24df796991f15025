# -*- test-case-name: tests.test_admin -*-
"""The admin REST API (Klein), mounted at ``/admin`` behind HTTP basic auth.

Every error is JSON ``{"error": ..., "message": ...}`` with a 4xx status (503
when the state store cannot take writes); bad input never causes a 500.
An address that keeps failing to log in gets 429 with ``Retry-After``.
"""

import json
import math
import time
from functools import wraps

from klein import Klein
from twisted.cred import error as cred_error
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.guard import BasicCredentialFactory, HTTPAuthSessionWrapper
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from ..auth.tokens import MAX_LIFETIME
from ..state.model import StateError
from ..state.store import StoreUnavailable
from ..tenancy.naming import MAX_TOPIC_LENGTH, valid_topic_name
from .dashboard import Dashboard, render_page
from .openapi import document
from .users import LoginThrottle

log = Logger()
DEFAULT_LIFETIME = 90 * 24 * 3600
V1 = "/vclusters/v1"


class BadRequest(Exception):
    def __init__(self, message, error="bad_request"):
        super().__init__(message)
        self.message, self.error = message, error


def audit(user, request, status):
    """One audit event per admin write that took effect."""
    log.info("audit: {user} {method} {path} -> {status}", audit=True, user=user,
             method=request.method.decode(), path=request.path.decode(), status=status)


def _json(request, status, body):
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode()


def endpoint(write=False):
    """Wrap a handler: JSON in and out, errors mapped to statuses, never a 500."""
    def decorate(fn):
        @wraps(fn)
        @defer.inlineCallbacks
        def wrapper(self, request, **kwargs):
            if write and self.user.read_only:
                return _json(request, 403, {"error": "forbidden", "message":
                             f"user {self.user.name!r} is read-only"})
            try:
                result = yield fn(self, request, **kwargs)
            except BadRequest as e:
                return _json(request, 400, {"error": e.error, "message": e.message})
            except StateError as e:
                return _json(request, e.status, {**e.details, "error": e.error,
                                                 "message": e.message})
            except StoreUnavailable as e:
                return _json(request, 503, {"error": "unavailable", "message": str(e)})
            except Exception:
                log.failure("admin API {path} failed", path=request.path)
                return _json(request, 500, {"error": "internal",
                                            "message": "internal error, see the log"})
            status, body = result if isinstance(result, tuple) else (200, result)
            if write:
                audit(self.user.name, request, status)
            if status == 204:
                request.setResponseCode(204)
                return b""
            return _json(request, status, body)
        return wrapper
    return decorate


def read_body(request, fields):
    """The JSON object body, checked against ``{name: (type, required)}``."""
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        body = {}
    else:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body is not valid JSON", "bad_json")
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", "bad_json")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", "unknown_field")
    for name, (kind, required) in fields.items():
        if name not in body:
            if required:
                raise BadRequest(f"missing field {name!r}", "missing_field")
            continue
        value = body[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequest(f"{name!r} must be an integer", "bad_field")
        if kind is not int and not isinstance(value, kind):
            raise BadRequest(f"{name!r} must be a {kind.__name__}", "bad_field")
    return body


def valid_prefix(prefix):
    return 0 < len(prefix) <= 64 and valid_topic_name(prefix) and \
        not prefix.startswith("_")


def check_topic_name(name, what):
    if not valid_topic_name(name):
        raise BadRequest(f"invalid {what} {name!r}: 1-{MAX_TOPIC_LENGTH} of "
                         "[a-zA-Z0-9._-]", "invalid_name")


def check_create(create):
    """The ``create`` object of a mapping: the physical topic to make if missing."""
    unknown = sorted(set(create) - {"partitions", "replicationFactor", "configs"})
    if unknown:
        raise BadRequest(f"unknown field(s) in 'create': {', '.join(unknown)}",
                         "unknown_field")
    for name, high in (("partitions", 100000), ("replicationFactor", 32)):
        value = create.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise BadRequest(f"'create.{name}' must be an integer 1..{high}", "bad_field")
    configs = create.get("configs", {})
    if not isinstance(configs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in configs.items()):
        raise BadRequest("'create.configs' must map config names to strings",
                         "bad_field")


class AdminApp:
    """The routes, bound to one authenticated user."""

    app = Klein()

    def __init__(self, state, user, dashboard=None):
        self.state = state
        self.user = user
        self.dashboard = dashboard

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
    def create_vcluster(self, request, vcluster):
        body = read_body(request, {"prefix": (str, False)})
        prefix = body.get("prefix")
        if prefix is not None and not valid_prefix(prefix):
            raise BadRequest(f"invalid prefix {prefix!r}: 1-64 of [a-zA-Z0-9._-], "
                             "not starting with '_'", "invalid_name")
        yield self.state.ensure_vcluster(vcluster, prefix)
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
    def create_account(self, request, vcluster, username):
        body = read_body(request, {"lifeTimeSeconds": (int, False)})
        lifetime = body.get("lifeTimeSeconds", DEFAULT_LIFETIME)
        if not 1 <= lifetime <= MAX_LIFETIME:
            raise BadRequest(f"lifeTimeSeconds must be 1..{MAX_LIFETIME}", "bad_field")
        token = yield self.state.create_account(vcluster, username, lifetime)
        return {"token": token}

    @app.route(f"{V1}/vcluster/<vcluster>/username/<username>/revoke",
               methods=["POST"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def revoke(self, request, vcluster, username):
        read_body(request, {})
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
    def put_mapping(self, request, vcluster, topic):
        body = read_body(request, {"physicalTopicName": (str, True),
                                   "readOnly": (bool, False),
                                   "concentrated": (bool, False),
                                   "partitions": (int, False),
                                   "create": (dict, False)})
        check_topic_name(topic, "logical topic name")
        check_topic_name(body["physicalTopicName"], "physical topic name")
        if not 1 <= body.get("partitions", 1) <= 1_000_000:
            raise BadRequest("'partitions' must be 1 to the physical topic's "
                             "partitions", "bad_field")
        if not body.get("concentrated"):
            body.pop("partitions", None)  # a plain alias has the topic's partitions
        create = body.get("create")
        if create is not None:
            check_create(create)
        mapping = yield self.state.put_mapping(vcluster, topic, {
            "physicalTopicName": body["physicalTopicName"],
            "readOnly": body.get("readOnly", False),
            "concentrated": body.get("concentrated", False),
            **({"partitions": body["partitions"]} if "partitions" in body else {}),
            **({"create": create} if create is not None else {})})
        return mapping

    @app.route(f"{V1}/vcluster/<vcluster>/concentration-rules", methods=["GET"])
    @endpoint()
    def list_rules(self, request, vcluster):
        self.state.vcluster(vcluster)
        return defer.succeed({"concentrationRules": self.state.rules_of(vcluster)})

    @app.route(f"{V1}/vcluster/<vcluster>/concentration-rules/<rule>", methods=["POST"])
    @endpoint(write=True)
    @defer.inlineCallbacks
    def put_rule(self, request, vcluster, rule):
        body = read_body(request, {"pattern": (str, True),
                                   "physicalTopicName": (str, True),
                                   "physicalTopicNameCompacted": (str, False),
                                   "physicalTopicNameCompactedDeleted": (str, False)})
        check_topic_name(rule, "rule name")
        if not 1 <= len(body["pattern"]) <= 1000:
            raise BadRequest("'pattern' must be 1 to 1000 characters", "bad_field")
        for field in ("physicalTopicName", "physicalTopicNameCompacted",
                      "physicalTopicNameCompactedDeleted"):
            if field in body:
                check_topic_name(body[field], field)
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

    @app.route("/dashboard", methods=["GET"])
    def dashboard_page(self, request):
        return render_page(request)

    @app.route("/dashboard.json", methods=["GET"])
    @endpoint()
    def dashboard_snapshot(self, request):
        request.setHeader(b"Cache-Control", b"no-store")
        return defer.succeed(self.dashboard.snapshot())

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request):
        return _json(request, 200, document())

    @app.handle_errors(Exception)
    def unexpected(self, request, failure):
        from werkzeug.exceptions import MethodNotAllowed, NotFound
        if failure.check(NotFound):
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
    def __init__(self, state, dashboard=None):
        self.state = state
        self.dashboard = dashboard or Dashboard(state)

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if IResource not in interfaces:
            raise NotImplementedError()
        app = AdminApp(self.state, avatar_id, self.dashboard)
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
               metrics=None):
    """The admin port's resource tree: /health open, everything else behind
    basic auth: /admin/* and *metrics* (a resource) at /metrics, whose series
    name every virtual cluster and its traffic.

    *dashboard* (a Dashboard) feeds /admin/dashboard; without one the page
    shows the state only, with no traffic.  *throttle* (a LoginThrottle)
    slows down addresses whose logins keep failing.
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
    root.putChild(b"admin", guarded(AdminRealm(state, dashboard)))
    return root
