#!/usr/bin/env bash
# Rooms over WebSocket with JavaScript clients against Socket.IO 4.8, on this
# machine, interleaved: each round runs a fresh `herald serve --fsync always`
# + `js/bench/ws-bench.mjs rooms` (one emitter with 64 durable emits in
# flight, a room of MEMBERS members, each its own herald-client WebSocket
# connection acking every event, all in one Node process), then a fresh
# Socket.IO server + benches/peers/socketio/bench.js (the same room, window
# and payload, members in the emitter's process). With BASE_REF, each round
# first runs the JavaScript client of that commit (and BASE_BIN, if given, as
# its broker) the same way: old against new in the same sitting. Prints each
# run with the machine's load (`uptime`) before it, then medians [min-max]
# and the ratios. The machine's other load moves these figures a lot: compare
# only runs of one sitting.
#
# Usage: scripts/ws-rooms-vs-socketio.sh [ROUNDS]          (default 3)
# Environment:
#   MEMBERS=100        room size
#   SECONDS_RUN=10     seconds of emitting per Herald run
#   SIO_COUNT=5000     events per Socket.IO run (SIO_COUNT x MEMBERS deliveries)
#   WINDOW=64          emits in flight from the one emitter, each still
#                      confirmed, on both sides
#   THREADS=1          Herald's members spread over that many worker threads
#                      of the bench process (0: on the emitter's thread,
#                      which then bounds the run; 1, the default, was the
#                      fastest in docs/performance.md); "1 2" runs Herald
#                      both ways in each round
#   SIO_WORKERS=0      Socket.IO's members in that many forked processes
#                      (0: in the emitter's process, its fastest layout here)
#   HERALD_BIN=PATH    the broker (default: cargo build --release, target/release/herald)
#   BASE_REF=REF       also run the JavaScript client of this commit (git archive),
#                      its members on the emitter's thread
#   BASE_BIN=PATH      the broker for the BASE_REF runs (default: HERALD_BIN)
#   OUT=DIR            also keep every run's output there
# Needs: cargo (unless HERALD_BIN), node >= 20, npm (installs the pinned ws and
# Socket.IO with npm ci), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
MEMBERS=${MEMBERS:-100}
SECONDS_RUN=${SECONDS_RUN:-10}
SIO_COUNT=${SIO_COUNT:-5000}
WINDOW=${WINDOW:-${SIO_WINDOW:-64}}
THREADS=${THREADS:-1}
SIO_WORKERS=${SIO_WORKERS:-0}
HTTP_PORT=${HTTP_PORT:-7594}
TCP_PORT=${TCP_PORT:-7593}
SIO_PORT=${SIO_PORT:-7598}
PEER=benches/peers/socketio

for v in ROUNDS MEMBERS SECONDS_RUN SIO_COUNT WINDOW; do
  case ${!v} in
    '' | *[!0-9]* | 0) echo "ws-rooms-vs-socketio: $v must be a whole number >= 1, not '${!v}'" >&2; exit 2 ;;
  esac
done
for t in $THREADS $SIO_WORKERS; do
  case $t in
    *[!0-9]*) echo "ws-rooms-vs-socketio: THREADS and SIO_WORKERS take whole numbers, not '$t'" >&2; exit 2 ;;
  esac
done
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "ws-rooms-vs-socketio: needs Node 20 or newer (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 2
fi
(cd "$PEER" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
(cd js && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
if [ -z "${HERALD_BIN:-}" ]; then
  cargo build --release --bin herald --quiet
  HERALD_BIN=./target/release/herald
fi
BASE_BIN=${BASE_BIN:-$HERALD_BIN}

DIR=$(mktemp -d -p "${TMPDIR:-/var/tmp}" ws-rooms-vs-sio.XXXXXX)
SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap 'stop_server; rm -rf "$DIR"' EXIT

JS_NEW=$PWD/js
JS_BASE=
if [ -n "${BASE_REF:-}" ]; then
  mkdir -p "$DIR/base"
  git archive "$BASE_REF" js | tar -x -C "$DIR/base"
  cp -r js/node_modules "$DIR/base/js/"
  JS_BASE=$DIR/base/js
fi

# Waits until 127.0.0.1:$1 accepts connections (the server started as
# SERVER_PID); fails, showing the log $2, if it does not.
wait_port() {
  for _ in $(seq 100); do
    (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "ws-rooms-vs-socketio: the server did not start on port $1" >&2
  cat "$2" >&2
  return 1
}

# CPU seconds (user + system) the server SERVER_PID has used so far.
server_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$SERVER_PID/stat"
}

# Runs a command (the bench), its output to $DIR/line, its CPU seconds
# (user + system) to $DIR/cpu; returns its exit code.
timed() {
  local TIMEFORMAT='%U %S' rc=0
  { time "$@" > "$DIR/line" 2>&1 || rc=$?; } 2> "$DIR/time"
  awk '{ printf "%.2f", $1 + $2 }' "$DIR/time" > "$DIR/cpu"
  return "$rc"
}

# One Herald run: broker $1, JavaScript client folder $2, members on $3
# worker threads; output in $DIR/line.
run_herald() {
  local bin=$1 js=$2 threads=$3 rc=0
  rm -rf "$DIR/data"
  "$bin" serve --listen "127.0.0.1:$TCP_PORT" --http "127.0.0.1:$HTTP_PORT" --data-dir "$DIR/data" \
    --fsync always > "$DIR/serve.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$HTTP_PORT" "$DIR/serve.log"
  (cd "$js" && timed timeout 300 node bench/ws-bench.mjs rooms "127.0.0.1:$HTTP_PORT" "$MEMBERS" "$SECONDS_RUN" "$WINDOW" "$threads") || rc=$?
  server_cpu > "$DIR/scpu"
  stop_server
  if [ "$rc" -ne 0 ]; then
    echo "ws-rooms-vs-socketio: herald run failed (exit $rc):" >&2
    cat "$DIR/line" >&2
    tail -20 "$DIR/serve.log" >&2
    return "$rc"
  fi
}

run_socketio() {
  local rc=0
  node "$PEER/server.js" --port "$SIO_PORT" > "$DIR/sio.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$SIO_PORT" "$DIR/sio.log"
  timed node "$PEER/bench.js" --url "http://127.0.0.1:$SIO_PORT" --members "$MEMBERS" --count "$SIO_COUNT" \
    --window "$WINDOW" --workers "$SIO_WORKERS" || rc=$?
  server_cpu > "$DIR/scpu"
  stop_server
  if [ "$rc" -ne 0 ]; then
    echo "ws-rooms-vs-socketio: socket.io run failed (exit $rc):" >&2
    cat "$DIR/line" >&2
    return "$rc"
  fi
}

RESULTS="$DIR/results.txt"
: > "$RESULTS"
header="# $(date -u '+%F %T') UTC, $(nproc) cores, herald $(git rev-parse --short HEAD)${BASE_REF:+ against base $BASE_REF ($(git rev-parse --short "$BASE_REF"))},"
header+=" socket.io $(node -p "require('./$PEER/node_modules/socket.io/package.json').version"), node $(node --version),"
header+=" rounds $ROUNDS, room of $MEMBERS, herald $SECONDS_RUN s per run, socket.io $SIO_COUNT events, window $WINDOW,"
header+=" herald member threads: $THREADS, socket.io member processes: $SIO_WORKERS"
echo "$header" | tee "$RESULTS"
# herald: members on the emitter's thread; herald_tN: on N worker threads.
peers=
[ -n "$JS_BASE" ] && peers="base"
for t in $THREADS; do
  if [ "$t" -eq 0 ]; then peers+=" herald"; else peers+=" herald_t$t"; fi
done
peers+=" socketio"
for round in $(seq "$ROUNDS"); do
  for peer in $peers; do
    load=$(uptime | sed 's/.*load average: //')
    case $peer in
      base) run_herald "$BASE_BIN" "$JS_BASE" 0 ;;
      herald) run_herald "$HERALD_BIN" "$JS_NEW" 0 ;;
      herald_t*) run_herald "$HERALD_BIN" "$JS_NEW" "${peer#herald_t}" ;;
      socketio) run_socketio ;;
    esac
    line=$(grep -E "deliveries/s|msgs/s" "$DIR/line" | head -1)
    printf '%-8s round %s (load %s): %s [cpu: server %s s, clients %s s]\n' "$peer" "$round" "$load" "$line" \
      "$(cat "$DIR/scpu")" "$(cat "$DIR/cpu")" | tee -a "$RESULTS"
  done
done
echo "# after: load $(uptime | sed 's/.*load average: //')" | tee -a "$RESULTS"
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp "$RESULTS" "$OUT/ws-rooms-vs-socketio.txt"; fi

python3 - "$RESULTS" "$MEMBERS" <<'EOF'
import math, re, statistics, sys
# bench.js first sends max(5, ceil(50000 / members)) unmeasured warm-up events.
sio_warmup = max(5, math.ceil(50000 / int(sys.argv[2]))) * int(sys.argv[2])
runs, cpu = {}, {}
for line in open(sys.argv[1]):
    m = re.match(r"(\w+)\s+round \d+ .*?: .*?(\d+) deliveries in .*?= ([\d.]+) deliveries/s", line) or re.match(
        r"(\w+)\s+round \d+ .*?: .*? x (\d+): ([\d.]+) msgs/s", line)
    c = re.search(r"\[cpu: server ([\d.]+) s, clients ([\d.]+) s\]", line)
    if m:
        runs.setdefault(m.group(1), []).append(float(m.group(3)))
        if c:
            # CPU per delivery: all the CPU both processes used over all
            # the deliveries (Socket.IO's warm-up counted; Herald's set-up
            # of the room, which delivers nothing measured, is not).
            n = int(m.group(2)) + (sio_warmup if m.group(1) == "socketio" else 0)
            us = (float(c.group(1)) + float(c.group(2))) * 1e6 / n
            cpu.setdefault(m.group(1), []).append((us, float(c.group(1)), float(c.group(2))))
med = {}
for peer, v in runs.items():
    med[peer] = statistics.median(v)
    line = f"{peer:8} deliveries/s median {med[peer]:>10,.0f} [{min(v):,.0f}-{max(v):,.0f}] over {len(v)} runs"
    if peer in cpu:
        us = sorted(x[0] for x in cpu[peer])
        share = statistics.median(x[1] / (x[1] + x[2]) for x in cpu[peer])
        line += f"; CPU per delivery {statistics.median(us):.2f} us [{us[0]:.2f}-{us[-1]:.2f}], server's share {share:.0%}"
    print(line)
for peer in med:
    if peer.startswith("herald") and "socketio" in med:
        print(f"{peer} / socket.io = {med[peer] / med['socketio']:.2f}x (target >= 10x)")
if "base" in med and "socketio" in med:
    print(f"base   / socket.io = {med['base'] / med['socketio']:.2f}x")
if "base" in med and "herald" in med:
    print(f"herald / base      = {med['herald'] / med['base']:.2f}x")
EOF
