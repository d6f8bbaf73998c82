#!/usr/bin/env bash
# Interleaved A/B of the room group set (branch h-roomactor) against its base.
# usage: run.sh BEFORE_BIN AFTER_BIN OUTDIR
# The bench client is BEFORE_BIN for both (cli/bench.rs is the same in both).
set -u
BEFORE=$1 AFTER=$2 OUT=$3
PORT=${PORT:-7461}
HTTP=${HTTP:-7462}
mkdir -p "$OUT"

serve() { # BIN DIR EXTRA... ; prints pid
  local bin=$1 dir=$2; shift 2
  "$bin" serve --data-dir "$dir" --listen 127.0.0.1:$PORT --fsync always "$@" >"$dir.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$dir.log" && break; sleep 0.1; done
  echo $pid
}

# The broker is not this shell's child (started inside $(...)): wait until
# it is gone, so that its final saves do not overlap the next run.
stop() { kill "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

run_rooms() { # LABEL BIN ARGS...
  local label=$1 bin=$2; shift 2
  local dir; dir=$(mktemp -d /tmp/h-roomactor-bench.XXXX)
  local pid; pid=$(serve "$bin" "$dir" --no-http)
  echo "== $label $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) args: $*"
  "$BEFORE" bench rooms --server 127.0.0.1:$PORT "$@" 2>&1 | grep -v '^\s*$'
  # The broker's CPU time over its whole life (user + system), which the
  # other loads of a shared machine disturb less than its latency.
  local tck; tck=$(getconf CLK_TCK)
  awk -v t="$tck" '{ printf "  broker cpu: %.2f s (user %.2f, system %.2f)\n", ($14+$15)/t, $14/t, $15/t }' "/proc/$pid/stat"
  stop "$pid"; rm -rf "$dir" "$dir.log"
}

run_idle() { # LABEL BIN
  local label=$1 bin=$2
  local dir; dir=$(mktemp -d /tmp/h-roomactor-bench.XXXX)
  local pid; pid=$(serve "$bin" "$dir" --http 127.0.0.1:$HTTP --max-connections 20000 --max-connections-per-address 20000)
  echo "== $label $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd "$(dirname "$0")/../../../js" && node bench/ws-bench.mjs idle 127.0.0.1:$HTTP "$pid" 10000 10)
  stop "$pid"; rm -rf "$dir" "$dir.log"
}

what=${WHAT:-all}
for round in 1 2 3; do
  for b in before after; do
    bin=$BEFORE; [ $b = after ] && bin=$AFTER
    if [ "$what" = all ] || [ "$what" = throughput ]; then
      run_rooms "$b r$round" "$bin" --consumers 1000 --inflight 64 --count 8000 --size 100 >>"$OUT/rooms-1000.txt"
    fi
    if [ "$what" = all ] || [ "$what" = latency ]; then
      run_rooms "$b r$round" "$bin" --consumers 100 --inflight 64 --rate 1000 --count 10000 --size 100 >>"$OUT/rooms-100-rate1000.txt"
    fi
    if [ "$what" = all ] || [ "$what" = idle ]; then
      run_idle "$b r$round" "$bin" >>"$OUT/ws-idle.txt"
    fi
  done
done
