#!/bin/bash
BIN=$1; MODE=$2; shift 2
D=$(mktemp -d /work/prof/data.XXXX)
$BIN serve --data-dir "$D" --fsync always --no-http --listen 127.0.0.1:7499 > $D.log 2>&1 &
P=$!
for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/7499) 2>/dev/null && break; sleep 0.1; done
$BIN bench $MODE --server 127.0.0.1:7499 "$@" 2>&1 | grep -E "msgs/s|p99" | tr '\n' ' '; echo
kill $P; wait $P 2>/dev/null; rm -rf "$D" $D.log
