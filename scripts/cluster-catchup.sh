#!/usr/bin/env bash
# A follower 1 GiB behind catches up while the leader keeps confirming
# (docs/cluster.md): three nodes on this machine, a follower SIGKILLed, 1 GiB
# published to the leader, the follower restarted; prints the time until it
# holds everything (from `herald cluster status` on the leader) and W1 on the
# leader during the catch-up against W1 before it.
#   scripts/cluster-catchup.sh [MiB]     (env BIN; KEEP=1 keeps the nodes' folders and logs)
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
BIN=${BIN:-target/release/herald}
[ -x "$BIN" ] || cargo build --release -p herald-broker
peers="1=127.0.0.1:7601,2=127.0.0.1:7602,3=127.0.0.1:7603"
D=$(mktemp -d -p /var/tmp)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept $D" || rm -rf "$D"' EXIT
wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
start() { "$BIN" serve --listen 127.0.0.1:760$1 --data-dir "$D/n$1" --no-http --node-id $1 --peers $peers >> "$D/n$1.log" 2>&1 & pids[$1]=$!; wait_port 760$1; }
for i in 1 2 3; do start $i; done
timeout 30 "$BIN" bench pub --server 127.0.0.1:7601 --topic c --count 10 --size 100 > /dev/null 2>&1 || true
leader=""
for _ in $(seq 30); do
  for i in 1 2 3; do
    if timeout 20 "$BIN" bench pub --server 127.0.0.1:760$i --topic c --count 1000 --size 100 > /dev/null 2>&1; then leader=$i; break; fi
  done
  [ -n "$leader" ] && break; sleep 0.2
done
follower=$(( leader % 3 + 1 ))
echo "leader $leader, follower $follower"
echo "W1 on the leader before: $("$BIN" bench pub --server 127.0.0.1:760$leader --topic c --count 500000 --size 100 2>&1 | head -1)"
kill -9 "${pids[$follower]}"; wait "${pids[$follower]}" 2>/dev/null || true
echo "while the follower is down: $("$BIN" bench pub --server 127.0.0.1:760$leader --topic c --count $((MIB * 16)) --size 65536 2>&1 | head -1)"
start $follower
t0=$(date +%s.%N)
"$BIN" bench pub --server 127.0.0.1:760$leader --topic c --count 500000 --size 100 > "$D/during.txt" 2>&1 &
during=$!
# Caught up once the topic's leader, whichever node it is now, reports
# the follower 0 entries behind (bounded: 900 s).
lag_of_follower() {
  for i in 1 2 3; do
    "$BIN" cluster status --server 127.0.0.1:760$i --json 2>>"$D/status.err" | python3 -c "
import json,sys
i=json.load(sys.stdin)
g=[g for g in i['groups'] if g['name']=='topic/c'][0]
if g['leader']==i['node_id']:
    r=[r for r in g['replicas'] if r['node']==$follower][0]
    print(r['lag'] if r['lag'] is not None else -1)" 2>/dev/null || true
  done | head -1
}
for _ in $(seq 9000); do
  [ "$(lag_of_follower)" = 0 ] && break
  sleep 0.1
done
[ "$(lag_of_follower)" = 0 ] || { echo "the follower did not catch up in 900 s" >&2; for i in 1 2 3; do "$BIN" cluster status --server 127.0.0.1:760$i | grep -E "^topic/c" >&2; done; exit 1; }
t1=$(date +%s.%N)
wait $during
echo "W1 on the leader during the catch-up: $(head -1 "$D/during.txt")"
echo "follower caught up ${MIB} MiB in $(python3 -c "print(round($t1-$t0,2))") s (from its restart until the leader reports it 0 entries behind)"
for i in 1 2 3; do "$BIN" cluster status --server 127.0.0.1:760$i | grep -E "^topic/c"; done   # the term shows whether the group held still
du -sh "$D/n$follower"
