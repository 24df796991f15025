# -*- test-case-name: tests.test_throttle -*-
"""A response's ``throttle_time_ms``, found and raised in place (KIP-219).

A throttled client is told in the response how long to back off, as a broker
tells it about its own quotas: the field is an int32 at a fixed place, so it
is written in the bytes, whatever else happens to the response.  Produce has
it after its topics; Fetch and most other responses as their first field.
"""

import dataclasses
import struct
from functools import lru_cache

from kio.index import load_payload_module
from kio.schema.index import api_key_map
from kio.static.constants import EntityType

from .fastpath import produce_response_end
from .headers import response_header_length

PRODUCE = 0
_I32 = struct.Struct(">i")


@lru_cache(maxsize=None)
def first_field_is_throttle(api_key, version):
    """Whether this response's body starts with ``throttle_time_ms``."""
    try:
        module = load_payload_module(api_key, version, EntityType.response)
    except Exception:  # an API or version kio does not know: nothing to write
        return False
    name = "".join(p.capitalize() for p in api_key_map[api_key].split("_"))
    cls = getattr(module, f"{name}Response", None)
    if cls is None or not dataclasses.is_dataclass(cls):
        return False
    found = dataclasses.fields(cls)
    return bool(found) and found[0].name == "throttle_time"


def throttle_position(frame, api_key, version):
    """Where this response's throttle_time_ms is, or None if it has none."""
    offset = response_header_length(frame, api_key, version)
    if api_key == PRODUCE:
        return produce_response_end(frame, offset, version)
    return offset if first_field_is_throttle(api_key, version) else None


def throttled(frame, api_key, version, milliseconds):
    """*frame* (a response, without its size) saying at least *milliseconds*
    of throttle; the same object if it has no such field or says more."""
    at = throttle_position(frame, api_key, version)
    if at is None or at + 4 > len(frame):
        return frame
    (current,) = _I32.unpack_from(frame, at)
    if current >= milliseconds:
        return frame
    out = bytearray(frame)
    _I32.pack_into(out, at, milliseconds)
    return bytes(out)
