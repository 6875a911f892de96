#!/usr/bin/env python3
"""Sums Nsight Compute's warp-stall samples and executed instructions over windows of consecutive SASS
instructions of one kernel, to see which part of a kernel its time goes to. Input: the CSV of
  ncu --set full --import-source no -k regex:KERNEL --launch-skip S --launch-count 1 -o REPORT COMMAND
  ncu -i REPORT.ncu-rep --page source --csv --print-source sass > FILE.csv
Usage: ncu_source_regions.py FILE.csv [WINDOW (instructions, default 60)]
Prints each window with at least 1% of the samples or instructions and its most frequent opcodes."""
import collections, csv, sys

rows = list(csv.reader(open(sys.argv[1])))
window = int(sys.argv[2]) if len(sys.argv) > 2 else 60
header = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
h, body = rows[header], rows[header + 1:]
samples, executed, source = (h.index("Warp Stall Sampling (All Samples)"), h.index("Instructions Executed"),
                             h.index("Source"))


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


all_samples = sum(number(r[samples]) for r in body) or 1.0
all_executed = sum(number(r[executed]) for r in body) or 1.0
print(f"{len(body)} instructions, {all_samples:.0f} samples")
for start in range(0, len(body), window):
    part = body[start:start + window]
    s = sum(number(r[samples]) for r in part) / all_samples
    e = sum(number(r[executed]) for r in part) / all_executed
    if s < 0.01 and e < 0.01:
        continue
    opcodes = collections.Counter()
    for r in part:
        words = r[source].split()
        if words:
            opcodes[(words[1] if words[0].startswith("@") else words[0]).split(".")[0]] += 1
    print(f"{start:6d}-{start + window:6d} samples {100 * s:5.1f}% executed {100 * e:5.1f}%  "
          + " ".join(f"{op}×{n}" for op, n in opcodes.most_common(4)))
