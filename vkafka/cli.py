"""The ``vkafka`` command line: tokens, and the admin API over HTTP (treq).

    vkafka token --vcluster london --username sa --lifetime 90d
    vkafka vcluster create london --username sa --lifetime 90d --properties london-sa.properties
    vkafka vcluster list | show london | delete london
    vkafka map london existingLondonTopic --physical existingLondonTopic [--read-only]
    vkafka revoke london sa
    vkafka limits get --vcluster london
    vkafka limits set --vcluster london '{"capacity": {"topics": 10}}'   # or --file limits.json
    vkafka limits delete --vcluster london
    vkafka apply -f resources.yaml [--dry-run] [--no-prune]   # docs/rights.md
    vkafka get [london ...] > resources.yaml
"""

import argparse
import json
import os
import sys

from .auth.tokens import TokenAuthority, parse_duration

PROPERTIES = """bootstrap.servers={bootstrap}
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username='{username}' password='{token}';
"""


class CliError(Exception):
    pass


def _parser():
    parser = argparse.ArgumentParser(prog="vkafka", description="vkafka tools")
    parser.add_argument("--admin-url", default=os.environ.get(
        "VKAFKA_ADMIN_URL", "http://localhost:8888"), help="[VKAFKA_ADMIN_URL]")
    parser.add_argument("--admin-user", default=os.environ.get(
        "VKAFKA_ADMIN_USER", "admin:conduktor"),
        help="name:password for the admin API [VKAFKA_ADMIN_USER]")
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="mint a token locally with the secret")
    token.add_argument("--vcluster", required=True)
    token.add_argument("--username", required=True)
    token.add_argument("--lifetime", default="90d", help="e.g. 3600, 12h, 90d")
    token.add_argument("--secret", default=os.environ.get("GATEWAY_USER_POOL_SECRET_KEY"),
                       help="signing secret [GATEWAY_USER_POOL_SECRET_KEY]")

    vcluster = commands.add_parser("vcluster", help="virtual clusters (admin API)")
    vc_commands = vcluster.add_subparsers(dest="action", required=True)
    create = vc_commands.add_parser("create", help="create a cluster and an account")
    create.add_argument("name")
    create.add_argument("--username", default="sa")
    create.add_argument("--lifetime", default="90d")
    create.add_argument("--prefix")
    create.add_argument("--properties", help="write a client properties file here")
    create.add_argument("--bootstrap", default="localhost:6969")
    vc_commands.add_parser("list")
    for action in ("show", "delete"):
        vc_commands.add_parser(action).add_argument("name")

    mapping = commands.add_parser("map", help="map an existing topic into a cluster")
    mapping.add_argument("vcluster")
    mapping.add_argument("topic")
    mapping.add_argument("--physical", required=True)
    mapping.add_argument("--read-only", action="store_true")

    revoke = commands.add_parser("revoke", help="revoke an account's tokens")
    revoke.add_argument("vcluster")
    revoke.add_argument("username")

    limits = commands.add_parser("limits", help="a virtual cluster's limits "
                                 "(docs/governance.md)")
    limit_commands = limits.add_subparsers(dest="action", required=True)
    for action in ("get", "set", "delete"):
        limit_commands.add_parser(action).add_argument("--vcluster", required=True)
    given = limit_commands.choices["set"].add_mutually_exclusive_group(required=True)
    given.add_argument("limits", nargs="?", help="the limits as JSON (replace all)")
    given.add_argument("--file", help="read the JSON limits from this file ('-': stdin)")

    apply = commands.add_parser(
        "apply", help="make the gateways hold the resources of a YAML file: the "
        "virtual clusters it names are managed, what they hold that the file does "
        "not name is removed (docs/rights.md)")
    apply.add_argument("-f", "--file", required=True,
                       help="YAML resources: several documents or a list ('-': stdin)")
    apply.add_argument("--dry-run", action="store_true",
                       help="print what would change, change nothing")
    apply.add_argument("--no-prune", dest="prune", action="store_false",
                       help="create and change only: remove nothing")
    get = commands.add_parser("get", help="print resources as YAML, as apply reads "
                              "them")
    get.add_argument("vclusters", nargs="*", help="these virtual clusters (default: all)")
    return parser


def load_resources(text, source):
    """The resource documents of a YAML text: several documents, each a
    resource or a list of them (empty documents are skipped)."""
    import yaml
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise CliError(f"{source} is not YAML: {e}") from None
    found = []
    for doc in documents:
        if doc is None:
            continue
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            if not isinstance(item, dict):
                raise CliError(f"{source}: a resource is a mapping with a kind, not "
                               f"{item!r}")
            found.append(item)
    return found


def dump_resources(items):
    """Resources as YAML documents (what ``vkafka get`` prints)."""
    import yaml
    return yaml.safe_dump_all(items, sort_keys=False, default_flow_style=False,
                              explicit_start=True)


def describe_changes(answer):
    """``vkafka apply``'s report: one line per change, then a summary."""
    from .admin.resources import PAST
    lines = []
    for change in answer["changes"]:
        verb = change["action"] if answer["dryRun"] else PAST[change["action"]]
        lines.append(f"{'would ' if answer['dryRun'] else ''}{verb} {change['summary']}")
    if not answer["changes"]:
        lines.append("no change: the gateways hold these resources already")
    else:
        planned = " planned (dry run: nothing changed)" if answer["dryRun"] else ""
        lines.append(f"{len(answer['changes'])} change(s){planned}, "
                     f"{answer['unchanged']} resource(s) unchanged")
    accounts = [c for c in answer["changes"] if c["kind"] == "ServiceAccount"
                and c["action"] == "create"]
    if accounts and not answer["dryRun"]:
        lines.append("service accounts have no token yet; issue one with: "
                     "vkafka token ... or POST .../vcluster/<vc>/username/<name>, e.g. "
                     f"vkafka vcluster create {accounts[0]['vcluster']} --username "
                     f"{accounts[0]['name']}")
    return "\n".join(lines)


def _limits_body(args):
    """The JSON body of ``limits set``: the argument or the file's content."""
    if args.file is None:
        text, source = args.limits, "the limits argument"
    elif args.file == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        with open(args.file) as f:
            text, source = f.read(), args.file
    try:
        return json.loads(text)
    except ValueError as e:
        raise CliError(f"{source} is not JSON: {e}") from None


def _call(reactor, args, method, path, body=None, base="/admin/vclusters/v1"):
    import treq

    user, _, password = args.admin_user.partition(":")
    url = f"{args.admin_url.rstrip('/')}{base}{path}"
    response = yield treq.request(method, url, auth=(user, password),
                                  data=None if body is None else json.dumps(body).encode(),
                                  headers={b"Content-Type": [b"application/json"]})
    text = yield response.text()
    if response.code >= 400:
        raise CliError(f"{method} {path}: HTTP {response.code} {text.strip()}")
    return json.loads(text) if text else None


def _admin(reactor, args):
    from twisted.internet import defer

    call = defer.inlineCallbacks(_call)
    if args.command == "vcluster" and args.action == "create":
        if args.prefix:
            yield call(reactor, args, "POST", f"/vcluster/{args.name}",
                       {"prefix": args.prefix})
        answer = yield call(reactor, args, "POST",
                            f"/vcluster/{args.name}/username/{args.username}",
                            {"lifeTimeSeconds": parse_duration(args.lifetime)})
        if args.properties:
            with open(args.properties, "w") as f:
                f.write(PROPERTIES.format(bootstrap=args.bootstrap,
                                          username=args.username,
                                          token=answer["token"]))
            print(f"wrote {args.properties}")
        else:
            print(answer["token"])
        return
    if args.command == "apply":
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file) as f:
                text = f.read()
        documents = load_resources(text, args.file)
        answer = yield call(reactor, args, "POST", "/apply", {
            "resources": documents, "prune": args.prune, "dryRun": args.dry_run},
            base="/admin/resources/v1")
        print(describe_changes(answer))
        return
    if args.command == "get":
        items = []
        if not args.vclusters:
            answer = yield call(reactor, args, "GET", "", base="/admin/resources/v1")
            items = answer["resources"]
        for name in args.vclusters:
            from urllib.parse import quote
            answer = yield call(reactor, args, "GET", f"?vcluster={quote(name, safe='')}",
                                base="/admin/resources/v1")
            items += answer["resources"]
        print(dump_resources(items), end="")
        return
    if args.command == "vcluster":
        path = "" if args.action == "list" else f"/vcluster/{args.name}"
        method = "DELETE" if args.action == "delete" else "GET"
        answer = yield call(reactor, args, method, path)
    elif args.command == "limits":
        method = {"get": "GET", "set": "POST", "delete": "DELETE"}[args.action]
        answer = yield call(reactor, args, method, f"/vcluster/{args.vcluster}/limits",
                            _limits_body(args) if args.action == "set" else None)
    elif args.command == "map":
        answer = yield call(reactor, args, "POST", f"/vcluster/{args.vcluster}/topics/"
                            f"{args.topic}", {"physicalTopicName": args.physical,
                                              "readOnly": args.read_only,
                                              "concentrated": False})
    else:
        answer = yield call(reactor, args, "POST",
                            f"/vcluster/{args.vcluster}/username/{args.username}/revoke")
    print(json.dumps(answer, indent=2) if answer is not None else "done")


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "token":
            if not args.secret:
                raise ValueError("no secret: pass --secret or set "
                                 "GATEWAY_USER_POOL_SECRET_KEY")
            print(TokenAuthority(args.secret).issue(
                args.vcluster, args.username, parse_duration(args.lifetime)))
            return 0
        from twisted.internet import defer
        failures = []

        def run(reactor):
            d = defer.inlineCallbacks(_admin)(reactor, args)
            d.addErrback(lambda f: failures.append(f.value))
            return d
        _react(run)
        if failures:
            raise failures[0]
    except (ValueError, CliError, ConnectionError, OSError) as e:
        print(f"vkafka: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # e.g. connection refused from treq
        print(f"vkafka: {e}", file=sys.stderr)
        return 2
    return 0


def _react(run):
    """Run *run* on the global reactor once (task.react would exit the process)."""
    from twisted.internet import reactor

    d = run(reactor)
    d.addBoth(lambda _: reactor.callLater(0, reactor.stop))
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
