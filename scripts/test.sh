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

# systemd-analyze verifies the units in deploy/systemd (tests/unit/test_systemd_unit.py),
# which then fails rather than skips without it.
if ! command -v systemd-analyze >/dev/null; then
  echo "==> installing systemd (systemd-analyze checks the service units)"
  (apt-get install -y -q systemd || (apt-get update -q && apt-get install -y -q systemd)) >/dev/null
fi
export DEVICEHUB_REQUIRE_SYSTEMD_ANALYZE=1

# Headless Chromium and its WebDriver render the API docs page (tests/stack/test_docs_page.py),
# which then fails rather than skips without them.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "==> installing chromium and chromium-driver (the API docs page's browser test)"
  (apt-get install -y -q chromium chromium-driver ||
    (apt-get update -q && apt-get install -y -q chromium chromium-driver)) >/dev/null
fi
export DEVICEHUB_REQUIRE_CHROMIUM=1

echo "==> PostgreSQL server"
.venv/bin/python -c 'from devicehub.testing.pgcluster import ensure_pg_installed; print(ensure_pg_installed())'

echo "==> buf lint / buf format"
.venv/bin/buf lint
.venv/bin/buf format --diff --exit-code proto

# buf breaking: the API in this working tree against the last landed one (the commit
# proto/LANDED names), so an incompatible proto change cannot land unnoticed, neither
# uncommitted nor in commits since. Both sides are built into descriptor images with the same
# build/third_party (google/api, google/rpc), which is generated, not committed, so a git
# input of buf would lack it.
echo "==> buf breaking (against the API of $(grep -v '^#' proto/LANDED | cut -c1-12))"
landed=$(grep -v '^#' proto/LANDED)
if ! git cat-file -e "$landed^{commit}" 2>/dev/null; then
  echo "the landed commit $landed (proto/LANDED) is not in this clone's history" >&2
  exit 1
fi
rm -rf build/landed && mkdir -p build/landed/build
git archive "$landed" proto buf.yaml | tar -x -C build/landed
cp -R build/third_party build/landed/build/third_party
.venv/bin/buf build -o build/current.binpb
.venv/bin/buf build build/landed -o build/landed.binpb
.venv/bin/buf breaking build/current.binpb --against build/landed.binpb

echo "==> ruff / mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy server/devicehub
.venv/bin/mypy clients/python/src

echo "==> import contracts"
.venv/bin/lint-imports --no-cache --no-logo

echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
