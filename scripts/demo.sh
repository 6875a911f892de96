#!/usr/bin/env bash
# Builds dsv2 and runs the main job: generation with the default model shipped in models/default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
./build/dsv2 generate --model models/default --prompt "The old house on the hill" --max-new-tokens 60 --temperature 0.7 --top-p 0.95 --seed 4
