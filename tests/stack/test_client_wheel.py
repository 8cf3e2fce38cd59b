"""The client wheel works on its own: built from the tree as a fresh clone has it, installed
with its dependencies into a fresh virtualenv that has no server package, it drives a real
stack (tests/client_scenario.py), a subscription resuming after the server was killed.

The wheel is built as a user would, ``pip wheel --no-deps clients/python`` with build
isolation: the build requirements of clients/python/pyproject.toml come from the package
index (local mirrors here) and its setup.py generates ``devicehub_client.v1`` from
``proto/``, which a fresh clone has no generated code of. The virtualenv then installs the
wheel with its dependencies from the index too, so the wheel's declared dependencies are
shown to be enough (this environment's pip installs them, so the virtualenv holds nothing
else, not even pip). The server is a throwaway ``devicehub serve`` (SQLite) of this test's own.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from devicehub.testing.stack import Stack, start_stack, stop_process

from fresh_clone import fresh_clone, run_step
from stack_settings import ADMIN_PASSWORD, stack_env
from worker_processes import alive, wait_until, worker_pids

SCENARIO = Path(__file__).resolve().parents[1] / "client_scenario.py"
STEP_TIMEOUT = 300  # seconds for building the wheel, and for installing it
SCENARIO_WAIT = 120  # seconds the scenario may take to its next line of output
RUNTIME_DEPENDENCIES = {"grpcio", "protobuf", "googleapis-common-protos", "grpcio-status"}


def _run(argv: list[str | Path], **kwargs) -> str:
    return run_step(argv, STEP_TIMEOUT, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("client-wheel")
    source, dist = tmp / "source", tmp / "dist"
    fresh_clone(source)
    assert not (source / "clients/python/src/devicehub_client/v1").exists()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            dist,
            source / "clients/python",
        ]
    )
    (built,) = dist.glob("devicehub_client-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtualenv with the client wheel and its dependencies, nothing else."""
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    # This environment's pip installs into it: quicker than a pip of its own.
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", wheel])
    return venv


@pytest.fixture
def server(tmp_path) -> Iterator[list[Stack]]:
    """A throwaway stack; the list holds the running one (the test replaces it)."""
    env = stack_env(tmp_path, f"sqlite:///{tmp_path / 'devicehub.sqlite3'}")
    running = [start_stack("sqlite", env, tmp_path / "serve.log", ADMIN_PASSWORD)]
    yield running
    stop_process(running[0].process)


def test_wheel_holds_the_generated_stubs_and_declares_only_the_grpc_dependencies(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
        (entry_points_name,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points_name).decode()
    for stub in ("device_pb2.py", "device_pb2.pyi", "device_pb2_grpc.py", "__init__.py"):
        assert f"devicehub_client/v1/{stub}" in names
    assert "devicehub_client/py.typed" in names
    assert not [n for n in names if n.startswith("devicehub/")]
    parsed = [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]
    unconditional = {r.name for r in parsed if r.marker is None}
    extras = {r.name for r in parsed if r.marker is not None}
    assert unconditional == RUNTIME_DEPENDENCIES
    assert extras == {"typer", "rich"}  # the cli extra
    assert "dh = devicehub_client.cli:main" in entry_points
    assert "devicehub-cli = devicehub_client.cli:main" in entry_points


def test_installed_client_drives_the_stack_and_resumes_after_a_restart(venv, server, tmp_path):
    python = venv / "bin" / "python"
    where = _run([python, "-c", "import devicehub_client; print(devicehub_client.__file__)"])
    assert Path(where.strip()).is_relative_to(venv)
    no_server = subprocess.run(
        [python, "-c", "import devicehub"], capture_output=True, text=True, timeout=60
    )
    assert no_server.returncode != 0 and "ModuleNotFoundError" in no_server.stderr
    # Without the cli extra the command says what to install.
    no_cli = subprocess.run([venv / "bin" / "dh"], capture_output=True, text=True, timeout=60)
    assert no_cli.returncode == 2 and "devicehub-client[cli]" in no_cli.stderr

    # Out of the checkout, so nothing of it can be imported by accident.
    scenario = subprocess.Popen(
        [python, SCENARIO, server[0].grpc_target, ADMIN_PASSWORD],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in scenario.stdout], daemon=True
    ).start()

    def next_line() -> str:
        try:
            return lines.get(timeout=SCENARIO_WAIT).strip()
        except queue.Empty:
            scenario.kill()
            pytest.fail(
                f"the scenario said nothing for {SCENARIO_WAIT} s: {scenario.stderr.read()}"
            )

    try:
        assert next_line() == "DROP", scenario.stderr.read()
        stack = server[0]
        workers = worker_pids(stack.process.pid)
        stack.process.kill()  # no goodbye: its workers get SIGTERM from the kernel
        stack.process.wait(SCENARIO_WAIT)
        assert wait_until(lambda: not any(alive(pid) for pid in workers), SCENARIO_WAIT)
        server[0] = start_stack("sqlite", stack.env, stack.log_path)
        scenario.stdin.write("go on\n")
        scenario.stdin.flush()
        assert next_line() == "OK", scenario.stderr.read()
        assert scenario.wait(SCENARIO_WAIT) == 0
    finally:
        if scenario.poll() is None:
            scenario.kill()
            scenario.wait()
