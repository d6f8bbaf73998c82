#!/bin/bash
# usage: profile.sh BIN MEMBERS COUNT INFLIGHT OUT  (env EXTRA as roomab.sh)
# perf record -g of the broker and of the bench client during one run.
BIN=$1; M=$2; C=$3; W=$4; OUT=$5
D=$(mktemp -d -p /var/tmp)
$BIN serve --data-dir $D/data --listen 127.0.0.1:7391 --no-http --fsync always > $D/log 2>&1 &
BP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7391) 2>/dev/null && break; sleep 0.1; done
timeout 300 $BIN bench rooms --server 127.0.0.1:7391 --consumers $M --inflight $W $EXTRA --count $C --size 100 --json > $D/bench.out 2>/dev/null &
CP=$!
sleep ${SETUP:-3}
perf record -g -o $OUT.broker.data -p $BP -- sleep ${SECS:-5} 2>/dev/null &
P1=$!
CLI=$(pgrep -P $CP herald || echo $CP)
perf record -g -o $OUT.client.data -p $CLI -- sleep ${SECS:-5} 2>/dev/null &
P2=$!
wait $CP
tail -1 $D/bench.out
wait $P1 $P2
kill $BP; wait $BP 2>/dev/null; rm -rf $D
