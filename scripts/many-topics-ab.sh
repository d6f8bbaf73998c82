#!/usr/bin/env bash
# "10,000 topics without slowing publish to one of them", measured so that
# only the broker differs: two `herald serve` on the same file system, one
# holding 10,000 extra topics (created first, then `sync`), the other none.
# W1 (1,000,000 x 100 B, fsync always) runs against them alternately, so
# both see the same disk and file-system state (creating 30,000 files slows
# every fsync on the file system for a while, whoever asks).
# Usage: scripts/many-topics-ab.sh [ROUNDS] [TOPICS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
TOPICS=${2:-10000}
cargo build --release --bin herald >/dev/null
H=./target/release/herald
DIR=$(mktemp -d -p "${TMPDIR:-/var/tmp}" herald-topics.XXXXXX)
$H serve --listen 127.0.0.1:7491 --data-dir "$DIR/plain" > "$DIR/plain.log" 2>&1 &
P1=$!
$H serve --listen 127.0.0.1:7492 --data-dir "$DIR/many" > "$DIR/many.log" 2>&1 &
P2=$!
trap 'kill $P1 $P2 2>/dev/null; wait $P1 $P2 2>/dev/null; rm -rf "$DIR"' EXIT
for log in plain many; do
  for _ in $(seq 50); do grep -q "listening on" "$DIR/$log.log" && break; sleep 0.1; done
done
python3 scripts/many-topics.py "$TOPICS" 7492
sync
w1() {
  $H bench pub --server "127.0.0.1:$1" --count 1000000 --size 100 --json \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["msgs_per_sec"]))'
}
for i in $(seq "$ROUNDS"); do
  echo "round $i: plain $(w1 7491) msg/s, with $TOPICS topics $(w1 7492) msg/s"
done
echo "open files of the broker with $TOPICS topics: $(ls /proc/$P2/fd | wc -l)"
