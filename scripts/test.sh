#!/usr/bin/env bash
# Builds dsv2 and runs the whole test suite. Where the CUDA toolkit is installed, also compiles the
# CUDA backend and its GPU tests (they run on a GPU machine: scripts/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
(cd build && ctest --output-on-failure -j"$(nproc)")
nvcc=$(scripts/find_nvcc.sh)
if [ -n "$nvcc" ]; then
  echo "compiling the CUDA backend with $nvcc"
  cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DDSV2_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
  cmake --build build-cuda -j"$(nproc)"
else
  echo "no CUDA toolkit found: the CUDA backend was not compiled"
fi
