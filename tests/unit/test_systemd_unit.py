"""The systemd units in deploy/systemd: ``systemd-analyze verify`` accepts them, their
hardening stays at the exposure level they were written for, their stop timeout covers the
service's own shutdown bounds, and their credentials and environment file name settings
that ``config.Settings`` reads.

``systemd-analyze verify`` checks that ``ExecStart``'s program exists, and the units run
the package installed in /opt/devicehub/venv; the test verifies a copy whose ``ExecStart``
names this checkout's ``devicehub`` instead, the only line that differs. The test command
(scripts/test.sh) installs systemd-analyze when it is missing and requires it
(``DEVICEHUB_REQUIRE_SYSTEMD_ANALYZE``); elsewhere the checks that need it are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devicehub.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy" / "systemd"
UNITS = ("devicehub.service", "devicehub-gateway.service")
INSTALLED = "/opt/devicehub/venv/bin/devicehub"
DEVICEHUB = str(Path(sys.executable).parent / "devicehub")
# systemd-analyze security's exposure level (0-10) the units were written to stay under.
MAX_EXPOSURE = 2.0
# serve's own shutdown bounds: Envoy 10 s (gateway.Gateway.stop), each worker the grace +
# 15 s (workers.WorkerPool.stop), 5 s more to reap a killed one.
ENVOY_STOP = 10
WORKER_SLACK = 15 + 5


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    if os.environ.get("DEVICEHUB_REQUIRE_SYSTEMD_ANALYZE"):
        pytest.fail("systemd-analyze is required here (package systemd)")
    pytest.skip("systemd-analyze not installed (package systemd); scripts/test.sh installs it")


def _with_local_program(unit: str, tmp_path: Path) -> Path:
    text = (DEPLOY / unit).read_text()
    assert text.count(INSTALLED) == 1, f"{unit}: ExecStart should name {INSTALLED} once"
    copy = tmp_path / unit
    copy.write_text(text.replace(INSTALLED, DEVICEHUB))
    return copy


def _settings(unit: str) -> list[tuple[str, str]]:
    """(key, value) of every setting line of ``unit``, in order."""
    pairs = []
    for line in (DEPLOY / unit).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_accepts_the_unit(unit, tmp_path):
    analyze = _analyze()
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(_with_local_program(unit, tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Unknown keys and bad values are warnings with exit status 0: no output at all.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_hardening_keeps_the_exposure_level(unit, tmp_path):
    analyze = _analyze()
    result = subprocess.run(
        [
            analyze,
            "security",
            "--offline=yes",
            "--no-pager",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            str(_with_local_program(unit, tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    overall = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert overall, result.stdout[-2000:] + result.stderr
    assert result.returncode == 0, f"exposure {overall.group(1)} > {MAX_EXPOSURE}"


def test_stop_timeout_covers_the_shutdown_of_serve():
    settings = dict(_settings("devicehub.service"))
    timeout = int(settings["TimeoutStopSec"].removesuffix("s"))
    worst = ENVOY_STOP + Settings().shutdown_grace + WORKER_SLACK
    assert timeout > worst
    # Only serve gets the SIGTERM; it stops Envoy, then the workers, itself.
    assert settings["KillMode"] == "mixed"
    assert settings["KillSignal"] == "SIGTERM"
    assert settings["Restart"] == "on-failure"


def test_credentials_are_read_by_the_file_settings(tmp_path):
    """Every ``Environment=DEVICEHUB_X_FILE=%d/name`` (commented-out ones included) has its
    ``LoadCredential=name:...``, and Settings reads the secret from such a file."""
    text = (DEPLOY / "devicehub.service").read_text()
    credentials = dict(re.findall(r"^#?LoadCredential=(\w+):(\S+)$", text, re.M))
    files = dict(re.findall(r"^#?Environment=(DEVICEHUB_\w+_FILE)=%d/(\w+)$", text, re.M))
    assert {"secret_key", "database_url"} <= set(credentials)
    assert set(files.values()) == set(credentials)
    # Systemd copies the credentials into $CREDENTIALS_DIRECTORY (%d): the same here.
    env = {"DEVICEHUB_DATA_DIR": str(tmp_path)}
    values = {}
    for variable, name in files.items():
        if variable == "DEVICEHUB_TLS_KEY_FILE":  # a PEM pair, checked with its certificate
            continue
        value = f"{name}-value" if name != "database_url" else "postgresql://u:p@db/devicehub"
        (tmp_path / name).write_text(value + "\n")
        env[variable] = str(tmp_path / name)
        values[variable.removeprefix("DEVICEHUB_").removesuffix("_FILE").lower()] = value
    settings = Settings.from_env(env)
    for field, value in values.items():
        assert getattr(settings, field) == value, field


def test_environment_file_names_documented_settings():
    """Each variable of devicehub.env (also the commented examples) is in the README's
    settings table, and its active lines are valid settings."""
    readme = (REPO_ROOT / "README.md").read_text()
    lines = (DEPLOY / "devicehub.env").read_text().splitlines()
    active = {}
    for line in lines:
        match = re.match(r"^#?(DEVICEHUB_\w+)=(.*)$", line)
        if not match:
            continue
        assert f"`{match.group(1)}`" in readme, f"{match.group(1)} is not in README.md"
        if not line.startswith("#"):
            active[match.group(1)] = match.group(2)
    assert "DEVICEHUB_SECRET_KEY" not in active  # secrets are credentials
    settings = Settings.from_env(active)
    assert settings.http_host == active["DEVICEHUB_HTTP_HOST"]
