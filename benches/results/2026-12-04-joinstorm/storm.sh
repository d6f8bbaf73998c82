#!/bin/bash
# storm.sh BIN N [BASE]: N members join one room (each its own connection, 64 joins
# in flight), then 10 emits; prints the wall time, the broker's CPU (user+sys) and its
# resident memory at the end.
# A fresh `herald serve --fsync always` on a data folder under BASE (default /tmp).
BIN=$1; N=$2; BASE=${3:-/tmp}
ulimit -n 20000
D=$(mktemp -d "$BASE/storm.XXXX")
"$BIN" serve --data-dir "$D/data" --fsync always --no-http --listen 127.0.0.1:7499 \
  --max-connections 20000 --max-connections-per-address 20000 > "$D/log" 2>&1 &
P=$!
for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/7499) 2>/dev/null && break; sleep 0.1; done
c0=$(awk '{print $14+$15}' /proc/$P/stat)
t0=$(date +%s.%N)
"$BIN" bench rooms --server 127.0.0.1:7499 --consumers "$N" --rooms 1 --inflight 64 --count 10 > /dev/null 2>&1
t1=$(date +%s.%N)
c1=$(awk '{print $14+$15}' /proc/$P/stat)
rss=$(awk '/VmRSS/ {print $2}' /proc/$P/status)
printf "%s n=%d wall=%.2f s broker_cpu=%.2f s rss=%d MiB\n" "$(basename "$BIN")" "$N" "$(echo "$t1 - $t0" | bc)" "$(echo "($c1 - $c0)/$(getconf CLK_TCK)" | bc -l)" $((rss/1024))
kill $P; wait $P 2>/dev/null; rm -rf "$D"
