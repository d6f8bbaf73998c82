#!/bin/bash
# usage: prof2.sh BIN OUT -- bench args...   perf over the whole run; prints wall times of setup and steady phases
BIN=$1; OUT=$2; shift 3
D=$(mktemp -d -p /var/tmp)
$BIN serve --data-dir $D/data --listen 127.0.0.1:7391 --no-http --fsync always --max-connections 20000 --max-connections-per-address 20000 > $D/log 2>&1 &
BP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7391) 2>/dev/null && break; sleep 0.1; done
perf record -F 499 -g -o $OUT.data -p $BP 2>/dev/null &
P1=$!
T0=$(date +%s.%N)
timeout 600 $BIN bench rooms --server 127.0.0.1:7391 --json "$@" > $D/bench.out 2>$D/bench.err
T1=$(date +%s.%N)
kill -INT $P1; wait $P1
tail -1 $D/bench.out
python3 -c "import json;d=json.loads(open('$D/bench.out').read().splitlines()[-1]);tot=$T1-$T0;print('total',round(tot,1),'steady',round(d['secs'],1),'steady_frac',round(d['secs']/tot,2))"
TCK=$(getconf CLK_TCK)
awk -v t=$TCK '{print "broker cpu user sys", $14/t, $15/t}' /proc/$BP/stat
kill $BP; wait $BP 2>/dev/null; rm -rf $D
