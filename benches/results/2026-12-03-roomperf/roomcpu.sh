#!/bin/bash
# usage: roomcpu.sh BIN MEMBERS COUNT INFLIGHT  (env EXTRA as roomab.sh)
# roomab.sh plus the CPU seconds (user+system) the broker and the bench
# client used for the whole run, setup included: on a shared machine the
# rates move with the load, the CPU per run much less.
BIN=$1; M=$2; C=$3; W=$4
D=$(mktemp -d -p /var/tmp)
$BIN serve --data-dir $D/data --listen 127.0.0.1:7391 --no-http --fsync always > $D/log 2>&1 &
BP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7391) 2>/dev/null && break; sleep 0.1; done
J=$(/usr/bin/time -f "%U %S" -o $D/time timeout 300 $BIN bench rooms --server 127.0.0.1:7391 --consumers $M --inflight $W $EXTRA --count $C --size 100 --json 2>/dev/null | tail -1)
read CU CS < $D/time
TCK=$(getconf CLK_TCK)
read BU BS < <(awk -v t=$TCK '{print $14/t, $15/t}' /proc/$BP/stat)
echo "$J" | python3 -c "import json,sys; d=json.load(sys.stdin); d['broker_cpu_s']=round($BU+$BS,2); d['broker_sys_s']=round($BS,2); d['client_cpu_s']=round($CU+$CS,2); print(json.dumps(d))"
kill $BP; wait $BP 2>/dev/null; rm -rf $D
