#!/bin/bash
# usage: lat2.sh BIN FSYNC CONSUMERS [extra bench args]; prints latency and CPU seconds (broker, client)
BIN=$1; FS=$2; C=$3; shift 3
D=$(mktemp -d /work/prof/data.XXXX)
$BIN serve --data-dir "$D" --fsync $FS --no-http --listen 127.0.0.1:7499 > $D.log 2>&1 &
P=$!
for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/7499) 2>/dev/null && break; sleep 0.1; done
c0=$(awk '{print $14+$15}' /proc/$P/stat)
/usr/bin/time -f "client_cpu %U %S" -o $D.time $BIN bench rooms --server 127.0.0.1:7499 --consumers $C --inflight 64 --rate ${RATE:-1000} --count ${COUNT:-10000} "$@" 2>&1 | grep -v "^$" | tail -2 | tr '\n' ' '
c1=$(awk '{print $14+$15}' /proc/$P/stat)
echo " broker_cpu $(( (c1-c0) ))cs $(cat $D.time)"
kill $P; wait $P 2>/dev/null; rm -rf "$D" $D.log $D.time
