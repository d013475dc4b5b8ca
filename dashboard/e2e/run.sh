#!/usr/bin/env bash
# Runs the browser tests against the `serve_memory` example (MemoryBackend fed by the
# simulator, with the hostile fixture planted), behind a token so that the login flow is
# exercised too. To test another server instead, run the suite directly:
#   GATEWATCH_DASHBOARD_URL=http://127.0.0.1:8080/ GATEWATCH_DASHBOARD_TOKEN=... \
#     node --test dashboard/e2e/dashboard.test.mjs
# Needs: Debian's chromium (/usr/bin/chromium, or CHROMIUM_PATH), node >= 20, and
# `npm ci` in this folder (playwright-core only; never `npx playwright install`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

[[ -d "$here/node_modules/playwright-core" ]] || (cd "$here" && npm ci --no-audit --no-fund)
cargo build -p gatewatch-dashboard --example serve_memory
target="${CARGO_TARGET_DIR:-$root/target}"

hostile="${GATEWATCH_E2E_HOSTILE:-$here/fixtures/hostile.json}"
token="e2e-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
log="$(mktemp -t gatewatch-dash.XXXXXX.log)"
GATEWATCH_DASHBOARD_TOKEN="$token" "$target/debug/examples/serve_memory" \
  --listen 127.0.0.1:0 --hostile "$hostile" --tick-ms 1000 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

url=""
for _ in $(seq 1 300); do
  url="$(sed -n 's/^dashboard: \(http:[^ ]*\)$/\1/p' "$log" | head -1)"
  [[ -n "$url" ]] && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "serve_memory exited" >&2; exit 1; }
  sleep 0.2
done
[[ -n "$url" ]] || { cat "$log" >&2; echo "serve_memory did not start" >&2; exit 1; }
echo "dashboard under test: $url"

GATEWATCH_DASHBOARD_URL="$url" GATEWATCH_DASHBOARD_TOKEN="$token" \
GATEWATCH_E2E_HOSTILE="$hostile" \
GATEWATCH_E2E_SCREENSHOTS="${GATEWATCH_E2E_SCREENSHOTS:-$here/screenshots}" \
  node --test "$here/dashboard.test.mjs"
