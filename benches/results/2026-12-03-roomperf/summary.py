#!/usr/bin/env python3
"""Medians [min-max] of ab.sh output: deliveries/s for a, p50/p99 ms for b."""
import json, sys, statistics
rows = {}
for line in open(sys.argv[1]):
    parts = line.split(' ', 2)
    if len(parts) < 3 or parts[0] not in ('a', 'b') or not parts[2].startswith('{'):
        continue
    d = json.loads(parts[2])
    rows.setdefault((parts[0], parts[1]), []).append(d)
def fmt(v, f):
    return f"{f(statistics.median(v))} [{f(min(v))}-{f(max(v))}]"
for (check, build), ds in sorted(rows.items()):
    tput = [d['msgs_per_sec'] for d in ds]
    p50 = [d['latency']['p50_us'] / 1000 for d in ds]
    p99 = [d['latency']['p99_us'] / 1000 for d in ds]
    line = (f"{check} {build} n={len(ds)} deliveries/s {fmt(tput, lambda x: f'{x:,.0f}')} "
            f"p50 ms {fmt(p50, lambda x: f'{x:.2f}')} p99 ms {fmt(p99, lambda x: f'{x:.1f}')}")
    if all('broker_cpu_s' in d for d in ds):
        b = [d['broker_cpu_s'] for d in ds]
        c = [d['client_cpu_s'] for d in ds]
        line += f" broker cpu s {fmt(b, lambda x: f'{x:.2f}')} client cpu s {fmt(c, lambda x: f'{x:.2f}')}"
    print(line)
