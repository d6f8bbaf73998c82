#!/usr/bin/env bash
# W1 (publish 1,000,000 x 100 B, each confirmed) and W3 (consume + ack a
# 500,000 backlog) against three `herald serve` children in one sitting:
#   plain    no auth, no TLS (the default)
#   jwt      JWT auth on (every request's permission checked)
#   tls+jwt  TLS on the listener and JWT auth
# Runs alternate between the three, RUNS rounds, one JSON line per run
# prefixed by the configuration and the workload.
# Usage: scripts/bench-security.sh [RUNS]     (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
cargo build --release --bin herald >/dev/null
H=./target/release/herald
DIR=$(mktemp -d -p "${TMPDIR:-/var/tmp}" herald-bench-sec.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; rm -rf "$DIR"' EXIT

head -c 48 /dev/urandom | base64 > "$DIR/jwt.secret"
TOKEN=$($H token --secret-file "$DIR/jwt.secret" --sub bench --allow-publish '>' \
  --allow-subscribe '>' --allow-admin --ttl 2h)
# A CA and a server certificate for 127.0.0.1, with openssl.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=bench-ca -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$DIR/key.pem" -out "$DIR/cert.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$DIR/ext"
openssl x509 -req -in "$DIR/cert.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
  -CAcreateserial -days 1 -extfile "$DIR/ext" -out "$DIR/cert.pem" 2>/dev/null

serve() { # name port flags...
  local name=$1 port=$2; shift 2
  mkdir -p "$DIR/$name" && : > "$DIR/$name/log"
  $H serve --listen 127.0.0.1:$port --data-dir "$DIR/$name/data" "$@" > "$DIR/$name/log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do grep -q "listening on" "$DIR/$name/log" && return; sleep 0.1; done
  echo "broker $name did not start" >&2; cat "$DIR/$name/log" >&2; exit 1
}
serve plain 7491
serve jwt 7492 --jwt-secret-file "$DIR/jwt.secret"
serve tls+jwt 7493 --jwt-secret-file "$DIR/jwt.secret" --tls-cert "$DIR/cert.pem" --tls-key "$DIR/key.pem"

declare -A ARGS=(
  [plain]="--server 127.0.0.1:7491"
  [jwt]="--server 127.0.0.1:7492 --token $TOKEN"
  [tls+jwt]="--server 127.0.0.1:7493 --token $TOKEN --tls-ca $DIR/ca.pem"
)
for _ in $(seq "$RUNS"); do
  for c in plain jwt tls+jwt; do
    # shellcheck disable=SC2086
    echo "$c W1 $($H bench pub --count 1000000 --size 100 --json ${ARGS[$c]})"
    # shellcheck disable=SC2086
    echo "$c W3 $($H bench sub --count 500000 --size 100 --json ${ARGS[$c]})"
  done
done
