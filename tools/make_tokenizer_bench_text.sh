#!/usr/bin/env bash
# Writes the English + code text that the tokenizer speed figures in README.md were measured on:
# the first 2,400,000 bytes of data/brown.txt (scripts/setup.sh makes it), then the C++ and
# Python sources of this repository (git ls-files order) repeated until 3,000,000 bytes in all.
# usage: tools/make_tokenizer_bench_text.sh OUT_FILE
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1
head -c 2400000 data/brown.txt >"$out"
code=$(mktemp)
git ls-files '*.cpp' '*.h' '*.py' | xargs cat >"$code"
while [ "$(stat -c %s "$out")" -lt 3000000 ]; do cat "$code" >>"$out"; done
truncate -s 3000000 "$out"
rm -f "$code"
