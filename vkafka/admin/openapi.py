"""The admin API's OpenAPI 3 document, served at ``/admin/openapi.json``.

A test checks it against the Klein routes and exercises every documented
response, so the document and the code cannot drift apart.
"""

from ..auth.tokens import MAX_LIFETIME

V1 = "/admin/vclusters/v1"

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok, *errors):
    out = {}
    for status, text, schema in ok:
        entry = {"description": text}
        if schema is not None:
            entry["content"] = {"application/json": {"schema": schema}}
        out[str(status)] = entry
    descriptions = {400: "Bad input", 401: "Missing or wrong credentials",
                    403: "Read-only user", 404: "Unknown virtual cluster, account, mapping or "
                    "physical topic",
                    409: "Conflict (a prefix overlapping another virtual cluster's, "
                         "a topic in a virtual cluster's namespace, a name in use); "
                         "`vcluster` names the other virtual cluster", 429: "Too many failed logins from this address: "
                    "retry after Retry-After seconds",
                    503: "The state store cannot take writes"}
    for status in (401, 429) + errors:  # 401 is twisted.web.guard's own page
        out[str(status)] = {"description": descriptions[status], "content": {
            "application/json" if status != 401 else "text/html":
                {"schema": _ERROR if status != 401 else {"type": "string"}}}}
    out["429"]["headers"] = {"Retry-After": {
        "description": "Seconds to wait before the next login is checked",
        "schema": {"type": "integer", "minimum": 1}}}
    return out


# What the code accepts (vkafka.tenancy.naming, vkafka.state.model): a name
# outside these is refused with 400, or is 404 where it names something.
_TOPIC = {"type": "string", "pattern": r"^(?!\.{1,2}$)[a-zA-Z0-9._-]{1,249}$"}
_NAMES = {
    "vcluster": {"type": "string", "pattern": "^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$"},
    "username": {"type": "string", "pattern": r"^(?!\*$)[^/]{1,255}$"},
    "topic": _TOPIC,
    "rule": _TOPIC,
}


def _params(*names):
    return [{"name": n, "in": "path", "required": True, "schema": _NAMES[n]}
            for n in names]


def document():
    vc = {"$ref": "#/components/schemas/VirtualCluster"}
    mapping = {"$ref": "#/components/schemas/TopicMapping"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "vkafka admin API", "version": "1"},
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"],
                          "properties": {"error": {"type": "string"},
                                         "message": {"type": "string"},
                                         "vcluster": {
                                             "type": "string", "description":
                                             "409: the virtual cluster the "
                                             "request conflicts with"}}},
                "VirtualCluster": {"type": "object", "properties": {
                    "name": {"type": "string"}, "prefix": {"type": "string"},
                    "createdAt": {"type": "number"},
                    "serviceAccounts": {"type": "array", "items": {"type": "string"}},
                    "topicMappings": {"type": "array", "items": mapping}}},
                "TopicMapping": {"type": "object", "properties": {
                    "logicalTopicName": {"type": "string"},
                    "physicalTopicName": {"type": "string"},
                    "readOnly": {"type": "boolean"},
                    "concentrated": {"type": "boolean"},
                    "partitions": {"type": "integer", "description":
                                   "Concentrated mappings: the logical topic's "
                                   "partitions (at most the physical topic's)"}}},
                "Traffic": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "connections": {"type": "integer"},
                    "bytesInPerSecond": {"type": "number"},
                    "bytesOutPerSecond": {"type": "number"},
                    "requestsPerSecond": {"type": "number"},
                    "requestsPerSecondByApi": {"type": "object",
                                               "additionalProperties": {
                                                   "type": "number"}}}},
                "DashboardSnapshot": {"type": "object", "properties": {
                    "time": {"type": "number"},
                    "rateSeconds": {"type": "number", "nullable": True,
                                    "description": "Seconds the rates average "
                                                   "over (null until two samples)"},
                    "totals": {"type": "object"},
                    "vclusters": {"type": "array", "items": {"allOf": [
                        {"$ref": "#/components/schemas/Traffic"},
                        {"type": "object", "properties": {
                            "prefix": {"type": "string"},
                            "serviceAccounts": {"type": "array",
                                                "items": {"type": "string"}},
                            "topics": {"type": "array", "items": {"type": "string"}},
                            "mappings": {"type": "array", "items": mapping}}}]}},
                    "other": {"type": "array", "items": {
                        "$ref": "#/components/schemas/Traffic"}}}},
            },
        },
        "security": [{"basic": []}],
        "paths": {
            "/health": {"get": {
                "summary": "Readiness of this gateway (no credentials needed)",
                "security": [],
                "responses": {"200": {"description": "Ready"},
                              "503": {"description": "Not ready, with the reason"}}}},
            "/admin/openapi.json": {"get": {
                "summary": "This document",
                "responses": _responses([(200, "The OpenAPI document",
                                          {"type": "object"})])}},
            "/admin/dashboard": {"get": {
                "summary": "The operator dashboard: an HTML page that polls "
                           "/admin/dashboard.json every 2 s",
                "responses": {"200": {"description": "The page", "content": {
                                  "text/html": {"schema": {"type": "string"}}}},
                              **_responses([])}}},
            "/admin/dashboard.json": {"get": {
                "summary": "Virtual clusters with their topics, mappings, open "
                           "connections and throughput (rates over the last "
                           "few seconds)",
                "responses": _responses([(200, "The snapshot", {
                    "$ref": "#/components/schemas/DashboardSnapshot"})])}},
            V1: {"get": {
                "summary": "List virtual clusters",
                "responses": _responses([(200, "Virtual clusters", {
                    "type": "object", "properties": {
                        "vclusters": {"type": "array", "items": vc}}})])}},
            f"{V1}/vcluster/{{vcluster}}": {
                "parameters": _params("vcluster"),
                "get": {"summary": "Show a virtual cluster",
                        "responses": _responses([(200, "The virtual cluster", vc)],
                                                404)},
                "post": {"summary": "Create a virtual cluster, optionally with a "
                                    "prefix other than its name",
                         "requestBody": {"content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "properties": {"prefix": {
                                 "type": "string",
                                 "pattern": r"^(?!\.{1,2}$)[a-zA-Z0-9.-]"
                                            r"[a-zA-Z0-9._-]{0,63}$"}}}}}},
                         "responses": _responses([(200, "The virtual cluster", vc)],
                                                 400, 403, 409, 503)},
                "delete": {"summary": "Delete a virtual cluster (revokes its tokens, "
                                      "removes accounts and mappings; topics stay)",
                           "responses": _responses([(204, "Deleted", None)],
                                                   403, 404, 503)}},
            f"{V1}/vcluster/{{vcluster}}/username": {
                "parameters": _params("vcluster"),
                "get": {"summary": "List service accounts",
                        "responses": _responses([(200, "Service accounts",
                                                  {"type": "object"})], 404)}},
            f"{V1}/vcluster/{{vcluster}}/username/{{username}}": {
                "parameters": _params("vcluster", "username"),
                "post": {"summary": "Create the virtual cluster if needed and the "
                                    "service account; issue a token",
                         "requestBody": {"content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "properties": {"lifeTimeSeconds": {
                                 "type": "integer", "minimum": 1,
                                 "maximum": MAX_LIFETIME}}}}}},
                         "responses": _responses([(200, "A token", {
                             "type": "object", "properties": {
                                 "token": {"type": "string"}}})],
                             400, 403, 409, 503)}},
            f"{V1}/vcluster/{{vcluster}}/username/{{username}}/revoke": {
                "parameters": _params("vcluster", "username"),
                "post": {"summary": "Revoke every token issued so far to the account "
                                    "(open connections are closed)",
                         "responses": _responses([(200, "Revoked", {"type": "object"})],
                                                 400, 403, 404, 503)}},
            f"{V1}/vcluster/{{vcluster}}/topics": {
                "parameters": _params("vcluster"),
                "get": {"summary": "List topic mappings",
                        "responses": _responses([(200, "Mappings", {"type": "object"})],
                                                404)}},
            f"{V1}/vcluster/{{vcluster}}/topics/{{topic}}": {
                "parameters": _params("vcluster", "topic"),
                "post": {"summary": "Map a logical topic onto a physical topic",
                         "requestBody": {"required": True,
                                         "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "required": ["physicalTopicName"],
                             "properties": {
                                 "physicalTopicName": _TOPIC,
                                 "readOnly": {"type": "boolean"},
                                 "concentrated": {"type": "boolean", "description":
                                                  "Share the physical topic with "
                                                  "other logical topics (see "
                                                  "docs/concentration.md)"},
                                 "create": {
                                     "type": "object", "additionalProperties": False,
                                     "description": "Create the physical topic if "
                                     "it does not exist",
                                     "properties": {
                                         "partitions": {"type": "integer",
                                                        "minimum": 1,
                                                        "maximum": 100000},
                                         "replicationFactor": {"type": "integer",
                                                               "minimum": 1,
                                                               "maximum": 32},
                                         "configs": {"type": "object",
                                                     "additionalProperties": {
                                                         "type": "string"}}}},
                                 "partitions": {"type": "integer", "minimum": 1,
                                                "description": "Concentrated "
                                                "mappings only (ignored otherwise): "
                                                "the logical topic's partitions, at "
                                                "most the physical topic's",
                                                "maximum": 1000000}}}}}},
                         "responses": _responses([(200, "The mapping", mapping)],
                                                 400, 403, 404, 409, 503)},
                "delete": {"summary": "Remove a mapping (the physical topic stays)",
                           "responses": _responses([(204, "Removed", None)],
                                                   403, 404, 503)}},
            f"{V1}/vcluster/{{vcluster}}/concentration-rules": {
                "parameters": _params("vcluster"),
                "get": {"summary": "List concentration rules",
                        "responses": _responses([(200, "Rules", {"type": "object"})],
                                                404)}},
            f"{V1}/vcluster/{{vcluster}}/concentration-rules/{{rule}}": {
                "parameters": _params("vcluster", "rule"),
                "post": {"summary": "A concentration rule: CreateTopics of a logical "
                                    "name matching the pattern makes a concentrated "
                                    "topic in the physical topic of its cleanup "
                                    "policy",
                         "requestBody": {"required": True,
                                         "content": {"application/json": {"schema": {
                             "type": "object", "additionalProperties": False,
                             "required": ["pattern", "physicalTopicName"],
                             "properties": {
                                 "pattern": {"type": "string", "format": "regex",
                                             "minLength": 1,
                                             "maxLength": 1000},
                                 "physicalTopicName": _TOPIC,
                                 "physicalTopicNameCompacted": _TOPIC,
                                 "physicalTopicNameCompactedDeleted": _TOPIC}}}}},
                         "responses": _responses([(200, "The rule", {"type": "object"})],
                                                 400, 403, 404, 409, 503)},
                "delete": {"summary": "Remove a concentration rule (topics made by it "
                                      "stay)",
                           "responses": _responses([(204, "Removed", None)],
                                                   403, 404, 503)}},
        },
    }


def markdown_reference():
    """docs/admin-api-reference.md, generated from the document (no drift)."""
    doc = document()
    lines = ["# Admin API reference", "",
             "Generated by `python -m vkafka.admin.openapi` from the OpenAPI document "
             "served at `/admin/openapi.json`; a test fails if they disagree.", ""]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            lines.append(f"## {method.upper()} `{path}`")
            lines.append("")
            lines.append(op["summary"])
            lines.append("")
            body = op.get("requestBody", {}).get("content", {}).get(
                "application/json", {}).get("schema", {}).get("properties")
            if body:
                lines.append("Body: " + ", ".join(
                    f"`{name}` ({spec['type']})" for name, spec in body.items()))
                lines.append("")
            lines.append("| status | meaning |")
            lines.append("|---|---|")
            for status, response in op["responses"].items():
                lines.append(f"| {status} | {response['description']} |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_reference(), end="")
