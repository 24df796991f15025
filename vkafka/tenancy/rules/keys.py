# -*- test-case-name: tests.test_rules -*-
"""Lists a broker reads into hashed collections, or answers entry by entry,
by the key of each entry.

Kafka reads these (its schemas' ``mapKey`` fields) into implicitly linked
hash collections, where entries with one key share one chain: a request
repeating a key N times costs the broker about N squared steps or worse (a
Produce naming one topic 1,600 times took 4.7 s to parse, 4,000 times would
hold a network thread, every connection on it, for a minute).  Kafka's own
clients never repeat a key, so a request that does is refused before it is
sent: the table below names, per API, each such list and its key.
"""

KEYED = {
    0: (("topic_data", ("name",)), ("topic_data", ("topic_id",))),  # Produce
    9: (("topics", ("name",)), ("topics.partition_indexes", ()),
        ("groups", ("group_id",)), ("groups.topics", ("name",)),
        ("groups.topics.partition_indexes", ())),  # OffsetFetch
    11: (("protocols", ("name",)),),  # JoinGroup
    15: (("groups", ()),),  # DescribeGroups
    19: (("topics", ("name",)), ("topics.assignments", ("partition_index",)),
         ("topics.configs", ("name",))),  # CreateTopics
    23: (("topics", ("topic",)),),  # OffsetForLeaderEpoch
    24: (("v3_and_below_topics", ("name",)),
         ("v3_and_below_topics.partitions", ())),  # AddPartitionsToTxn
    33: (("resources", ("resource_type", "resource_name")),
         ("resources.configs", ("name",))),  # AlterConfigs
    37: (("topics", ("name",)),),  # CreatePartitions
    44: (("resources", ("resource_type", "resource_name")),
         ("resources.configs", ("name", "config_operation"))),  # IncrementalAlterConfigs
    42: (("groups_names", ()),),  # DeleteGroups
    47: (("topics", ("name",)), ("topics.partitions", ("partition_index",))),  # OffsetDelete
    61: (("topics", ("name",)), ("topics.partition_indexes", ())),  # DescribeProducers
    65: (("transactional_ids", ()),),  # DescribeTransactions
    69: (("group_ids", ()),),  # ConsumerGroupDescribe
    75: (("topics", ("name",)),),  # DescribeTopicPartitions
}
"""api key -> ((path of a list, the fields keying its entries; none: the
entry is its own key), ...).  Besides the lists a broker hashes, those whose
every entry makes the broker build an answer of its own: a DescribeGroups
naming one group 400,000 times (10 KB) asked for a 400 MB answer, an
OffsetFetch naming one 20,000 times for 483 MB, and the broker ran out of
heap building them."""

ACROSS = {
    1: ("topics", ("topic", "topic_id"), "partitions", "partition"),  # Fetch
}
"""api key -> (a list, the field naming its entries (the first a version
has), the list in each entry, its entries' key): lists whose entries a
broker reads into one map keyed by both, so a key is repeated if it comes
twice under the same name, in one entry or in two (librdkafka may name a
topic twice, other partitions in each).  A Fetch naming one partition
13,000 times (430 KB) took a broker 10-50 ms to read, and its answer, one
partition, cost the gateway nothing to charge: four connections of them
took another tenant's produce p50 from 3 to 35 ms.  Fetch v13+ is checked
in place (``fastpath.fetch_request_ids``)."""


def repeated(api_key, request):
    """A message saying which key *request* (decoded) repeats, or None."""
    for path, fields in KEYED.get(api_key, ()):
        for entries in _lists(request, path.split(".")):
            seen = set()
            for entry in entries:
                if not fields:
                    key = (entry,)
                elif not all(hasattr(entry, f) for f in fields):
                    break  # a version without this key
                else:
                    key = tuple(getattr(entry, f) for f in fields)
                if key in seen:
                    return f"{path} repeats {'/'.join(map(str, key))}"
                seen.add(key)
    return _repeated_across(api_key, request)


def _repeated_across(api_key, request):
    """``repeated`` for the lists ACROSS names."""
    if api_key not in ACROSS:
        return None
    outer, names, inner, field = ACROSS[api_key]
    seen = set()
    for entry in getattr(request, outer, None) or ():
        name = next((getattr(entry, n) for n in names if hasattr(entry, n)), None)
        for item in getattr(entry, inner, None) or ():
            key = (name, getattr(item, field))
            if key in seen:
                return f"{outer}.{inner} repeats {name}/{key[1]}"
            seen.add(key)
    return None


def _lists(value, names):
    """Every list at *names* under *value* (one per enclosing entry)."""
    found = getattr(value, names[0], None)
    if not found:
        return
    if len(names) == 1:
        yield found
        return
    for entry in found:
        yield from _lists(entry, names[1:])
