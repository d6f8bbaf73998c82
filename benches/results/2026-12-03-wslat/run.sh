#!/usr/bin/env bash
# Publish-to-deliver at 20,000 msg/s over TCP and over WebSocket (issue 12):
# one fresh release `herald serve --fsync always` (TCP 127.0.0.1:7392, HTTP
# 127.0.0.1:7481), then `herald bench pubsub` against each address in turn,
# ROUNDS rounds, TCP and WebSocket alternating (the order flipped every
# round). Each run publishes 200,000 messages of 100 bytes at 20,000/s
# (10 s) to a fresh topic whose fsync policy is FSYNC (default always);
# EXTRA adds flags to every run (e.g. --batch 1).
# Prints one JSON line per run, prefixed by the transport.
# Usage: run.sh [ROUNDS] [EXTRA...]      (run from the repository root, after
#        cargo build --release -p herald-broker; H=path/to/herald to override)
set -euo pipefail
ROUNDS=${1:-3}
shift || true
H=${H:-${CARGO_TARGET_DIR:-target}/release/herald}
DIR=$(mktemp -d -p "${TMPDIR:-/var/tmp}" herald-wslat.XXXXXX)
"$H" serve --fsync always --listen 127.0.0.1:7392 --http 127.0.0.1:7481 \
    --data-dir "$DIR/data" > "$DIR/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do grep -q "http listening on" "$DIR/serve.log" && break; sleep 0.1; done
grep -q "http listening on" "$DIR/serve.log" || { cat "$DIR/serve.log"; exit 1; }
bench() {
    echo "$1 $("$H" bench pubsub --server "$2" --json --count 200000 --size 100 \
        --rate 20000 --fsync "${FSYNC:-always}" "${@:3}")"
}
for r in $(seq "$ROUNDS"); do
    if (( r % 2 )); then
        bench tcp 127.0.0.1:7392 "$@"; bench ws ws://127.0.0.1:7481/ws "$@"
    else
        bench ws ws://127.0.0.1:7481/ws "$@"; bench tcp 127.0.0.1:7392 "$@"
    fi
done
