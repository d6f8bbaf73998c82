#!/usr/bin/env bash
# W1 on a replicated topic (three nodes on this machine) against one node
# alone, same binary, rounds alternating (docs/cluster.md, docs/performance.md).
#   scripts/bench-cluster.sh [ROUNDS] [COUNT]        (env BIN, EXTRA: more `herald bench pub` flags)
# Prints one line per run: "single rN {json}" / "cluster rN {json}".
# Uses ports 7600-7603 on 127.0.0.1 and a fresh data folder per run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
COUNT=${2:-1000000}
BIN=${BIN:-target/release/herald}
EXTRA=${EXTRA:---size 100}
[ -x "$BIN" ] || cargo build --release -p herald-broker
peers="1=127.0.0.1:7601,2=127.0.0.1:7602,3=127.0.0.1:7603"
wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
for r in $(seq "$ROUNDS"); do
  D=$(mktemp -d -p /var/tmp)
  trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$D"' EXIT
  "$BIN" serve --listen 127.0.0.1:7600 --data-dir "$D/single" --no-http > "$D/single.log" 2>&1 &
  sp=$!
  wait_port 7600
  echo "single r$r $(uptime | sed 's/.*load/load/') $("$BIN" bench pub --server 127.0.0.1:7600 --count "$COUNT" $EXTRA --json 2>/dev/null | tail -1)"
  kill $sp; wait $sp 2>/dev/null || true
  pids=()
  for i in 1 2 3; do
    "$BIN" serve --listen 127.0.0.1:760$i --data-dir "$D/n$i" --no-http --node-id $i --peers $peers > "$D/n$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 1 2 3; do wait_port 760$i; done
  # The bench creates the topic through node 1 (replicated), then runs
  # against the topic's leader: the node whose short run succeeds.
  timeout 30 "$BIN" bench pub --server 127.0.0.1:7601 --topic w1 --count 10 $EXTRA > /dev/null 2>&1 || true
  leader=""
  for _ in $(seq 30); do
    for i in 1 2 3; do
      if timeout 20 "$BIN" bench pub --server 127.0.0.1:760$i --topic w1 --count 1000 $EXTRA > /dev/null 2>&1; then leader=760$i; break; fi
    done
    [ -n "$leader" ] && break
    sleep 0.2
  done
  [ -n "$leader" ] || { echo "no leader found" >&2; exit 1; }
  echo "cluster r$r $(uptime | sed 's/.*load/load/') $("$BIN" bench pub --server 127.0.0.1:$leader --topic w1 --count "$COUNT" $EXTRA --json 2>/dev/null | tail -1)"
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$D"
done
