#!/usr/bin/env bash
# The status page in headless Chromium (tests/browser/status_page.mjs). Needs Debian's
# `chromium` and Node with npm; .ci/run installs them. Installs playwright-core from the lock
# file (no browser download: the test uses /usr/bin/chromium), builds the meridian binary, runs
# the test. `--update-screenshot` also copies the final screenshot to docs/status-page.png.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"
# playwright-core would fetch nothing anyway; the variable makes sure no install hook tries.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
(cd "$repo" && cargo build --locked --quiet --bin meridian)
shots="$(mktemp -d)"
trap '[ -n "${KEEP_SHOTS:-}" ] || rm -rf "$shots"' EXIT
status=0
node status_page.mjs --bin "$repo/target/debug/meridian" --screenshot-dir "$shots" || status=$?
if [ "${1:-}" = "--update-screenshot" ] && [ -f "$shots/status-page.png" ]; then
  cp "$shots/status-page.png" "$repo/docs/status-page.png"
  echo "updated docs/status-page.png"
fi
exit "$status"
