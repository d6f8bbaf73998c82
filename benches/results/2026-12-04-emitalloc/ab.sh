#!/bin/bash
# ab.sh ROUNDS MEMBERS WINDOW COUNT BIN... : the rooms bench with each broker binary in turn,
# a fresh `herald serve --fsync always` and data folder per run; prints deliveries/s and the CPU
# seconds of the bench client and of the broker. Each binary runs its own bench client.
set -u
R=$1; N=$2; W=$3; C=$4; shift 4
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
for r in $(seq "$R"); do for bin in "$@"; do
  rm -rf "$D/data"; "$bin" serve --listen 127.0.0.1:7693 --data-dir "$D/data" --fsync always > "$D/serve.log" 2>&1 & SP=$!
  for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7693) 2>/dev/null && break; sleep 0.1; done
  out=$( { /usr/bin/time -f "%U %S" "$bin" bench rooms --server 127.0.0.1:7693 --consumers "$N" --producers 1 --inflight "$W" --count "$C" --size 100 --fsync always 2>&1; } 2>&1 )
  rate=$(echo "$out" | grep -oE "[0-9]+ msgs/s" | cut -d' ' -f1); cc=$(echo "$out" | tail -1 | awk '{print $1+$2}')
  bc=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14+$15)/hz }' /proc/$SP/stat)
  kill $SP; wait $SP 2>/dev/null
  echo "$(basename "$bin") n=$N w=$W rate=$rate client_cpu=$cc broker_cpu=$bc"
done; done
