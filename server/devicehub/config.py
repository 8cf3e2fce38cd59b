"""The one settings object: every tunable is read from the environment here and only here."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devicehub import resources


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where data lives without ``DEVICEHUB_DATA_DIR``.

    Run from a checkout (the editable install of ``scripts/bootstrap.sh``): its ``var/``, as
    it always was, so the database of an existing checkout stays where it is. Installed:
    the user's XDG data directory (``$XDG_DATA_HOME/devicehub``, else
    ``~/.local/share/devicehub``), never the package's own directory, which may be a
    read-only site-packages shared by every user.
    """
    if resources.CHECKOUT_DATA_DIR is not None:
        return resources.CHECKOUT_DATA_DIR
    xdg = env.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative XDG_DATA_HOME is to be ignored.
    base = Path(xdg) if Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "devicehub"


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


RTC_DEVICE_AUTH_MODES = ("off", "optional", "required")


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise SystemExit(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. See README.md for the environment variable of each field."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # Envoy's admin interface: a Unix socket (mode 0600); None: <data_dir>/envoy-admin.sock.
    envoy_admin_socket: Path | None = None
    # Envoy's limits: concurrent message streams (SSE, WebSocket and native gRPC
    # subscriptions each), downstream connections, REST request body bytes.
    max_streams: int = 10_000
    max_connections: int = 30_000
    max_request_bytes: int = 4 * 1024 * 1024
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    database_url: str = ""
    db_pool_size: int = 8
    secret_key: str = field(default="", repr=False)
    access_token_ttl: int = 900
    refresh_token_ttl: int = 14 * 24 * 3600
    shutdown_grace: float = 10.0
    log_level: str = "INFO"
    alimtalk_base_url: str = ""
    alimtalk_app_key: str = ""
    alimtalk_secret_key: str = field(default="", repr=False)
    alimtalk_sender_key: str = ""
    alimtalk_template_code: str = ""
    alimtalk_timeout: float = 5.0
    alimtalk_suppress_seconds: int = 600
    ws_port: int = 8765
    message_ttl: int = 3600
    message_queue_limit: int = 100
    stream_heartbeat: float = 15.0
    weather_geocoding_url: str = "https://geocoding-api.open-meteo.com"
    weather_forecast_url: str = "https://api.open-meteo.com"
    weather_timeout: float = 5.0
    rtc_app_id: str = ""
    rtc_app_key: str = field(default="", repr=False)
    rtc_mac_requests_per_minute: int = 10
    # get_by_mac without a valid device signature, per client address and window.
    rtc_device_auth: str = "optional"  # off | optional | required
    rtc_address_window: int = 600
    rtc_address_macs: int = 20
    rtc_address_misses: int = 10
    rtc_signature_max_skew: int = 300
    # Failed logins per window, per client address and per username.
    login_window: int = 600
    login_failures_per_address: int = 20
    login_failures_per_username: int = 10
    # Registrations per client address and window (registration needs no token).
    registrations_per_address: int = 20
    registration_window: int = 3600
    # Password hashes (Argon2) computed at once per process, off the database threads.
    password_hash_concurrency: int = 1
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    restart_limit: int = 5
    restart_window: float = 60.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        defaults = cls()
        # Absolute, because the default database URL is built from it: sqlite:///var/x
        # names /var/x, not ./var/x.
        data_dir = Path(env.get("DEVICEHUB_DATA_DIR") or default_data_dir(env)).absolute()
        return cls(
            grpc_host=env.get("DEVICEHUB_GRPC_HOST") or defaults.grpc_host,
            grpc_port=_int(env, "DEVICEHUB_GRPC_PORT", defaults.grpc_port),
            http_host=env.get("DEVICEHUB_HTTP_HOST") or defaults.http_host,
            http_port=_int(env, "DEVICEHUB_HTTP_PORT", defaults.http_port),
            envoy_admin_socket=(
                Path(raw) if (raw := env.get("DEVICEHUB_ENVOY_ADMIN_SOCKET")) else None
            ),
            max_streams=max(1, _int(env, "DEVICEHUB_MAX_STREAMS", defaults.max_streams)),
            max_connections=max(
                1, _int(env, "DEVICEHUB_MAX_CONNECTIONS", defaults.max_connections)
            ),
            max_request_bytes=max(
                1024, _int(env, "DEVICEHUB_MAX_REQUEST_BYTES", defaults.max_request_bytes)
            ),
            data_dir=data_dir,
            database_url=env.get("DEVICEHUB_DATABASE_URL")
            or f"sqlite:///{data_dir / 'devicehub.sqlite3'}",
            db_pool_size=max(1, _int(env, "DEVICEHUB_DB_POOL_SIZE", defaults.db_pool_size)),
            secret_key=env.get("DEVICEHUB_SECRET_KEY", ""),
            access_token_ttl=_int(env, "DEVICEHUB_ACCESS_TOKEN_TTL", defaults.access_token_ttl),
            refresh_token_ttl=_int(env, "DEVICEHUB_REFRESH_TOKEN_TTL", defaults.refresh_token_ttl),
            shutdown_grace=_float(env, "DEVICEHUB_SHUTDOWN_GRACE", defaults.shutdown_grace),
            log_level=env.get("DEVICEHUB_LOG_LEVEL") or defaults.log_level,
            alimtalk_base_url=env.get("DEVICEHUB_ALIMTALK_BASE_URL", ""),
            alimtalk_app_key=env.get("DEVICEHUB_ALIMTALK_APP_KEY", ""),
            alimtalk_secret_key=env.get("DEVICEHUB_ALIMTALK_SECRET_KEY", ""),
            alimtalk_sender_key=env.get("DEVICEHUB_ALIMTALK_SENDER_KEY", ""),
            alimtalk_template_code=env.get("DEVICEHUB_ALIMTALK_TEMPLATE_CODE", ""),
            alimtalk_timeout=_float(env, "DEVICEHUB_ALIMTALK_TIMEOUT", defaults.alimtalk_timeout),
            alimtalk_suppress_seconds=_int(
                env, "DEVICEHUB_ALIMTALK_SUPPRESS_SECONDS", defaults.alimtalk_suppress_seconds
            ),
            ws_port=_int(env, "DEVICEHUB_WS_PORT", defaults.ws_port),
            message_ttl=_int(env, "DEVICEHUB_MESSAGE_TTL", defaults.message_ttl),
            message_queue_limit=_int(
                env, "DEVICEHUB_MESSAGE_QUEUE_LIMIT", defaults.message_queue_limit
            ),
            stream_heartbeat=_float(env, "DEVICEHUB_STREAM_HEARTBEAT", defaults.stream_heartbeat),
            weather_geocoding_url=env.get("DEVICEHUB_WEATHER_GEOCODING_URL")
            or defaults.weather_geocoding_url,
            weather_forecast_url=env.get("DEVICEHUB_WEATHER_FORECAST_URL")
            or defaults.weather_forecast_url,
            weather_timeout=_float(env, "DEVICEHUB_WEATHER_TIMEOUT", defaults.weather_timeout),
            rtc_app_id=env.get("DEVICEHUB_RTC_APP_ID", ""),
            rtc_app_key=env.get("DEVICEHUB_RTC_APP_KEY", ""),
            rtc_mac_requests_per_minute=_int(
                env, "DEVICEHUB_RTC_MAC_REQUESTS_PER_MINUTE", defaults.rtc_mac_requests_per_minute
            ),
            rtc_device_auth=_choice(
                env, "DEVICEHUB_RTC_DEVICE_AUTH", defaults.rtc_device_auth, RTC_DEVICE_AUTH_MODES
            ),
            rtc_address_window=max(
                1, _int(env, "DEVICEHUB_RTC_ADDRESS_WINDOW", defaults.rtc_address_window)
            ),
            rtc_address_macs=_int(env, "DEVICEHUB_RTC_ADDRESS_MACS", defaults.rtc_address_macs),
            rtc_address_misses=_int(
                env, "DEVICEHUB_RTC_ADDRESS_MISSES", defaults.rtc_address_misses
            ),
            rtc_signature_max_skew=max(
                1, _int(env, "DEVICEHUB_RTC_SIGNATURE_MAX_SKEW", defaults.rtc_signature_max_skew)
            ),
            login_window=max(1, _int(env, "DEVICEHUB_LOGIN_WINDOW", defaults.login_window)),
            login_failures_per_address=_int(
                env, "DEVICEHUB_LOGIN_FAILURES_PER_ADDRESS", defaults.login_failures_per_address
            ),
            login_failures_per_username=_int(
                env, "DEVICEHUB_LOGIN_FAILURES_PER_USERNAME", defaults.login_failures_per_username
            ),
            registrations_per_address=_int(
                env, "DEVICEHUB_REGISTRATIONS_PER_ADDRESS", defaults.registrations_per_address
            ),
            registration_window=max(
                1, _int(env, "DEVICEHUB_REGISTRATION_WINDOW", defaults.registration_window)
            ),
            password_hash_concurrency=max(
                1,
                _int(
                    env, "DEVICEHUB_PASSWORD_HASH_CONCURRENCY", defaults.password_hash_concurrency
                ),
            ),
            workers=max(1, _int(env, "DEVICEHUB_WORKERS", defaults.workers)),
            restart_limit=max(1, _int(env, "DEVICEHUB_RESTART_LIMIT", defaults.restart_limit)),
            restart_window=max(
                1.0, _float(env, "DEVICEHUB_RESTART_WINDOW", defaults.restart_window)
            ),
        )

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"

    @property
    def envoy_admin_path(self) -> Path:
        """Where Envoy's admin socket lives (only the service's user may connect)."""
        return self.envoy_admin_socket or self.data_dir / "envoy-admin.sock"

    def signing_key(self) -> str:
        """The token signing secret.

        ``DEVICEHUB_SECRET_KEY`` wins. Without it, a random development key is generated
        once and kept in ``<data_dir>/secret_key`` (created exclusively, so concurrent
        server processes agree on one key).
        """
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_text().strip()
            if key:
                return key
            raise SystemExit(f"{path} is empty: delete it or set DEVICEHUB_SECRET_KEY") from None
        key = secrets.token_urlsafe(48)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        return key
