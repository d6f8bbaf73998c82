#!/bin/bash
# ab-ws.sh ROUNDS SECS BIN... : JS ws rooms (T workers) per binary, interleaved; rate and broker us/delivery
R=$1; S=$2; shift 2
for i in $(seq $R); do for b in "$@"; do
  out=$(T=${T:-2} bash /work/prof/s34/run1.sh $b /work/main/js $S 2>&1 | tail -2)
  n=$(echo "$out" | grep -o "emits, [0-9]* deliveries" | grep -o "[0-9]*")
  rate=$(echo "$out" | grep -o "= [0-9]* deliveries/s" | grep -o "[0-9]*")
  cpu=$(echo "$out" | grep -o "broker cpu: [0-9.]*" | grep -o "[0-9.]*$")
  echo "$(basename $b) round $i: $rate deliveries/s, broker $(python3 -c "print(f'{$cpu/$n*1e6:.3f}')") us/delivery"
done; done
