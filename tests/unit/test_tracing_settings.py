"""Tracing settings: off by default, on with DEVICEHUB_OTLP_ENDPOINT or the standard
OTEL_* variables, and nothing installed while off."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from devicehub.config import Settings
from devicehub.runtime.tracing import server_interceptors, start_tracing, stop_tracing


def test_tracing_is_off_by_default_and_installs_nothing():
    settings = Settings.from_env({})
    assert settings.otlp_traces_endpoint == ""
    assert settings.service_name == "devicehub"
    assert server_interceptors(settings) == ()
    start_tracing(settings)
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert not trace.get_current_span().is_recording()
    stop_tracing()


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({"DEVICEHUB_OTLP_ENDPOINT": "http://collector:4318"}, "http://collector:4318/v1/traces"),
        (
            {"DEVICEHUB_OTLP_ENDPOINT": "https://c.example/otlp/"},
            "https://c.example/otlp/v1/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/traces"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9/traces"}, "http://c:9/traces"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "http://localhost:4318/v1/traces"),
        (
            {
                "DEVICEHUB_OTLP_ENDPOINT": "http://mine:4318",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://standard:4318",
            },
            "http://mine:4318/v1/traces",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"},
            "",
        ),
        ({"DEVICEHUB_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, ""),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ""),
    ],
)
def test_the_otlp_endpoint_comes_from_the_standard_variables(env, endpoint):
    settings = Settings.from_env(env)
    assert settings.otlp_traces_endpoint == endpoint
    assert len(server_interceptors(settings)) == (1 if endpoint else 0)


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"DEVICEHUB_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        {"DEVICEHUB_OTLP_ENDPOINT": "collector:4318"},
    ],
)
def test_an_unsupported_tracing_setting_stops_start_up(env):
    with pytest.raises(SystemExit):
        Settings.from_env(env)


def test_the_service_name_follows_otel_service_name():
    assert Settings.from_env({"OTEL_SERVICE_NAME": "devicehub-eu"}).service_name == "devicehub-eu"


def test_readiness_interval_has_a_floor():
    assert Settings.from_env({}).readiness_interval == 2.0
    assert Settings.from_env({"DEVICEHUB_READINESS_INTERVAL": "0"}).readiness_interval == 0.1
