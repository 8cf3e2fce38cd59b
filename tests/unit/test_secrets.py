"""Secrets and TLS files from the environment (no stack): the ``_FILE`` form of every secret
setting, the certificate/key pairs, and the TLS that the Envoy config gets from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devicehub.config import Settings, read_secret
from devicehub.runtime.gateway import render_config

SECRET = "s3cr3t-value"
# Every secret setting, and the Settings field it fills.
SECRET_SETTINGS = [
    ("DEVICEHUB_SECRET_KEY", "secret_key"),
    ("DEVICEHUB_DATABASE_URL", "database_url"),
    ("DEVICEHUB_ALIMTALK_APP_KEY", "alimtalk_app_key"),
    ("DEVICEHUB_ALIMTALK_SECRET_KEY", "alimtalk_secret_key"),
    ("DEVICEHUB_RTC_APP_KEY", "rtc_app_key"),
]


def exit_message(env: dict[str, str], name: str = "DEVICEHUB_SECRET_KEY") -> str:
    with pytest.raises(SystemExit) as raised:
        read_secret(env, name)
    return str(raised.value)


# --- read_secret --------------------------------------------------------------------


def test_the_variable_itself_is_used_as_given():
    assert read_secret({"DEVICEHUB_SECRET_KEY": SECRET}, "DEVICEHUB_SECRET_KEY") == SECRET
    assert read_secret({}, "DEVICEHUB_SECRET_KEY") == ""


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", "\n\n"])
def test_a_file_gives_its_content_without_the_trailing_newline(tmp_path, ending):
    path = tmp_path / "secret_key"
    path.write_bytes(f"{SECRET}{ending}".encode())
    env = {"DEVICEHUB_SECRET_KEY_FILE": str(path)}
    assert read_secret(env, "DEVICEHUB_SECRET_KEY") == SECRET


def test_inner_whitespace_of_a_secret_file_is_kept(tmp_path):
    path = tmp_path / "secret_key"
    path.write_text(" two words \n")
    assert read_secret({"X_FILE": str(path)}, "X") == " two words "


def test_both_forms_at_once_are_refused_without_the_value(tmp_path):
    path = tmp_path / "secret_key"
    path.write_text("from-the-file")
    env = {"DEVICEHUB_SECRET_KEY": SECRET, "DEVICEHUB_SECRET_KEY_FILE": str(path)}
    message = exit_message(env)
    assert "DEVICEHUB_SECRET_KEY" in message
    assert "DEVICEHUB_SECRET_KEY_FILE" in message
    assert SECRET not in message
    assert "from-the-file" not in message


def test_a_missing_file_names_the_variable_and_the_path(tmp_path):
    path = tmp_path / "absent"
    message = exit_message({"DEVICEHUB_SECRET_KEY_FILE": str(path)})
    assert message.startswith("DEVICEHUB_SECRET_KEY_FILE: cannot read")
    assert str(path) in message


def test_an_unreadable_file_names_the_variable(tmp_path):
    message = exit_message({"DEVICEHUB_SECRET_KEY_FILE": str(tmp_path)})  # a directory
    assert message.startswith("DEVICEHUB_SECRET_KEY_FILE: cannot read")


def test_an_empty_file_is_refused_rather_than_read_as_no_secret(tmp_path):
    # An empty signing secret would silently fall back to a generated one.
    path = tmp_path / "secret_key"
    path.write_text("\n")
    message = exit_message({"DEVICEHUB_SECRET_KEY_FILE": str(path)})
    assert message == f"DEVICEHUB_SECRET_KEY_FILE: {path} is empty"


def test_a_binary_file_is_refused_without_its_bytes(tmp_path):
    path = tmp_path / "secret_key"
    path.write_bytes(b"\xffbinary\xfe")
    message = exit_message({"DEVICEHUB_SECRET_KEY_FILE": str(path)})
    assert message == f"DEVICEHUB_SECRET_KEY_FILE: {path} is not UTF-8 text"


@pytest.mark.parametrize(("name", "field"), SECRET_SETTINGS)
def test_every_secret_setting_reads_its_file(tmp_path, name, field):
    path = tmp_path / "credential"
    path.write_text(SECRET + "\n")
    settings = Settings.from_env({"DEVICEHUB_DATA_DIR": str(tmp_path), f"{name}_FILE": str(path)})
    assert getattr(settings, field) == SECRET


@pytest.mark.parametrize(("name", "field"), SECRET_SETTINGS)
def test_every_secret_setting_refuses_both_forms(tmp_path, name, field):
    path = tmp_path / "credential"
    path.write_text(SECRET)
    with pytest.raises(SystemExit):
        Settings.from_env({name: "inline", f"{name}_FILE": str(path)})


def test_secrets_stay_out_of_the_settings_repr(tmp_path):
    path = tmp_path / "credential"
    path.write_text(SECRET)
    env = {f"{name}_FILE": str(path) for name, _ in SECRET_SETTINGS}
    assert SECRET not in repr(Settings.from_env(env))


# --- TLS certificate and key files -----------------------------------------------------


def pem_files(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nkey-material\n")
    return cert, key


@pytest.mark.parametrize("prefix", ["DEVICEHUB_TLS", "DEVICEHUB_GRPC_TLS"])
def test_a_certificate_without_its_key_is_refused(tmp_path, prefix):
    cert, key = pem_files(tmp_path)
    for env in ({f"{prefix}_CERT_FILE": str(cert)}, {f"{prefix}_KEY_FILE": str(key)}):
        with pytest.raises(SystemExit) as raised:
            Settings.from_env(env)
        assert f"{prefix}_CERT_FILE and {prefix}_KEY_FILE go together" in str(raised.value)


def test_an_unreadable_certificate_names_its_variable(tmp_path):
    _, key = pem_files(tmp_path)
    env = {
        "DEVICEHUB_TLS_CERT_FILE": str(tmp_path / "absent.pem"),
        "DEVICEHUB_TLS_KEY_FILE": str(key),
    }
    with pytest.raises(SystemExit) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith("DEVICEHUB_TLS_CERT_FILE: cannot read")


def test_swapped_tls_files_are_refused(tmp_path):
    cert, key = pem_files(tmp_path)
    env = {"DEVICEHUB_TLS_CERT_FILE": str(key), "DEVICEHUB_TLS_KEY_FILE": str(cert)}
    with pytest.raises(SystemExit) as raised:
        Settings.from_env(env)
    assert str(raised.value) == f"DEVICEHUB_TLS_CERT_FILE: {key} holds no PEM certificate"
    env = {"DEVICEHUB_TLS_CERT_FILE": str(cert), "DEVICEHUB_TLS_KEY_FILE": str(cert)}
    with pytest.raises(SystemExit) as raised:
        Settings.from_env(env)
    assert str(raised.value) == f"DEVICEHUB_TLS_KEY_FILE: {cert} holds no PEM private key"


def test_tls_files_are_absolute_and_independent(tmp_path, monkeypatch):
    pem_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env(
        {"DEVICEHUB_TLS_CERT_FILE": "cert.pem", "DEVICEHUB_TLS_KEY_FILE": "key.pem"}
    )
    assert (settings.tls_cert_file, settings.tls_key_file) == (
        tmp_path / "cert.pem",
        tmp_path / "key.pem",
    )
    # The direct gRPC port has TLS only when asked for (its own pair of files).
    assert settings.grpc_tls_cert_file is None and settings.grpc_tls_key_file is None
    assert Settings.from_env({}).tls_cert_file is None


# --- the rendered Envoy listener ----------------------------------------------------------


def rendered_listener(settings: Settings) -> tuple[str, dict]:
    text = render_config(settings)
    return text, yaml.safe_load(text)["static_resources"]["listeners"][0]


def test_envoy_serves_tls_with_alpn_h2_and_http1(tmp_path):
    cert, key = pem_files(tmp_path)
    env = {
        "DEVICEHUB_DATA_DIR": str(tmp_path),
        "DEVICEHUB_TLS_CERT_FILE": str(cert),
        "DEVICEHUB_TLS_KEY_FILE": str(key),
    }
    text, listener = rendered_listener(Settings.from_env(env))
    socket = listener["filter_chains"][0]["transport_socket"]
    assert socket["typed_config"]["@type"].endswith("tls.v3.DownstreamTlsContext")
    context = socket["typed_config"]["common_tls_context"]
    assert context["alpn_protocols"] == ["h2", "http/1.1"]
    assert context["tls_certificates"] == [
        {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
    ]
    assert "key-material" not in text  # Envoy reads the key; the config only names it


def test_envoy_stays_plaintext_without_tls_files(tmp_path):
    _, listener = rendered_listener(Settings.from_env({"DEVICEHUB_DATA_DIR": str(tmp_path)}))
    assert "transport_socket" not in listener["filter_chains"][0]
