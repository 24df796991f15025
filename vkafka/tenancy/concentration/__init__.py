# -*- test-case-name: tests.test_concentration -*-
"""Concentrated topics: many logical topics stored in one physical topic.

The tenant layer sees a concentrated topic under a *virtual* physical name
(the prefix rule's name, never created on the cluster; see naming.Alias).
This layer, applied after the tenant rewrite of a request and before the
tenant rewrite of its response, swaps that virtual name (and its synthetic
topic id) for the real topic, and:

- Produce: tags every record with the virtual name (header ``vkafka.topic``)
  and prefixes its key with it (so compaction keeps logical topics apart);
  producer ids are cleared (one broker-side sequence per physical partition
  cannot serve several logical topics), so retries are at-least-once.
- Fetch: keeps the batches of the fetched logical topic, untagged; every
  other batch becomes an empty batch over the same offsets, which clients
  step over as they do over a compacted batch.
- Metadata: the logical topic gets its own partition count (at most the
  physical one's) and a synthetic topic id.
- OffsetCommit/OffsetFetch: the committed metadata carries the virtual name,
  so a group's offsets come back under the right logical topic.

Offsets are the physical topic's (increasing, with gaps where other logical
topics' records are); see docs/concentration.md for exactly what holds.
Any other API that names a concentrated topic is refused (fail closed).

Where each concern lives (imports go down this list, never up):

- ``requests.py``: the request side (``rewrite_request``, ``SUPPORTED``);
- ``responses.py``: the response side (``rewrite_response``);
- ``refusal.py``: decoys for the APIs with no rule here (fail closed);
- ``create.py``: CreateTopics by a concentration rule (``create_by_rule``);
- ``offsets.py``: committed offsets (metadata marker, offset gaps);
- ``records.py``: tagging and untagging record batches;
- ``shared.py``: what both sides use (``Exchange``, ``Refused``, synthetic ids).

Callers use this package only: ``from vkafka.tenancy import concentration``.
"""

from .create import create_by_rule
from .offsets import MARKER, committed_offset
from .records import PARTITION_TAG, TAG, tag_records, untag_records
from .refusal import refuse
from .requests import SUPPORTED, rewrite_request
from .responses import rewrite_response
from .shared import Exchange, Refused, synthetic_id

__all__ = ["MARKER", "PARTITION_TAG", "SUPPORTED", "TAG", "Exchange", "Refused",
           "committed_offset", "create_by_rule", "rewrite_request",
           "rewrite_response", "synthetic_id", "tag_records", "untag_records"]
