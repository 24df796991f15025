# -*- test-case-name: tests.test_records -*-
"""The error code a decoded response carries, for metrics.

Kafka reports errors per response and per entity (topic, partition, group,
resource...).  kio types every such field as ``ErrorCode``, so one walk,
planned once per schema class, finds them in any API at any version.
"""

import dataclasses
import types
import typing
from functools import lru_cache

from kio.schema.errors import ErrorCode


def _base(hint):
    """The entity type of a field (inside Optional and tuple), or the hint."""
    for _ in range(3):
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType, tuple):
            args = [a for a in typing.get_args(hint)
                    if a is not type(None) and a is not Ellipsis]
            if len(args) != 1:
                return hint
            hint = args[0]
    return hint


@lru_cache(maxsize=None)
def _plan(cls):
    """(error code fields, nested fields that may hold some) of an entity class."""
    hints = typing.get_type_hints(cls)
    codes, nested = [], []
    for f in dataclasses.fields(cls):
        base = _base(hints[f.name])
        if base is ErrorCode:
            codes.append(f.name)
        elif dataclasses.is_dataclass(base) and _has_codes(base):
            nested.append(f.name)
    return tuple(codes), tuple(nested)


def _has_codes(cls):
    codes, nested = _plan(cls)
    return bool(codes or nested)


def first_error(entity):
    """The first non-zero error code of *entity*: its own fields first, then
    its nested entities in order (so a response's top-level error wins); 0 if
    there is none."""
    codes, nested = _plan(type(entity))
    for name in codes:
        code = getattr(entity, name)
        if code:
            return int(code)
    for name in nested:
        value = getattr(entity, name)
        for item in value if isinstance(value, tuple) else (value,):
            if item is not None:
                code = first_error(item)
                if code:
                    return code
    return 0
