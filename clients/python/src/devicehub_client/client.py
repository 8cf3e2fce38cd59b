"""Client: one channel to devicehub, a stub per service, and the loops every caller would
otherwise write: sign-in and refresh, AIP-158 pages, live messages, firmware upload.

The stubs are the generated ones (``devicehub_client.v1.*_pb2_grpc``; the messages are typed
by the generated ``*_pb2.pyi``, grpcio-tools writes no types for the stubs) on a channel with
``interceptor.ClientInterceptor``, so every call made through them, directly or by the
helpers here, carries the token, has a deadline, is retried when that is safe and raises
``ApiError``. Requests and responses are the messages of ``proto/devicehub/v1`` as they are;
the helpers add no model of their own.

A Client is thread-safe as grpcio's channels are; ``token`` is read at each call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.api import httpbody_pb2
from google.protobuf import descriptor, message

from devicehub_client.errors import ApiError
from devicehub_client.interceptor import ClientInterceptor
from devicehub_client.retry import RetryPolicy
from devicehub_client.v1 import (
    account_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    binding_pb2_grpc,
    device_batch_pb2_grpc,
    device_pb2_grpc,
    device_type_pb2_grpc,
    devlog_pb2_grpc,
    firmware_pb2,
    firmware_pb2_grpc,
    messaging_pb2,
    messaging_pb2_grpc,
    movement_pb2_grpc,
    notification_pb2_grpc,
    rtc_pb2_grpc,
    system_pb2_grpc,
)

DEFAULT_TIMEOUT = 30.0
"""Seconds a unary call may take unless its caller passes ``timeout=``."""

UPLOAD_PIECE_BYTES = 256 * 1024
"""Largest firmware bytes per stream message: far below gRPC's 4 MiB message limit, and
small enough that ``progress`` moves smoothly."""

# A channel that lost its server tries to reconnect after a growing pause (grpcio's default
# grows to 2 minutes); a client of one service wants to notice a restarted server sooner.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (("grpc.max_reconnect_backoff_ms", 5000),)

# A subscription is resumed after these (a server or worker that went away, a dropped
# connection); anything else is the caller's to handle.
_RESUMABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE})

Request = TypeVar("Request", bound=message.Message)
Response = TypeVar("Response", bound=message.Message)


@dataclass(frozen=True)
class Tokens:
    """An access and refresh token pair (AuthService.CreateToken, RefreshToken)."""

    access_token: str
    refresh_token: str
    expires_in: int = 0
    """Seconds the access token was valid for when issued."""

    def __repr__(self) -> str:  # tokens are secrets: never in logs or tracebacks
        return f"Tokens(expires_in={self.expires_in})"


class Client:
    """A connection to devicehub's gRPC API (the gRPC port, or Envoy's, which passes native
    gRPC through).

    ``target`` is ``host:port``; ``tls`` (or ``root_certificates``: PEM bytes, or the path
    of a PEM file) makes it a TLS channel, verified against the system's roots unless
    ``root_certificates`` is given; ``token`` is an access token to send; ``timeout`` the
    default deadline of unary calls in seconds (None: none); ``retry`` how idempotent calls
    are repeated after UNAVAILABLE; ``options`` more grpcio channel options.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.token = token
        self.retry = retry or RetryPolicy()
        self._refresh_token: str | None = None
        channel_options = [*_CHANNEL_OPTIONS, *options]
        if tls or root_certificates is not None:
            roots = root_certificates
            if roots is not None and not isinstance(roots, bytes):
                with open(roots, "rb") as pem:
                    roots = pem.read()
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            raw = grpc.secure_channel(target, credentials, options=channel_options)
        else:
            raw = grpc.insecure_channel(target, options=channel_options)
        self._raw_channel = raw
        self.channel: grpc.Channel = grpc.intercept_channel(
            raw, ClientInterceptor(lambda: self.token, timeout, self.retry)
        )
        self.system = system_pb2_grpc.SystemServiceStub(self.channel)
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.accounts = account_pb2_grpc.AccountServiceStub(self.channel)
        self.device_types = device_type_pb2_grpc.DeviceTypeServiceStub(self.channel)
        self.device_batches = device_batch_pb2_grpc.DeviceBatchServiceStub(self.channel)
        self.devices = device_pb2_grpc.DeviceServiceStub(self.channel)
        self.binding = binding_pb2_grpc.BindingServiceStub(self.channel)
        self.devlog = devlog_pb2_grpc.DevlogServiceStub(self.channel)
        self.movement = movement_pb2_grpc.MovementServiceStub(self.channel)
        self.messaging = messaging_pb2_grpc.MessagingServiceStub(self.channel)
        self.notification = notification_pb2_grpc.NotificationServiceStub(self.channel)
        self.rtc = rtc_pb2_grpc.RtcServiceStub(self.channel)
        self.firmware = firmware_pb2_grpc.FirmwareServiceStub(self.channel)
        # Sign-in and refresh authenticate with what they send, never with a token the
        # client may still hold, which may have expired or belong to another account.
        self._sign_in_auth = auth_pb2_grpc.AuthServiceStub(
            grpc.intercept_channel(raw, ClientInterceptor(lambda: None, timeout, self.retry))
        )

    # --- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel; calls in flight end with CANCELLED."""
        self._raw_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- tokens -----------------------------------------------------------------------

    @property
    def refresh_token(self) -> str | None:
        """The refresh token of the last sign-in or refresh, if any."""
        return self._refresh_token

    def _store(self, token: auth_pb2.Token) -> Tokens:
        self.token = token.access_token
        self._refresh_token = token.refresh_token
        return Tokens(token.access_token, token.refresh_token, token.expires_in)

    def sign_in(self, username: str, password: str) -> Tokens:
        """Exchanges a username and password for tokens (AuthService.CreateToken) and uses
        them from the next call on; INVALID_CREDENTIALS if they are wrong."""
        request = auth_pb2.CreateTokenRequest(username=username, password=password)
        return self._store(self._sign_in_auth.CreateToken(request))

    def refresh(self, refresh_token: str | None = None) -> Tokens:
        """A new token pair for ``refresh_token`` (default: the stored one), used from the
        next call on (AuthService.RefreshToken)."""
        refresh_token = refresh_token or self._refresh_token
        if not refresh_token:
            raise ValueError("no refresh token: sign in first or pass one")
        request = auth_pb2.RefreshTokenRequest(refresh_token=refresh_token)
        return self._store(self._sign_in_auth.RefreshToken(request))

    # --- helpers over the stubs -------------------------------------------------------

    def paginate(
        self,
        method: Callable[[Request], Response],
        request: Request,
        field: str | None = None,
    ) -> Iterator[Any]:
        """Every item of every page of an AIP-158 list method, page by page as they are
        read: ``method`` is the stub's method, ``request`` the first page's request (its
        ``page_size`` is kept; it is not changed), ``field`` the response's repeated field
        (default: its only one)."""
        page_request = type(request)()
        page_request.CopyFrom(request)
        while True:
            response = method(page_request)
            yield from getattr(response, field or _items_field(response))
            token = response.next_page_token
            if not token:
                return
            page_request.page_token = token

    def subscribe(
        self,
        after_id: int = 0,
        user_id: int = 0,
        ack: bool = True,
        *,
        max_reconnects: int | None = None,
    ) -> Iterator[messaging_pb2.DeviceMessage]:
        """Yields the messages of the caller's account (admins: ``user_id``'s) after
        ``after_id``: the pending backlog, then live ones as they arrive; never returns.

        A stream that ends or fails with UNAVAILABLE (a server restarting, a dropped
        connection) is opened again with ``after_id`` = the last message yielded, after a
        backoff (``retry``) that starts over once a stream delivers, so a message is
        neither lost nor yielded twice across the reconnection. ``max_reconnects`` bounds the
        reconnections in a row without an event (None: no bound); then, and on any other
        error (UNAUTHENTICATED, PERMISSION_DENIED, ...), ApiError is raised. Each message
        is acknowledged (AckMessages) once the loop body that received it has run, unless
        ``ack`` is False; an acknowledgement lost with the connection is sent again before
        the stream is reopened. Heartbeats are consumed, not yielded. Leaving the loop
        (break, an exception, closing the generator) cancels the stream.
        """
        last_id = after_id
        failures = 0
        unacked: list[int] = []  # yielded, their acknowledgement not yet answered
        while True:
            stream: Any = None
            try:
                if unacked:  # from a stream that broke before its acknowledgement got through
                    self._acknowledge(unacked)
                request = messaging_pb2.SubscribeMessagesRequest(after_id=last_id, user_id=user_id)
                stream = self.messaging.SubscribeMessages(request)
                for event in stream:
                    failures = 0
                    if event.WhichOneof("event") != "message":
                        continue
                    yield event.message
                    last_id = max(last_id, event.message.id)
                    if ack:
                        unacked.append(event.message.id)
                        self._acknowledge(unacked)
            except ApiError as error:
                if error.code not in _RESUMABLE_CODES:
                    raise
                failures += 1
                if max_reconnects is not None and failures > max_reconnects:
                    raise
            else:  # the server ended the stream (it is shutting down): resume as well
                failures += 1
            finally:
                if stream is not None:
                    stream.cancel()
            time.sleep(self.retry.backoff(failures))

    def _acknowledge(self, ids: list[int]) -> None:
        """Acknowledges ``ids`` and empties the list; on failure the list is kept."""
        self.messaging.AckMessages(messaging_pb2.AckMessagesRequest(ids=ids))
        ids.clear()

    def upload_firmware(
        self,
        device_type_id: int,
        version: str,
        chunks: Iterable[bytes],
        title: str = "",
        release_notes: str = "",
        min_version: str = "",
        size_bytes: int | None = None,
        sha256: str | None = None,
        progress: Callable[[int], None] | None = None,
        *,
        timeout: float | None = None,
    ) -> firmware_pb2.FirmwarePackage:
        """Uploads a firmware package (FirmwareService.UploadFirmwarePackage, admin only),
        streaming ``chunks`` (any iterable of bytes, e.g. a file read in blocks) in pieces of
        at most ``UPLOAD_PIECE_BYTES``; ``progress(sent_bytes)`` is called after each piece.
        With ``size_bytes`` and ``sha256`` (hex) the server stores nothing unless the bytes it
        got match them, so a cut-short upload cannot become a package. Not retried (see
        ``retry``); ``timeout``: the deadline of the whole upload (default: none)."""
        first = firmware_pb2.UploadFirmwarePackageRequest(
            device_type=device_type_id,
            version=version,
            title=title,
            release_notes=release_notes,
            min_version=min_version,
            size_bytes=size_bytes or 0,
            sha256=sha256 or "",
        )

        def requests() -> Iterator[firmware_pb2.UploadFirmwarePackageRequest]:
            sent = 0
            pending: firmware_pb2.UploadFirmwarePackageRequest | None = first
            for chunk in chunks:
                for start in range(0, len(chunk), UPLOAD_PIECE_BYTES):
                    piece = bytes(chunk[start : start + UPLOAD_PIECE_BYTES])
                    if pending is not None:
                        pending.data.data = piece
                        yield pending
                        pending = None
                    else:
                        yield firmware_pb2.UploadFirmwarePackageRequest(
                            data=httpbody_pb2.HttpBody(data=piece)
                        )
                    sent += len(piece)
                    if progress is not None:
                        progress(sent)
            if pending is not None:  # no bytes at all: the server decides about that
                yield pending

        result: firmware_pb2.FirmwarePackage = self.firmware.UploadFirmwarePackage(
            requests(), timeout=timeout
        )
        return result


def _is_repeated(field: descriptor.FieldDescriptor) -> bool:
    # protobuf 6 added is_repeated; protobuf 7 dropped label.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == descriptor.FieldDescriptor.LABEL_REPEATED)


def _items_field(response: message.Message) -> str:
    repeated = [field.name for field in response.DESCRIPTOR.fields if _is_repeated(field)]
    if len(repeated) != 1:
        raise ValueError(f"{response.DESCRIPTOR.name} has no single list field: name it")
    return repeated[0]
