"""What the wheel tests share: running a build or install step, and a copy of the
working tree as a fresh clone has it (the wheels must build from that alone)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from devicehub import resources

CHECKOUT = resources.CHECKOUT_ROOT


def run_step(argv: list[str | Path], timeout: float, **kwargs) -> str:
    """Runs one step, failing the test with its output unless it exits 0; its stdout."""
    result = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def fresh_clone(target: Path) -> None:
    """Copies the files a clone of the working tree has: tracked and untracked ones that
    .gitignore does not exclude (so no generated stubs, build/ or var/)."""
    listed = run_step(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        timeout=60,
        cwd=CHECKOUT,
    )
    for name in filter(None, listed.split("\0")):
        source = CHECKOUT / name
        if source.is_file():  # not a file deleted in the working tree
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
