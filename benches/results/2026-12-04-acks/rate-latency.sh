#!/bin/bash
# rate-latency.sh ROUNDS BIN...: 1,000 emits/s into a room of 100 members (64 in flight, 10,000 emits),
# each binary in turn on a fresh `herald serve --fsync always`; prints the emit-to-deliver line.
R=$1; shift
D=$(mktemp -d); trap 'rm -rf "$D"' EXIT
for r in $(seq "$R"); do for bin in "$@"; do
  rm -rf "$D/data"; "$bin" serve --listen 127.0.0.1:7694 --data-dir "$D/data" --no-http --fsync always > "$D/log" 2>&1 & SP=$!
  for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7694) 2>/dev/null && break; sleep 0.1; done
  line=$("$bin" bench rooms --server 127.0.0.1:7694 --consumers 100 --inflight 64 --rate 1000 --count 10000 --size 100 --fsync always 2>&1 | grep emit-to-deliver)
  kill $SP; wait $SP 2>/dev/null
  echo "$(basename "$bin") $line"
done; done
