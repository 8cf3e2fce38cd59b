"""Start and stop a throwaway PostgreSQL server for tests and benchmarks.

Standard library only. Each :class:`ThrowawayCluster` gets its own temp directory (data dir,
unix socket dir, server log) and a free TCP port on 127.0.0.1, so several clusters can run side
by side and none of them touches a system cluster such as Debian's default one on port 5432.
Durability is switched off for speed by default (``DURABLE_SETTINGS`` keeps PostgreSQL's
own defaults, for fault tests and benchmarks that must measure production behaviour): never
keep data you care about in one.

    with ThrowawayCluster() as cluster:
        connect(cluster.url)  # postgresql://postgres@127.0.0.1:PORT/devicehub

``python -m devicehub.testing.pgcluster [--seconds N]`` starts one for manual debugging.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self
from urllib.parse import quote

PG_USER = "postgres"
PG_TOOLS = ("initdb", "pg_ctl", "postgres")
# Speed over durability: a throwaway cluster never has to survive a crash.
DEFAULT_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}
# PostgreSQL's own defaults for durability: what a production database runs with.
DURABLE_SETTINGS: dict[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}
# Set by ThrowawayCluster itself because `url` and `port` depend on them.
MANAGED_SETTINGS = ("listen_addresses", "port", "unix_socket_directories")


def _has_tools(bindir: Path) -> bool:
    return all((bindir / tool).is_file() for tool in PG_TOOLS)


def find_pg_bindir() -> Path | None:
    """Return the directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    Debian installs the server binaries in ``/usr/lib/postgresql/<N>/bin``, which is not on
    PATH, so the highest N there wins; otherwise use wherever ``initdb`` is on PATH (also
    following a symlink, since ``postgres`` itself is often not linked next to it).
    """
    versions = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if d.parent.name.isdigit()]
    for bindir in sorted(versions, key=lambda d: int(d.parent.name), reverse=True):
        if _has_tools(bindir):
            return bindir
    initdb = shutil.which("initdb")
    if initdb:
        for bindir in (Path(initdb).parent, Path(initdb).resolve().parent):
            if _has_tools(bindir):
                return bindir
    return None


def ensure_pg_installed() -> Path:
    """Return the PostgreSQL bindir, installing Debian's ``postgresql`` package if needed.

    The package may create and start a default cluster on port 5432; we neither use it nor
    collide with it, because every ThrowawayCluster runs on its own free port.
    """
    bindir = find_pg_bindir()
    if bindir is not None:
        return bindir
    if os.geteuid() != 0:
        raise RuntimeError("PostgreSQL not found: run `apt-get install postgresql` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "postgresql"], check=True, env=env)
    bindir = find_pg_bindir()
    if bindir is None:
        raise RuntimeError("installed package postgresql but found no initdb/pg_ctl/postgres")
    return bindir


def _ensure_pg_user() -> None:
    """Make sure the unprivileged OS user exists; the Debian package normally creates it."""
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        cmd = ["useradd", "--system", "--no-create-home", PG_USER]
        if subprocess.run(cmd, check=False, capture_output=True).returncode != 0:
            msg = f"initdb refuses to run as root and OS user {PG_USER!r} could not be created"
            raise RuntimeError(msg) from None


def _free_port() -> int:
    """Ask the kernel for a free port (another process could grab it first; unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temp dir; :meth:`stop` removes every trace of it.

    ``settings`` adds to or overrides DEFAULT_SETTINGS (``postgres -c name=value`` options);
    the MANAGED_SETTINGS cannot be overridden. The cluster's superuser is ``postgres`` with
    trust authentication, so URLs carry no password.
    """

    def __init__(self, dbname: str = "devicehub", settings: dict[str, str] | None = None) -> None:
        managed = sorted(set(settings or {}) & set(MANAGED_SETTINGS))
        if managed:
            raise ValueError(f"settings {managed} are managed by ThrowawayCluster")
        self.dbname = dbname
        self.host = "127.0.0.1"
        self.port = 0
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self.bindir = Path()
        self.basedir = Path()
        self.datadir = self.sockdir = self.logfile = Path()
        self._running = False

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DBNAME`` for the main database."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        """The URL of any database in this cluster."""
        return f"postgresql://{PG_USER}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def start(self) -> Self:
        """Run initdb, start the server on a free port and create ``dbname``."""
        if self._running:
            raise RuntimeError("cluster already running")
        self.bindir = ensure_pg_installed()
        self.basedir = Path(tempfile.mkdtemp(prefix="devicehub-pg-"))
        self.datadir, self.sockdir = self.basedir / "data", self.basedir / "sock"
        self.logfile = self.basedir / "server.log"
        self._running = True  # from here on, stop() has something to clean up
        atexit.register(self.stop)
        try:
            self.sockdir.mkdir()
            if os.geteuid() == 0:  # the server will run as PG_USER, who must own its files
                _ensure_pg_user()
                for path in (self.basedir, self.sockdir):
                    shutil.chown(path, PG_USER, PG_USER)
            initdb = [self.bindir / "initdb", "-D", self.datadir, "-A", "trust", "-U", PG_USER]
            self._check("initdb", *initdb, "--encoding=UTF8", "--locale=C", "--no-sync")
            self.port = _free_port()
            opts = {**self.settings, "listen_addresses": self.host, "port": str(self.port)}
            opts["unix_socket_directories"] = str(self.sockdir)
            # pg_ctl hands -o to the server through /bin/sh, hence the quoting.
            options = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in opts.items())
            pg_ctl = [self.bindir / "pg_ctl", "-w", "-t", "60", "-D", self.datadir]
            self._check("pg_ctl start", *pg_ctl, "-l", self.logfile, "-o", options, "start")
            self.create_database(self.dbname)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            log = self._log_tail(40)
            self.stop()
            raise RuntimeError(f"{exc}\n--- last 40 lines of the server log ---\n{log}") from exc
        return self

    def create_database(self, name: str) -> str:
        """Create another database in this cluster and return its URL."""
        self.psql('CREATE DATABASE "' + name.replace('"', '""') + '"')
        return self.url_for(name)

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL with ``psql`` over the unix socket; return its unaligned, tuples-only output."""
        psql = self.bindir / "psql"  # Debian: /usr/bin/psql is a wrapper script around this one
        exe = str(psql) if psql.is_file() else shutil.which("psql")
        if exe is None:
            raise RuntimeError("psql not found in the PostgreSQL bindir or on PATH")
        conn = ["-h", self.sockdir, "-p", str(self.port), "-U", PG_USER, "-d", dbname]
        return self._check("psql", exe, "-XqAt", "-v", "ON_ERROR_STOP=1", *conn, "-c", sql)

    def restart(self, mode: str = "fast") -> None:
        """Restarts the server on the same port, for fault tests.

        ``mode`` is pg_ctl's shutdown mode: ``fast`` (clients are disconnected, a clean
        shutdown) or ``immediate`` (like a crash: the restart runs crash recovery).
        """
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        pg_ctl = [self.bindir / "pg_ctl", "-w", "-t", "60", "-D", self.datadir]
        self._check("pg_ctl restart", *pg_ctl, "-l", self.logfile, "-m", mode, "restart")

    def stop_server(self, mode: str = "fast") -> None:
        """Stops the server and keeps its data, for fault tests (the database is down until
        ``restart()``, which starts a stopped server with its previous options)."""
        pg_ctl = [self.bindir / "pg_ctl", "-w", "-t", "60", "-D", self.datadir]
        self._check("pg_ctl stop", *pg_ctl, "-m", mode, "stop")

    def stop(self) -> None:
        """Stop the server and delete the temp dir. Idempotent; also registered with atexit."""
        if not self._running:
            return
        self._running = False
        atexit.unregister(self.stop)
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            pg_ctl = [self.bindir / "pg_ctl", "-w", "-t", "30", "-D", self.datadir]
            with contextlib.suppress(subprocess.SubprocessError):
                self._run(*pg_ctl, "-m", "fast", "stop", timeout=60)
            try:  # still running? Ask for an immediate shutdown, if that pid really is ours.
                pid = int(pidfile.read_text().split()[0])
                if str(self.datadir) in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGQUIT)
                    time.sleep(1)
            except (OSError, ValueError, IndexError):
                pass
        shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, *cmd: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool, as PG_USER when we are root (initdb and postgres refuse root).

        PG* variables are dropped so the caller's environment cannot point us at another server.
        """
        argv = [str(arg) for arg in cmd]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", PG_USER, "--", *argv]
        cwd, env = self.basedir, {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return subprocess.run(
            argv, cwd=cwd, env=env, timeout=timeout, capture_output=True, text=True, check=False
        )

    def _check(self, what: str, *cmd: object) -> str:
        """:meth:`_run`, raising RuntimeError with the tool's output if it fails."""
        proc = self._run(*cmd)
        if proc.returncode != 0:
            raise RuntimeError(f"{what} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    def _log_tail(self, lines: int) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Run a throwaway PostgreSQL server.")
    parser.add_argument("--seconds", type=float, help="stop after N seconds instead of Ctrl-C")
    parser.add_argument("--dbname", default="devicehub")
    args = parser.parse_args()

    def _exit(*_: object) -> None:
        raise SystemExit(0)  # unwinds the with-block, so `kill` cleans up too

    signal.signal(signal.SIGTERM, _exit)
    with ThrowawayCluster(dbname=args.dbname) as cluster:
        print(cluster.url, flush=True)
        try:
            if args.seconds is None:
                signal.pause()
            else:
                time.sleep(args.seconds)
        except KeyboardInterrupt:
            pass
