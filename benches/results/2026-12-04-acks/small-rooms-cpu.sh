#!/bin/bash
# small-rooms-cpu.sh BIN WINDOW ROOMS COUNT: ROOMS rooms of 10 members, one emitter with WINDOW
# emits in flight, COUNT emits spread over the rooms, on a fresh `herald serve --fsync always`.
# Prints the bench's lines, the bench client's CPU (user+system) and the broker's CPU seconds.
BIN=$1; W=$2; ROOMS=${3:-200}; COUNT=${4:-30000}
D=$(mktemp -d /tmp/rooms.XXXX)
ulimit -n 20000
"$BIN" serve --data-dir "$D/data" --listen 127.0.0.1:7811 --no-http --fsync always \
  --max-connections 20000 --max-connections-per-address 20000 > "$D/serve.log" 2>&1 &
SP=$!
for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/7811) 2>/dev/null && break; sleep 0.1; done
/usr/bin/time -f "client cpu %U+%S wall %e" "$BIN" bench rooms --server 127.0.0.1:7811 \
  --consumers $((ROOMS*10)) --rooms "$ROOMS" --producers 1 --inflight "$W" --count "$COUNT" \
  --size 100 --fsync always 2>&1 | grep -E "msgs|client cpu|p99"
awk -v hz="$(getconf CLK_TCK)" '{ printf "broker cpu %.2f s\n", ($14+$15)/hz }' /proc/$SP/stat
kill $SP; wait $SP 2>/dev/null
rm -rf "$D"
