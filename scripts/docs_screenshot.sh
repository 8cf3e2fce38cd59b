#!/usr/bin/env bash
# A screenshot of the API docs page (GET /api/docs) as headless Chromium renders it, to look
# at by hand: runs the browser test of tests/stack/test_docs_page.py against a throwaway
# SQLite stack with DEVICEHUB_DOCS_SCREENSHOT set, which saves the page as a PNG once Swagger
# UI has listed the operations (and still fails if it did not).
#   scripts/docs_screenshot.sh [out.png]      (default: var/docs-screenshot.png)
# Needs Chromium and its WebDriver (Debian: apt-get install chromium chromium-driver; the
# test command installs them) and the checkout prepared by scripts/bootstrap.sh.
set -euo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/../var/docs-screenshot.png}")
cd "$(dirname "$0")/.."
mkdir -p "$(dirname "$out")"
rm -f "$out"
DEVICEHUB_DOCS_SCREENSHOT="$out" DEVICEHUB_REQUIRE_CHROMIUM=1 .venv/bin/python -m pytest \
  tests/stack/test_docs_page.py -k test_swagger_ui_lists_every_operation -q -p no:cacheprovider
echo "screenshot: $out"
