#!/bin/bash
# catchup-ab.sh ROUNDS MEMBERS COUNT BIN... : fresh broker per run, bench catchup by the newest bench client
R=$1; M=$2; C=$3; shift 3
for r in $(seq $R); do for bin in "$@"; do
  d=$(mktemp -d -p /var/tmp cu.XXXX)
  $bin serve --data-dir $d --fsync always --listen 127.0.0.1:7793 --http 127.0.0.1:7794 >$d/log 2>&1 & bp=$!
  for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7793) 2>/dev/null && break; sleep 0.1; done
  c0=$(awk '{print $14+$15}' /proc/$bp/stat)
  out=$("${BENCH_BIN:?the herald binary whose bench client to use}" bench catchup --server 127.0.0.1:7793 --consumers $M --count $C --json 2>&1 | tail -1)
  c1=$(awk '{print $14+$15}' /proc/$bp/stat)
  kill $bp; wait $bp 2>/dev/null; rm -rf $d
  echo "$(basename $bin) $(echo "$out" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(f"{j[\"caught_up\"]} in {j[\"secs\"]:.2f}s = {j[\"caught_up\"]/j[\"secs\"]:.0f}/s")' 2>/dev/null || echo "$out") broker_cpu=$(( (c1-c0) ))cs"
done; done
