# -*- test-case-name: tests.test_fastpath -*-
"""Tagged fields of requests walked by lengths, as a broker reads them.

Kafka skips a tag it does not know by the size the tag declares, but reads
one it knows by its type, whatever size it declares.  A walk that skips
every tag by its size therefore disagrees with the broker whenever a known
tag lies about its size: the broker reads the bytes after the value as the
fields that follow (a topic id, a replica id), which the walk never checked
(a Fetch v18 partition's high_watermark declaring 24 bytes hid another
topic's id).  So each known tag must fill exactly the size it declares.
Which tags a version knows, and how long their values are, comes from
kio's schemas (the same generated schemas as the broker's), never from a
hand-kept list: a version that adds a tag is covered by the same rule, and
a tag whose type no walk here can size fails when its table is built.
"""

import dataclasses
import importlib
import typing
from functools import lru_cache

from .framing import Malformed
from .headers import read_uvarint, skip_string

_FIXED = {"bool": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
          "int64": 8, "float64": 8, "uuid": 16}


def exact_tags(frame, pos, known):
    """Skip a tagged-field section; each tag in *known* (tag -> where its value
    ends, as its type reads it from a position) must fill exactly the size
    it declares."""
    count, pos = read_uvarint(frame, pos)
    for _ in range(count):
        tag, pos = read_uvarint(frame, pos)
        size, pos = read_uvarint(frame, pos)
        exact(frame, tag, pos, size, known)
        pos += size
        if pos > len(frame):
            raise Malformed("truncated tagged field")
    return pos


def exact(frame, tag, pos, size, known):
    """Malformed unless tag *tag* (of *size* bytes at *pos*) fills its size,
    if *known* knows it."""
    value_end = known.get(tag)
    if value_end is not None and value_end(frame, pos) != pos + size:
        raise Malformed(f"tagged field {tag} declares {size} bytes, its value "
                        "is not that long")


def known_tags(entity):
    """tag -> where its value ends, for the tagged fields of kio's *entity*."""
    hints = typing.get_type_hints(entity)
    return {f.metadata["tag"]: _value_end(f, hints[f.name])
            for f in dataclasses.fields(entity) if "tag" in f.metadata}


def _value_end(field, hint):
    kafka_type = field.metadata.get("kafka_type")
    if kafka_type in _FIXED:
        size = _FIXED[kafka_type]
        return lambda frame, pos: pos + size
    if kafka_type == "string":  # tagged fields exist only in flexible versions
        return lambda frame, pos: skip_string(frame, pos, True)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    struct = args[0] if len(args) == 1 else hint
    if dataclasses.is_dataclass(struct):
        return _struct_end(struct)
    raise TypeError(f"tagged field {field.name} ({kafka_type or hint}): no walk "
                    "here knows how long it is")


def _struct_end(entity):
    """Where a struct value ends: its untagged fields in order, then its tags."""
    hints = typing.get_type_hints(entity)
    steps = [_value_end(f, hints[f.name]) for f in dataclasses.fields(entity)
             if "tag" not in f.metadata]
    tags = known_tags(entity)

    def end(frame, pos):
        for step in steps:
            pos = step(frame, pos)
        return exact_tags(frame, pos, tags)
    return end


@lru_cache(maxsize=None)
def request_tags(package, version, *entities):
    """The known tags of the request entities named *entities* (class names in
    kio.schema.<package>.v<version>.request), in that order."""
    module = importlib.import_module(f"kio.schema.{package}.v{version}.request")
    return tuple(known_tags(getattr(module, name)) for name in entities)
