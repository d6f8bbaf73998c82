#!/bin/bash
# usage: run.sh BIN WORKLOAD   -> one JSON line: the bench's result plus the
# broker's and the bench client's CPU seconds (user+system, whole run,
# setup included) and the load average before the run.
# WORKLOAD: small (200 rooms of 10), lat (1,000 emits/s into 100), big (one
# room of 1,000), join (2,000 members join 200 rooms, 200 emits: setup cost)
BIN=$1; W=$2
case $W in
  small) ARGS="--consumers 2000 --rooms 200 --inflight 64 --count 20000" ;;
  lat)   ARGS="--consumers 100 --inflight 64 --rate 1000 --count 10000" ;;
  big)   ARGS="--consumers 1000 --inflight 64 --count 4000" ;;
  join)  ARGS="--consumers 2000 --rooms 200 --inflight 64 --count 200" ;;
esac
PORT=${PORT:-7391}
LOAD=$(cut -d' ' -f1 /proc/loadavg)
D=$(mktemp -d -p /var/tmp)
$BIN serve --data-dir $D/data --listen 127.0.0.1:$PORT --no-http --fsync always \
  --max-connections 20000 --max-connections-per-address 20000 > $D/log 2>&1 &
BP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
J=$(/usr/bin/time -f "%U %S" -o $D/time timeout 600 $BIN bench rooms --server 127.0.0.1:$PORT $ARGS --size 100 --json 2>$D/err | tail -1)
read CU CS < $D/time
TCK=$(getconf CLK_TCK)
read BU BS < <(awk -v t=$TCK '{print $14/t, $15/t}' /proc/$BP/stat)
echo "$J" | python3 -c "import json,sys; d=json.load(sys.stdin); d.update(workload='$W', bin='$BIN', load1=$LOAD, broker_cpu_s=round($BU+$BS,2), broker_sys_s=round($BS,2), client_cpu_s=round($CU+$CS,2)); print(json.dumps(d))" || { echo "FAILED $W $BIN"; tail -5 $D/err $D/log; }
kill $BP; wait $BP 2>/dev/null; rm -rf $D
