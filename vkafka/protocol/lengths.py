# -*- test-case-name: tests.test_tenant_splice -*-
"""Refuse compact array lengths that would crash kio's native reader.

kio 0.6.5 reads a compact array's length as an unsigned varint of up to 35
bits; from 2**32 on, its bound check no longer holds and it reserves room
for that many elements.  The allocation fails and Rust aborts the process:
one crafted request (a Metadata request, five bytes of length) would stop
the gateway for every tenant.  Kafka's own varints are 32-bit, so no valid
message has such a length.

A length of 2**32 or more takes four continuation bytes and then a byte of
0x10 or more; a frame without that pattern (most frames) cannot hold one.
Frames with it are walked by the schema here, in Python, and refused if an
array claims more elements than Kafka allows or than there are bytes left.
Found by ``tests/fuzz_gateway.py``.
"""

import dataclasses
import re
import struct
import types
import typing
from functools import lru_cache

from .framing import Malformed

_MAYBE_HUGE = re.compile(rb"[\x80-\xff]{4}[\x10-\x7f]")
MAX_ELEMENTS = 2**31 - 1
"""Kafka's own limit (a Java int)."""

_FIXED = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2,
          "error_code": 2, "int32": 4, "uint32": 4, "timedelta_i32": 4,
          "int64": 8, "uint64": 8, "float64": 8, "timedelta_i64": 8,
          "datetime_i64": 8, "uuid": 16}
_INT8 = struct.Struct(">b")
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


class LengthError(Malformed):
    """An array or string length no valid Kafka message has."""


def check(cls, frame, offset):
    """Raise LengthError if the *cls* message at *offset* has an impossible length."""
    if not maybe_huge(frame, offset):
        return
    _Walk(frame, offset).entity(cls)


def maybe_huge_py(frame, offset):
    """Whether *frame* from *offset* may hold a length of 2**32 or more."""
    return _MAYBE_HUGE.search(frame, offset) is not None


try:  # the same scan compiled (setup.py), ~40 times faster
    from ._walk import maybe_huge
except ImportError:  # no C compiler where this was installed
    maybe_huge = maybe_huge_py


@lru_cache(maxsize=None)
def _plan(cls):
    """((op, ...) for each field in wire order, {tag: op}) for an entity class."""
    fields, tagged = [], {}
    for field in dataclasses.fields(cls):
        shape, nullable = field.type, False
        if typing.get_origin(shape) in (types.UnionType, typing.Union):
            shape = next(a for a in typing.get_args(shape) if a is not type(None))
            nullable = True
        if typing.get_origin(shape) is tuple:
            inner = typing.get_args(shape)[0]
            op = ("array", inner if dataclasses.is_dataclass(inner)
                  else field.metadata["kafka_type"])
        elif dataclasses.is_dataclass(shape):
            op = ("entity", shape, nullable)
        else:
            op = ("value", field.metadata["kafka_type"])
        if "tag" in field.metadata:
            tagged[field.metadata["tag"]] = op
        else:
            fields.append(op)
    return tuple(fields), tagged


class _Walk:
    def __init__(self, buf, pos, end=None):
        self.buf, self.pos = buf, pos
        self.end = len(buf) if end is None else end

    def skip(self, n):
        if n < 0 or self.pos + n > self.end:
            raise LengthError(f"{n} bytes announced, {self.end - self.pos} left")
        self.pos += n

    def uvarint(self):
        value = shift = 0
        while True:
            if self.pos >= self.end:
                raise LengthError("truncated varint")
            byte = self.buf[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise LengthError("varint longer than 5 bytes")

    def signed(self, fmt):
        if self.pos + fmt.size > self.end:
            raise LengthError("truncated length")
        (value,) = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return value

    def entity(self, cls):
        fields, tagged = _plan(cls)
        flexible = cls.__flexible__
        for op in fields:
            self.op(op, flexible)
        if flexible:
            for _ in range(self.count(self.uvarint())):
                tag, size = self.uvarint(), self.uvarint()
                if tag in tagged:  # read by its type, as kio does: size unchecked
                    self.op(tagged[tag], True)
                else:
                    self.skip(size)

    def count(self, n):
        if n > MAX_ELEMENTS or n > self.end - self.pos:
            raise LengthError(f"{n} elements announced, {self.end - self.pos} "
                              "bytes left")
        return n

    def op(self, op, flexible):
        kind = op[0]
        if kind == "value":
            self.value(op[1], flexible)
        elif kind == "entity":
            if op[2] and self.signed(_INT8) < 0:
                return  # a null struct (KIP-893)
            self.entity(op[1])
        else:
            n = self.uvarint() - 1 if flexible else self.signed(_INT32)
            if n < 0:
                return  # null
            element = op[1]
            for _ in range(self.count(n)):
                if isinstance(element, str):
                    self.value(element, flexible)
                else:
                    self.entity(element)

    def value(self, kafka_type, flexible):
        size = _FIXED.get(kafka_type)
        if size is not None:
            return self.skip(size)
        if flexible:
            n = self.uvarint() - 1
        else:
            n = self.signed(_INT16 if kafka_type == "string" else _INT32)
        if n > 0:
            self.skip(n)
