"""What every log line of one RPC may name: its request id and, once known, its account.

The id comes from the ``x-request-id`` metadata: Envoy sets it on every request it forwards
(generated, or the client's own: ``preserve_external_request_id`` in envoy.yaml), and a
native gRPC client may send one. A call without one, or with one that is not a short
printable token, gets a new id here: it is written into logs and trailers, so it must not
carry a client's arbitrary bytes there. ``call_log.CallLogInterceptor`` opens the context
around the whole call; ``AuthInterceptor`` notes the account once the token is proven.

Only ids and account numbers live here: never a token, password or request body.
"""

from __future__ import annotations

import contextvars
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from devicehub.api.rest_edge import REQUEST_ID_HEADER

# Codes a REST client sees as a 5xx: a failure of the service, not of the request. Their
# statuses carry the request id (trailer and RequestInfo), for the user to quote.
SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)

# Envoy's ids are UUIDs; clients' own ids are accepted when they look like ids.
_ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@dataclass
class CallContext:
    request_id: str
    account_id: int | None = None


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "call_context", default=None
)


def request_id_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The call's request id: the ``x-request-id`` it came with if acceptable, else new."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _ACCEPTED_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def begin(request_id: str) -> contextvars.Token[CallContext | None]:
    return _current.set(CallContext(request_id))


def end(token: contextvars.Token[CallContext | None]) -> None:
    _current.reset(token)


def current() -> CallContext | None:
    """The context of the RPC being served (None outside one)."""
    return _current.get()


def current_request_id() -> str | None:
    call = _current.get()
    return call.request_id if call is not None else None


def note_account(account_id: int) -> None:
    """Records the authenticated account of the call being served."""
    call = _current.get()
    if call is not None:
        call.account_id = account_id
