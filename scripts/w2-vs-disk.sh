#!/usr/bin/env bash
# W2 (200,000 x 1 KiB, every publish fsynced) against the disk's synced
# sequential bandwidth (fio, 1 MiB writes, fdatasync every 16 MiB), measured
# alternately on the same file system so each ratio compares one sitting.
# fio runs buffered (the issue's reference) and with --direct=1.
# Usage: scripts/w2-vs-disk.sh [PAIRS]   (needs fio: apt-get install fio)
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:-3}
command -v fio >/dev/null || { echo "fio is not installed (apt-get install fio)" >&2; exit 1; }
cargo build --release --bin herald >/dev/null
DIR=$(mktemp -d -p "${TMPDIR:-/var/tmp}" herald-w2.XXXXXX)
PORT=${HERALD_BENCH_PORT:-7498}
./target/release/herald serve --listen 127.0.0.1:$PORT --data-dir "$DIR/data" > "$DIR/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do grep -q "listening on" "$DIR/serve.log" && break; sleep 0.1; done
for i in $(seq "$PAIRS"); do
  disk=$(fio --name=w2disk --directory="$DIR" --rw=write --ioengine=psync --bs=1M --size=1G --fdatasync=16 \
    --output-format=json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"]/1e6)')
  rm -f "$DIR"/w2disk*
  # The same with O_DIRECT, which is how Herald writes big groups under
  # `always` (docs/storage.md): the device's own synced bandwidth.
  direct=$(fio --name=w2disk --directory="$DIR" --rw=write --ioengine=psync --bs=1M --size=1G --fdatasync=16 --direct=1 \
    --output-format=json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"]/1e6)')
  rm -f "$DIR"/w2disk*
  herald=$(./target/release/herald bench pub --server 127.0.0.1:$PORT --count 200000 --size 1024 --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["mib_per_sec"]*1.048576)')
  python3 -c "print('pair $i: disk %.0f MB/s (direct %.0f), herald W2 %.0f MB/s, ratio %.0f%% (of direct %.0f%%)' % ($disk, $direct, $herald, 100*$herald/$disk, 100*$herald/$direct))"
done
