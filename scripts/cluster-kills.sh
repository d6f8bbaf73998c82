#!/usr/bin/env bash
# The long version of the cluster's kill test (docs/cluster.md): three
# `herald serve` nodes on loopback, the leader of a replicated topic
# SIGKILLed KILLS times in a row (default 20) while a producer publishes,
# then every node at once; checks that every confirmed message is on every
# node, once, in order.
#   scripts/cluster-kills.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
export HERALD_CLUSTER_KILLS="${1:-20}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test -p herald-broker --test cluster repeated_leader_kills -- --nocapture 2>&1 | tee "$log"
# Failover times, from each SIGKILL to the new leader's first confirm.
grep -o 'failover_ms=[0-9]*' "$log" | cut -d= -f2 | sort -n |
  awk '{a[NR]=$1} END {if (NR) printf "failovers: %d, p50 %d ms, max %d ms\n", NR, a[int((NR+1)/2)], a[NR]}'
