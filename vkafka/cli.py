"""The ``vkafka`` command line.  So far: ``vkafka token`` mints a tenant token."""

import argparse
import os
import sys

from .auth.tokens import TokenAuthority, parse_duration


def main(argv=None):
    parser = argparse.ArgumentParser(prog="vkafka", description="vkafka tools")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser(
        "token", help="mint a token for a virtual cluster's service account")
    token.add_argument("--vcluster", required=True)
    token.add_argument("--username", required=True)
    token.add_argument("--lifetime", default="90d",
                       help="e.g. 3600, 12h, 90d (default 90d)")
    token.add_argument("--secret", default=os.environ.get("GATEWAY_USER_POOL_SECRET_KEY"),
                       help="signing secret [GATEWAY_USER_POOL_SECRET_KEY]")
    args = parser.parse_args(argv)
    try:
        if not args.secret:
            raise ValueError("no secret: pass --secret or set "
                             "GATEWAY_USER_POOL_SECRET_KEY")
        authority = TokenAuthority(args.secret)
        print(authority.issue(args.vcluster, args.username,
                              parse_duration(args.lifetime)))
    except ValueError as e:
        print(f"vkafka token: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
