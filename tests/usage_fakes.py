"""A cluster that answers the usage inventory's questions from memory, and a
``Usage`` over in-memory stores (unit tests, the schemathesis admin server)."""

import datetime

from kio.schema.describe_log_dirs.v4.response import (
    DescribeLogDirsPartition, DescribeLogDirsResponse, DescribeLogDirsResult,
    DescribeLogDirsTopic)
from kio.schema.errors import ErrorCode
from kio.schema.list_groups.v5.response import ListedGroup, ListGroupsResponse
from kio.schema.list_transactions.v1.response import (ListTransactionsResponse,
                                                      TransactionState)
from kio.static.primitive import i32, i32Timedelta, i64
from twisted.internet import defer

from vkafka.metrics import Metrics
from vkafka.proxy.topology import Topology
from vkafka.state.store import MemoryStore
from vkafka.usage.inventory import Inventory
from vkafka.usage.ledger import Ledger, UsageBook
from vkafka.usage.report import Usage

NO_THROTTLE = i32Timedelta.parse(datetime.timedelta(0))


def list_groups(ids, error=ErrorCode.none):
    return ListGroupsResponse(throttle_time=NO_THROTTLE, error_code=error, groups=tuple(
        ListedGroup(group_id=g, protocol_type="consumer", group_state="Empty",
                    group_type="classic") for g in ids))


def list_transactions(ids, error=ErrorCode.none):
    return ListTransactionsResponse(
        throttle_time=NO_THROTTLE, error_code=error, unknown_state_filters=(),
        transaction_states=tuple(TransactionState(
            transactional_id=t, producer_id=i64(7), transaction_state="Empty")
            for t in ids))


def log_dirs(sizes, error=ErrorCode.none):
    """*sizes*: topic -> partition -> bytes (one log directory)."""
    return DescribeLogDirsResponse(
        throttle_time=NO_THROTTLE, error_code=ErrorCode.none, results=(
            DescribeLogDirsResult(error_code=error, log_dir="/data", topics=tuple(
                DescribeLogDirsTopic(name=topic, partitions=tuple(
                    DescribeLogDirsPartition(
                        partition_index=i32(p), partition_size=i64(size),
                        offset_lag=i64(0), is_future_key=False)
                    for p, size in parts.items()))
                for topic, parts in sizes.items())),))


class FakeCluster:
    """Brokers by node id (their port is their id): each one's groups, the
    sizes of the replicas it holds (topic -> partition -> bytes) and,
    maybe, its transactional ids."""

    def __init__(self, brokers=None):
        self.brokers = brokers if brokers is not None else {1: ([], {})}
        self.down = False
        self.asked = []

    def ask(self, host, port, asks):
        self.asked.append((port, [(type(body).__name__, v) for body, v in asks]))
        if self.down:
            return defer.fail(ConnectionRefusedError("connection refused (test)"))
        groups, sizes, *txns = self.brokers[port]
        answers = {"ListGroupsRequest": list_groups(groups),
                   "DescribeLogDirsRequest": log_dirs(sizes),
                   "ListTransactionsRequest": list_transactions(txns[0] if txns else ())}
        return defer.succeed([answers[type(body).__name__] for body, _ in asks]
                             or list(answers.values()))  # none asked: a whole inventory's

    def topology(self, topics=None):
        """A Topology that knows these brokers and *topics* (name -> partitions)."""
        topology = Topology([("boot", 1)], "gw", 6969, 3, 1)
        topology.learn((node, "localhost", node) for node in self.brokers)
        topics = topics or {}
        topology.learn_listing(topics, 0.0, topics)
        return topology


def make_usage(state, clock, cluster=None, topics=None, gateway="gw:6969",
               connections=dict):
    """A Usage over a MemoryStore usage topic and *cluster* (a FakeCluster)."""
    cluster = cluster or FakeCluster()
    metrics = Metrics()
    store = MemoryStore()
    book = UsageBook(store)
    ledger = Ledger(gateway, metrics, book, store, clock, connections)
    inventory = Inventory(clock, cluster.topology(topics), state.vclusters, cluster.ask,
                          metrics=metrics)
    return Usage(state, book, ledger, inventory, clock)
