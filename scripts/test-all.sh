#!/usr/bin/env bash
# The one test command (the README's, and CI's): every test of the project.
#   1. cargo test --workspace: the broker, the protocol crate (with the
#      byte-level vectors shared with the JavaScript client), the Rust client.
#   2. The JavaScript client (js/): its unit tests (the same vectors), its
#      integration tests against a real `herald serve`, and the chat page in
#      a real headless Chromium.
# It installs what the JavaScript tests need: their npm dev dependencies
# (npm ci, from js/package-lock.json) and, when run as root where apt-get
# exists, Debian's chromium; elsewhere it says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace"
cargo test --workspace

echo "== JavaScript: dev dependencies (npm ci)"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "error: the JavaScript tests need Node.js 20 or newer and npm: install them (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
(cd js && npm ci --no-audit --no-fund --loglevel=error)

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Debian's chromium (for the browser tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "error: the browser tests need Chromium at $CHROMIUM: install Debian's chromium package (sudo apt-get install chromium), or set CHROMIUM_PATH to a Chromium binary" >&2
    exit 1
  fi
fi

echo "== JavaScript: unit, integration and browser tests"
# The broker the JavaScript tests start (cargo test built it already).
cargo build --quiet --bin herald
cd js
# --test-force-exit: a test that timed out may leave a client reconnecting
# forever; the run must still end (and fail) instead of hanging CI.
node --test --test-concurrency=1 --test-force-exit test/unit/ test/integration/ test/browser/
