#!/bin/bash
# sub-ab.sh ROUNDS PREFETCH COUNT BIN...: bench sub (pre-filled backlog consumed by one group member) per broker
R=$1; P=$2; C=$3; shift 3
for r in $(seq $R); do for bin in "$@"; do
  d=$(mktemp -d -p /var/tmp sub.XXXX)
  $bin serve --data-dir $d --fsync always --listen 127.0.0.1:7793 --http 127.0.0.1:7794 >$d/log 2>&1 & bp=$!
  for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7793) 2>/dev/null && break; sleep 0.1; done
  out=$("${BENCH_BIN:?the herald binary whose bench client to use}" bench sub --server 127.0.0.1:7793 --prefetch $P --count $C 2>&1 | grep -oE "[0-9]+ msgs/s" | head -1)
  c1=$(awk '{print $14+$15}' /proc/$bp/stat)
  kill $bp; wait $bp 2>/dev/null; rm -rf $d
  echo "$(basename $bin) prefetch=$P $out broker_cpu_total=${c1}cs"
done; done
