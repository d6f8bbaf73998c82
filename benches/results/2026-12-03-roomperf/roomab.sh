#!/bin/bash
# usage: roomab.sh BIN MEMBERS COUNT INFLIGHT
BIN=$1; M=$2; C=$3; W=$4
D=$(mktemp -d -p /var/tmp)
$BIN serve --data-dir $D/data --listen 127.0.0.1:7391 --no-http --fsync always > $D/log 2>&1 &
BP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7391) 2>/dev/null && break; sleep 0.1; done
timeout 300 $BIN bench rooms --server 127.0.0.1:7391 --consumers $M --inflight $W $EXTRA --count $C --size 100 --json 2>/dev/null | tail -1
kill $BP; wait $BP 2>/dev/null; rm -rf $D
