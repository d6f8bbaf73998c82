#!/bin/bash
# usage: run.sh BIN ARGS... ; fresh broker, bench rooms, prints json + cpu
H=${H:-/work/target-me/release/herald}
cd /tmp/prof; rm -rf d
$H serve --data-dir d --fsync ${FSYNC:-always} --no-http --listen 127.0.0.1:7601 --max-connections 20000 --max-connections-per-address 20000 > serve.log 2>&1 & SP=$!
for i in $(seq 100); do grep -q listening serve.log && break; sleep 0.1; done
if [ -n "$PERF" ]; then (sleep ${PERFDELAY:-3}; perf record -F 999 -g -p $SP -o broker.data -- sleep 5 >/dev/null 2>&1) & fi
/usr/bin/time -f "client_cpu %U %S" $H bench rooms --server 127.0.0.1:7601 "$@" --json 2>&1 | grep -v "^$" | tail -2
awk "{print \"broker_cpu_s\", (\$14+\$15)/100}" /proc/$SP/stat
kill $SP; wait $SP 2>/dev/null
