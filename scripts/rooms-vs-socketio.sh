#!/usr/bin/env bash
# Herald rooms against Socket.IO 4.8 on this machine, interleaved: for each
# room size, ROUNDS x (a fresh `herald serve --fsync always` on a temporary
# data folder + `herald bench rooms`, then a fresh Socket.IO server +
# benches/peers/socketio/bench.js), one emitter, every emit confirmed, the
# same members / events / payload size on both sides. Prints each run, then
# the medians [min-max] and the Herald/Socket.IO ratio per room size.
#
# Usage: scripts/rooms-vs-socketio.sh [ROUNDS]          (default 3)
# Environment:
#   SIZES="10 100 1000"   room sizes (members); 10000 works too, given the
#                         file descriptors (ulimit -n above ~10,100)
#   ROOMS=1               rooms of that size at once (members = size x
#                         ROOMS), the emits round-robin over them
#   DELIVERIES=200000     per run; events per run = DELIVERIES / size,
#   MIN_EVENTS=20         but at least MIN_EVENTS
#   PAYLOAD=100           payload bytes
#   WINDOW=1              emits in flight from the one emitter, each still
#                         confirmed: Herald --inflight WINDOW, Socket.IO
#                         --window WINDOW (acknowledged emits)
#   TRANSPORT=tcp         how Herald's bench client (the Rust client) talks
#                         to the broker: tcp, or ws (WebSocket, through the
#                         broker's HTTP listener at /ws); Socket.IO always
#                         uses its websocket transport
#   SIO_WORKERS=0         member processes for Socket.IO (0: in the
#                         emitter's process), see the peer's README.md
#   OUT=DIR               also keep the raw JSON lines there
#   HERALD_BIN=PATH       the herald binary (default: cargo build --release,
#                         target/release/herald)
# Needs: cargo, node >= 20 and npm (installs the pinned Socket.IO with npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SIZES=${SIZES:-10 100 1000}
ROOMS=${ROOMS:-1}
DELIVERIES=${DELIVERIES:-200000}
MIN_EVENTS=${MIN_EVENTS:-20}
PAYLOAD=${PAYLOAD:-100}
WINDOW=${WINDOW:-1}
SIO_WORKERS=${SIO_WORKERS:-0}
TRANSPORT=${TRANSPORT:-tcp}
HERALD_PORT=${HERALD_PORT:-7497}
HERALD_HTTP_PORT=${HERALD_HTTP_PORT:-7499}
SIO_PORT=${SIO_PORT:-7498}
PEER=benches/peers/socketio

for v in ROUNDS ROOMS DELIVERIES MIN_EVENTS PAYLOAD WINDOW; do
  case ${!v} in
    '' | *[!0-9]* | 0) echo "rooms-vs-socketio: $v must be a whole number >= 1, not '${!v}'" >&2; exit 2 ;;
  esac
done
case $TRANSPORT in
  tcp) SERVER="127.0.0.1:$HERALD_PORT" ;;
  ws) SERVER="ws://127.0.0.1:$HERALD_HTTP_PORT/ws" ;;
  *) echo "rooms-vs-socketio: TRANSPORT must be tcp or ws, not '$TRANSPORT'" >&2; exit 2 ;;
esac
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "rooms-vs-socketio: needs Node 20 or newer (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 2
fi
(cd "$PEER" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
if [ -n "${HERALD_BIN:-}" ]; then
  H=$HERALD_BIN
else
  cargo build --release --bin herald --quiet
  H=./target/release/herald
fi

DIR=$(mktemp -d -p "${TMPDIR:-/var/tmp}" rooms-vs-sio.XXXXXX)
SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap 'stop_server; rm -rf "$DIR"' EXIT

# Starts a server (the command after the log file) and waits until its log
# says it listens; fails, showing the log, if it does not.
start_server() {
  local log=$1
  shift
  : > "$log" # before the start: no stale "listening on" from the last run
  "$@" > "$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    grep -q "listening on" "$log" && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "rooms-vs-socketio: the server did not start: $*" >&2
  cat "$log" >&2
  return 1
}

# One run against a fresh server; the bench's JSON line goes to $DIR/line.
# On failure, says which run and shows the server's log.
run_peer() {
  local peer=$1 members=$2 events=$3 log rc=0
  if [ "$peer" = herald ]; then
    log="$DIR/serve.log"
    rm -rf "$DIR/data"
    start_server "$log" $H serve --listen "127.0.0.1:$HERALD_PORT" \
      --http "127.0.0.1:$HERALD_HTTP_PORT" --data-dir "$DIR/data" \
      --fsync always --max-connections 20000 --max-connections-per-address 20000
    if [ "$TRANSPORT" = ws ]; then
      for _ in $(seq 50); do grep -q "http listening on" "$log" && break; sleep 0.1; done
    fi
    $H bench rooms --server "$SERVER" --consumers "$((members * ROOMS))" \
      --rooms "$ROOMS" --producers 1 --inflight "$WINDOW" --count "$events" --size "$PAYLOAD" \
      --fsync always --json > "$DIR/line" || rc=$?
  else
    log="$DIR/sio.log"
    start_server "$log" node "$PEER/server.js" --port "$SIO_PORT"
    node "$PEER/bench.js" --url "http://127.0.0.1:$SIO_PORT" --members "$((members * ROOMS))" \
      --rooms "$ROOMS" --count "$events" --size "$PAYLOAD" --window "$WINDOW" \
      --workers "$SIO_WORKERS" --json > "$DIR/line" || rc=$?
  fi
  stop_server
  if [ "$rc" -ne 0 ]; then
    echo "rooms-vs-socketio: $peer, $ROOMS room(s) of $members, failed (exit $rc); server log:" >&2
    tail -20 "$log" >&2
    return "$rc"
  fi
}

# One line per run: peer, room size, round, rate and latency.
print_run() {
  python3 - "$@" <<'EOF'
import json, sys
peer, members, rnd, line, rooms = sys.argv[1:6]
r = json.loads(line)
lat = r.get("latency", {})
room = f"room {members:>5}" if rooms == "1" else f"{rooms} rooms of {members}"
print(f"{peer:9} {room} round {rnd}: {r['msgs_per_sec']:>12,.0f} deliveries/s"
      f"  p50 {lat.get('p50_us', 0):>7} us  p99 {lat.get('p99_us', 0):>8} us"
      f"  ({r['deliveries']} in {r['secs']:.2f} s)")
EOF
}

RESULTS="$DIR/results.txt"
: > "$RESULTS"
echo "# $(date -u '+%F %T') UTC, $(nproc) cores, herald $(git rev-parse --short HEAD)," \
  "socket.io $(node -p "require('./$PEER/node_modules/socket.io/package.json').version")," \
  "node $(node --version), rounds $ROUNDS, payload $PAYLOAD B, window $WINDOW, herald transport $TRANSPORT, socket.io member processes $SIO_WORKERS, rooms at once $ROOMS"
for members in $SIZES; do
  events=$((DELIVERIES / members))
  [ "$events" -ge "$MIN_EVENTS" ] || events=$MIN_EVENTS
  for round in $(seq "$ROUNDS"); do
    for peer in herald socketio; do
      run_peer "$peer" "$members" "$events"
      line=$(cat "$DIR/line")
      echo "$peer $members $round $line" >> "$RESULTS"
      print_run "$peer" "$members" "$round" "$line" "$ROOMS"
    done
  done
done
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp "$RESULTS" "$OUT/rooms-vs-socketio.jsonl"; fi

python3 - "$RESULTS" "$ROOMS" <<'EOF'
import json, statistics, sys
rooms = int(sys.argv[2])
runs = {}
for line in open(sys.argv[1]):
    peer, members, _, js = line.split(" ", 3)
    r = json.loads(js)
    runs.setdefault((int(members), peer), []).append(
        (r["msgs_per_sec"], r["latency"]["p50_us"], r["latency"]["p99_us"]))

def med(xs):
    return statistics.median(xs)

def cell(xs, fmt):
    return f"{fmt(med(xs))} [{fmt(min(xs))}-{fmt(max(xs))}]"

def rate(x):
    return f"{x:,.0f}"

def ms(us):
    return f"{us / 1000:.2f}"

print()
print("| room | Herald deliveries/s | Herald p50 / p99 ms | Socket.IO deliveries/s | Socket.IO p50 / p99 ms | Herald / Socket.IO |")
print("|---|---|---|---|---|---|")
for members in sorted({m for m, _ in runs}):
    h = runs.get((members, "herald"), [])
    s = runs.get((members, "socketio"), [])
    if not h or not s:
        continue
    hr, sr = [x[0] for x in h], [x[0] for x in s]
    room = f"{members:,}" if rooms == 1 else f"{rooms:,} rooms of {members:,}"
    print(f"| {room} | {cell(hr, rate)} | {ms(med([x[1] for x in h]))} / {ms(med([x[2] for x in h]))}"
          f" | {cell(sr, rate)} | {ms(med([x[1] for x in s]))} / {ms(med([x[2] for x in s]))}"
          f" | {med(hr) / med(sr):.2f}x |")
EOF
