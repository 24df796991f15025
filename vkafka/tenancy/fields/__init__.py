# -*- test-case-name: tests.test_fields -*-
"""Every field the tenant table offers, classified: fail closed, to the field.

rules.py decides per API; this table decides per field.  Each field path of
each request and response offered to virtual clusters (the union over the
versions kio models) says what it is, so enforcement can be reviewed class by
class.  A version carrying a field this table does not classify (a new kio, a
new row) is not offered to tenants: ``classified`` caps ``tenant_rules()``.

Typed fields were classified from kio's hints (TopicName, GroupId,
TransactionalId, BrokerId, ProducerId, ErrorCode, uuid ``topic_id``); every
other field by hand, by what it is, not by what the gateway does with it.
Run ``python -m vkafka.tenancy.fields`` to list what a new kio leaves
unclassified.

The words (``ApiKey``, ``Field``, ``Row``) are in kinds.py; the rows, by API
family, in rows_clients.py (connect, discover, produce, fetch), rows_groups.py
(consumer groups and their offsets), rows_transactions.py (producer ids and
transactions) and rows_admin.py (topics and configs).  This module joins them
into ``TABLE`` and holds what reads it.
"""

import dataclasses
import types
import typing
from functools import lru_cache

from kio.static.constants import EntityType

from ...protocol.headers import codec_versions, payload_class
from .kinds import ApiKey, F, Field, Row
from .rows_admin import ADMIN_ROWS
from .rows_clients import CLIENT_ROWS
from .rows_groups import GROUP_ROWS
from .rows_transactions import TRANSACTION_ROWS

__all__ = ["ApiKey", "F", "Field", "Row", "TABLE", "classified", "field_paths",
           "main", "markdown", "offered_range", "unclassified"]


def _join(*families):
    """One table from the row modules' dicts, in api key order; an API in two
    of them is a mistake (the later would silently win): ValueError."""
    table = {}
    for family in families:
        twice = sorted(key.name for key in table.keys() & family.keys())
        if twice:
            raise ValueError(f"field table rows defined twice: {', '.join(twice)}")
        table.update(family)
    return {key: table[key] for key in sorted(table)}


# The table.  Paths are dotted through nested entities, in the order kio's
# versions introduce them; docs/api-rules.md shows the versions of each.
TABLE = _join(CLIENT_ROWS, GROUP_ROWS, TRANSACTION_ROWS, ADMIN_ROWS)


_SIDES = (("request", EntityType.request), ("response", EntityType.response))


def _base(hint):
    """A field's type with Optional and tuple peeled off (``tuple[X | None, ...]``
    -> X), so entities inside lists are walked into too."""
    while True:
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if len(args) != 1:
                return hint
            hint = args[0]
        elif origin is tuple:
            hint = typing.get_args(hint)[0]
        else:
            return hint


def _leaves(cls, prefix=""):
    """The dotted paths of the non-entity fields of *cls*, entities walked into."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        base = _base(hints[f.name])
        if dataclasses.is_dataclass(base):
            yield from _leaves(base, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name


@lru_cache(maxsize=None)
def field_paths(api_key, version, side):
    """The field paths of one version's request or response ("request" or
    "response"), or None when kio does not model that version."""
    entity_type = dict(_SIDES)[side]
    cls = payload_class(api_key, version, entity_type)
    return None if cls is None else tuple(dict.fromkeys(_leaves(cls)))


def unclassified(api_key, version, table=TABLE):
    """The field paths of this version's request and response that *table*
    does not classify (all of them for an API it lacks).  A version kio does
    not model cannot be checked: LookupError."""
    row = table.get(api_key)
    missing = []
    for side, _ in _SIDES:
        paths = field_paths(api_key, version, side)
        if paths is None:
            raise LookupError(f"kio has no {side} for API {api_key} v{version}")
        known = {} if row is None else getattr(row, side)
        missing.extend(p for p in paths if p not in known)
    return missing


def offered_range(api_key, low, high, table=TABLE):
    """(low, high'): high' the last version such that every version from *low*
    has every field classified; None if *low* itself has one that is not."""
    top = None
    for version in range(low, high + 1):
        try:
            if unclassified(api_key, version, table):
                break
        except LookupError:
            break
        top = version
    return None if top is None else (low, top)


def classified(rules, table=TABLE):
    """*rules* (api key -> Rule) with each row capped to its classified versions;
    rows with none left are dropped (fail closed)."""
    capped = {}
    for key, rule in rules.items():
        offered = offered_range(key, rule.min_version, rule.max_version, table)
        if offered is not None:
            capped[key] = dataclasses.replace(rule, max_version=offered[1])
    return capped


def _versions(api_key, side, path):
    """Where *path* exists, within kio's versions: "v3-12", "v0-2, v5"."""
    low, high = codec_versions(api_key)
    present = [v for v in range(low, high + 1)
               if path in (field_paths(api_key, v, side) or ())]
    spans = []
    for v in present:
        if spans and spans[-1][1] == v - 1:
            spans[-1][1] = v
        else:
            spans.append([v, v])
    return ", ".join(f"v{a}" if a == b else f"v{a}-{b}" for a, b in spans)


def _title(api_key):
    return "".join(part.capitalize() for part in ApiKey(api_key).name.split("_"))


def markdown(table=TABLE):
    """The field section of docs/api-rules.md: each API's fields and classes."""
    lines = [
        "",
        "## Fields of the APIs offered to virtual clusters",
        "",
        "Generated from `vkafka/tenancy/fields/`. Every field of every request and",
        "response offered to virtual clusters is classified by what it is; a version",
        "with a field that is not classified is not offered (fail closed, to the",
        "field). Paths go through nested entities; versions are those where kio",
        "models the field.",
        "",
        "| class | what it is |",
        "|---|---|",
    ]
    lines += [f"| {field.name} | {field.value} |" for field in Field]
    for key in sorted(table):
        lines += ["", f"### {int(key)} {_title(key)}", "",
                  "| | field | class | versions |", "|---|---|---|---|"]
        for side, _ in _SIDES:
            for path, field in getattr(table[key], side).items():
                lines.append(f"| {side} | `{path}` | {field.name} | "
                             f"{_versions(key, side, path)} |")
    return "\n".join(lines) + "\n"


def main():
    """Print what kio models for the tenant APIs that this table leaves
    unclassified (after a kio upgrade, say), by API, version and side."""
    for key in ApiKey:
        low, high = codec_versions(key)
        for version in range(low, high + 1):
            for side, _ in _SIDES:
                known = getattr(TABLE[key], side)
                for path in field_paths(key, version, side) or ():
                    if path not in known:
                        print(f"{key.name} v{version} {side}: {path}")
