#!/bin/bash
# joins2.sh SERVE_BIN BENCH_BIN N : N members join N/10 rooms, then N/10 emits; wall and broker CPU
SB=$1; BB=$2; N=${3:-2000}
D=$(mktemp -d /work/prof/data.XXXX)
$SB serve --data-dir "$D" --fsync always --no-http --listen 127.0.0.1:7499 --max-connections 20000 --max-connections-per-address 20000 > $D.log 2>&1 &
P=$!
for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/7499) 2>/dev/null && break; sleep 0.1; done
c0=$(awk '{print $14+$15}' /proc/$P/stat)
t0=$(date +%s.%N)
$BB bench rooms --server 127.0.0.1:7499 --consumers $N --rooms $((N/10)) --inflight 64 --count $((N/10)) 2>&1 | grep msgs | tr -d '\n'
t1=$(date +%s.%N)
c1=$(awk '{print $14+$15}' /proc/$P/stat)
echo " | wall $(echo "$t1 - $t0" | bc) s, broker cpu $(( c1-c0 )) cs for $N joins"
kill $P; wait $P 2>/dev/null; if [ -z "$KEEP" ]; then rm -rf "$D" $D.log; fi
