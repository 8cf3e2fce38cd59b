"""The ``dh`` command (clients/python, ``devicehub_client.cli``) run as a subprocess against
the real stack, as factory and support engineers run it: the venv's ``dh`` executable, the
target from ``DEVICEHUB_TARGET``, the tokens in a temporary ``DEVICEHUB_CONFIG_DIR``.

Rows the commands need but do not test (types, fleets, children, bound devices, uploaded
samples) are built through the API with the helpers the other stack tests use; what a
command printed is checked against what the API then holds. The help and usage tests need
no server and run once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest

from devicehub.testing.stack import Stack, unique

from api_client import create_batch, create_type, list_all, lux_setup, new_device
from firmware_setup import firmware_bytes, fleet
from stack_settings import ADMIN_PASSWORD, SECRET_KEY

DH = shutil.which("dh", path=str(Path(sys.executable).parent))
RUN_TIMEOUT = 60.0
USER_PASSWORD = "password-123"  # the password of Stack.new_user's accounts

# Every command of the tree: the help test checks each has help with an example, and that
# none was added without being listed here.
COMMANDS = {
    (),
    ("login",),
    ("whoami",),
    ("logout",),
    ("types",),
    *(("types", verb) for verb in ("list", "get", "create", "update", "delete")),
    ("batches",),
    *(("batches", verb) for verb in ("list", "get", "create", "update", "delete")),
    ("devices",),
    *(
        ("devices", verb)
        for verb in ("list", "get", "find", "create", "batch-create", "update", "delete")
    ),
    ("bind",),
    ("unbind",),
    ("set-primary",),
    ("bindings",),
    ("send",),
    *(("send", kind) for kind in ("text", "sing", "dance", "weather")),
    ("subscribe",),
    ("movement",),
    ("movement", "export"),
    ("firmware",),
    *(("firmware", verb) for verb in ("upload", "list", "delete")),
    ("rollout",),
    *(("rollout", verb) for verb in ("create", "status", "pause", "resume", "cancel", "list")),
}

# Walks the command tree and asks each command for its --help, in one process of its own
# (the CLI's modules are not the tests'; one process, not one per command, keeps it quick).
HELP_OF_EVERY_COMMAND = """
import json
import typer.main
from typer.testing import CliRunner
from devicehub_client.cli.app import app

def walk(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, [*path, name])

runner = CliRunner()
helps = []
for path in walk(typer.main.get_command(app), []):
    result = runner.invoke(app, [*path, "--help"], prog_name="dh")
    helps.append({"path": path, "exit_code": result.exit_code, "output": result.output})
print(json.dumps(helps))
"""


@dataclass
class Dh:
    """The ``dh`` command with one target and one config directory."""

    env: dict[str, str]
    config_dir: Path

    def argv(self, args: tuple[object, ...]) -> list[str]:
        assert DH, f"no dh in {Path(sys.executable).parent}: run scripts/bootstrap.sh"
        return [DH, *map(str, args)]

    def run(
        self, *args: object, stdin: str = "", timeout: float = RUN_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )

    def ok(self, *args: object, stdin: str = "") -> subprocess.CompletedProcess[str]:
        result = self.run(*args, stdin=stdin)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def json(self, *args: object, stdin: str = "") -> Any:
        return json.loads(self.ok("--json", *args, stdin=stdin).stdout)

    def fails(self, status: int, *args: object, stdin: str = "") -> str:
        """Runs a command that must exit with ``status``; its standard error."""
        result = self.run(*args, stdin=stdin)
        assert result.returncode == status, (args, result.stdout, result.stderr)
        return result.stderr

    def error(self, status: int, *args: object, stdin: str = "") -> str:
        """Runs a command that must fail with ``status``; its one ``error: ...`` line (what
        else standard error holds, such as a progress bar, comes before it)."""
        lines = self.fails(status, *args, stdin=stdin).splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], lines
        return errors[0]

    def popen(self, *args: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def login(self, username: str, password: str) -> subprocess.CompletedProcess[str]:
        return self.ok("login", username, "--password-stdin", stdin=password + "\n")

    @property
    def credentials(self) -> Path:
        return self.config_dir / "credentials.json"


def dh_for(target: str, config_dir: Path) -> Dh:
    # Nothing of the test run's own environment may choose the target or the tokens.
    env = {key: value for key, value in os.environ.items() if not key.startswith("DEVICEHUB_")}
    env.update(DEVICEHUB_TARGET=target, DEVICEHUB_CONFIG_DIR=str(config_dir), COLUMNS="200")
    return Dh(env, config_dir)


@pytest.fixture
def admin_dh(stack: Stack, tmp_path: Path) -> Dh:
    dh = dh_for(stack.grpc_target, tmp_path / "admin")
    dh.login("admin", ADMIN_PASSWORD)
    return dh


def user_dh(stack: Stack, config_dir: Path) -> tuple[Dh, dict]:
    """A fresh non-admin account, and dh logged in as it."""
    account, _ = stack.new_user()
    dh = dh_for(stack.grpc_target, config_dir)
    dh.login(account["username"], USER_PASSWORD)
    return dh, account


def only_on(stack: Stack, backend: str) -> None:
    if stack.backend != backend:
        pytest.skip(f"the CLI's own work: tested on {backend}")


# For the tests of the CLI's own work (options, output, the calls it makes), which the
# database cannot change: the services' own tests run on both backends. These tests are
# spread over the two to keep this file quick; the fixture comes first, so that a skipped
# test starts nothing.
@pytest.fixture
def on_sqlite(stack: Stack) -> None:
    only_on(stack, "sqlite")


@pytest.fixture
def on_postgresql(stack: Stack) -> None:
    only_on(stack, "postgresql")


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- without a server ---


def test_every_command_has_help_with_an_example(tmp_path):
    dh = dh_for("127.0.0.1:9", tmp_path)
    rendered = subprocess.run(
        [sys.executable, "-c", HELP_OF_EVERY_COMMAND],
        capture_output=True,
        text=True,
        env=dh.env,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    helps = {tuple(entry["path"]): entry for entry in json.loads(rendered.stdout)}
    assert set(helps) == COMMANDS
    for path, entry in helps.items():
        assert entry["exit_code"] == 0, entry
        usage, _, example = entry["output"].partition("Example:")
        assert f"Usage: dh {' '.join(path)}".rstrip() in usage, entry["output"]
        # The example shows the command itself.
        assert f"dh {' '.join(path)}" in example, entry["output"]
    # The installed command renders the same help.
    for path in [(), ("devices", "batch-create")]:
        assert dh.ok(*path, "--help").stdout == helps[path]["output"]


def test_usage_errors_exit_2_before_anything_is_sent(tmp_path):
    dh = dh_for("127.0.0.1:9", tmp_path / "config")  # nothing listens there
    assert "device_id" in dh.fails(2, "devices", "get", "forty-two")
    assert "no-such-command" in dh.fails(2, "no-such-command")
    assert dh.error(2, "whoami").startswith("error: not logged in to 127.0.0.1:9")
    # A stored login that is not needed yet: the plan is checked before any call.
    dh.credentials.parent.mkdir()
    unchecked = {"username": "a", "access_token": "x", "refresh_token": "y"}
    dh.credentials.write_text(json.dumps({"logins": {"127.0.0.1:9": unchecked}}))
    partial_range = ("devices", "batch-create", "--type", 1, "--batch", 1, "--count", 5)
    assert "--start-serial" in dh.error(2, *partial_range)
    overflowing = (*partial_range[:-2], "--start-serial", "98", "--count", 5, "--mac-prefix", "00")
    assert "exceed 2 digits" in dh.error(2, *overflowing)
    no_room = (*partial_range[:-2], "--start-serial", "00001", "--count", 256, "--mac-prefix")
    assert "serial 00256 does not fit" in dh.error(2, *no_room, "00:11:22:33:44")
    twice = tmp_path / "twice.csv"
    twice.write_text(
        "serial_number,mac_address\n00001,00:11:22:33:44:01\n00001,00:11:22:33:44:02\n"
    )
    stderr = dh.error(2, "devices", "batch-create", "--type", 1, "--batch", 1, "--csv", twice)
    assert "serial_number 00001 is on line 2 already" in stderr
    no_header = tmp_path / "no-header.csv"
    no_header.write_text("00001,00:11:22:33:44:01\n")
    stderr = dh.error(2, "devices", "batch-create", "--type", 1, "--batch", 1, "--csv", no_header)
    assert "serial_number,mac_address" in stderr
    export = ("movement", "export", "--device", 1, "--from", "yesterday", "--to", 5)
    assert "--from" in dh.fails(2, *export)


def test_without_the_cli_extra_the_command_says_what_to_install():
    without_typer = (
        "import sys; sys.modules['typer'] = None; from devicehub_client.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", without_typer], capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert result.returncode == 2
    assert "install devicehub-client[cli]" in result.stderr


# --- login and tokens ---


def test_login_stores_the_tokens_privately_and_never_prints_them(stack, tmp_path):
    dh = dh_for(stack.grpc_target, tmp_path / "config")
    assert dh.error(1, "login", "admin", "--password-stdin", stdin="wrong\n").startswith(
        "error: INVALID_CREDENTIALS: "
    )
    login = dh.login("admin", ADMIN_PASSWORD)
    assert stat.S_IMODE(dh.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(dh.config_dir.stat().st_mode) == 0o700
    stored = json.loads(dh.credentials.read_text())["logins"][stack.grpc_target]
    assert stored["username"] == "admin"
    me = dh.json("whoami")
    assert (me["username"], me["is_admin"]) == ("admin", True)
    table = dh.ok("whoami")
    for secret in (stored["access_token"], stored["refresh_token"], ADMIN_PASSWORD):
        for printed in (login.stdout, login.stderr, table.stdout, table.stderr):
            assert secret not in printed
    assert dh.json("logout") == {"target": stack.grpc_target, "logged_out": True}
    assert "dh login" in dh.error(2, "whoami")


def test_an_expired_access_token_is_refreshed_and_the_new_pair_stored(stack, tmp_path):
    dh = dh_for(stack.grpc_target, tmp_path / "config")
    dh.login("admin", ADMIN_PASSWORD)
    logins = json.loads(dh.credentials.read_text())
    stored = logins["logins"][stack.grpc_target]
    # The same claims as the stored token, expired a minute ago, signed with the stack's key.
    claims = jwt.decode(stored["access_token"], options={"verify_signature": False})
    now = int(time.time())
    claims.update(iat=now - 1000, exp=now - 60)
    expired = jwt.encode(claims, SECRET_KEY, algorithm="HS256")
    refused = stack.request("GET", "/api/v1/accounts/me", expired)
    assert (refused.status_code, refused.json()) == (401, {"detail": "Token is expired"})
    stored["access_token"] = expired
    dh.credentials.write_text(json.dumps(logins))

    assert dh.json("whoami")["username"] == "admin"
    renewed = json.loads(dh.credentials.read_text())["logins"][stack.grpc_target]
    assert renewed["access_token"] != expired
    assert stack.request("GET", "/api/v1/accounts/me", renewed["access_token"]).status_code == 200
    assert stat.S_IMODE(dh.credentials.stat().st_mode) == 0o600

    # A refresh token that no longer works means logging in again: a usage problem.
    renewed.update(access_token=expired, refresh_token="not-a-token")
    dh.credentials.write_text(json.dumps({"logins": {stack.grpc_target: renewed}}))
    assert "run `dh login` again" in dh.error(2, "whoami")


# --- the catalog ---


def test_types_batches_and_devices_crud(on_postgresql, stack, admin_dh, tmp_path):
    code = unique("C")
    created = admin_dh.json(
        "types", "create", "--name", "Speaker", "--code", code, "--description", "kitchen line"
    )
    type_id = created["id"]
    assert (created["code"], created["name"]) == (code, "Speaker")
    assert admin_dh.json("types", "get", type_id)["description"] == "kitchen line"
    assert type_id in [t["id"] for t in admin_dh.json("types", "list")]
    updated = admin_dh.json("types", "update", type_id, "--name", "Speaker 2")
    assert (updated["name"], updated["code"], updated["description"]) == (
        "Speaker 2",
        code,
        "kitchen line",
    )

    number = unique("B")
    batch = admin_dh.json(
        "batches",
        "create",
        "--type",
        type_id,
        "--number",
        number,
        "--date",
        "2024-07-01",
        "--quantity",
        10,
        "--description",
        "first",
    )
    batch_id = batch["id"]
    assert (batch["batch_number"], batch["device_type"], batch["quantity"]) == (number, type_id, 10)
    assert admin_dh.json("batches", "get", batch_id)["production_date"] == "2024-07-01"
    assert batch_id in [b["id"] for b in admin_dh.json("batches", "list")]
    changed = admin_dh.json("batches", "update", batch_id, "--quantity", 20)
    assert (changed["quantity"], changed["description"]) == (20, "first")

    device = admin_dh.json(
        "devices",
        "create",
        "--type",
        type_id,
        "--batch",
        batch_id,
        "--serial",
        "00001",
        "--mac",
        "0a-1b-2c-3d-4e-5f",
    )
    assert (device["device_code"], device["mac_address"]) == (code + "00001", "0A:1B:2C:3D:4E:5F")
    device_id = device["id"]
    assert admin_dh.json("devices", "get", device_id)["unique_id"] == device["unique_id"]
    moved = admin_dh.json("devices", "update", device_id, "--serial", "00002")
    assert (moved["device_code"], moved["mac_address"]) == (code + "00002", "0A:1B:2C:3D:4E:5F")
    assert [d["id"] for d in admin_dh.json("devices", "list", "--batch", batch_id)] == [device_id]
    table = admin_dh.ok("devices", "list", "--batch", batch_id).stdout
    assert code + "00002" in table and "0A:1B:2C:3D:4E:5F" in table

    assert admin_dh.json("devices", "delete", device_id) == {"deleted": "device", "id": device_id}
    missing = admin_dh.error(1, "devices", "get", device_id)
    assert missing.startswith("error: DEVICE_NOT_FOUND: ")
    admin_dh.ok("batches", "delete", batch_id)
    admin_dh.ok("types", "delete", type_id)
    assert admin_dh.error(1, "types", "get", type_id).startswith("error: DEVICE_TYPE_NOT_FOUND: ")

    user, _ = user_dh(stack, tmp_path / "user")
    refused = user.error(1, "types", "create", "--name", "x", "--code", unique("U"))
    assert refused.startswith("error: PERMISSION_DENIED: ")


def _mac(prefix: str, serial: int) -> str:
    """The MAC address batch_create derives: the prefix, then the serial in hex."""
    return prefix + "".join(f":{(serial >> shift) & 0xFF:02X}" for shift in (16, 8, 0))


def test_batch_create_from_flags_finishes_an_interrupted_run(stack, admin_dh):
    device_type = create_type(stack, stack.admin_token)
    batch = create_batch(stack, stack.admin_token, device_type["id"])
    prefix = ":".join(f"{b:02X}" for b in os.urandom(3))
    flags = (
        "devices",
        "batch-create",
        "--type",
        device_type["id"],
        "--batch",
        batch["id"],
        "--start-serial",
        "00001",
        "--count",
        2500,
        "--mac-prefix",
        prefix,
    )
    # An earlier run that got through one call of the middle: serials 01001 to 01300.
    earlier = stack.request(
        "POST",
        "/api/device/devices/batch_create/",
        stack.admin_token,
        json={
            "device_type": device_type["id"],
            "batch": batch["id"],
            "start_serial": "01001",
            "count": 300,
            "mac_prefix": prefix,
        },
    )
    assert earlier.status_code == 200, earlier.text

    summary = admin_dh.json(*flags)
    assert {key: summary[key] for key in ("planned", "skipped", "created")} == {
        "planned": 2500,
        "skipped": 300,
        "created": 2200,
    }
    devices = list_all(stack, f"/api/device/devices/?batch={batch['id']}", stack.admin_token)
    assert sorted(d["id"] for d in devices) == sorted(
        summary["device_ids"] + earlier.json()["data"]
    )
    assert sorted((d["serial_number"], d["mac_address"]) for d in devices) == [
        (f"{n:05d}", _mac(prefix, n)) for n in range(1, 2501)
    ]

    again = admin_dh.run(*flags)
    assert again.returncode == 0, again.stderr
    assert re.search(r"skipped\s+2500", again.stdout) and re.search(r"created\s+0", again.stdout)
    assert "registering devices" in again.stderr  # the progress bar
    assert (
        len(list_all(stack, f"/api/device/devices/?batch={batch['id']}", stack.admin_token)) == 2500
    )


def test_batch_create_from_csv_finishes_an_interrupted_run(stack, admin_dh, tmp_path):
    device_type = create_type(stack, stack.admin_token)
    batch = create_batch(stack, stack.admin_token, device_type["id"])
    prefix = ":".join(f"{b:02X}" for b in os.urandom(3))
    rows = [(f"F{n:05d}", _mac(prefix, n).lower().replace(":", "-")) for n in range(1, 2501)]

    def write(path: Path, chosen: list[tuple[str, str]]) -> Path:
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(("serial_number", "mac_address"))
            writer.writerows(chosen)
        return path

    every = write(tmp_path / "every.csv", rows)
    command = ("devices", "batch-create", "--type", device_type["id"], "--batch", batch["id"])
    batch_devices = f"/api/device/devices/?batch={batch['id']}"

    def registered() -> list[dict]:
        return list_all(stack, batch_devices, stack.admin_token)

    # A first run that got through 200 devices ...
    first = admin_dh.json(*command, "--csv", write(tmp_path / "first.csv", rows[:200]))
    assert (first["skipped"], first["created"]) == (0, 200)
    # ... and a second one interrupted with Ctrl-C once its first call (of three) went
    # through, or done by then: the outcome must be the same wherever the interruption falls.
    second = admin_dh.popen(*command, "--csv", every)
    deadline = time.monotonic() + RUN_TIMEOUT
    while second.poll() is None and len(registered()) <= 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second.send_signal(signal.SIGINT)
    _, stderr = second.communicate(timeout=RUN_TIMEOUT)
    # Interrupted while registering: 130 and a note saying how to finish. Interrupted once the
    # last call had gone through (printing the summary, or exiting): 130 from typer, or killed
    # by the signal, and then nothing is left to finish.
    assert second.returncode in (0, 130, -signal.SIGINT), stderr
    before = len(registered())
    if "run the same command again" in stderr:
        assert second.returncode == 130, stderr
    else:
        assert before == 2500, stderr

    final = admin_dh.json(*command, "--csv", every)
    # (A call in flight when the first was interrupted may have been stored since.)
    assert final["skipped"] >= before and final["skipped"] + final["created"] == 2500
    assert sorted((d["serial_number"], d["mac_address"]) for d in registered()) == sorted(
        (serial, mac.upper().replace("-", ":")) for serial, mac in rows
    )

    # A listed device that the batch has with another MAC address, or another serial:
    # refused before anything is registered.
    conflict = write(
        tmp_path / "conflict.csv",
        [
            ("F09998", "02:00:00:00:00:01"),
            ("F00001", "02:00:00:00:00:02"),
            ("F09999", rows[1][1]),
        ],
    )
    stderr = admin_dh.error(1, *command, "--csv", conflict)
    assert f"serial F00001 has {_mac(prefix, 1)}, not 02:00:00:00:00:02" in stderr
    assert f"{_mac(prefix, 2)} is serial F00002's, not F09999" in stderr
    assert "nothing was registered" in stderr
    assert len(registered()) == 2500


def test_find_a_device_by_mac_address(on_postgresql, stack, admin_dh):
    device = new_device(stack)
    found = admin_dh.json(
        "devices", "find", "--mac", device["mac_address"].lower().replace(":", "-")
    )
    assert [d["id"] for d in found] == [device["id"]]
    missing = admin_dh.error(1, "devices", "find", "--mac", "02:00:5E:00:00:00")
    assert missing.startswith("error: DEVICE_NOT_FOUND: ")


# --- bindings and messages ---


def test_bind_set_primary_and_unbind(on_sqlite, stack, tmp_path):
    first_device, second_device = new_device(stack), new_device(stack)
    dh, _ = user_dh(stack, tmp_path / "user")
    first = dh.json("bind", first_device["mac_address"], "--nickname", "Kitchen")
    assert (first["device"], first["nickname"], first["is_primary"]) == (
        first_device["id"],
        "Kitchen",
        True,
    )
    second = dh.json("bind", second_device["mac_address"])
    assert second.get("is_primary", False) is False  # protobuf JSON leaves false out

    assert dh.json("set-primary", second["id"])["is_primary"] is True
    primaries = {b["id"]: b.get("is_primary", False) for b in dh.json("bindings")}
    assert primaries == {first["id"]: False, second["id"]: True}
    table = dh.ok("bindings").stdout
    assert first_device["device_code"] in table and second_device["device_code"] in table

    assert dh.json("unbind", second["id"]) == {"unbound": second["id"]}
    # Unbinding the primary device makes the oldest remaining one primary.
    assert [(b["id"], b["is_primary"]) for b in dh.json("bindings")] == [(first["id"], True)]
    assert dh.error(1, "unbind", second["id"]).startswith("error: BINDING_NOT_FOUND: ")
    assert dh.error(1, "bind", "02:00:5E:00:00:01").startswith("error: DEVICE_NOT_FOUND: ")


def test_send_every_kind_and_subscribe(on_sqlite, stack, admin_dh, tmp_path):
    dh, account = user_dh(stack, tmp_path / "user")
    dh.ok("bind", new_device(stack)["mac_address"])
    # Subscribed before anything is sent: the messages arrive live (a later subscription
    # would get them replayed; either way each once, in id order).
    subscriber = dh.popen("--json", "subscribe", "--count", 4)
    admin_dh.ok("send", "text", "hello", "--user", account["id"])
    dh.ok("send", "sing", "--song", "Moon River", "--artist", "Audrey Hepburn")
    dh.ok("send", "dance", "--dance", "Robot", "--style", "electronic", "--duration", "30秒")
    sent = dh.json("send", "weather", "--city", "北京")
    assert sent["data"]["weather"] == "晴"
    stdout, stderr = subscriber.communicate(timeout=RUN_TIMEOUT)
    assert subscriber.returncode == 0, stderr
    messages = json_lines(stdout)
    assert [m["type"] for m in messages] == ["text", "sing", "dance", "weather"]
    assert [int(m["id"]) for m in messages] == sorted(int(m["id"]) for m in messages)
    assert messages[0]["message"] == {"content": "hello"}
    assert messages[1]["message"] == {"song": "Moon River", "artist": "Audrey Hepburn"}
    assert messages[2]["message"]["duration"] == "30秒"
    assert messages[3]["message"]["city"] == "北京"
    assert {m["user_id"] for m in messages} == {str(account["id"])}

    # They were acknowledged: a new subscription from the start gets only what came since.
    dh.ok("send", "text", "again")
    line = dh.ok("subscribe", "--count", 1).stdout
    assert "text" in line and "content=again" in line and "hello" not in line
    # --no-ack leaves a message pending: the next subscription gets it again.
    dh.ok("send", "text", "third")
    unacked = json_lines(dh.ok("--json", "subscribe", "--count", 1, "--no-ack").stdout)
    replayed = json_lines(dh.ok("--json", "subscribe", "--count", 1).stdout)
    assert unacked == replayed and replayed[0]["message"] == {"content": "third"}
    assert dh.error(1, "send", "weather", "--city", "Atlantis").startswith(
        "error: CITY_NOT_FOUND: "
    )


# --- movement ---


def test_movement_export_pages_through_the_range(stack, tmp_path):
    lux = lux_setup(stack)
    start = 1_700_000_000
    samples = [{"val": (ts * 7) % 1000, "timestamp": ts} for ts in range(start, start + 2500)]
    uploaded = stack.request(
        "POST",
        "/api/v1/lux/device/movement",
        lux.token,
        json={
            "real_user_id": lux.child["id"],
            "device_id": lux.device["id"],
            "movement_data": samples,
        },
    )
    assert uploaded.status_code == 200, uploaded.text
    dh = dh_for(stack.grpc_target, tmp_path / "config")
    dh.login(lux.account["username"], USER_PASSWORD)

    exported = tmp_path / "movement.csv"
    result = dh.ok(
        "movement",
        "export",
        "--device",
        lux.device["id"],
        "--from",
        start + 100,
        "--to",
        start + 2100,
        "--page-size",
        300,
        "--output",
        exported,
    )
    assert "exported 2000 samples" in result.stderr
    with exported.open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(int(r["timestamp"]), int(r["val"])) for r in rows] == [
        (s["timestamp"], s["val"]) for s in samples[100:2100]
    ]
    moment = datetime.fromtimestamp(start + 100, UTC)
    assert rows[0]["time"] == moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert not list(tmp_path.glob("*.partial"))

    # ISO 8601 times, the child named, standard output.
    iso = (
        "--from",
        moment.isoformat(),
        "--to",
        datetime.fromtimestamp(start + 110, UTC).isoformat(),
    )
    stdout = dh.ok(
        "movement", "export", "--device", lux.device["id"], "--child", lux.child["id"], *iso
    ).stdout
    assert [int(r["timestamp"]) for r in csv.DictReader(stdout.splitlines())] == list(
        range(start + 100, start + 110)
    )
    stranger = new_device(stack)
    stderr = dh.error(1, "movement", "export", "--device", stranger["id"], *iso)
    assert "bound to none of your children" in stderr


# --- firmware ---


def test_firmware_upload_list_and_rollout_lifecycle(on_sqlite, stack, admin_dh, tmp_path):
    devices = fleet(stack, 4)
    type_id = devices.device_type["id"]
    binary = firmware_bytes(700_000, seed=14)  # three stream pieces of 256 KiB
    digest = hashlib.sha256(binary).hexdigest()
    image = tmp_path / "fw.bin"
    image.write_bytes(binary)

    shown = admin_dh.ok(
        "firmware", "upload", image, "--type", type_id, "--version", "1.0.0", "--title", "first"
    )
    assert f"sha256 computed here: {digest}" in shown.stdout
    assert f"sha256 of the server: {digest}" in shown.stdout
    uploaded = admin_dh.json(
        "firmware",
        "upload",
        image,
        "--type",
        type_id,
        "--version",
        "1.0.1",
        "--min-version",
        "1.0.0",
    )
    package = uploaded["package"]
    assert (uploaded["computed_sha256"], package["sha256"], package["size_bytes"]) == (
        digest,
        digest,
        len(binary),
    )
    taken = admin_dh.error(1, "firmware", "upload", image, "--type", type_id, "--version", "1.0.0")
    assert taken.startswith("error: FIRMWARE_VERSION_TAKEN: ")
    listed = admin_dh.json("firmware", "list", "--type", type_id)
    assert [p["version"] for p in listed] == ["1.0.0", "1.0.1"]

    first_package = listed[0]["id"]
    rollout = admin_dh.json("rollout", "create", "--package", first_package, "--groups", "50,100")
    rollout_id = rollout["id"]
    assert (rollout["state"], rollout["group_percents"], rollout["device_count"]) == (
        "running",
        [50, 100],
        4,
    )
    watcher = admin_dh.popen(
        "--json", "rollout", "status", rollout_id, "--watch", "--interval", 0.2
    )
    assert admin_dh.json("rollout", "pause", rollout_id)["state"] == "paused"
    assert admin_dh.json("rollout", "status", rollout_id)["state"] == "paused"
    assert admin_dh.json("rollout", "resume", rollout_id)["state"] == "running"
    canceled = admin_dh.json("rollout", "cancel", rollout_id)
    assert canceled["state"] == "canceled"
    assert canceled["counts"].get("canceled", 0) + canceled["counts"].get("skipped", 0) == 4

    stdout, stderr = watcher.communicate(timeout=RUN_TIMEOUT)
    assert watcher.returncode == 0, stderr
    polls = json_lines(stdout)
    assert polls[-1]["state"] == "canceled"
    assert {poll["id"] for poll in polls} == {rollout_id}

    table = admin_dh.ok("rollout", "status", rollout_id).stdout
    assert f"rollout {rollout_id}: package {first_package} (1.0.0), canceled, 4 devices" in table
    assert "queued" in table and "canceled" in table
    assert [r["id"] for r in admin_dh.json("rollout", "list")].count(rollout_id) == 1
    assert admin_dh.error(1, "rollout", "pause", rollout_id).startswith(
        "error: FIRMWARE_ROLLOUT_STATE: "
    )
