#!/usr/bin/env python3
"""Medians [min-max] per workload and build from ab.sh output files, and
each build's ratio to the first build named. usage: summary.py FILE... [--base NAME]"""
import json, sys, statistics
args = sys.argv[1:]
base = None
if '--base' in args:
    i = args.index('--base'); base = args[i + 1]; del args[i:i + 2]
files = args
rows = {}
loads = []
for f in files:
    for line in open(f):
        if line.startswith('#'):
            if 'load average:' in line:
                loads.append(float(line.split('load average:')[1].split(',')[0]))
            continue
        name, _, js = line.partition(' ')
        if not js.strip().startswith('{'):
            print('skipped:', line.strip()); continue
        d = json.loads(js)
        rows.setdefault(d['workload'], {}).setdefault(name, []).append(d)
def fmt(v, f):
    return f"{f(statistics.median(v))} [{f(min(v))}-{f(max(v))}]"
metrics = {
    'small': [('deliveries/s', lambda d: d['msgs_per_sec'], lambda x: f"{x:,.0f}"), ('p99 ms', lambda d: d['latency']['p99_us']/1000, lambda x: f"{x:.1f}"), ('broker CPU s', lambda d: d['broker_cpu_s'], lambda x: f"{x:.2f}")],
    'lat': [('p50 ms', lambda d: d['latency']['p50_us']/1000, lambda x: f"{x:.2f}"), ('p99 ms', lambda d: d['latency']['p99_us']/1000, lambda x: f"{x:.1f}"), ('broker CPU s', lambda d: d['broker_cpu_s'], lambda x: f"{x:.2f}")],
    'big': [('deliveries/s', lambda d: d['msgs_per_sec'], lambda x: f"{x:,.0f}"), ('p99 ms', lambda d: d['latency']['p99_us']/1000, lambda x: f"{x:.0f}"), ('broker CPU s', lambda d: d['broker_cpu_s'], lambda x: f"{x:.2f}")],
    'join': [('broker CPU s', lambda d: d['broker_cpu_s'], lambda x: f"{x:.2f}"), ('broker CPU ms per member', lambda d: d['broker_cpu_s']*1000/d['consumers'], lambda x: f"{x:.2f}")],
}
for w, by in rows.items():
    print(f"== {w}")
    names = list(by)
    b = base if base in by else names[0]
    for label, get, f in metrics[w]:
        med_b = statistics.median([get(d) for d in by[b]])
        parts = []
        for n in names:
            vals = [get(d) for d in by[n]]
            r = statistics.median(vals) / med_b if med_b else float('nan')
            parts.append(f"{n}: {fmt(vals, f)} (x{r:.2f}, n={len(vals)})")
        print(f"  {label}: " + " | ".join(parts))
if loads:
    print(f"load average (1 min) before runs: median {statistics.median(loads):.2f}, range {min(loads):.2f}-{max(loads):.2f}")
