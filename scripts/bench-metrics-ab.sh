#!/usr/bin/env bash
# The cost of recording metrics on W1 (publish 1,000,000 x 100 B, each
# confirmed): two `herald serve` children in one sitting, this tree's
# release build ("metrics") and a baseline binary built from a commit
# without the metrics ("base"), W1 against each alternately, RUNS rounds,
# the order flipped every round. One JSON line per run, prefixed by the
# broker's name. Nobody scrapes /metrics meanwhile: this measures the
# recording on the hot path.
# Usage: scripts/bench-metrics-ab.sh BASE_HERALD_BINARY [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1
RUNS=${2:-5}
cargo build --release --bin herald >/dev/null
H=./target/release/herald
DIR=$(mktemp -d -p "${TMPDIR:-/var/tmp}" herald-bench-metrics.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; rm -rf "$DIR"' EXIT

serve() { # name binary port
  local name=$1 bin=$2 port=$3
  mkdir -p "$DIR/$name"
  "$bin" serve --listen 127.0.0.1:$port --no-http --data-dir "$DIR/$name/data" > "$DIR/$name/log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do grep -q "listening on" "$DIR/$name/log" && return; sleep 0.1; done
  echo "broker $name did not start" >&2; cat "$DIR/$name/log" >&2; exit 1
}
serve metrics "$H" 7494
serve base "$BASE" 7495
declare -A PORT=([metrics]=7494 [base]=7495)
for i in $(seq "$RUNS"); do
  order="metrics base"; [ $((i % 2)) -eq 0 ] && order="base metrics"
  for c in $order; do
    echo "$c W1 $($H bench pub --count 1000000 --size 100 --json --server 127.0.0.1:${PORT[$c]})"
  done
done
