#!/bin/bash
# usage: ab.sh OUTFILE ROUNDS NAME=BIN [NAME=BIN ...]
# Alternates the builds on both rooms checks (issue 11), each run a fresh
# `herald serve --fsync always --no-http` (roomab.sh), `uptime` before each.
OUT=$1; N=$2; shift 2
H=$(dirname "$0")
for r in $(seq $N); do
  for nb in "$@"; do
    name=${nb%%=*}; BIN=${nb#*=}
    echo "round $r $name a $(uptime)" >> $OUT
    echo "a $name $(bash $H/roomcpu.sh $BIN 1000 4000 64)" >> $OUT
    echo "round $r $name b $(uptime)" >> $OUT
    echo "b $name $(EXTRA='--rate 1000' bash $H/roomcpu.sh $BIN 100 10000 64)" >> $OUT
  done
done
