#!/usr/bin/env bash
# On a machine with an NVIDIA H200 (Hopper, sm_90a): builds the CUDA backend unless $BUILD already holds it,
# runs the GPU test suite and the HTTP server suite against `dsv2 serve --device cuda` (where node and
# data/openai-client exist), then the decode attention's kernels at the issue's shapes and the
# decode/prefill benchmarks on random DeepSeek-V2-Lite weights, and prints two short tables. Logs go to
# $OUT (default: gpu-results/).
# A GPU host without this project's build dependencies can run binaries built elsewhere:
# scripts/package_gpu_binaries.sh packs dsv2, the GPU tests and the shared libraries they need into one
# archive (its header says how to unpack it and point BUILD and LD_LIBRARY_PATH at it).
# BENCHES="batch,prompt,gen[,weights[,capacity]] ..." picks the benchmarks (weights bf16, the default, or
# fp8; capacity: the sequence capacity the model is built for, default prompt + gen, as bench's --capacity);
# ATTENTION="batch,context,heads ..." the decode attention's shapes (every kernel that takes each).
# PROFILE=1 adds a table of each kernel's time in one decode step (Nsight Compute's ncu) at batches 1 and
# 64 (PROFILE_BATCHES="1 64 ...").
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-cuda}
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
if [ ! -x "$BUILD/dsv2" ] || [ ! -x "$BUILD/tests/dsv2_cuda_tests" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DDSV2_CUDA=ON >/dev/null && cmake --build "$BUILD" -j"$(nproc)" || exit 1
fi
export DSV2_GOLDEN_DIR="$PWD/tests/golden"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader | tee "$OUT/gpu.txt"
"$BUILD/tests/dsv2_cuda_tests" ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$OUT/tests.log" 2>&1
tests_rc=$?
grep -E "^\[  (PASSED|FAILED) |worst relative|FAILED  \]" "$OUT/tests.log" | tail -40

# The HTTP server suite against the GPU backend (needs node and data/openai-client from scripts/setup.sh).
if command -v node >/dev/null && [ -d data/openai-client ]; then
  DSV2_SERVE_ARGS="--device cuda" node tests/server/server_test.mjs "$BUILD/dsv2" "$PWD" >"$OUT/server_tests.log" 2>&1
  server_rc=$?
  tail -1 "$OUT/server_tests.log"
  [ $server_rc -eq 0 ] || tests_rc=$server_rc
else
  echo "server suite skipped: node or data/openai-client missing"
fi

rows=()
# Each entry: batch,prompt_tokens,gen_tokens[,weights[,capacity]]
for spec in ${BENCHES:-1,128,64 1,128,64,bf16,4096 16,128,32 64,128,16 256,128,8 1,512,4 1,4096,2 1,128,64,fp8 16,128,32,fp8 64,128,16,fp8 256,128,8,fp8}; do
  IFS=, read -r b p g w c <<<"$spec"
  w=${w:-bf16}
  c=${c:-$((p + g))}
  set -- "$b" "$p" "$g" "$w" "$c"
  json="$OUT/bench_b$1_p$2_$4_c$5.json"
  if "$BUILD/dsv2" bench --device cuda --preset v2-lite --weights "$4" --batch "$1" --prompt-tokens "$2" --gen-tokens "$3" \
      --capacity "$5" --json >"$json" 2>"$json.err"; then
    rows+=("$(python3 -c "import json,sys; j=json.load(open('$json')); print(f\"{j['weights']:>7} {j['batch']:>5} {j['prompt_tokens']:>6} {j['capacity']:>6} {j['decode_tokens_per_s']:>10.1f} {j['decode_step_ms']:>8.2f} {j['prefill_tokens_per_s']:>10.1f} {j['prefill_fraction_of_gemm_peak']:>6.3f} {j['prefill_fraction_of_gemm_peak_with_attention']:>6.3f} {j.get('decode_fraction_of_roofline', float('nan')):>6.3f} {j['decode_weight_bytes_per_token_batch1'] / 1e9:>6.2f} {j['copy_bandwidth_gb_per_s']:>7.0f} {j['bf16_gemm_tflop_per_s']:>6.0f}\")")")
  else
    rows+=("$4 batch $1 prompt $2 capacity $5: FAILED ($(tail -1 "$json.err"))")
  fi
done
# The decode attention at the issue's shapes (FlashMLA's on the H200: 64 × 4K 3.04 / 2.26 TB/s at 16 / 128
# heads, 256 × 2K 3.62, 128 × 8K 3.97, 1 × 32K 57–62 µs), each bf16 kernel that takes the shape, captured.
# ATTENTION="batch,context,heads ..." picks the shapes.
attention_rows=()
for spec in ${ATTENTION:-64,4096,16 64,4096,128 256,2048,16 128,8192,16 1,32768,16}; do
  IFS=, read -r b l h <<<"$spec"
  for k in warp-mma warpgroup-mma; do
    json="$OUT/attention_b${b}_l${l}_h${h}_$k.json"
    if "$BUILD/dsv2" bench-attention --device cuda --batch "$b" --context "$l" --heads "$h" --kernel "$k" --repeats 20 \
        --json >"$json" 2>"$json.err"; then
      attention_rows+=("$(python3 -c "import json; j=json.load(open('$json')); print(f\"{j['batch']:>5} {j['context']:>7} {j['heads']:>5} {'$k':>19} {j['us_per_call_captured']:>9.1f} {j['cache_gb_per_s_captured']:>8.0f} {j['fraction_of_copy_bandwidth_captured']:>6.3f}\")")")
    else
      attention_rows+=("batch $b context $l heads $h $k: FAILED ($(tail -1 "$json.err"))")
    fi
  done
done
# PROFILE=1: each kernel's time in one decode step (the last: bench's profiler range; kernels one at a
# time, caches flushed) at the batches in PROFILE_BATCHES (default "1 64"), summed by kernel.
kernel_tables=()
if [ "${PROFILE:-0}" = 1 ]; then
  for b in ${PROFILE_BATCHES:-1 64}; do
    csv="$OUT/kernels_b$b.csv"
    if ncu --profile-from-start off --clock-control none --metrics gpu__time_duration.sum --csv "$BUILD/dsv2" bench \
        --device cuda --preset v2-lite --batch "$b" --prompt-tokens 128 --gen-tokens 3 --no-graphs --json \
        >"$csv" 2>"$csv.err"; then
      kernel_tables+=("batch $b: $(python3 tools/ncu_kernel_table.py "$csv" | head -25)")
    else
      kernel_tables+=("batch $b: ncu FAILED ($(tail -1 "$csv.err"))")
    fi
  done
fi
echo
[ ${#kernel_tables[@]} -gt 0 ] && printf 'Decode step kernels (Nsight Compute), %s\n\n' "${kernel_tables[@]}"
echo "MLA decode attention (bench-attention, bf16 cache, captured in a CUDA graph)"
echo "batch context heads              kernel        us   cacheGB/s  of copy"
printf '%s\n' "${attention_rows[@]}"
echo
echo "DeepSeek-V2-Lite shapes, random weights (bf16, or quantized to fp8 at upload), bf16 latent cache"
echo "weights batch prompt    cap  decode/s  step_ms  prefill/s  pf/pk  +attn  dec/rf  GB/tok1  copyGB/s  TFLOPs"
printf '%s\n' "${rows[@]}"
echo "GPU tests and server suite exit code: $tests_rc"
exit $tests_rc
