"""The wheel's build step: generates ``devicehub_client.v1`` from the repository's protos.

The stubs are not committed. ``build_py`` writes them into the build directory every time
(``generate.py``), from ``../../proto`` of the checkout this directory sits in, so a wheel
always matches its protos and a fresh clone needs no prior ``scripts/bootstrap.sh``. An
editable install (``pip install -e``) reads ``src/`` in place; ``generate.py`` writes the
checkout's stubs there.

The runtime dependencies are declared here rather than in pyproject.toml because their lower
bounds depend on the build: generated stubs check at import time that grpcio and protobuf are
at least as new as the grpcio-tools (and its protoc) that wrote them, and grpcio-tools
declares exactly those requirements, so the wheel takes them over from it.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import generate  # noqa: E402


def _runtime_requirements() -> list[str]:
    """grpcio, protobuf, googleapis-common-protos and grpcio-status, at least as new as the
    generated code needs."""
    generator = metadata.version("grpcio-tools")
    needs = {
        Requirement(text).name: text
        for text in metadata.requires("grpcio-tools") or []
        if Requirement(text).marker is None
    }
    return [
        needs.get("grpcio", f"grpcio>={generator}"),
        needs.get("protobuf", "protobuf>=5.27"),
        "googleapis-common-protos>=1.63",
        # Its releases follow grpcio's; an older one would hold grpcio back.
        f"grpcio-status>={generator}",
    ]


class BuildWithStubs(build_py):
    """build_py, plus the generated ``devicehub_client.v1`` (see above)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        if not generate.CHECKOUT_PROTO_ROOT.is_dir():
            raise RuntimeError(
                f"no {generate.CHECKOUT_PROTO_ROOT}: the client is built from a devicehub checkout"
            )
        generate.generate(generate.CHECKOUT_PROTO_ROOT, Path(self.build_lib))


setup(cmdclass={"build_py": BuildWithStubs}, install_requires=_runtime_requirements())
