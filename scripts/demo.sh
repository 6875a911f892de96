#!/usr/bin/env bash
# Builds dsv2 and runs the main job: generation with the default model shipped in models/default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
./build/dsv2 generate --model models/default --prompt-ids 0,17,42,99,7 --max-new-tokens 24 --temperature 0.8 --top-p 0.95 --seed 1 --print-ids
