#!/bin/bash
# ab-ws-catchup.sh ROUNDS MEMBERS COUNT BIN... : `js/bench/ws-bench.mjs catchup` (MEMBERS durable
# members of a room away while COUNT events are emitted, then all back at once, JavaScript clients
# over WebSocket) against each broker binary in turn, a fresh `herald serve --fsync always` and data
# folder per run; prints the bench's line and the broker's CPU time in centiseconds.
set -u
R=$1; M=$2; C=$3; shift 3
JS=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)/js
for r in $(seq "$R"); do for bin in "$@"; do
  d=$(mktemp -d -p /var/tmp cu.XXXX)
  "$bin" serve --data-dir "$d" --fsync always --listen 127.0.0.1:7793 --http 127.0.0.1:7794 >"$d/log" 2>&1 & bp=$!
  for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7794) 2>/dev/null && break; sleep 0.1; done
  c0=$(awk '{print $14+$15}' /proc/$bp/stat)
  out=$(cd "$JS" && STAGGER_MS=${STAGGER_MS:-0} node bench/ws-bench.mjs catchup 127.0.0.1:7794 "$M" "$C" 2>&1 | tail -1)
  c1=$(awk '{print $14+$15}' /proc/$bp/stat)
  kill $bp; wait $bp 2>/dev/null; rm -rf "$d"
  echo "$(basename "$bin") $out broker_cpu=$(( c1-c0 ))cs"
done; done
