#!/usr/bin/env python3
"""Sums kernel durations from an Nsight Compute CSV (ncu --metrics gpu__time_duration.sum --csv),
grouped by kernel name, over
  - every launch in the file (e.g. a `dsv2 bench` step profiled with --profile-from-start off):
        ncu_kernel_table.py FILE.csv
  - the last N launches (e.g. the last decode steps of a `dsv2 bench --no-graphs` run):
        ncu_kernel_table.py FILE.csv N
  - or one layer's worth: the launches from the K-th launch (counted from 0) whose name contains
    TEXT up to the next such launch (e.g. TEXT = causal_attention over a prefill: one launch a layer):
        ncu_kernel_table.py FILE.csv --span TEXT K"""
import collections, csv, signal, sys

signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet when piped into head

rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))
        if r.get("Metric Name") == "gpu__time_duration.sum"]
if len(sys.argv) == 5 and sys.argv[2] == "--span":
    text, k = sys.argv[3], int(sys.argv[4])
    marks = [i for i, r in enumerate(rows) if text in r["Kernel Name"]]
    if k + 1 >= len(marks):
        sys.exit(f"{len(marks)} launches contain {text!r}: no span after the {k}-th")
    chosen = rows[marks[k]:marks[k + 1]]
elif len(sys.argv) == 3:
    chosen = rows[-int(sys.argv[2]):]
elif len(sys.argv) == 2:
    chosen = rows
else:
    sys.exit(__doc__)
total = collections.Counter()
count = collections.Counter()
for r in chosen:
    name = r["Kernel Name"].replace("(anonymous namespace)::", "").replace("void ", "")
    name = name.split("(")[0][:90]
    total[name] += float(r["Metric Value"].replace(",", ""))
    count[name] += 1
all_ns = sum(total.values())
print(f"{len(chosen)} launches, {all_ns / 1e3:.1f} us in kernels")
for name, ns in total.most_common(25):
    print(f"{ns / 1e3:10.1f} us {100 * ns / all_ns:5.1f}% {count[name]:6d}x  {name}")
