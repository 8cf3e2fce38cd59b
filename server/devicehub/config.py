"""The one settings object: every tunable is read from the environment here and only here."""

from __future__ import annotations

import ipaddress
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


FIRMWARE_MAX_BYTES_CEILING = 2**31 - 1
"""Firmware sizes are int32 in the API: no setting may allow more."""


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


def _retention_days(env: dict[str, str], name: str) -> int | None:
    """Unset or empty: keep everything; otherwise a whole number of days, at least 1."""
    if not env.get(name, "").strip():
        return None
    days = _int(env, name, 0)
    if days < 1:
        raise SystemExit(f"{name} must be a number of days (1 or more), got {days}")
    return days


def _port_setting(env: dict[str, str], name: str, default: int) -> int:
    port = _int(env, name, default)
    if not 0 <= port <= 65535:
        raise SystemExit(f"{name} must be a port number (0-65535), got {port}")
    return port


RTC_DEVICE_AUTH_MODES = ("off", "optional", "required")
LOG_FORMATS = ("text", "json")


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise SystemExit(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def read_secret(env: Mapping[str, str], name: str) -> str:
    """A secret setting: the variable ``name`` itself, or the contents of the file that
    ``name_FILE`` names (a systemd credential in ``$CREDENTIALS_DIRECTORY``, a mounted
    Kubernetes secret), without its trailing newline. Both at once, a file that cannot be
    read and an empty file are configuration errors; the messages name the variable and
    the path, never the content."""
    value = env.get(name, "")
    path = env.get(f"{name}_FILE", "")
    if not path:
        return value
    if value:
        raise SystemExit(f"set {name} or {name}_FILE, not both")
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SystemExit(f"{name}_FILE: cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise SystemExit(f"{name}_FILE: {path} is not UTF-8 text") from None
    content = content.rstrip("\r\n")
    if not content:
        raise SystemExit(f"{name}_FILE: {path} is empty")
    return content


def _pem_pair(env: Mapping[str, str], prefix: str) -> tuple[Path | None, Path | None]:
    """``<prefix>_CERT_FILE`` and ``<prefix>_KEY_FILE``: both (absolute, readable PEM) or
    neither, checked at start-up so that a typo fails here and not at the first client."""
    names = (f"{prefix}_CERT_FILE", f"{prefix}_KEY_FILE")
    raw = [env.get(name, "").strip() for name in names]
    if not any(raw):
        return None, None
    if not all(raw):
        raise SystemExit(f"{names[0]} and {names[1]} go together: set both or neither")
    paths = []
    # A swapped or non-PEM file would otherwise surface only as Envoy restarting in a loop
    # or gRPC's "failed to bind".
    markers = (b"-----BEGIN CERTIFICATE-----", b"PRIVATE KEY-----")
    for name, value, marker in zip(names, raw, markers, strict=True):
        path = Path(value).absolute()
        try:
            content = path.read_bytes()
        except OSError as error:
            raise SystemExit(f"{name}: cannot read {path}: {error.strerror}") from None
        if marker not in content:
            what = "certificate" if name.endswith("_CERT_FILE") else "private key"
            raise SystemExit(f"{name}: {path} holds no PEM {what}")
        paths.append(path)
    return paths[0], paths[1]


# The standard OpenTelemetry variables that decide whether (and where) spans are exported;
# the SDK itself reads the others it documents (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT,
# _CERTIFICATE, _COMPRESSION, OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES).
OTLP_DEFAULT_BASE = "http://localhost:4318"


def _otlp_traces_endpoint(env: Mapping[str, str]) -> str:
    """The OTLP/HTTP URL spans are sent to, or "" when tracing is off (the default).

    On when ``DEVICEHUB_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (a full
    URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL, ``/v1/traces`` appended) is set,
    or ``OTEL_TRACES_EXPORTER=otlp`` (to the standard local collector); off whatever else
    is set with ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``. Only the
    http/protobuf protocol is shipped, so asking for another is a configuration error.
    """
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none" or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ""
    if exporter not in ("", "otlp"):
        raise SystemExit(f"OTEL_TRACES_EXPORTER must be otlp or none, got {exporter!r}")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip().lower()
        if protocol and protocol != "http/protobuf":
            raise SystemExit(f"{name}: only http/protobuf is supported, got {protocol!r}")
    base = env.get("DEVICEHUB_OTLP_ENDPOINT", "").strip()
    if not base:
        full = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if full:
            return full
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not base:
        if exporter != "otlp":
            return ""
        base = OTLP_DEFAULT_BASE
    if not base.startswith(("http://", "https://")):
        raise SystemExit(f"the OTLP endpoint must be an http:// or https:// URL, got {base!r}")
    return base.rstrip("/") + "/v1/traces"


@dataclass(frozen=True)
class Upstream:
    """One ``devicehub serve --no-gateway`` instance behind ``devicehub gateway``: its gRPC
    address and the port of its WebSocket bridge (on the same host)."""

    host: str
    grpc_port: int
    ws_port: int


def _upstream_port(name: str, entry: str, raw: str) -> int:
    if raw.isascii() and raw.isdigit() and 0 < int(raw) < 65536:
        return int(raw)
    raise SystemExit(f"{name}: {entry!r} has no valid port (1-65535): {raw!r}")


def _upstreams(env: Mapping[str, str], ws_port: int) -> tuple[Upstream, ...]:
    """``DEVICEHUB_UPSTREAMS``: comma-separated ``host:grpc_port`` or
    ``host:grpc_port:ws_port`` (the WebSocket port defaults to ``DEVICEHUB_WS_PORT``); an
    IPv6 address in brackets, ``[::1]:50051``."""
    name = "DEVICEHUB_UPSTREAMS"
    found: list[Upstream] = []
    for entry in (part.strip() for part in env.get(name, "").split(",")):
        if not entry:
            continue
        if entry.startswith("["):
            host, bracket, rest = entry[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise SystemExit(f"{name}: {entry!r} is not [ipv6]:grpc_port[:ws_port]")
            ports = rest[1:].split(":") if rest else []
        else:
            host, *ports = entry.split(":")
        if not host or not 1 <= len(ports) <= 2:
            raise SystemExit(f"{name}: {entry!r} is not host:grpc_port[:ws_port]")
        grpc_port = _upstream_port(name, entry, ports[0])
        ws = _upstream_port(name, entry, ports[1]) if len(ports) == 2 else ws_port
        found.append(Upstream(host=host, grpc_port=grpc_port, ws_port=ws))
    if len({(u.host, u.grpc_port) for u in found}) != len(found):
        raise SystemExit(f"{name} lists an upstream twice")
    return tuple(found)


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks, normalized (``10.0.0.0/8``)."""
    networks = []
    for entry in (part.strip() for part in env.get(name, "").split(",")):
        if not entry:
            continue
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise SystemExit(f"{name}: {entry!r} is not an IP address or network") from None
    return tuple(networks)


def _access_log(raw: str) -> str:
    """``-`` (stdout), ``off``, or the absolute path of the file Envoy appends to."""
    if raw in ("", "-", "off"):
        return raw
    return str(Path(raw).absolute())


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. See README.md for the environment variable of each field."""

    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # PEM files: with both, Envoy's listener serves TLS (ALPN h2 and http/1.1) ...
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # ... and with these, the direct gRPC port (independent: see README, "TLS").
    grpc_tls_cert_file: Path | None = None
    grpc_tls_key_file: Path | None = None
    # Envoy's admin interface: a Unix socket (mode 0600); None: <data_dir>/envoy-admin.sock.
    envoy_admin_socket: Path | None = None
    # Envoy's limits: concurrent message streams (SSE, WebSocket and native gRPC
    # subscriptions each), downstream connections, REST request body bytes.
    max_streams: int = 10_000
    max_connections: int = 30_000
    max_request_bytes: int = 4 * 1024 * 1024
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    database_url: str = field(default="", repr=False)  # may hold a password
    db_pool_size: int = 8
    secret_key: str = field(default="", repr=False)
    access_token_ttl: int = 900
    refresh_token_ttl: int = 14 * 24 * 3600
    shutdown_grace: float = 10.0
    log_level: str = "INFO"
    log_format: str = "text"  # text | json (runtime/logs.py)
    # Envoy's JSON access log: "-" stdout, "off", or a file path.
    access_log: str = "-"
    alimtalk_base_url: str = ""
    alimtalk_app_key: str = field(default="", repr=False)
    alimtalk_secret_key: str = field(default="", repr=False)
    alimtalk_sender_key: str = ""
    alimtalk_template_code: str = ""
    alimtalk_timeout: float = 5.0
    alimtalk_suppress_seconds: int = 600
    ws_port: int = 8765
    message_ttl: int = 3600
    message_queue_limit: int = 100
    stream_heartbeat: float = 15.0
    # Firmware packages: the largest binary accepted (below 2 GiB: sizes are int32 in the
    # API); firmware messages sent per minute across all hosts; how often the rollout
    # scheduler looks for groups to start and devices to notify (seconds).
    firmware_max_bytes: int = 64 * 1024 * 1024
    firmware_notify_per_minute: int = 1000
    firmware_tick: float = 1.0
    # Movement samples older than this many days are dropped, a whole week's partition at
    # a time (PostgreSQL; None: kept for ever); how often the partitions are looked after.
    movement_retention_days: int | None = None
    movement_maintenance_interval: float = 3600.0
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
    # The Prometheus scrape endpoint of `devicehub serve` (runtime/metrics_endpoint.py),
    # loopback by default; port 0: no endpoint.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    # devicehub gateway: the instances (elsewhere) Envoy balances over, health-checked; empty:
    # the workers of this host, over their abstract Unix sockets.
    upstreams: tuple[Upstream, ...] = ()
    # Peers (Envoy on another host) whose x-forwarded-for names the client, over TCP.
    trusted_proxies: tuple[str, ...] = ()
    # Seconds a stopping server keeps serving with health NOT_SERVING before it closes, for
    # a remote gateway's health checks to take it out first (at most 10: the supervisor
    # waits shutdown_grace + 15 s for a worker).
    drain_delay: float = 0.0
    # Tracing (runtime/tracing.py): where spans go ("" = off) and the service they name.
    otlp_traces_endpoint: str = ""
    service_name: str = "devicehub"
    # Seconds between database probes; health follows them (runtime/server.py).
    readiness_interval: float = 2.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        defaults = cls()
        # Absolute, because the default database URL is built from it: sqlite:///var/x
        # names /var/x, not ./var/x.
        data_dir = Path(env.get("DEVICEHUB_DATA_DIR") or default_data_dir(env)).absolute()
        tls_cert_file, tls_key_file = _pem_pair(env, "DEVICEHUB_TLS")
        grpc_tls_cert_file, grpc_tls_key_file = _pem_pair(env, "DEVICEHUB_GRPC_TLS")
        return cls(
            grpc_host=env.get("DEVICEHUB_GRPC_HOST") or defaults.grpc_host,
            grpc_port=_int(env, "DEVICEHUB_GRPC_PORT", defaults.grpc_port),
            http_host=env.get("DEVICEHUB_HTTP_HOST") or defaults.http_host,
            http_port=_int(env, "DEVICEHUB_HTTP_PORT", defaults.http_port),
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            grpc_tls_cert_file=grpc_tls_cert_file,
            grpc_tls_key_file=grpc_tls_key_file,
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
            database_url=read_secret(env, "DEVICEHUB_DATABASE_URL")
            or f"sqlite:///{data_dir / 'devicehub.sqlite3'}",
            db_pool_size=max(1, _int(env, "DEVICEHUB_DB_POOL_SIZE", defaults.db_pool_size)),
            secret_key=read_secret(env, "DEVICEHUB_SECRET_KEY"),
            access_token_ttl=_int(env, "DEVICEHUB_ACCESS_TOKEN_TTL", defaults.access_token_ttl),
            refresh_token_ttl=_int(env, "DEVICEHUB_REFRESH_TOKEN_TTL", defaults.refresh_token_ttl),
            shutdown_grace=_float(env, "DEVICEHUB_SHUTDOWN_GRACE", defaults.shutdown_grace),
            log_level=env.get("DEVICEHUB_LOG_LEVEL") or defaults.log_level,
            log_format=_choice(env, "DEVICEHUB_LOG_FORMAT", defaults.log_format, LOG_FORMATS),
            access_log=_access_log(env.get("DEVICEHUB_ACCESS_LOG", "").strip())
            or defaults.access_log,
            alimtalk_base_url=env.get("DEVICEHUB_ALIMTALK_BASE_URL", ""),
            alimtalk_app_key=read_secret(env, "DEVICEHUB_ALIMTALK_APP_KEY"),
            alimtalk_secret_key=read_secret(env, "DEVICEHUB_ALIMTALK_SECRET_KEY"),
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
            firmware_max_bytes=min(
                FIRMWARE_MAX_BYTES_CEILING,
                max(1, _int(env, "DEVICEHUB_FIRMWARE_MAX_BYTES", defaults.firmware_max_bytes)),
            ),
            firmware_notify_per_minute=max(
                1,
                _int(
                    env,
                    "DEVICEHUB_FIRMWARE_NOTIFY_PER_MINUTE",
                    defaults.firmware_notify_per_minute,
                ),
            ),
            firmware_tick=max(0.05, _float(env, "DEVICEHUB_FIRMWARE_TICK", defaults.firmware_tick)),
            movement_retention_days=_retention_days(env, "DEVICEHUB_MOVEMENT_RETENTION_DAYS"),
            movement_maintenance_interval=max(
                1.0,
                _float(
                    env,
                    "DEVICEHUB_MOVEMENT_MAINTENANCE_INTERVAL",
                    defaults.movement_maintenance_interval,
                ),
            ),
            weather_geocoding_url=env.get("DEVICEHUB_WEATHER_GEOCODING_URL")
            or defaults.weather_geocoding_url,
            weather_forecast_url=env.get("DEVICEHUB_WEATHER_FORECAST_URL")
            or defaults.weather_forecast_url,
            weather_timeout=_float(env, "DEVICEHUB_WEATHER_TIMEOUT", defaults.weather_timeout),
            rtc_app_id=env.get("DEVICEHUB_RTC_APP_ID", ""),
            rtc_app_key=read_secret(env, "DEVICEHUB_RTC_APP_KEY"),
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
            metrics_host=env.get("DEVICEHUB_METRICS_HOST") or defaults.metrics_host,
            metrics_port=_port_setting(env, "DEVICEHUB_METRICS_PORT", defaults.metrics_port),
            upstreams=_upstreams(env, _int(env, "DEVICEHUB_WS_PORT", defaults.ws_port)),
            trusted_proxies=_networks(env, "DEVICEHUB_TRUSTED_PROXIES"),
            drain_delay=min(10.0, max(0.0, _float(env, "DEVICEHUB_DRAIN_DELAY", 0.0))),
            otlp_traces_endpoint=_otlp_traces_endpoint(env),
            service_name=env.get("OTEL_SERVICE_NAME", "").strip() or defaults.service_name,
            readiness_interval=max(
                0.1, _float(env, "DEVICEHUB_READINESS_INTERVAL", defaults.readiness_interval)
            ),
        )

    @property
    def grpc_address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"

    @property
    def metrics_dir(self) -> Path:
        """Where the worker processes keep their metric values for the scrape endpoint
        (``PROMETHEUS_MULTIPROC_DIR``); emptied at every start."""
        return self.data_dir / "metrics"

    @property
    def envoy_admin_path(self) -> Path:
        """Where Envoy's admin socket lives (only the service's user may connect)."""
        return self.envoy_admin_socket or self.data_dir / "envoy-admin.sock"

    @property
    def generated_key_path(self) -> Path:
        """Where the signing key generated without ``DEVICEHUB_SECRET_KEY`` is kept."""
        return self.data_dir / "secret_key"

    def signing_key(self) -> str:
        """The token signing secret.

        ``DEVICEHUB_SECRET_KEY`` wins. Without it, a random development key is generated
        once and kept in ``<data_dir>/secret_key`` (created exclusively, so concurrent
        server processes agree on one key).
        """
        if self.secret_key:
            return self.secret_key
        path = self.generated_key_path
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
