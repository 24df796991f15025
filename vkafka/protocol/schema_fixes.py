"""kio schemas corrected where a broker sends what kio refuses.

Kafka answers DescribeTransactions for a transactional id with no open
transaction (state Empty, or after a fence) with ``transaction_start_time``
-1; kio's ``datetime_i64`` refuses a negative time, so the gateway closed the
connection and admin clients retried for ever.  The field is read here as a
nullable time: -1 is None, written back as -1."""

from dataclasses import dataclass, field

from kio.schema.describe_transactions.v0 import response as _v0
from kio.static.constants import EntityType
from kio.static.primitive import TZAware


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionState(_v0.TransactionState):
    transaction_start_time: TZAware | None = field(
        metadata={"kafka_type": "datetime_i64"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeTransactionsResponse(_v0.DescribeTransactionsResponse):
    transaction_states: tuple[TransactionState, ...]


FIXED = {(65, 0, EntityType.response): DescribeTransactionsResponse}
"""(api key, version, entity type) -> the class used instead of kio's."""
