"""The gRPC server of one process: registers the services the composition root
(``bootstrap.py``) built, adds health and reflection, starts it all and shuts it down
gracefully."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from devicehub import messaging, movement, rollouts
from devicehub.config import Settings
from devicehub.runtime.addresses import worker_address
from devicehub.runtime.bootstrap import Application, Servicers
from devicehub.runtime.tracing import start_tracing, stop_tracing
from devicehub.security import start_password_hashing, stop_password_hashing
from devicehub.storage import db
from devicehub.storage.probe import check_database
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
    firmware_pb2,
    firmware_pb2_grpc,
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

RECOVERY_PROBE_INTERVAL = 0.25
"""Seconds between readiness probes while the database does not answer."""

MAX_METADATA_BYTES = 256 * 1024
"""Largest request metadata accepted: the edge's own codec limit (max_request_headers_kb)."""

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
        (firmware_pb2, "FirmwareService"),
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


def _add_servicers(server: grpc.aio.Server, servicers: Servicers) -> None:
    auth_pb2_grpc.add_AuthServiceServicer_to_server(servicers.auth, server)
    account_pb2_grpc.add_AccountServiceServicer_to_server(servicers.account, server)
    device_type_pb2_grpc.add_DeviceTypeServiceServicer_to_server(servicers.device_type, server)
    device_batch_pb2_grpc.add_DeviceBatchServiceServicer_to_server(servicers.device_batch, server)
    device_pb2_grpc.add_DeviceServiceServicer_to_server(servicers.device, server)
    binding_pb2_grpc.add_BindingServiceServicer_to_server(servicers.binding, server)
    devlog_pb2_grpc.add_DevlogServiceServicer_to_server(servicers.devlog, server)
    movement_pb2_grpc.add_MovementServiceServicer_to_server(servicers.movement, server)
    notification_pb2_grpc.add_NotificationServiceServicer_to_server(servicers.notification, server)
    messaging_pb2_grpc.add_MessagingServiceServicer_to_server(servicers.messaging, server)
    rtc_pb2_grpc.add_RtcServiceServicer_to_server(servicers.rtc, server)
    firmware_pb2_grpc.add_FirmwareServiceServicer_to_server(servicers.firmware, server)
    system_pb2_grpc.add_SystemServiceServicer_to_server(servicers.system, server)


def grpc_port_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS for the direct gRPC port (``DEVICEHUB_GRPC_TLS_CERT_FILE``/``_KEY_FILE``), or
    None for plaintext. Envoy's abstract sockets stay plaintext: only local processes
    reach them, and Envoy terminates the edge's own TLS."""
    if settings.grpc_tls_cert_file is None or settings.grpc_tls_key_file is None:
        return None
    try:
        key = settings.grpc_tls_key_file.read_bytes()
        chain = settings.grpc_tls_cert_file.read_bytes()
    except OSError as error:
        raise SystemExit(f"cannot read the gRPC TLS files: {error}") from None
    return grpc.ssl_server_credentials([(key, chain)])


class DevicehubServer:
    """Owns the grpc.aio server and the database thread pool for one process.

    Its parts come from the composition root (``bootstrap``), built by the caller; this
    class registers them, starts them and stops them. With ``settings.workers > 1`` this
    process is worker ``worker_index`` of several: it shares the gRPC and WebSocket ports
    with the others (SO_REUSEPORT) and also listens on its own ``worker_address`` for Envoy
    (a single process listens on one too). Worker 0 runs the message expiry sweep and the
    firmware rollout scheduler.
    """

    def __init__(self, settings: Settings, app: Application, worker_index: int = 0) -> None:
        self.settings = settings
        self.app = app
        self.worker_index = worker_index
        self._health = health.aio.HealthServicer()
        self._sweeper: asyncio.Task[None] | None = None
        self._rollouts: asyncio.Task[None] | None = None
        self._movement: asyncio.Task[None] | None = None
        self._started = False
        self._background: set[asyncio.Future[None]] = set()
        # Health says SERVING while the database answers the probe and (PostgreSQL) the
        # LISTEN connection listens; NOT_SERVING while either is down.
        self._listening = True
        self._database_reachable = True
        self._prober: asyncio.Task[None] | None = None
        if app.listener is not None:
            app.listener.watch_state(self._on_listening_changed)
        self._server = grpc.aio.server(
            interceptors=self.app.interceptors,
            options=[
                # Without workers the port is this process's alone: a second server fails.
                ("grpc.so_reuseport", int(settings.workers > 1)),
                # gRPC cancels calls beyond 1,000 waiting to be matched to a handler; a mass
                # reconnect of devices (after a restart) opens thousands of streams at once.
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
                # A REST call's metadata holds its URL twice (:path and Envoy's
                # x-envoy-original-path) beside headers the edge allows up to 60 KiB: gRPC's
                # default limit (8 KiB, 16 KiB hard) refused long URLs as RESOURCE_EXHAUSTED.
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            ],
        )
        _add_servicers(self._server, self.app.servicers)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self._server,
            pool=_MethodAwarePool(descriptor_pool.Default()),
        )
        credentials = grpc_port_credentials(settings)
        if credentials is None:
            self.port = self._server.add_insecure_port(settings.grpc_address)
        else:
            try:
                self.port = self._server.add_secure_port(settings.grpc_address, credentials)
            except RuntimeError:  # gRPC says only "failed to bind", also for a bad PEM
                raise SystemExit(
                    f"cannot listen on {settings.grpc_address} with TLS: is the port free, and "
                    "are DEVICEHUB_GRPC_TLS_CERT_FILE and DEVICEHUB_GRPC_TLS_KEY_FILE a PEM "
                    "certificate chain and its private key?"
                ) from None
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
        self._listening = listening
        self._follow_readiness()

    def _follow_readiness(self) -> None:
        task = asyncio.ensure_future(self._publish_readiness())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish_readiness(self) -> None:
        # Each service's status is read when it is set, so of two updates racing the
        # later state wins for every service.
        for name in ("", *SERVICE_NAMES):
            serving = self._listening and self._database_reachable
            await self._health.set(
                name,
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING,
            )

    async def _probe_database(self) -> None:
        """Every ``readiness_interval`` seconds, a query on a pooled connection
        (``storage.probe``): while the database does not answer (an error, or no answer
        within the interval, at least 1 s) health says NOT_SERVING, so a load balancer
        stops sending calls that could only fail. A probe still waiting is not doubled.
        While the database does not answer it is probed every ``RECOVERY_PROBE_INTERVAL``
        (if shorter), so that health follows it back within that."""
        interval = self.settings.readiness_interval
        timeout = max(1.0, interval)
        pending: asyncio.Future[None] | None = None
        while True:
            await asyncio.sleep(
                interval if self._database_reachable else min(interval, RECOVERY_PROBE_INTERVAL)
            )
            if pending is None or pending.done():
                pending = asyncio.ensure_future(db.run_db(check_database))
                # A probe given up on may fail later: its error is taken, not logged.
                pending.add_done_callback(lambda done: done.cancelled() or done.exception())
            reason = ""
            try:
                await asyncio.wait_for(asyncio.shield(pending), timeout)
            except TimeoutError:
                reason = f"no answer within {timeout:g} s"
            except Exception as error:
                reason = type(error).__name__
            reachable = not reason
            if reachable == self._database_reachable:
                continue
            self._database_reachable = reachable
            if reachable:
                log.info("database answers again")
            else:
                log.warning("database unreachable (%s); health is NOT_SERVING", reason)
            self._follow_readiness()

    async def start(self) -> None:
        start_tracing(self.settings)
        db.start_executor(self.settings.db_pool_size)
        start_password_hashing(self.settings.password_hash_concurrency)
        app = self.app
        await app.broker.start()
        await app.token_versions.start()
        if app.listener is not None:
            await app.listener.start()
        app.deliveries.start()
        if self.worker_index == 0:
            self._sweeper = asyncio.create_task(self._expire_messages(), name="message-expiry")
            self._rollouts = asyncio.create_task(self._run_rollouts(), name="firmware-rollouts")
            self._movement = asyncio.create_task(
                self._maintain_movement(), name="movement-partitions"
            )
        await self._server.start()
        await app.websocket.start(self.settings.grpc_host, self.settings.ws_port)
        await self._publish_readiness()
        self._started = True
        self._prober = asyncio.create_task(self._probe_database(), name="readiness-probe")
        log.info("gRPC server listening on %s:%d", self.settings.grpc_host, self.port)
        _tune_garbage_collection()

    async def stop(self) -> None:
        """Stops accepting calls, lets in-flight calls finish (up to the grace period),
        then waits for their database work and closes the pool."""
        app = self.app
        if self._prober is not None:
            self._prober.cancel()
        await self._health.enter_graceful_shutdown()
        if self.settings.drain_delay > 0:
            # Behind a remote gateway: keep serving, NOT_SERVING, until its health checks
            # have taken this instance out, so no call races the listener's close.
            await asyncio.sleep(self.settings.drain_delay)
        app.broker.close_subscriptions()  # live streams end; unary calls get the grace
        await app.websocket.stop()
        await self._server.stop(self.settings.shutdown_grace)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._rollouts is not None:
            self._rollouts.cancel()
        if self._movement is not None:
            self._movement.cancel()
        # No call is left to use the provider clients' connections.
        await app.alimtalk.close()
        await app.weather.close()
        if app.listener is not None:
            await app.listener.stop()
        await app.broker.stop()
        await app.token_versions.stop()
        await app.deliveries.stop()  # before the database pool closes
        await asyncio.to_thread(db.stop_executor)
        await asyncio.to_thread(stop_password_hashing)
        await asyncio.to_thread(stop_tracing)  # after the last database span ended
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

    async def _maintain_movement(self) -> None:
        """Looks after the movement store's partitions at start, then every
        ``movement_maintenance_interval`` seconds (movement.maintain_store)."""
        while True:
            try:
                await db.run_db(movement.maintain_store, self.settings.movement_retention_days)
            except Exception:
                log.exception("looking after the movement partitions failed; retrying later")
            await asyncio.sleep(self.settings.movement_maintenance_interval)

    async def _run_rollouts(self) -> None:
        """Takes a turn of the firmware rollout scheduler every ``firmware_tick`` seconds
        (on PostgreSQL one process across all hosts at a time: rollouts.scheduler_turn)."""
        settings = self.settings
        policy = rollouts.NotifyPolicy(
            per_minute=settings.firmware_notify_per_minute,
            queue_limit=settings.message_queue_limit,
            message_ttl=dt.timedelta(seconds=settings.message_ttl),
        )
        pace = rollouts.Pace(settings.firmware_notify_per_minute, settings.firmware_tick)
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(settings.firmware_tick)
            # The pace's share follows the time that really passed (a turn takes time too).
            now = loop.time()
            share, last = pace.share(now - last), now
            try:
                pace.spent(await db.run_db(rollouts.scheduler_turn, policy, share))
            except Exception:
                log.exception("the firmware rollout scheduler's turn failed; retrying")

    async def wait(self) -> None:
        await self._server.wait_for_termination()
