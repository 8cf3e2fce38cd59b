"""The metadata the server and the Envoy REST edge (gateway/rest_edge.lua) exchange.

These constants are the one spelling of every such name in Python. The Lua filter cannot
import them: it declares each as a local of the same name at its top, and
tests/unit/test_rest_edge.py checks that both spell them alike.
"""

from __future__ import annotations

import grpc

# The documented REST lists carry their next page's token in this response header; the
# edge passes it through untouched.
NEXT_PAGE_TOKEN_HEADER = "x-next-page-token"
# The documented REST lists are bare JSON arrays, but a transcoded response is always a
# JSON object: this names the repeated field whose array the edge returns instead.
REST_ARRAY_HEADER = "devicehub-rest-array"
# Replaces the REST body with this literal JSON, where a document fixes a body that no
# message prints as (the Lux alimtalk endpoint answers `null`).
REST_BODY_HEADER = "devicehub-rest-body"
# The Lux alimtalk endpoint's documented response header: `sent` or `suppressed`.
ALIMTALK_OUTCOME_HEADER = "x-alimtalk-outcome"
# Set by the edge on every REST request it transcodes.
REST_CALL_HEADER = "devicehub-rest-call"
# A failed call's trailers: the edge builds the documented error body from the reason
# (``ErrorReason`` without its prefix) and answers with the REST status.
ERROR_REASON_TRAILER = "devicehub-error-reason"
HTTP_STATUS_TRAILER = "devicehub-http-status"
# The request id (api/call_context.py): Envoy sets it on every request; the edge quotes it
# in the body of a 5xx, and the server in a 5xx-class status's trailers.
REQUEST_ID_HEADER = "x-request-id"


def metadata_value(context: grpc.aio.ServicerContext, name: str) -> str:
    """The first value of the request metadata ``name`` (a header the edge passed on), or
    ``""``."""
    return next((value for key, value in context.invocation_metadata() or () if key == name), "")


def is_rest_call(context: grpc.aio.ServicerContext) -> bool:
    return bool(metadata_value(context, REST_CALL_HEADER))


async def send_list_metadata(
    context: grpc.aio.ServicerContext, field: str, next_page_token: str
) -> None:
    """Marks a list response for the REST edge. Native gRPC clients read the page token
    from the response and get nothing here: sending metadata ahead of the response is an
    operation of its own, a tenth of the server time of a home-screen call."""
    if not is_rest_call(context):
        return
    metadata = [(REST_ARRAY_HEADER, field)]
    if next_page_token:
        metadata.append((NEXT_PAGE_TOKEN_HEADER, next_page_token))
    await context.send_initial_metadata(metadata)


async def send_rest_body(
    context: grpc.aio.ServicerContext, literal_json: str, *headers: tuple[str, str]
) -> None:
    await context.send_initial_metadata([(REST_BODY_HEADER, literal_json), *headers])


# A REST firmware upload's Content-Length, which the transcoder does not pass on: the edge
# copies it here, so that the server can tell a body cut short from a complete one.
BODY_LENGTH_HEADER = "devicehub-body-length"

# A REST download's resumable range (RFC 9110 section 14): the request's Range header
# arrives as metadata; a partial response carries Content-Range, which the edge answers
# with 206 instead of 200.
RANGE_HEADER = "range"
CONTENT_RANGE_HEADER = "content-range"


def requested_range(header: str, size: int) -> tuple[int, int] | None:
    """``(offset, length)`` that a ``Range`` header asks of a body of ``size`` bytes
    (``length`` 0: to the end), or ``None`` to send the whole body: no header, another
    unit, several ranges or a malformed one (RFC 9110 lets a server ignore those). A
    range that starts at or past the end is returned as it is: the caller refuses it."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or not (first + last).isdigit() or not (first + last).isascii():
        return None
    if not first:  # the last N bytes
        return max(0, size - int(last)) if int(last) else size, 0
    start = int(first)
    if not last:
        return start, 0
    if int(last) < start:
        return None
    return start, int(last) + 1 - start


def content_range(start: int, end: int, size: int) -> str:
    """The ``Content-Range`` of bytes ``start`` up to (not including) ``end``."""
    return f"bytes {start}-{end - 1}/{size}"
