#!/usr/bin/env bash
# The whole test suite: proto lint and format, Python lint, format and types, then pytest
# against the real stack (gRPC server, Envoy, SQLite and a throwaway PostgreSQL cluster
# that the tests start and stop). Installs what is missing, PostgreSQL included.
# Extra arguments go to pytest (e.g. scripts/test.sh -k device_type).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

if ! command -v wrk >/dev/null; then
  echo "==> installing wrk (the benchmark's REST load generator; its smoke run is a test)"
  (apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)) >/dev/null
fi

echo "==> PostgreSQL server"
.venv/bin/python -c 'from devicehub.testing.pgcluster import ensure_pg_installed; print(ensure_pg_installed())'

echo "==> buf lint / buf format"
.venv/bin/buf lint
.venv/bin/buf format --diff --exit-code proto

echo "==> ruff / mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy server/devicehub

echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
