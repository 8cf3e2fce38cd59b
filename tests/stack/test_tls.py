"""TLS on the edge and on the direct gRPC port, and the signing secret (issue 12, part 2).

One stack serves TLS on Envoy's listener (``DEVICEHUB_TLS_*``) and on the direct gRPC port
(``DEVICEHUB_GRPC_TLS_*``) with certificates made by trustme for 127.0.0.1, and reads its
signing secret from a file (``DEVICEHUB_SECRET_KEY_FILE``). Its clients trust only the
test CA: REST over https, native gRPC through Envoy (HTTP/2 by ALPN) and on the direct
port, grpcurl with ``-cacert``, the WebSocket over ``wss://``. A plaintext client on a TLS
port fails cleanly and leaves the stack serving.

These stacks run on SQLite only: TLS and the secret are the transport's and start-up's,
the same whatever the database (every API test runs on both backends elsewhere).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import jwt
import pytest
import requests
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from websockets.sync.client import connect

from devicehub.testing.stack import (
    DEVICEHUB,
    READY_WITHIN,
    Stack,
    start_stack,
    stop_process,
    wait_ready,
)
from devicehub.v1 import account_pb2, account_pb2_grpc, system_pb2, system_pb2_grpc

from api_client import metadata
from bound_accounts import user_with_bound_device
from stack_settings import ADMIN_PASSWORD, stack_env
from streams import send_text

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
WAIT = 15.0
KEY_WARNING = "DEVICEHUB_SECRET_KEY is not set"


@dataclass
class Certificates:
    ca: Path  # the test CA's certificate: what clients trust
    cert: Path  # the server's certificate chain (for 127.0.0.1)
    key: Path  # its private key

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass
class TlsStack(Stack):
    """A stack whose REST requests trust the test CA (and nothing else)."""

    ca: str = ""

    def request(self, method: str, path: str, token: str | None = None, **kwargs):
        kwargs.setdefault("verify", self.ca)
        return super().request(method, path, token, **kwargs)

    def secure_channel(self, target: str, certificates: Certificates) -> grpc.Channel:
        channel = grpc.secure_channel(target, certificates.channel_credentials())
        self._channels.append(channel)
        return channel

    @property
    def http_port(self) -> int:
        return int(self.env["DEVICEHUB_HTTP_PORT"])

    @property
    def edge_target(self) -> str:
        return f"127.0.0.1:{self.http_port}"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    found = Certificates(ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem")
    ca.cert_pem.write_to_path(str(found.ca))
    found.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(found.key))
    found.key.chmod(0o600)
    return found


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory, certificates) -> Iterator[TlsStack]:
    tmp = tmp_path_factory.mktemp("tls-stack")
    secret_file = tmp / "secret_key"
    secret_file.write_text(f"secret-from-a-file-{uuid.uuid4().hex}\n")
    env = {
        **stack_env(tmp, f"sqlite:///{tmp / 'devicehub.sqlite3'}"),
        "DEVICEHUB_DATA_DIR": str(tmp / "data"),
        "DEVICEHUB_SECRET_KEY": "",
        "DEVICEHUB_SECRET_KEY_FILE": str(secret_file),
        "DEVICEHUB_TLS_CERT_FILE": str(certificates.cert),
        "DEVICEHUB_TLS_KEY_FILE": str(certificates.key),
        "DEVICEHUB_GRPC_TLS_CERT_FILE": str(certificates.cert),
        "DEVICEHUB_GRPC_TLS_KEY_FILE": str(certificates.key),
    }
    subprocess.run(
        [DEVICEHUB, "create-admin", "admin", "--password", ADMIN_PASSWORD],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    log_path = tmp / "serve.log"
    with log_path.open("a") as log:
        process = subprocess.Popen([DEVICEHUB, "serve"], env=env, stdout=log, stderr=log)
    stack = TlsStack(
        backend="sqlite",
        env=env,
        database_url=env["DEVICEHUB_DATABASE_URL"],
        rest_url=f"https://127.0.0.1:{env['DEVICEHUB_HTTP_PORT']}",
        grpc_target=f"127.0.0.1:{env['DEVICEHUB_GRPC_PORT']}",
        process=process,
        log_path=log_path,
        ca=str(certificates.ca),
    )
    try:
        wait_ready(
            stack, time.monotonic() + READY_WITHIN, certificates.channel_credentials(), stack.ca
        )
    except Exception as error:
        stop_process(process)
        raise RuntimeError(
            f"stack failed to start ({error!r}):\n{log_path.read_text()[-4000:]}"
        ) from None
    stack.admin_token = stack.login("admin", ADMIN_PASSWORD)
    try:
        yield stack
    finally:
        assert stack.stop() == 0, log_path.read_text()[-4000:]


def grpcurl(*args: str) -> str:
    result = subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def negotiated_protocol(port: int, certificates: Certificates, offered: list[str]) -> str | None:
    context = certificates.ssl_context()
    context.set_alpn_protocols(offered)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.selected_alpn_protocol()


# --- the edge ------------------------------------------------------------------------


def test_rest_over_https_trusts_the_ca(tls_stack):
    response = requests.get(tls_stack.url("/api/v1/ping"), verify=tls_stack.ca, timeout=30)
    assert response.status_code == 200, response.text
    me = tls_stack.request("GET", "/api/v1/accounts/me", tls_stack.admin_token)
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "admin"


def test_https_without_the_ca_is_refused(tls_stack):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_stack.url("/api/v1/ping"), timeout=30)  # the system's CAs only


def test_alpn_offers_http2_for_grpc_and_http1_for_rest(tls_stack, certificates):
    port = tls_stack.http_port
    assert negotiated_protocol(port, certificates, ["h2", "http/1.1"]) == "h2"
    assert negotiated_protocol(port, certificates, ["http/1.1"]) == "http/1.1"


def test_plain_http_to_the_tls_edge_fails_cleanly(tls_stack):
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{tls_stack.edge_target}/api/v1/ping", timeout=10)
    plain = grpc.insecure_channel(tls_stack.edge_target)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            system_pb2_grpc.SystemServiceStub(plain).Ping(system_pb2.PingRequest(), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        plain.close()
    # Nothing broke: the edge still serves TLS clients.
    assert tls_stack.request("GET", "/api/v1/ping").status_code == 200


def test_native_grpc_through_envoy_over_tls(tls_stack, certificates):
    channel = tls_stack.secure_channel(tls_stack.edge_target, certificates)
    system_pb2_grpc.SystemServiceStub(channel).Ping(system_pb2.PingRequest(), timeout=WAIT)
    account = account_pb2_grpc.AccountServiceStub(channel).GetMyAccount(
        account_pb2.GetMyAccountRequest(), metadata=metadata(tls_stack.admin_token), timeout=WAIT
    )
    assert account.username == "admin"


def test_grpcurl_with_cacert_through_envoy_and_direct(tls_stack, certificates):
    ca = str(certificates.ca)
    header = f"authorization: Bearer {tls_stack.admin_token}"
    for target in (tls_stack.edge_target, tls_stack.grpc_target):
        assert "devicehub.v1.AccountService" in grpcurl("-cacert", ca, target, "list").split()
        out = grpcurl(
            "-cacert", ca, "-H", header, target, "devicehub.v1.AccountService/GetMyAccount"
        )
        assert '"username": "admin"' in out


def test_websocket_over_wss(tls_stack, certificates):
    account, token = user_with_bound_device(tls_stack)
    user_id = str(account["id"])
    backlog = send_text(tls_stack, token, user_id, "over tls")
    url = f"wss://{tls_stack.edge_target}/api/device/messages/{user_id}/?token={token}"
    with connect(url, ssl=certificates.ssl_context(), open_timeout=WAIT) as websocket:
        frame = json.loads(websocket.recv(timeout=WAIT))
    assert frame == {
        "type": "text",
        "message": {"content": "over tls"},
        "user_id": user_id,
        "id": backlog,
    }


# --- the direct gRPC port ------------------------------------------------------------


def test_direct_grpc_port_serves_tls(tls_stack, certificates):
    channel = tls_stack.secure_channel(tls_stack.grpc_target, certificates)
    account = account_pb2_grpc.AccountServiceStub(channel).GetMyAccount(
        account_pb2.GetMyAccountRequest(), metadata=metadata(tls_stack.admin_token), timeout=WAIT
    )
    assert account.username == "admin"


def test_plaintext_client_on_the_tls_grpc_port_fails_cleanly(tls_stack, certificates):
    plain = grpc.insecure_channel(tls_stack.grpc_target)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        plain.close()
    secure = tls_stack.secure_channel(tls_stack.grpc_target, certificates)
    health = health_pb2_grpc.HealthStub(secure)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=WAIT).status
    assert status == health_pb2.HealthCheckResponse.SERVING


# --- the signing secret --------------------------------------------------------------


def test_secret_key_file_signs_the_tokens_and_nothing_is_generated(tls_stack):
    secret = Path(tls_stack.env["DEVICEHUB_SECRET_KEY_FILE"]).read_text().rstrip("\n")
    claims = jwt.decode(tls_stack.admin_token, secret, algorithms=["HS256"])
    assert claims["typ"] == "access"
    assert not (Path(tls_stack.env["DEVICEHUB_DATA_DIR"]) / "secret_key").exists()
    assert KEY_WARNING not in tls_stack.log_path.read_text()


def test_generated_signing_key_is_announced_once(tmp_path):
    env = stack_env(tmp_path, f"sqlite:///{tmp_path / 'devicehub.sqlite3'}")
    env["DEVICEHUB_SECRET_KEY"] = ""  # none configured: a key is generated
    assert env["DEVICEHUB_WORKERS"] == "2"  # once, not once per worker
    log_path = tmp_path / "serve.log"
    stack = start_stack("sqlite", env, log_path)
    try:
        assert stack.request("GET", "/api/v1/ping").status_code == 200
    finally:
        assert stack.stop() == 0
    output = log_path.read_text()
    assert output.count(KEY_WARNING) == 1, output
    key_file = tmp_path / "secret_key"
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert key_file.read_text().strip() not in output  # the key itself is never logged
    warning = next(line for line in output.splitlines() if KEY_WARNING in line)
    assert "WARNING" in warning
    assert "DEVICEHUB_SECRET_KEY_FILE" in warning
