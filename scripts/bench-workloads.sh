#!/usr/bin/env bash
# Runs the peer workloads W1-W4 (see ../shared/peers/README.md) against a
# `herald serve` child on this machine, RUNS times each, and prints one JSON
# result per run (from `herald bench --json`) prefixed by the workload id.
# Usage: scripts/bench-workloads.sh [RUNS]     (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cargo build --release --bin herald >/dev/null
H=./target/release/herald
DIR=$(mktemp -d -p "${TMPDIR:-/var/tmp}" herald-bench.XXXXXX)
PORT=${HERALD_BENCH_PORT:-7499}
$H serve --listen 127.0.0.1:$PORT --data-dir "$DIR" > "$DIR/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do grep -q "listening on" "$DIR/serve.log" && break; sleep 0.1; done
S=(--server 127.0.0.1:$PORT --json)
run() { local id=$1; shift; for _ in $(seq "$RUNS"); do echo "$id $($H bench "$@" "${S[@]}")"; done; }
run W1       pub    --count 1000000 --size 100
run W2       pub    --count 200000  --size 1024
run W3       sub    --count 500000  --size 100
run W3-lat   pubsub --count 200000  --size 100 --rate 20000 --fsync always
run W3-lat-never pubsub --count 200000 --size 100 --rate 20000 --fsync never
run W4       fanout --count 1000000 --size 100 --consumers 4
