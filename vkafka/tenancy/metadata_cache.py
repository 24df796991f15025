# -*- test-case-name: tests.test_metadata_cache -*-
"""Tenants' all-topics Metadata answers, reused for a short while.

Listing tools and librdkafka ask for every topic again and again.  Each answer
costs a broker round trip (whose own p99 is several ms on a busy broker) and a
decode and re-encode of the tenant's topics (kio encodes ~100 topics in ~1 ms),
so the rewritten answer is kept per tenant, per version and flags, for *ttl*
seconds.  It is dropped sooner when anything it was made from changes: the
topic set the gateway knows (creations, deletions, partition changes through
this gateway, a new cluster listing), or the tenant's mappings and rules.
Requests naming topics are never answered from here.
"""


def made_of(topology, namespace):
    """What a tenant's view of the topics is derived from: the tenant, the
    topic set the gateway knows (and partition counts), the tenant's mappings
    and rules, and the known prefixes (ownership is by longest prefix).  Equal
    keys, same view: two tenants' keys are never equal."""
    return (namespace.name, topology.names_version, namespace.version,
            len(namespace.prefixes.known))


class MetadataAnswers:
    """Rewritten Metadata response bodies for all-topics requests.

    Their keys are partly the tenant's to choose (a client's address and its
    brokers mapping, and with ACLs on the principal and the ACLs' generation,
    which CreateAcls moves), so what is kept is bounded: past ``LIMIT``
    answers or ``LIMIT_BYTES`` the expired ones are dropped, and if that is
    not enough, all of them."""

    LIMIT = 10_000
    LIMIT_BYTES = 64 << 20

    def __init__(self, ttl=1.0):
        self.ttl = ttl
        self._answers = {}  # (vcluster, version, flags) -> (made of, expires, body)
        self._bytes = 0

    @staticmethod
    def _key(namespace, request, mapping=None):
        return (namespace.name, request.__version__,
                getattr(request, "include_cluster_authorized_operations", False),
                getattr(request, "include_topic_authorized_operations", False),
                mapping)

    def get(self, topology, namespace, request, now, mapping=None):
        """The kept body answering *request*, or None; *mapping* is the
        client's brokers-to-gateways mapping (gateway cluster: an answer is
        shared only by clients sent to the same gateways)."""
        if self.ttl <= 0:
            return None
        kept = self._answers.get(self._key(namespace, request, mapping))
        if kept is None or kept[1] <= now or kept[0] != made_of(topology, namespace):
            return None
        return kept[2]

    def keeper(self, topology, namespace, request, now, mapping=None):
        """A callable that keeps the body of the answer to *request* (asked at *now*);
        None when answers are not kept."""
        if self.ttl <= 0:
            return None
        key = self._key(namespace, request, mapping)
        source = made_of(topology, namespace)

        def keep(body):
            if source == made_of(topology, namespace):  # nothing moved meanwhile
                self._keep(key, (source, now + self.ttl, bytes(body)), now)
        return keep

    def _keep(self, key, entry, now):
        answers = self._answers
        old = answers.pop(key, None)
        if old is not None:
            self._bytes -= len(old[2])
        if len(answers) >= self.LIMIT or self._bytes >= self.LIMIT_BYTES:
            for stale in [k for k, kept in answers.items() if kept[1] <= now]:
                self._bytes -= len(answers.pop(stale)[2])
            if len(answers) >= self.LIMIT or self._bytes >= self.LIMIT_BYTES:
                answers.clear()
                self._bytes = 0
        answers[key] = entry
        self._bytes += len(entry[2])
