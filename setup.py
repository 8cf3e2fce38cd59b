"""The wheel's build step: puts the generated code and the repository's data into the package.

setuptools packages ``server/devicehub``, but the package also needs files that live
elsewhere in the repository (see ``devicehub/resources.py``): the Envoy template, the Lua
filter and the migrations stay at the top level where they are edited, and the ``devicehub.v1``
stubs with the descriptor set are generated from ``proto/``, not committed. ``build_py``
therefore also

- generates ``devicehub/v1`` from ``proto/`` into the build directory, every time, so a wheel
  always matches its protos and a fresh clone needs no prior ``scripts/bootstrap.sh``
  (the checkout's own ``server/devicehub/v1`` is left out of the packages and never touched);
- copies ``resources.BUNDLED_PATHS`` into ``devicehub/bundled/`` in the build directory.

An editable install (``pip install -e``) does neither: it reads the checkout's files in place.
All other metadata is in pyproject.toml.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# The package's own modules (codegen, the list of bundled paths), from this source tree.
sys.path.insert(0, str(ROOT / "server"))

from devicehub import resources  # noqa: E402
from devicehub.runtime import codegen  # noqa: E402


class BuildWithPackageData(build_py):
    """build_py, plus the generated code and the bundled files (see above)."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        build_lib = Path(self.build_lib)
        codegen.generate(ROOT / "proto", build_lib)
        bundled = build_lib / "devicehub" / resources.BUNDLED_DIR.name
        if bundled.exists():  # from an earlier build in the same build directory
            shutil.rmtree(bundled)
        for relative in resources.BUNDLED_PATHS:
            source, target = ROOT / relative, bundled / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, target)


setup(cmdclass={"build_py": BuildWithPackageData})
