#!/bin/bash
# usage: ab.sh OUT ROUNDS WORKLOADS NAME=BIN NAME=BIN
# Interleaved: for each round, for each workload, each build in turn (the
# order of the builds flipped every round); `uptime` before each run.
OUT=$1; N=$2; WL=$3; shift 3
H=$(dirname "$0")
for r in $(seq $N); do
  if [ $((r % 2)) = 1 ]; then builds=("$@"); else builds=(); for ((i=$#; i>0; i--)); do builds+=("${!i}"); done; fi
  for w in $WL; do
    for nb in "${builds[@]}"; do
      name=${nb%%=*}; BIN=${nb#*=}
      echo "# round $r $w $name $(uptime)" >> $OUT
      echo "$name $(bash $H/run.sh $BIN $w)" >> $OUT
    done
  done
done
