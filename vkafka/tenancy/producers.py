# -*- test-case-name: tests.test_producers -*-
"""How many new producer ids a virtual cluster may bring to the brokers.

A broker keeps state for every producer id that writes to a partition (its
epoch, sequences and last offsets) for ``producer.id.expiration.ms``, a day
by default, and nothing ties an id to the client that sends it: a raw client
may write each batch under a new random id.  One connection made 500 such
states a second on each replica (docs/security.md, attack 161), broker heap
that every tenant shares and that no Kafka quota sees (the gateway is one
principal to the brokers).

So each gateway lets each virtual cluster bring at most ``NEW_PER_HOUR``
producer ids it has not seen (with ``--workers N``, each worker an Nth of
them), a bucket that fills again over the hour; the ids it has seen pass
without a charge (a producer's other connections, its next requests).  A Produce whose batches carry two
producers' ids is refused outright: a client's producer sends its own.
"""

from collections import OrderedDict

from .context import Rejected

NEW_PER_HOUR = 10_000
"""New producer ids a virtual cluster may bring through one gateway process
in an hour (a burst of as many, then ~2.8 a second): a producer instance
takes one at its start and keeps it.  At most ~240,000 producer states a
day per partition replica and gateway process, where one connection made
43 million."""

SEVERAL = -2
"""The walk's producer id for batches of two producers (produce._noted)."""


class ProducerIds:
    """The producer ids each virtual cluster brought, and what it may bring
    yet; *clock* ``() -> seconds``."""

    def __init__(self, clock, per_hour=NEW_PER_HOUR):
        self.clock = clock
        self.per_hour = per_hour
        self.processes = 1
        """The gateway's workers (set by vkafka/worker.py): each lets in an
        equal part."""
        self._tenants = {}
        """vc -> [ids seen (oldest first, at most per_hour), tokens, when]."""

    def admit(self, vc, producer_id):
        """Let *producer_id* write for *vc*, or raise Rejected saying why."""
        if producer_id == SEVERAL:
            raise Rejected("produce request: record batches of two producers "
                           "(a client's producer sends only its own)")
        now = self.clock()
        per_hour = self.per_hour / self.processes
        tenant = self._tenants.get(vc)
        if tenant is None:
            tenant = self._tenants[vc] = [OrderedDict(), per_hour, now]
        seen = tenant[0]
        if producer_id in seen:
            return
        tokens = min(per_hour, tenant[1] + (now - tenant[2]) * per_hour / 3600)
        tenant[2] = now
        if tokens < 1:
            tenant[1] = tokens
            raise Rejected(f"a produce with a new producer id: the virtual cluster "
                           f"brought {per_hour:.0f} new producer ids through this "
                           f"gateway process in the last hour, its limit (each is "
                           f"broker state for a day)")
        tenant[1] = tokens - 1
        seen[producer_id] = None
        if len(seen) > self.per_hour:
            seen.popitem(last=False)


class TransactionPartitions:
    """The partitions each transaction has written to, as this process saw
    them: with KIP-890's transactions (Kafka 4 clients) a transactional
    Produce adds its partitions to the transaction, no AddPartitionsToTxn
    is sent, and each partition takes a marker on every replica at the
    transaction's end.  Each transaction bumps its producer's epoch, so
    (producer id, epoch) names one; a partition counts the first time only
    (``added``).  At most ``TRANSACTIONS`` transactions are remembered, each
    with at most ``PARTITIONS`` partitions, the oldest forgotten first (a
    forgotten one counts again: never less than the work)."""

    TRANSACTIONS = 10_000
    PARTITIONS = 10_000

    def __init__(self):
        self._seen = OrderedDict()

    def added(self, found):
        """How many of *found* ``(producer id, epoch, partition)`` are new
        to their transaction."""
        new = 0
        for producer, epoch, partition in found:
            key = (producer, epoch)
            seen = self._seen.get(key)
            if seen is None:
                seen = self._seen[key] = set()
                if len(self._seen) > self.TRANSACTIONS:
                    self._seen.popitem(last=False)
            if partition not in seen:
                new += 1
                if len(seen) < self.PARTITIONS:
                    seen.add(partition)
        return new
