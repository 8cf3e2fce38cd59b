"""The service's Prometheus metrics: every metric object, defined once, for every layer.

The domain, storage and provider modules increment these; ``api.metrics_interceptor``
measures every RPC; ``runtime.metrics_endpoint`` serves them. This module sits below all of
them (beside ``config`` in the import layers) and imports nothing of devicehub.

With several worker processes, ``devicehub serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before
it starts them, so ``prometheus_client`` keeps each process's values in a file there and the
supervisor adds them up on one scrape endpoint. That is why every gauge names a
``multiprocess_mode``: ``livesum`` adds up the processes that are alive (a dead worker's
file is removed), ``max`` takes the largest. Counters of a dead worker keep counting in the
total, so a counter never goes down while the service runs.

Names follow Prometheus conventions: ``devicehub_`` prefix, base units in the name
(``_seconds``), ``_total`` on counters. The README's "Metrics" section lists them all.
"""

from __future__ import annotations

from importlib import metadata

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# ``_created`` series (a timestamp per counter) only double the exposition; multiprocess
# mode has none, so a single process omits them too.
disable_created_metrics()

RPC_LABELS = ("service", "method", "code", "protocol")
# ``protocol`` of a call transcoded from JSON REST by the edge (server-sent-event streams
# included); every other call, native gRPC through Envoy or direct, is ``grpc``.
REST = "rest"
GRPC = "grpc"

RPC_REQUESTS = Counter(
    "devicehub_rpc_requests_total",
    "RPCs finished, by method, gRPC status code and protocol (rest: transcoded by the edge).",
    RPC_LABELS,
)
RPC_DURATION = Histogram(
    "devicehub_rpc_duration_seconds",
    "Time from the start of an RPC to its status (a stream: its lifetime), in seconds.",
    RPC_LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

SUBSCRIPTION_TRANSPORTS = ("grpc", "sse", "websocket")
SUBSCRIPTIONS = Gauge(
    "devicehub_subscriptions",
    "Live message subscriptions, by transport (grpc, sse, websocket).",
    ("transport",),
    multiprocess_mode="livesum",
)

MESSAGE_STATES = ("queued", "delivered", "acked", "expired")
MESSAGES = Counter(
    "devicehub_messages_total",
    "Messages that entered each state: queued (stored by a send), delivered (first emitted "
    "to a subscriber), acked, expired.",
    ("state",),
)
MESSAGE_QUEUE_REFUSALS = Counter(
    "devicehub_message_queue_refusals_total",
    "Sends refused because the recipient's queue was full (RESOURCE_EXHAUSTED, 429).",
)

FIRMWARE_NOTIFICATIONS = Counter(
    "devicehub_firmware_notifications_total",
    "Devices told of a firmware update by the rollout scheduler.",
)
FIRMWARE_UPDATE_REPORTS = Counter(
    "devicehub_firmware_update_reports_total",
    "Firmware update states reported by devices (retries of a state not counted).",
    ("state",),
)
FIRMWARE_ROLLOUTS_ENDED = Counter(
    "devicehub_firmware_rollouts_ended_total",
    "Firmware rollouts that completed, stopped by failures or were canceled.",
    ("state",),
)

DEVLOG_RECORDS = Counter(
    "devicehub_devlog_records_ingested_total",
    "Usage-log records in accepted devlog uploads.",
)
MOVEMENT_SAMPLES = Counter(
    "devicehub_movement_samples_ingested_total",
    "Movement samples in accepted movement uploads (a retried batch counts again).",
)

DB_POOL_CONNECTIONS = Gauge(
    "devicehub_db_pool_connections",
    "Database connections the pools may hold (DEVICEHUB_DB_POOL_SIZE per process).",
    multiprocess_mode="livesum",
)
DB_CONNECTIONS_IN_USE = Gauge(
    "devicehub_db_connections_in_use",
    "Database calls running, each on a pool thread with its connection.",
    multiprocess_mode="livesum",
)
DB_CALLS_WAITING = Gauge(
    "devicehub_db_calls_waiting",
    "Database calls waiting for a free pool connection.",
    multiprocess_mode="livesum",
)
DB_ERRORS = Counter(
    "devicehub_db_errors_total",
    "Database calls that failed with a database error, by its class (peewee's names: "
    "OperationalError, IntegrityError, ...).",
    ("error",),
)

LISTENER_RECONNECTS = Counter(
    "devicehub_listener_reconnects_total",
    "Times a process's PostgreSQL LISTEN connection was lost and listens again.",
)

PROVIDER_OUTCOMES = {
    "alimtalk": ("sent", "rejected", "unreachable"),
    "weather": ("ok", "city_not_found", "unavailable"),
}
PROVIDER_CALLS = Counter(
    "devicehub_provider_calls_total",
    "Calls to third-party providers, by provider (alimtalk, weather) and outcome.",
    ("provider", "outcome"),
)

BUILD_INFO = Gauge(
    "devicehub_build_info",
    "Always 1; the running devicehub's version is its label.",
    ("version",),
    multiprocess_mode="max",
)


def _version() -> str:
    try:
        return metadata.version("devicehub")
    except metadata.PackageNotFoundError:
        return "unknown"


def initialize() -> None:
    """Sets build info and creates every fixed label set at 0, so each series is there
    from the first scrape (``rate()`` needs a series to exist before it moves)."""
    BUILD_INFO.labels(_version()).set(1)
    for transport in SUBSCRIPTION_TRANSPORTS:
        SUBSCRIPTIONS.labels(transport)
    for state in MESSAGE_STATES:
        MESSAGES.labels(state)
    for provider, outcomes in PROVIDER_OUTCOMES.items():
        for outcome in outcomes:
            PROVIDER_CALLS.labels(provider, outcome)


def provider_call(provider: str, outcome: str) -> None:
    PROVIDER_CALLS.labels(provider, outcome).inc()
