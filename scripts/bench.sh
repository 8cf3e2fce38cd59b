#!/usr/bin/env bash
# The benchmark (bench/run.py): a throwaway PostgreSQL cluster, devicehub on it, a seeded
# data set, every measurement beside its baseline in one run. Installs wrk if missing.
# Arguments go to bench/run.py (e.g. --scale 0.1 --duration 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if ! command -v wrk >/dev/null; then
  echo "==> installing wrk"
  (apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)) >/dev/null
fi
.venv/bin/python -c 'from devicehub.testing.pgcluster import ensure_pg_installed; ensure_pg_installed()'
exec .venv/bin/python bench/run.py "$@"
