# -*- test-case-name: tests.test_tenant_splice -*-
"""The tenant rewrite of one request: the rule table's row applied to a frame.

The splice hands over an authenticated tenant's request frame; this filter
checks it against the row (token expiry, decode limits), rewrites it by
slicing when the row can (``rewrite_frame``), else decodes, rewrites and
encodes it (``rewrite_request``), then sends it through the concentration
layer if it names concentrated topics.  Its answer says what the splice does:
forward a frame, answer with a body the rules made, or close the connection.
"""

import struct
from dataclasses import dataclass

from ..protocol.codec import decode_request, encode_body
from ..protocol.framing import Malformed
from ..protocol.headers import request_body_offset
from ..tenancy import concentration
from ..tenancy.walker import Foreign, Rejected, RequestContext

METADATA = 3
REWRITE_ERRORS = (Malformed, struct.error, Foreign, Rejected)
"""What hostile or broken bytes raise (the connection is closed with the
reason); anything else is a bug and surfaces as one."""


@dataclass(slots=True)
class Outcome:
    """What to do with a request: forward *frame* (its body at *body_offset*,
    None if not known), answer with *answer* (a body), or close for *refused*."""
    frame: object = None
    context: RequestContext = None
    body_offset: int | None = None
    answer: bytes | None = None
    refused: str | None = None


def decode_limit(gateway, api_key):
    """Bytes of a request the gateway decodes on its event loop: Metadata is
    names only, ~10,000 topics in a quarter of the limit."""
    limit = gateway.max_decoded_request
    return limit // 4 if api_key == METADATA else limit


def rewrite_request(conn, rule, frame, api_key, api_version):
    """The Outcome of an authenticated tenant's request *frame* under *rule*."""
    claims = conn.claims
    if conn.gateway.reactor.seconds() >= claims.expires_at:
        return Outcome(refused="token expired; the client did not re-authenticate")
    what = f"API {api_key} v{api_version}"
    context = RequestContext(conn.namespace, conn.topology.topic_ids, rule.write)
    body_offset = rewritten = None
    try:
        if rule.rewrite_frame is not None:
            body_offset = request_body_offset(frame)
            rewritten = rule.rewrite_frame(conn, context, frame, body_offset,
                                           api_version)
        if context.answer is not None:  # e.g. a fetch session not its own
            return Outcome(context=context, answer=context.answer)
        if rewritten is not None:
            frame = rewritten
        elif rule.rewrite_request is not None:
            body_offset = None
            limit = decode_limit(conn.gateway, api_key)
            if len(frame) > limit:
                return Outcome(refused=f"{what} request of {len(frame)} bytes: over "
                                       f"the {limit} bytes the gateway decodes "
                                       "(--max-decoded-request)")
            header, request = decode_request(frame)
            request = rule.rewrite_request(conn, context, request)
            if context.answer is not None:
                return Outcome(context=context, answer=context.answer)
            frame = bytes(frame[:header.body_offset]) + encode_body(request)
    except REWRITE_ERRORS as e:
        return Outcome(refused=f"cannot rewrite {what}: {e}")
    if context.concentrated:
        try:
            header, request = decode_request(frame)
            request = concentration.rewrite_request(conn, context, api_key, request)
            frame = bytes(frame[:header.body_offset]) + encode_body(request)
            body_offset = None
        except REWRITE_ERRORS as e:  # Refused, BatchError
            return Outcome(refused=f"concentrated topics, {what}: {e}")
    return Outcome(frame=frame, context=context, body_offset=body_offset)
