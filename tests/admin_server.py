#!/usr/bin/env python3
"""Serve the real admin API on a localhost port, state in memory (no Kafka).

For tests that need a real HTTP server (schemathesis): the same resource
tree as the gateway's admin port, a ``MemoryStore``-backed state, usage
measured on a cluster in memory (tests/usage_fakes.py) and the demo's plain
user ``admin:conduktor``.  Prints ``listening on <url>`` once
it accepts connections; stops on its own after ``--lifetime`` seconds.

    .venv/bin/python tests/admin_server.py --lifetime 300   # any free port
"""

import argparse
import os
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", default="0",
                        help="first-last: the first free one is used; 0: any free port")
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from twisted.internet import reactor
    from twisted.internet.error import CannotListenError
    from twisted.web.server import Site

    from vkafka.admin.app import admin_root
    from vkafka.admin.audit import AuditLog
    from vkafka.admin.users import UserChecker, parse_users
    from vkafka.auth.tokens import TokenAuthority
    from vkafka.state.model import GatewayState
    from vkafka.state.store import MemoryStore
    from vkafka.tenancy.vclusters import VirtualClusters
    from tests.usage_fakes import make_usage

    state = GatewayState(MemoryStore(), TokenAuthority("s" * 32, time.time),
                         VirtualClusters(), time.time)
    checker = UserChecker(parse_users("admin:conduktor", allow_plain=True))
    root = admin_root(state, checker, lambda: (None, {"brokers": [1]}),
                      usage=make_usage(state, time.time), audit=AuditLog(time.time))
    site = Site(root)
    site.noisy = False
    first, last = (int(p) for p in (args.ports + "-" + args.ports).split("-")[:2])
    for port in range(first, last + 1):
        try:
            listening = reactor.listenTCP(port, site, interface="127.0.0.1")
        except CannotListenError:
            continue
        print(f"listening on http://127.0.0.1:{listening.getHost().port}", flush=True)
        break
    else:
        print(f"no free port in {args.ports}", flush=True)
        return 1
    reactor.callLater(args.lifetime, reactor.stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
