#!/bin/bash
# ab-rws.sh ROUNDS MEMBERS WINDOW COUNT BIN... : Rust bench rooms over ws:// (or TRANSPORT=tcp), interleaved
R=$1; M=$2; W=$3; N=$4; shift 4
for i in $(seq $R); do for b in "$@"; do
  D=$(mktemp -d /var/tmp/rws.XXXX)
  $b serve --listen 127.0.0.1:7697 --http 127.0.0.1:7698 --data-dir $D/data --fsync always > $D/log 2>&1 &
  SP=$!
  for k in $(seq 50); do grep -q "http listening" $D/log && break; sleep 0.1; done
  kill -0 $SP 2>/dev/null || { echo "broker did not start"; cat $D/log; exit 1; }
  if [ "${TRANSPORT:-ws}" = ws ]; then SRV=ws://127.0.0.1:7698/ws; else SRV=127.0.0.1:7697; fi
  out=$(/usr/bin/time -f "client %U %S" $b bench rooms --server $SRV --consumers $M --rooms 1 --producers 1 --inflight $W --count $N --size 100 --fsync always 2>&1)
  cpu=$(awk -v hz=$(getconf CLK_TCK) '{ printf "%.2f", ($14 + $15) / hz }' /proc/$SP/stat)
  kill $SP; wait $SP 2>/dev/null; rm -rf $D
  rate=$(echo "$out" | grep -o "[0-9]* msgs/s" | grep -o "[0-9]*")
  cl=$(echo "$out" | grep "^client" | awk '{print $2+$3}')
  echo "$(basename $b) round $i: $rate deliveries/s, broker $(python3 -c "print(f'{$cpu/($N*$M)*1e6:.3f}')") us/delivery, client $(python3 -c "print(f'{$cl/($N*$M)*1e6:.3f}')") us/delivery"
done; done
