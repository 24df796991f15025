# -*- test-case-name: tests.test_tenant_splice -*-
"""A broker's response made ready for the client, as the request's rule says.

Most responses pass as bytes (nothing in them to rewrite, or a structural
scan finds nothing: Fetch and Produce v13+); some are renamed by slicing
(older Produce); the rest are decoded, rewritten (names back to logical,
other tenants' entities dropped, broker addresses made the gateway's) and
encoded.  Responses to requests that named concentrated topics go through
the concentration layer's reverse first.
"""

import struct

from twisted.internet import defer

from ..protocol.codec import CodecError, decode_response, encode_body
from ..protocol.errors import first_error
from ..protocol.headers import API_VERSIONS, response_header_length
from ..tenancy import concentration
from ..tenancy.rights import Unrestricted, authorized_operations
from ..tenancy.services import OFF_LOOP_FROM, SMALL_WORK
from ..tenancy.walker import with_error

FETCH = 1
UNSUPPORTED_VERSION = 35
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


def rewrite_response(services, pending, frame, counted=True):
    """(frame for the client, its first error code or None if not read or not
    *counted*, records in it).  The loop time a decoded one took is left in
    ``pending.work``: a small request can ask for a large answer."""
    (correlation_id,) = _INT32.unpack_from(frame, 0)
    if correlation_id != pending.correlation_id:
        raise CodecError(
            f"correlation id {correlation_id}, expected {pending.correlation_id}")
    if goes_through_concentration(services, pending):
        return _measured(services, pending, _deconcentrate, frame)
    rule, version = pending.rule, pending.api_version
    scan = offset = None
    start = services.work_clock()  # scanned, maybe renamed: charged past SMALL_WORK
    if rule.scan_response is not None:
        offset = response_header_length(frame, pending.api_key, version)
        scan = rule.scan_response(frame, offset, version)
        if rule.observe is not None:
            rule.observe(pending.context, scan)
    sliced = _without_decoding(pending, frame, offset, scan)
    if sliced is not None:
        work = services.work_clock() - start
        if work >= SMALL_WORK:
            pending.work += work
        return sliced
    return _measured(services, pending, _decoded, frame, scan, counted, start=start)


def _measured(services, pending, rewrite, *args, start=None):
    """``rewrite(services, pending, *args)``, its loop time (from *start*, if
    given) in ``pending.work`` (a Fetch answer's too: one naming 24,000
    topics took half a second to decode and encode, whatever its records)."""
    if start is None:
        start = services.work_clock()
    try:
        return rewrite(services, pending, *args)
    finally:  # added to: an answer off the loop adds its thread time too
        pending.work += services.work_clock() - start


def refused_whole(context):
    """(reason, code) when an ACL refused the whole request (tenancy/rights.py)."""
    rights = None if context is None else context.rights
    return None if rights is None else rights.refused


def _without_decoding(pending, frame, offset, scan):
    """The response as bytes, or renamed by slicing, when the rule allows it
    (the hot path); None when it must be decoded."""
    rule, version = pending.rule, pending.api_version
    if refused_whole(pending.context) is not None:
        return None
    if not rule.needs_response_rewrite(version) or (
            rule.passes_as_bytes is not None
            and rule.passes_as_bytes(scan, version, pending.context)):
        return (frame, None, 0) if scan is None else (frame, scan.error, scan.records)
    if rule.rename_response is not None and pending.context is not None:
        renamed = rule.rename_response(frame, offset, version, scan, pending.context)
        if renamed is not None:
            return renamed, scan.error, scan.records
    return None


def _decoded(services, pending, frame, scan, counted):
    """Decode, rewrite by the rule (maybe asynchronously: a Deferred), encode."""
    version = 0 if api_versions_downgraded(pending.api_key, frame) \
        else pending.api_version
    if services.offload is not None and len(frame) >= OFF_LOOP_FROM:
        return _off_loop(services, pending, frame, version, scan, counted)
    header, response = decode_response(frame, pending.api_key, version)
    return _finished(services, pending, header, _rewritten(services, pending, response),
                     scan, counted, encode_body)


def _rewritten(services, pending, response):
    """The decoded *response* rewritten by the rule, ACLs and refusals applied
    (maybe a Deferred)."""
    response = pending.rule.rewrite_response(services, pending.context, response)
    context = pending.context
    if context is not None and not isinstance(response, defer.Deferred):
        response = authorized_operations(context.rights or Unrestricted(
            context.namespace), response)
    refused = refused_whole(pending.context)
    if refused is not None:  # every error code of the answer is that refusal's
        response = response.addCallback(with_error, refused[1], refused[0]) \
            if isinstance(response, defer.Deferred) else \
            with_error(response, refused[1], refused[0])
    return response


def _finished(services, pending, header, response, scan, counted, encode):
    """(frame, error, records) of the rewritten *response* (or a Deferred of
    them): encoded by *encode*, offered for reuse when the rule asked."""
    records = 0 if scan is None else scan.records
    if isinstance(response, defer.Deferred):
        return response.addCallback(lambda r: _finished(
            services, pending, header, r, scan, counted, encode))
    error = first_error(response) if counted else None
    body = encode(response)
    if isinstance(body, defer.Deferred):
        return body.addCallback(lambda b: (header + _offered(pending.context, b),
                                           error, records))
    return header + _offered(pending.context, body), error, records


def _off_loop(services, pending, frame, version, scan, counted):
    """``_decoded`` for a large answer: decoded and encoded in the codec thread
    (proxy/offload.py), rewritten on the loop; its thread time is added to
    ``pending.work`` (the tenant's loop share)."""
    def timed(result):
        value, seconds = result
        pending.work += seconds
        return value

    def rewrite(decoded):
        header, response = decoded
        start = services.work_clock()
        try:
            response = _rewritten(services, pending, response)
        finally:
            pending.work += services.work_clock() - start
        return _finished(services, pending, header, response, scan, counted,
                         lambda r: services.offload(encode_body, r, key=key)
                         .addCallback(timed))
    key = None if pending.context is None else pending.context.namespace.name
    return services.offload(decode_response, frame, pending.api_key, version, key=key) \
        .addCallback(timed).addCallback(rewrite)


def _encoded(context, response):
    """The rewritten response's body, offered for reuse when the rule asked."""
    return _offered(context, encode_body(response))


def _offered(context, body):
    if context is not None and context.on_answer is not None:
        context.on_answer(body)
    return body

def goes_through_concentration(services, pending):
    """Whether the response to *pending* goes through the concentration
    layer (it named concentrated topics, or is a Fetch of a session that
    reads some): such a response is never forwarded as bytes."""
    context = pending.context
    return context is not None and (
        context.concentration is not None
        or (pending.api_key == FETCH and bool(services.concentrated_fetches)))

def _deconcentrate(services, pending, frame):
    """A response to a request that named concentrated topics: the layer's
    reverse, then the tenant's rewrite (never forwarded as bytes)."""
    header, response = decode_response(frame, pending.api_key, pending.api_version)
    response = concentration.rewrite_response(services, pending.context, pending.api_key,
                                              response)
    if pending.rule.needs_response_rewrite(pending.api_version):
        response = pending.rule.rewrite_response(services, pending.context, response)
    context = pending.context
    response = authorized_operations(context.rights or Unrestricted(context.namespace),
                                     response)
    return header + _encoded(pending.context, response), first_error(response), 0


def api_versions_downgraded(api_key, frame):
    """An ApiVersions answer to a too-new request comes back at v0 (KIP-511)."""
    if api_key != API_VERSIONS or len(frame) < 6:
        return False
    return _INT16.unpack_from(frame, 4)[0] == UNSUPPORTED_VERSION
