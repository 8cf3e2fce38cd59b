#!/usr/bin/env bash
# Runs devicehub: sets up the environment if needed, applies migrations and starts the
# gRPC server and Envoy (REST). Configuration: the DEVICEHUB_* variables in README.md.
# Data (SQLite file, generated secret, rendered Envoy config) goes to this checkout's var/
# unless DEVICEHUB_DATA_DIR says otherwise. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/devicehub serve "$@"
