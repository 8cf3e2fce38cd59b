"""The composition root: every object one server process serves with is built here, once.

``bootstrap`` turns the settings into the process's parts: the token signer, the storage-
facing pieces (message broker, token revocations, the PostgreSQL LISTEN connection, the
delivery recorder), the provider clients (Alimtalk, weather), the login and RTC policies,
the interceptors and every servicer. Nothing here starts or listens: ``DevicehubServer``
registers what it is given, starts it and stops it, so what a process is made of reads in
one place and how it runs in another.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import grpc

from devicehub import broker, messaging, metrics, revocations
from devicehub.api.call_log import CallLogInterceptor
from devicehub.api.interceptors import (
    AuthInterceptor,
    ErrorInterceptor,
    InputInterceptor,
    trust_proxies,
)
from devicehub.api.metrics_interceptor import MetricsInterceptor
from devicehub.api.servicers.account import AccountServicer
from devicehub.api.servicers.auth import AuthServicer
from devicehub.api.servicers.binding import BindingServicer
from devicehub.api.servicers.device import DeviceServicer
from devicehub.api.servicers.device_batch import DeviceBatchServicer
from devicehub.api.servicers.device_type import DeviceTypeServicer
from devicehub.api.servicers.devlog import DevlogServicer
from devicehub.api.servicers.firmware import FirmwareServicer
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
from devicehub.runtime.tracing import server_interceptors
from devicehub.security import TokenSigner
from devicehub.storage import db
from devicehub.storage.listener import NotificationListener


@dataclass(frozen=True)
class Servicers:
    """One servicer per gRPC service of ``devicehub.v1``."""

    auth: AuthServicer
    account: AccountServicer
    device_type: DeviceTypeServicer
    device_batch: DeviceBatchServicer
    device: DeviceServicer
    binding: BindingServicer
    devlog: DevlogServicer
    movement: MovementServicer
    notification: NotificationServicer
    messaging: MessagingServicer
    rtc: RtcServicer
    firmware: FirmwareServicer
    system: SystemServicer


@dataclass(frozen=True)
class Application:
    """What one server process serves with; started and stopped by ``DevicehubServer``."""

    interceptors: tuple[grpc.aio.ServerInterceptor, ...]
    servicers: Servicers
    websocket: MessageSocketServer
    broker: MessageBroker
    token_versions: revocations.TokenVersions
    # PostgreSQL only: the LISTEN connection (SQLite: the broker and revocations poll).
    listener: NotificationListener | None
    deliveries: messaging.DeliveryRecorder
    alimtalk: AlimtalkClient
    weather: WeatherClient


def bootstrap(settings: Settings) -> Application:
    """Builds one server process's parts; the database is open already."""
    signing_key = settings.signing_key()
    metrics.initialize()  # this process's build info and zeroed series
    # Envoys on other hosts whose x-forwarded-for names the client (client_address).
    trust_proxies(settings.trusted_proxies)
    signer = TokenSigner(signing_key, settings.access_token_ttl, settings.refresh_token_ttl)
    message_broker = MessageBroker(
        fetch=lambda message_id: db.run_db(messaging.fetch_message, message_id),
        # SQLite has no NOTIFY: every process (worker) polls the table instead.
        poll=(
            None
            if db.is_postgres()
            else (lambda after_id: db.run_db(messaging.messages_after, after_id))
        ),
        newest_id=(None if db.is_postgres() else (lambda: db.run_db(messaging.newest_message_id))),
    )
    # Revocations (account deleted, password or admin flag changed) reach every
    # process; each ends the open streams of the revoked tokens it serves.
    token_versions = revocations.TokenVersions(
        notified=db.is_postgres(),
        token_lifetime=max(settings.access_token_ttl, settings.refresh_token_ttl),
        on_revoked=lambda revoked: message_broker.close_account(
            revoked.account_id, revoked.token_version
        ),
    )
    # PostgreSQL: one LISTEN connection brings this process live messages and token
    # revocations (SQLite: the broker and the revocations poll their tables).
    listener: NotificationListener | None = None
    if db.is_postgres():
        listener = NotificationListener(settings.database_url)
        listener.add_channel(broker.CHANNEL, message_broker)
        listener.add_channel(revocations.REVOCATION_CHANNEL, token_versions)
    policy = messaging.MessagePolicy(
        ttl=dt.timedelta(seconds=settings.message_ttl),
        queue_limit=settings.message_queue_limit,
        heartbeat=settings.stream_heartbeat,
    )
    deliveries = messaging.DeliveryRecorder()
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
    weather = WeatherClient(
        WeatherConfig(
            geocoding_url=settings.weather_geocoding_url,
            forecast_url=settings.weather_forecast_url,
            timeout=settings.weather_timeout,
        )
    )
    servicers = Servicers(
        auth=AuthServicer(
            signer,
            LoginPolicy(
                window=settings.login_window,
                per_address=settings.login_failures_per_address,
                per_username=settings.login_failures_per_username,
            ),
            SignupPolicy(
                window=settings.registration_window,
                per_address=settings.registrations_per_address,
            ),
        ),
        account=AccountServicer(token_versions),
        device_type=DeviceTypeServicer(),
        device_batch=DeviceBatchServicer(),
        device=DeviceServicer(),
        binding=BindingServicer(),
        devlog=DevlogServicer(),
        movement=MovementServicer(),
        notification=NotificationServicer(
            alimtalk, dt.timedelta(seconds=settings.alimtalk_suppress_seconds)
        ),
        messaging=MessagingServicer(message_broker, weather, policy, deliveries),
        rtc=RtcServicer(
            RtcIssuer(settings.rtc_app_id, settings.rtc_app_key),
            DevicePolicy(
                mode=settings.rtc_device_auth,
                mac_requests_per_minute=settings.rtc_mac_requests_per_minute,
                address_window=settings.rtc_address_window,
                address_macs=settings.rtc_address_macs,
                address_misses=settings.rtc_address_misses,
                max_skew=settings.rtc_signature_max_skew,
            ),
            DeviceSecrets(signing_key),
        ),
        firmware=FirmwareServicer(settings.firmware_max_bytes),
        system=SystemServicer(),
    )
    return Application(
        interceptors=(
            # First, so a call's server span covers everything after it.
            *server_interceptors(settings),
            # Outside ErrorInterceptor: logs the final code; opens the request id's context.
            CallLogInterceptor(),
            # Outside ErrorInterceptor: counts and times each call with its final code.
            MetricsInterceptor(),
            ErrorInterceptor(),
            AuthInterceptor(signer, token_versions),
            InputInterceptor(),
        ),
        servicers=servicers,
        websocket=MessageSocketServer(
            signer,
            message_broker,
            policy,
            deliveries,
            # Several worker processes share the WebSocket port.
            reuse_port=settings.workers > 1,
            token_versions=token_versions,
        ),
        broker=message_broker,
        token_versions=token_versions,
        listener=listener,
        deliveries=deliveries,
        alimtalk=alimtalk,
        weather=weather,
    )
