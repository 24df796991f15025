# -*- test-case-name: tests.test_headers -*-
"""Request and response headers.

The first eight bytes of every request (api key, version, correlation id) are
fixed; the rest of the header depends on whether the API version is
"flexible" (header v2, with tagged fields), which kio's schemas tell us.
"""

import struct
from dataclasses import dataclass
from functools import lru_cache

from kio.index import UnknownAPIKey, UnknownEntity, load_payload_module
from kio.schema.index import api_key_map
from kio.static.constants import EntityType

from .framing import Malformed
from .schema_fixes import FIXED

_FIXED = struct.Struct(">hhi")
_INT16 = struct.Struct(">h")

API_VERSIONS = 18


class HeaderError(Malformed):
    """The frame does not start with a valid header."""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body_offset: int
    """Where the request body starts in the frame."""


@lru_cache(maxsize=None)
def payload_class(api_key, api_version, entity_type):
    """kio's dataclass for one API's request or response at one version, or None
    (corrected where a broker sends what kio refuses: schema_fixes.py)."""
    fixed = FIXED.get((api_key, api_version, entity_type))
    if fixed is not None:
        return fixed
    try:
        module = load_payload_module(api_key, api_version, entity_type)
    except (UnknownAPIKey, UnknownEntity):
        return None
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and getattr(value, "__type__", None) is entity_type
            and getattr(value, "__api_key__", None) == api_key
        ):
            return value
    return None


@lru_cache(maxsize=None)
def codec_versions(api_key):
    """The (min, max) versions kio models for *api_key*, or None."""
    from kio.schema.index import schema_name_map

    name = api_key_map.get(api_key)
    if name is None:
        return None
    versions = sorted(schema_name_map[name])
    return versions[0], versions[-1]


def is_flexible(api_key, api_version, entity_type=EntityType.request):
    """Whether this API version uses the flexible (tagged-field) encoding
    (asked twice per request and answer: kept in a plain dict)."""
    key = (api_key, api_version, entity_type is EntityType.response)
    found = _FLEXIBLE.get(key)
    if found is None:
        cls = payload_class(api_key, api_version, entity_type)
        if cls is None:
            raise HeaderError(f"unknown API {api_key} version {api_version}")
        found = _FLEXIBLE[key] = cls.__flexible__
    return found


_FLEXIBLE = {}


def write_uvarint(value):
    """An unsigned varint (compact lengths and tagged-field counts)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def read_uvarint(buf, pos, max_shift=28):
    """Read an unsigned varint; return (value, new position).  *max_shift* 28
    reads up to 32 bits (the protocol's lengths), 63 up to 64 (varlongs)."""
    if pos < len(buf) and buf[pos] < 0x80:  # one byte: nearly every length
        return buf[pos], pos + 1
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise HeaderError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > max_shift:
            raise HeaderError("varint too long")


_INT32 = struct.Struct(">i")


def read_length(buf, pos, flexible):
    """(length, position after it) of an array or bytes field: a compact
    (uvarint + 1) length in flexible versions, else an int32; -1 is null."""
    if flexible:
        count, pos = read_uvarint(buf, pos)
        return count - 1, pos
    return _INT32.unpack_from(buf, pos)[0], pos + 4


MAX_ENTRIES = 100_000
"""Topics and partitions one request walked by lengths (Produce, Fetch v13+)
may name in all.  A walk costs about a microsecond an entry, and an empty
partition is six bytes: unbounded, a 100 MB request of them would hold the
event loop, and every tenant on it, for seconds.  No client sends a tenth."""


def walkable(budget, count, api):
    """What is left of *budget* (entries) once *count* more are walked;
    HeaderError if it does not reach."""
    if count > budget:
        raise HeaderError(f"{api} request: over {MAX_ENTRIES} topics and partitions")
    return budget - max(count, 0)


def skip_string(buf, pos, flexible):
    """The position after a (nullable) string field."""
    if flexible:
        length, pos = read_uvarint(buf, pos)
        return pos + max(length - 1, 0)
    return pos + 2 + max(_INT16.unpack_from(buf, pos)[0], 0)


def read_string(frame, pos, flexible):
    """(a nullable string's value or None, position after it)."""
    if flexible:
        length, pos = read_uvarint(frame, pos)
        if length == 0:
            return None, pos
        end = pos + length - 1
    else:
        (length,) = _INT16.unpack_from(frame, pos)
        pos += 2
        if length < 0:
            return None, pos
        end = pos + length
    if end > len(frame):
        raise HeaderError("truncated string")
    try:
        return bytes(frame[pos:end]).decode("utf-8"), end
    except UnicodeDecodeError as e:
        raise HeaderError(f"a string that is not UTF-8: {e.reason}") from None


def write_string(value, flexible):
    """A nullable string field, compact in flexible versions."""
    if value is None:
        return b"\x00" if flexible else _INT16.pack(-1)
    raw = value.encode("utf-8")
    return (write_uvarint(len(raw) + 1) if flexible else _INT16.pack(len(raw))) + raw


def skip_tagged_fields(buf, pos):
    """Skip a tagged-field section; return the position after it."""
    if pos < len(buf) and buf[pos] == 0:  # none: nearly every section
        return pos + 1
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _tag, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
        if pos > len(buf):
            raise HeaderError("truncated tagged field")
    return pos


def peek_request(frame):
    """Return (api_key, api_version, correlation_id) from a request frame."""
    if len(frame) < 8:
        raise HeaderError(f"request frame of {len(frame)} bytes is too short")
    return _FIXED.unpack_from(frame, 0)


def parse_request_header(frame):
    """Parse a request header (v1 or v2) from a frame.

    :raises HeaderError: if the frame is truncated or names an API version
        the codec does not know.
    """
    api_key, api_version, correlation_id = peek_request(frame)
    body_offset = request_body_offset(frame)
    (length,) = _INT16.unpack_from(frame, 8)
    client_id = None if length < 0 else \
        bytes(frame[10:10 + length]).decode("utf-8", "replace")
    return RequestHeader(api_key, api_version, correlation_id, client_id, body_offset)


def client_id_end(frame):
    """Where a request header's client id field (at 8: an int16 length, -1
    for null, and its bytes) ends."""
    if len(frame) < 10:
        raise HeaderError("truncated client id")
    (length,) = _INT16.unpack_from(frame, 8)
    end = 10 + max(length, 0)
    if end > len(frame):
        raise HeaderError("truncated client id")
    return end


def request_body_offset(frame):
    """Where a request frame's body starts: ``parse_request_header``'s
    body_offset without decoding the client id (the forwarding path's need)."""
    pos = client_id_end(frame)
    api_key, api_version, _ = _FIXED.unpack_from(frame, 0)
    if is_flexible(api_key, api_version):
        pos = skip_tagged_fields(frame, pos)
    return pos


def response_header(api_key, api_version, correlation_id):
    """The header of a response the gateway makes itself; ApiVersions answers
    keep header v0 at every version (KIP-511)."""
    header = struct.pack(">i", correlation_id)
    if api_key != API_VERSIONS and is_flexible(api_key, api_version,
                                               EntityType.response):
        header += b"\x00"
    return header


def response_header_length(frame, api_key, api_version):
    """Length of the response header: correlation id, plus tagged fields if flexible.

    ApiVersions responses always use header v0 so that a client can read the
    answer before it knows which versions the broker speaks.
    """
    if api_key == API_VERSIONS or not is_flexible(
        api_key, api_version, EntityType.response
    ):
        return 4
    return skip_tagged_fields(frame, 4)


def encode_request_header(api_key, api_version, correlation_id, client_id="vkafka"):
    """Header bytes for a request the gateway itself sends."""
    raw = client_id.encode()
    out = _FIXED.pack(api_key, api_version, correlation_id)
    out += _INT16.pack(len(raw)) + raw
    if is_flexible(api_key, api_version):
        out += b"\x00"
    return out
