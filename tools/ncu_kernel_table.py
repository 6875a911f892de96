#!/usr/bin/env python3
"""Sums kernel durations from an Nsight Compute CSV (ncu --metrics gpu__time_duration.sum --csv)
over the last N launches (e.g. the last decode steps of a `dsv2 bench --no-graphs` run), grouped
by kernel name. Usage: ncu_kernel_table.py FILE.csv N"""
import csv, sys, collections

rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))
        if r.get("Metric Name") == "gpu__time_duration.sum"]
last = rows[-int(sys.argv[2]):]
total = collections.Counter()
count = collections.Counter()
for r in last:
    name = r["Kernel Name"].replace("(anonymous namespace)::", "").replace("void ", "")
    name = name.split("(")[0][:90]
    total[name] += float(r["Metric Value"].replace(",", ""))
    count[name] += 1
all_ns = sum(total.values())
print(f"{len(last)} launches, {all_ns / 1e3:.1f} us in kernels")
for name, ns in total.most_common(25):
    print(f"{ns / 1e3:10.1f} us {100 * ns / all_ns:5.1f}% {count[name]:6d}x  {name}")
