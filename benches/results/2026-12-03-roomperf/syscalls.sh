#!/bin/bash
# usage: syscalls.sh BIN MEMBERS COUNT INFLIGHT  (env EXTRA as roomab.sh)
# Counts the broker's and the bench client's socket syscalls during one run.
BIN=$1; M=$2; C=$3; W=$4
D=$(mktemp -d -p /var/tmp)
$BIN serve --data-dir $D/data --listen 127.0.0.1:7391 --no-http --fsync always > $D/log 2>&1 &
BP=$!
for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/7391) 2>/dev/null && break; sleep 0.1; done
timeout 300 $BIN bench rooms --server 127.0.0.1:7391 --consumers $M --inflight $W $EXTRA --count $C --size 100 --json > $D/bench.out 2>/dev/null &
CP=$!
sleep ${SETUP:-3}
EV=syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom,syscalls:sys_enter_pwrite64,syscalls:sys_enter_openat,syscalls:sys_enter_syncfs,syscalls:sys_enter_fdatasync,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex
perf stat -e $EV -p $BP -o $D/broker.stat -- sleep ${SECS:-5} &
P1=$!
CLI=$(pgrep -P $CP herald || echo $CP)
perf stat -e $EV -p $CLI -o $D/client.stat -- sleep ${SECS:-5} &
P2=$!
wait $CP
tail -1 $D/bench.out
wait $P1 $P2
echo broker; grep syscalls $D/broker.stat; echo client; grep syscalls $D/client.stat
kill $BP; wait $BP 2>/dev/null; rm -rf $D
