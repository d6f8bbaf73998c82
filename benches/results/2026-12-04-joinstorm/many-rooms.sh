#!/bin/bash
# many-rooms.sh BIN ROOMS [SIZE] [BASE]: ROOMS rooms of SIZE members (default 10), one
# emitter, 64 emits in flight, ROOMS x SIZE emits (each member gets about SIZE events); a fresh `herald serve --fsync always`.
# Prints the bench's line, the broker's peak resident memory and its open files at the end.
BIN=$1; ROOMS=$2; SIZE=${3:-10}; BASE=${4:-/tmp}
N=$((ROOMS * SIZE))
ulimit -n 20000
D=$(mktemp -d "$BASE/rooms.XXXX")
"$BIN" serve --data-dir "$D/data" --fsync always --no-http --listen 127.0.0.1:7498 \
  --max-connections 20000 --max-connections-per-address 20000 > "$D/log" 2>&1 &
P=$!
for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/7498) 2>/dev/null && break; sleep 0.1; done
base=$(awk '/VmRSS/ {print $2}' /proc/$P/status)
line=$("$BIN" bench rooms --server 127.0.0.1:7498 --consumers "$N" --rooms "$ROOMS" --inflight 64 \
  --count $((N)) --size 100 --fsync always 2>&1 | grep msgs)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$P/status)
fds=$(ls /proc/$P/fd | wc -l)
echo "$(basename "$BIN") rooms=$ROOMS size=$SIZE | $line | broker peak RSS $((hwm/1024)) MiB (at start $((base/1024)) MiB): $(( (hwm-base)/N )) KiB per member; $fds open files"
kill $P; wait $P 2>/dev/null; rm -rf "$D"
