#!/usr/bin/env python3
"""Medians [min-max] per build of the raw outputs in one set folder."""
import re, statistics, sys, pathlib

def med(v):
    return f"{statistics.median(v):,.2f} [{min(v):,.2f}-{max(v):,.2f}]" if v else "-"

for d in sys.argv[1:]:
    d = pathlib.Path(d)
    print(f"# {d.name}")
    for f in ["rooms-1000.txt", "rooms-100-rate1000.txt", "ws-idle.txt"]:
        p = d / f
        if not p.exists():
            continue
        runs = {}
        cur = None
        for line in p.read_text().splitlines():
            m = re.match(r"== (\w+) r\d", line)
            if m:
                cur = runs.setdefault(m.group(1), {"rate": [], "p50": [], "p99": [], "cpu": [], "kib": []})
                continue
            if cur is None:
                continue
            if m := re.search(r": (\d+) msgs/s", line):
                cur["rate"].append(int(m.group(1)))
            if m := re.search(r"p50 (\d+) us .* p99 (\d+) us", line):
                cur["p50"].append(int(m.group(1)) / 1000)
                cur["p99"].append(int(m.group(2)) / 1000)
            if m := re.search(r"broker cpu: ([\d.]+) s", line):
                cur["cpu"].append(float(m.group(1)))
            if m := re.search(r"([\d.]+) KiB per session", line):
                cur["kib"].append(float(m.group(1)))
        print(f"## {f}")
        for b, r in runs.items():
            parts = []
            if r["rate"]: parts.append(f"deliveries/s {med(r['rate'])}")
            if r["p50"]: parts.append(f"p50 ms {med(r['p50'])}")
            if r["p99"]: parts.append(f"p99 ms {med(r['p99'])}")
            if r["cpu"]: parts.append(f"broker cpu s {med(r['cpu'])}")
            if r["kib"]: parts.append(f"KiB/session {med(r['kib'])}")
            print(f"{b}: " + "; ".join(parts))
