"""The gRPC server: services, interceptors, health, reflection and graceful shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from devicehub import broker, messaging, revocations
from devicehub.api.interceptors import AuthInterceptor, ErrorInterceptor, InputInterceptor
from devicehub.api.servicers.account import AccountServicer
from devicehub.api.servicers.auth import AuthServicer
from devicehub.api.servicers.binding import BindingServicer
from devicehub.api.servicers.device import DeviceServicer
from devicehub.api.servicers.device_batch import DeviceBatchServicer
from devicehub.api.servicers.device_type import DeviceTypeServicer
from devicehub.api.servicers.devlog import DevlogServicer
from devicehub.api.servicers.messaging import MessagingServicer
from devicehub.api.servicers.movement import MovementServicer
from devicehub.api.servicers.notification import NotificationServicer
from devicehub.api.servicers.rtc import RtcServicer
from devicehub.api.servicers.system import SystemServicer
from devicehub.api.websocket import MessageSocketServer
from devicehub.broker import MessageBroker
from devicehub.config import Settings
from devicehub.integrations.alimtalk import AlimtalkClient, AlimtalkConfig
from devicehub.integrations.weather import WeatherClient, WeatherConfig
from devicehub.logins import LoginPolicy, SignupPolicy
from devicehub.rtc_grants import DevicePolicy, DeviceSecrets, RtcIssuer
from devicehub.runtime.workers import worker_address
from devicehub.security import TokenSigner, start_password_hashing, stop_password_hashing
from devicehub.storage import db
from devicehub.storage.listener import NotificationListener
from devicehub.v1 import (
    account_pb2,
    account_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    binding_pb2,
    binding_pb2_grpc,
    device_batch_pb2,
    device_batch_pb2_grpc,
    device_pb2,
    device_pb2_grpc,
    device_type_pb2,
    device_type_pb2_grpc,
    devlog_pb2,
    devlog_pb2_grpc,
    messaging_pb2,
    messaging_pb2_grpc,
    movement_pb2,
    movement_pb2_grpc,
    notification_pb2,
    notification_pb2_grpc,
    rtc_pb2,
    rtc_pb2_grpc,
    system_pb2,
    system_pb2_grpc,
)

log = logging.getLogger(__name__)

MAX_PENDING_CALLS = 20_000

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (auth_pb2, "AuthService"),
        (account_pb2, "AccountService"),
        (device_type_pb2, "DeviceTypeService"),
        (device_batch_pb2, "DeviceBatchService"),
        (device_pb2, "DeviceService"),
        (binding_pb2, "BindingService"),
        (devlog_pb2, "DevlogService"),
        (movement_pb2, "MovementService"),
        (notification_pb2, "NotificationService"),
        (messaging_pb2, "MessagingService"),
        (rtc_pb2, "RtcService"),
        (system_pb2, "SystemService"),
    )
)


class _MethodAwarePool:
    """The default descriptor pool, also resolving ``pkg.Service.Method`` symbols.

    Python's upb-backed pool finds services but not their methods, which is what
    ``grpcurl describe devicehub.v1.DeviceService.GetDevice`` asks reflection for.
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, name: str):
        try:
            return self._pool.FindFileContainingSymbol(name)
        except KeyError:
            service_name, _, method = name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                raise KeyError(name) from None
            if method not in service.methods_by_name:
                raise
            return service.file

    def __getattr__(self, name: str):
        return getattr(self._pool, name)


# Python's cycle collector stops the process for a full pass over every tracked object;
# with thousands of open streams a pass took 100-270 ms, and those pauses were the p99 of
# fan-out delivery at 5,000 streams. Objects alive after start-up are frozen out of the
# passes and collections run far less often: at 5,000 streams p99 fell from 161-184 ms
# to 49-58 ms (full passes per run 17-19 -> 0-1), with the same resident memory.
GC_THRESHOLDS = (10_000, 20, 100)


def _tune_garbage_collection() -> None:
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class DevicehubServer:
    """Owns the grpc.aio server and the database thread pool for one process.

    With ``settings.workers > 1`` this process is worker ``worker_index`` of several: it
    shares the gRPC and WebSocket ports with the others (SO_REUSEPORT) and also listens on
    its own ``worker_address`` for Envoy (a single process listens on one too). Worker 0
    runs the message expiry sweep.
    """

    def __init__(self, settings: Settings, worker_index: int = 0) -> None:
        self.settings = settings
        self.worker_index = worker_index
        shared_ports = settings.workers > 1
        signer = TokenSigner(
            settings.signing_key(), settings.access_token_ttl, settings.refresh_token_ttl
        )
        # Revocations (account deleted, password or admin flag changed) reach every
        # process; each ends the open streams of the revoked tokens it serves.
        self.token_versions = revocations.TokenVersions(
            notified=db.is_postgres(),
            token_lifetime=max(settings.access_token_ttl, settings.refresh_token_ttl),
            on_revoked=lambda revoked: self.broker.close_account(
                revoked.account_id, revoked.token_version
            ),
        )
        self._health = health.aio.HealthServicer()
        self._server = grpc.aio.server(
            interceptors=[
                ErrorInterceptor(),
                AuthInterceptor(signer, self.token_versions),
                InputInterceptor(),
            ],
            options=[
                # Without workers the port is this process's alone: a second server fails.
                ("grpc.so_reuseport", int(shared_ports)),
                # gRPC cancels calls beyond 1,000 waiting to be matched to a handler; a mass
                # reconnect of devices (after a restart) opens thousands of streams at once.
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
            ],
        )
        login_policy = LoginPolicy(
            window=settings.login_window,
            per_address=settings.login_failures_per_address,
            per_username=settings.login_failures_per_username,
        )
        signup_policy = SignupPolicy(
            window=settings.registration_window, per_address=settings.registrations_per_address
        )
        auth_pb2_grpc.add_AuthServiceServicer_to_server(
            AuthServicer(signer, login_policy, signup_policy), self._server
        )
        account_pb2_grpc.add_AccountServiceServicer_to_server(
            AccountServicer(self.token_versions), self._server
        )
        device_type_pb2_grpc.add_DeviceTypeServiceServicer_to_server(
            DeviceTypeServicer(), self._server
        )
        device_batch_pb2_grpc.add_DeviceBatchServiceServicer_to_server(
            DeviceBatchServicer(), self._server
        )
        device_pb2_grpc.add_DeviceServiceServicer_to_server(DeviceServicer(), self._server)
        binding_pb2_grpc.add_BindingServiceServicer_to_server(BindingServicer(), self._server)
        devlog_pb2_grpc.add_DevlogServiceServicer_to_server(DevlogServicer(), self._server)
        movement_pb2_grpc.add_MovementServiceServicer_to_server(MovementServicer(), self._server)
        alimtalk = AlimtalkClient(
            AlimtalkConfig(
                base_url=settings.alimtalk_base_url,
                app_key=settings.alimtalk_app_key,
                secret_key=settings.alimtalk_secret_key,
                sender_key=settings.alimtalk_sender_key,
                template_code=settings.alimtalk_template_code,
                timeout=settings.alimtalk_timeout,
            )
        )
        self.policy = messaging.MessagePolicy(
            ttl=dt.timedelta(seconds=settings.message_ttl),
            queue_limit=settings.message_queue_limit,
            heartbeat=settings.stream_heartbeat,
        )
        self.broker = MessageBroker(
            fetch=lambda message_id: db.run_db(messaging.fetch_message, message_id),
            # SQLite has no NOTIFY: every process (worker) polls the table instead.
            poll=(
                None
                if db.is_postgres()
                else (lambda after_id: db.run_db(messaging.messages_after, after_id))
            ),
            newest_id=(
                None if db.is_postgres() else (lambda: db.run_db(messaging.newest_message_id))
            ),
        )
        # PostgreSQL: one LISTEN connection brings this process live messages and token
        # revocations (SQLite: the broker and the revocations poll their tables).
        self.listener: NotificationListener | None = None
        if db.is_postgres():
            self.listener = NotificationListener(
                settings.database_url, on_listening_changed=self._on_listening_changed
            )
            self.listener.add_channel(broker.CHANNEL, self.broker)
            self.listener.add_channel(revocations.REVOCATION_CHANNEL, self.token_versions)
        weather = WeatherClient(
            WeatherConfig(
                geocoding_url=settings.weather_geocoding_url,
                forecast_url=settings.weather_forecast_url,
                timeout=settings.weather_timeout,
            )
        )
        self.deliveries = messaging.DeliveryRecorder()
        messaging_pb2_grpc.add_MessagingServiceServicer_to_server(
            MessagingServicer(self.broker, weather, self.policy, self.deliveries), self._server
        )
        rtc_pb2_grpc.add_RtcServiceServicer_to_server(
            RtcServicer(
                RtcIssuer(settings.rtc_app_id, settings.rtc_app_key),
                DevicePolicy(
                    mode=settings.rtc_device_auth,
                    mac_requests_per_minute=settings.rtc_mac_requests_per_minute,
                    address_window=settings.rtc_address_window,
                    address_macs=settings.rtc_address_macs,
                    address_misses=settings.rtc_address_misses,
                    max_skew=settings.rtc_signature_max_skew,
                ),
                DeviceSecrets(settings.signing_key()),
            ),
            self._server,
        )
        self._websocket = MessageSocketServer(
            signer,
            self.broker,
            self.policy,
            self.deliveries,
            reuse_port=shared_ports,
            token_versions=self.token_versions,
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._started = False
        self._background: set[asyncio.Future[None]] = set()
        notification_pb2_grpc.add_NotificationServiceServicer_to_server(
            NotificationServicer(
                alimtalk, dt.timedelta(seconds=settings.alimtalk_suppress_seconds)
            ),
            self._server,
        )
        system_pb2_grpc.add_SystemServiceServicer_to_server(SystemServicer(), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self._server,
            pool=_MethodAwarePool(descriptor_pool.Default()),
        )
        self.port = self._server.add_insecure_port(settings.grpc_address)
        if not self.port:
            raise SystemExit(f"cannot listen on {settings.grpc_address}")
        # Envoy always reaches this process over its own abstract socket (also with one
        # worker): a call that arrives there came through Envoy, so its x-forwarded-for
        # (set by Envoy from the real peer) can be trusted, unlike a direct TCP client's.
        address = f"unix-abstract:{worker_address(settings, worker_index)}"
        if not self._server.add_insecure_port(address):
            raise SystemExit(f"cannot listen on {address}")

    def _on_listening_changed(self, listening: bool) -> None:
        """While the LISTEN connection is down, live messages sent through other processes
        do not reach this one: health says NOT_SERVING until it is back (and every stream
        has re-read its backlog), rather than silently serving stale streams."""
        if not self._started:
            return
        if listening:
            log.info("message listener connected again; serving")
        else:
            log.warning("message listener disconnected; health is NOT_SERVING until it is back")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if listening
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        task = asyncio.ensure_future(self._set_health(status))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def start(self) -> None:
        db.start_executor(self.settings.db_pool_size)
        start_password_hashing(self.settings.password_hash_concurrency)
        await self.broker.start()
        await self.token_versions.start()
        if self.listener is not None:
            await self.listener.start()
        self.deliveries.start()
        if self.worker_index == 0:
            self._sweeper = asyncio.create_task(self._expire_messages(), name="message-expiry")
        await self._server.start()
        await self._websocket.start(self.settings.grpc_host, self.settings.ws_port)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._started = True
        log.info("gRPC server listening on %s:%d", self.settings.grpc_host, self.port)
        _tune_garbage_collection()

    async def stop(self) -> None:
        """Stops accepting calls, lets in-flight calls finish (up to the grace period),
        then waits for their database work and closes the pool."""
        await self._health.enter_graceful_shutdown()
        self.broker.close_subscriptions()  # live streams end; unary calls get the grace
        await self._websocket.stop()
        await self._server.stop(self.settings.shutdown_grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.listener is not None:
            await self.listener.stop()
        await self.broker.stop()
        await self.token_versions.stop()
        await self.deliveries.stop()  # before the database pool closes
        await asyncio.to_thread(db.stop_executor)
        await asyncio.to_thread(stop_password_hashing)
        log.info("gRPC server stopped")

    async def _expire_messages(self) -> None:
        """Marks messages past their TTL as expired (they are never delivered anyway)."""
        interval = max(1.0, min(30.0, self.settings.message_ttl / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                await db.run_db(messaging.expire_messages)
            except Exception:
                log.exception("expiring messages failed; retrying later")

    async def wait(self) -> None:
        await self._server.wait_for_termination()
