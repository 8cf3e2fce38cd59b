"""Tracing: a stack with ``DEVICEHUB_OTLP_ENDPOINT`` set exports its spans over OTLP/HTTP.

The stack's worker processes run the real SDK and exporter; an OTLP receiver on loopback
in the test process (tests/otlp_receiver.py) stands in for the collector. One REST call
through Envoy is one trace: the gRPC server span of the method it was transcoded to, and
the spans of its database work as that span's children. A trace a client began
(``traceparent``) goes on through Envoy into the server, and streaming calls are traced
and still stream.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devicehub.testing.stack import Stack, start_stack

from bound_accounts import user_with_bound_device
from otlp_receiver import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, OtlpReceiver, ReceivedSpan
from stack_settings import ADMIN_PASSWORD, backend_database, stack_env
from streams import Subscription, send_text

ME = "/api/v1/accounts/me"
GET_MY_ACCOUNT = "/devicehub.v1.AccountService/GetMyAccount"
SUBSCRIBE = "/devicehub.v1.MessagingService/SubscribeMessages"


@dataclass
class Traced:
    stack: Stack
    receiver: OtlpReceiver  # this stack's spans only


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def traced(request, tmp_path_factory, alimtalk_provider, weather_provider) -> Iterator[Traced]:
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"stack-tracing-{backend}")
    receiver = OtlpReceiver()
    receiver.start()
    env = stack_env(
        tmp,
        backend_database(request, backend, tmp),
        alimtalk_provider.base_url,
        weather_provider.base_url,
    )
    env["DEVICEHUB_OTLP_ENDPOINT"] = receiver.endpoint
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export within 0.1 s, not the default 5 s
    try:
        started = start_stack(backend, env, tmp / "serve.log", ADMIN_PASSWORD)
    except BaseException:
        receiver.stop()
        raise
    yield Traced(started, receiver)
    started.stop()
    receiver.stop()


def _server_spans(spans: list[ReceivedSpan], method: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.kind == SPAN_KIND_SERVER and s.name == method]


def _trace_of(receiver: OtlpReceiver, server: ReceivedSpan) -> list[ReceivedSpan]:
    """The spans of ``server``'s trace, once its database spans have arrived."""
    spans = receiver.wait_for(
        lambda spans: any(
            s.trace_id == server.trace_id and s.kind == SPAN_KIND_CLIENT for s in spans
        )
    )
    return [s for s in spans if s.trace_id == server.trace_id]


def test_one_rest_call_is_one_trace_of_server_and_database_spans(traced):
    stack, receiver = traced.stack, traced.receiver
    _, token = stack.new_user()
    account_id = str(stack.request("GET", ME, token).json()["id"])
    headers = {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"}
    # A trace of our own, so that this call's spans are told apart from the others'.
    trace_id, parent_id = headers["traceparent"].split("-")[1:3]
    response = stack.request("GET", ME, token, headers=headers)
    assert response.status_code == 200, response.text
    assert str(response.json()["id"]) == account_id

    spans = receiver.wait_for(
        lambda spans: any(s.trace_id == trace_id for s in _server_spans(spans, GET_MY_ACCOUNT))
    )
    (server,) = [s for s in _server_spans(spans, GET_MY_ACCOUNT) if s.trace_id == trace_id]
    assert server.parent_span_id == parent_id  # the client's span, through Envoy
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.method"] == "GetMyAccount"
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.resource["service.name"] == "devicehub"

    trace = _trace_of(receiver, server)
    assert [s.span_id for s in trace if s.kind == SPAN_KIND_SERVER] == [server.span_id]
    database = [s for s in trace if s.kind == SPAN_KIND_CLIENT]
    assert database, trace
    assert {s.parent_span_id for s in database} == {server.span_id}
    assert {s.attributes["db.system"] for s in database} == {stack.backend}
    assert all(s.name and not s.name.startswith("devicehub.") for s in database)


def test_a_rest_call_without_a_client_trace_starts_one(traced):
    stack, receiver = traced.stack, traced.receiver
    _, token = stack.new_user()
    before = {s.span_id for s in _server_spans(receiver.spans(), GET_MY_ACCOUNT)}
    assert stack.request("GET", ME, token).status_code == 200

    spans = receiver.wait_for(
        lambda spans: any(s.span_id not in before for s in _server_spans(spans, GET_MY_ACCOUNT))
    )
    (server,) = [s for s in _server_spans(spans, GET_MY_ACCOUNT) if s.span_id not in before]
    assert server.parent_span_id == ""
    trace = _trace_of(receiver, server)
    assert [s.kind for s in trace].count(SPAN_KIND_SERVER) == 1
    assert {s.parent_span_id for s in trace if s.kind == SPAN_KIND_CLIENT} == {server.span_id}


def test_streaming_calls_are_traced_and_still_stream(traced):
    stack, receiver = traced.stack, traced.receiver
    account, token = user_with_bound_device(stack)
    subscription = Subscription(stack.channel(), token)
    try:
        sent = send_text(stack, token, account["id"], "traced")
        assert [m.id for m in subscription.messages(1)] == [sent]
    finally:
        subscription.cancel()
    spans = receiver.wait_for(lambda spans: bool(_server_spans(spans, SUBSCRIBE)))
    (stream,) = _server_spans(spans, SUBSCRIBE)
    assert stream.attributes["rpc.method"] == "SubscribeMessages"
    # Its database work (the backlog read) is inside the stream's span.
    assert any(
        s.parent_span_id == stream.span_id and s.kind == SPAN_KIND_CLIENT
        for s in _trace_of(receiver, stream)
    )


def test_health_checks_are_not_traced(traced):
    # The stack was found ready by polling its health.
    spans = traced.receiver.spans()
    assert spans
    assert not [s for s in spans if s.name.startswith("/grpc.health.v1.")]
