// Routed experts for many tokens (prompt chunks, large decode batches) as grouped GEMMs on the tensor
// cores, without a host round trip: the (token, slot) pairs are sorted by expert on the device, each
// expert's rows are cut into tiles of kTileRows, and one launch per projection computes every (tile,
// column block) product with 128 × 256 output blocks (Hopper wgmma from shared memory, f32 sums), the
// operands brought in 64-value steps of k by tensor copies into a ring that one thread keeps full.
// The gate and up projections run in one GEMM whose epilogue forms silu(gate)·up; the down projection
// writes f32 rows that combine_sorted weights and adds.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/overlapped_launch.cuh"
#include "ops/cuda/tensor_core.cuh"
#include "ops/cuda/tensor_map.h"
#include "ops/cuda/warpgroup_mma.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kTileRows = 128;   // sorted rows (tokens) per output block: 64 per consumer warpgroup
constexpr int kTileCols = 256;   // output columns per block (gate/up: 128 features of each)
constexpr int kStep = kSwizzledBoxValues;  // values of k per pipeline step: one box, a 128-byte row piece
constexpr int kStages = 4;       // steps in the shared-memory ring
constexpr int kThreads = 384;    // warpgroup 0 copies (one thread issues the tensor copies), 1 and 2 multiply
constexpr int kSortThreads = 1024;
constexpr int kSortBatch = 8;    // pairs a sorting thread loads at once

// Shared memory per stage: the A rows [kTileRows][kStep] then the B rows [kTileCols][kStep], 2 bytes a
// value, in the 128-byte swizzle layout of warpgroup_mma.cuh (piece c of row r at c ^ (r % 8)), which
// the tensor copies write; stages 1,024-byte aligned (the slack aligns the first), then per stage a
// "full" barrier (its copies landed) and an "empty" one (both consumers are done reading it).
constexpr int kStageBytes = (kTileRows + kTileCols) * kStep * 2;
constexpr size_t kSharedBytes = size_t(kStages) * kStageBytes + 1024 + 2 * kStages * sizeof(uint64_t);

// One block: counts per expert, offsets, the tile list, then each pair's sorted slot. The order of an
// expert's pairs among its rows is the order the atomics give; every product row depends on its own
// inputs alone, so the results do not depend on it.
// tiles[0] = number of tiles; tile t at tiles[1 + 3t ..]: expert, first sorted row, rows (<= kTileRows).
__global__ void __launch_bounds__(kSortThreads)
    sort_pairs_kernel(const int32_t* __restrict__ ids, int64_t n_pairs, int64_t K, int32_t E, int32_t* __restrict__ rows,
                      int32_t* __restrict__ slot_of, int32_t* __restrict__ tiles) {
  start_after_previous_kernel();
  extern __shared__ int32_t counts[];  // [E] counts, [E] offsets, [E] tile starts, [E] fill
  int32_t *offset = counts + E, *tile_start = counts + 2 * E, *fill = counts + 3 * E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) counts[e] = fill[e] = 0;
  __syncthreads();
  // Each thread's ids are loaded kSortBatch at a time (pairs base + j·blockDim.x; −1 past the end), all in
  // flight before their atomics.
  const auto load_ids = [&](int64_t base, int32_t(&id)[kSortBatch]) {
#pragma unroll
    for (int j = 0; j < kSortBatch; ++j) id[j] = base + j * blockDim.x < n_pairs ? ids[base + j * blockDim.x] : -1;
  };
  for (int64_t base = threadIdx.x; base < n_pairs; base += int64_t(blockDim.x) * kSortBatch) {
    int32_t id[kSortBatch];
    load_ids(base, id);
#pragma unroll
    for (int j = 0; j < kSortBatch; ++j)
      if (id[j] >= 0) atomicAdd(&counts[id[j]], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t rows_so_far = 0, tiles_so_far = 0;
    for (int e = 0; e < E; ++e) {
      offset[e] = rows_so_far;
      tile_start[e] = tiles_so_far;
      rows_so_far += counts[e];
      tiles_so_far += (counts[e] + kTileRows - 1) / kTileRows;
    }
    tiles[0] = tiles_so_far;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    for (int32_t r = 0, t = tile_start[e]; r < counts[e]; r += kTileRows, ++t) {
      tiles[1 + 3 * t] = e;
      tiles[2 + 3 * t] = offset[e] + r;
      tiles[3 + 3 * t] = min(kTileRows, counts[e] - r);
    }
  for (int64_t base = threadIdx.x; base < n_pairs; base += int64_t(blockDim.x) * kSortBatch) {
    int32_t id[kSortBatch];
    load_ids(base, id);
#pragma unroll
    for (int j = 0; j < kSortBatch; ++j) {
      if (id[j] < 0) continue;
      const int64_t p = base + j * blockDim.x;
      const int32_t s = offset[id[j]] + atomicAdd(&fill[id[j]], 1);
      slot_of[p] = s;
      rows[s] = int32_t(p / K);
    }
  }
}

// xs[s] = x[rows[s]] (XT = float: rounded to AT; XT = AT: copied), one block per sorted row, 8 values per
// thread at a time (H % 8 == 0, 16-byte aligned rows).
template <typename XT, typename AT>
__global__ void pack_sorted_rows_kernel(const XT* __restrict__ x, const int32_t* __restrict__ rows, int64_t H,
                                        AT* __restrict__ xs) {
  start_after_previous_kernel();
  const XT* src = x + int64_t(rows[blockIdx.x]) * H;
  uint4* dst = reinterpret_cast<uint4*>(xs + int64_t(blockIdx.x) * H);
  for (int64_t c = threadIdx.x; c < H / 8; c += blockDim.x) {
    if constexpr (std::is_same_v<XT, AT>) {
      dst[c] = reinterpret_cast<const uint4*>(src)[c];
    } else {
      const float4 lo = reinterpret_cast<const float4*>(src)[2 * c], hi = reinterpret_cast<const float4*>(src)[2 * c + 1];
      uint4 out;
      AT* v = reinterpret_cast<AT*>(&out);
      from_f32(lo.x, v + 0), from_f32(lo.y, v + 1), from_f32(lo.z, v + 2), from_f32(lo.w, v + 3);
      from_f32(hi.x, v + 4), from_f32(hi.y, v + 5), from_f32(hi.z, v + 6), from_f32(hi.w, v + 7);
      dst[c] = out;
    }
  }
}

// For tile t = blockIdx.x / column_blocks (expert e, sorted rows row0 .. row0 + n − 1 of the inputs
// [*, D]) and column block c = blockIdx.x % column_blocks (consecutive blocks share a tile's inputs; an
// expert's tiles are neighbours, so its weights are read from memory about once: Nsight, cuda-notes v21):
//   GATE_UP: out[row0 + j, f] = silu(a_e[f] · in_j) · (b_e[f] · in_j), rounded to AT, f in [128c, 128c + 128)
//   else:    out[row0 + j, f] = a_e[f] · in_j, f32,                                f in [256c, 256c + 256)
// The operands come as tensor maps (2-D, [rows][D], 64 × rows boxes, 128-byte swizzle): `in` over the
// sorted rows, `a` and `b` over the weights as [E·R][D] (GATE_UP: gate and up; else both the down
// weights). Rows and k past the ends read as zeros or as other experts' rows, never written.
// R % 8 == 0. Warpgroup 0's first thread fills the ring kStages steps ahead; consumer warpgroup h
// (1, 2) takes rows 64(h − 1) .. + 63 against all 256 B rows (GATE_UP: 128 gate rows, then the up rows of
// the same features), one m64n256k16 wgmma per 16 values of k, and frees each step's slot once its
// products are done.
template <typename AT, bool GATE_UP>
__global__ void __launch_bounds__(kThreads, 1)
    tiled_experts_kernel(const __grid_constant__ CUtensorMap in, const __grid_constant__ CUtensorMap a,
                         const __grid_constant__ CUtensorMap b, int64_t D, int64_t R, const int32_t* __restrict__ tiles,
                         int column_blocks, void* out) {
  extern __shared__ __align__(1024) unsigned char shared[];
  const uint32_t shared_base = shared_address(shared);
  const uint32_t ring = shared_base + (1024 - shared_base % 1024) % 1024;  // [stage][A rows | B rows], swizzled
  const uint32_t full = ring + kStages * kStageBytes, empty = full + kStages * sizeof(uint64_t);  // [stage] barriers
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      barrier_init(full + 8 * s, 1);
      barrier_init(empty + 8 * s, 2);
    }
    fence_barrier_init();
  }
  __syncthreads();
  start_after_previous_kernel();
  const int t = blockIdx.x / column_blocks, c = blockIdx.x % column_blocks;
  if (t >= tiles[0]) return;
  const int32_t e = tiles[1 + 3 * t], row0 = tiles[2 + 3 * t], n = tiles[3 + 3 * t];
  const int steps = int((D + kStep - 1) / kStep);
  const int group = threadIdx.x / 128;
  if (group == 0) {
    if (threadIdx.x != 0) return;
    const int32_t b_row0 = int32_t(e * R) + (GATE_UP ? c * (kTileCols / 2) : c * kTileCols);
    const int32_t b_row1 = GATE_UP ? b_row0 : b_row0 + kTileCols / 2;
    for (int i = 0; i < steps; ++i) {
      const int slot = i % kStages, use = i / kStages;
      if (use > 0) barrier_wait(empty + 8 * slot, (use - 1) & 1);
      const uint32_t stage = ring + slot * kStageBytes;
      barrier_expect_bytes(full + 8 * slot, kStageBytes);
      const int32_t k = i * kStep;
      tensor_copy_2d(stage, &in, k, row0, full + 8 * slot);
      tensor_copy_2d(stage + kTileRows * 128, &a, k, b_row0, full + 8 * slot);
      tensor_copy_2d(stage + (kTileRows + kTileCols / 2) * 128, &b, k, b_row1, full + 8 * slot);
    }
    return;
  }
  const int h = group - 1;
  float acc[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) acc[i] = 0.0f;
  for (int i = 0; i < steps; ++i) {
    const int slot = i % kStages;
    barrier_wait(full + 8 * slot, (i / kStages) & 1);
    const uint32_t stage = ring + slot * kStageBytes;
    fence_accumulators(acc);
    warpgroup_fence();
#pragma unroll
    for (int kk = 0; kk < kStep / 16; ++kk)
      warpgroup_mma_m64n256k16<AT>(acc, swizzled_tile_descriptor(stage + h * 64 * 128 + kk * 32),
                                   swizzled_tile_descriptor(stage + kTileRows * 128 + kk * 32));
    warpgroup_commit();
    warpgroup_wait<1>();  // step i − 1's products are done: its slot is free
    fence_accumulators(acc);
    if (i > 0 && threadIdx.x % 128 == 0) barrier_arrive(empty + 8 * ((i - 1) % kStages));
  }
  warpgroup_wait<0>();
  fence_accumulators(acc);
  // acc[4j + i]: row 64h + 16w + g + 8(i / 2), column 8j + 2q + i % 2 (w: warp in the group).
  const int w = (threadIdx.x % 128) / 32, g = (threadIdx.x % 32) / 4, q = threadIdx.x % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int j_row = 64 * h + 16 * w + g + 8 * half;
    if (j_row >= n) continue;
    if constexpr (GATE_UP) {
#pragma unroll
      for (int j = 0; j < kTileCols / 16; ++j) {
        const int64_t f = int64_t(c) * (kTileCols / 2) + 8 * j + 2 * q;
        if (f >= R) continue;
        AT pair[2];  // gate in acc[4j + ..], up of the same feature 16 tiles of 8 columns further
#pragma unroll
        for (int s = 0; s < 2; ++s)
          from_f32(silu_times(acc[4 * j + 2 * half + s], acc[4 * (j + kTileCols / 16) + 2 * half + s]), pair + s);
        *reinterpret_cast<uint32_t*>(static_cast<AT*>(out) + (int64_t(row0) + j_row) * R + f) =
            *reinterpret_cast<const uint32_t*>(pair);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kTileCols / 8; ++j) {
        const int64_t f = int64_t(c) * kTileCols + 8 * j + 2 * q;
        if (f >= R) continue;
        *reinterpret_cast<float2*>(static_cast<float*>(out) + (int64_t(row0) + j_row) * R + f) =
            make_float2(acc[4 * j + 2 * half], acc[4 * j + 2 * half + 1]);
      }
    }
  }
}

template <typename AT>
void run_tiled(const MoeTiledScratch& s, int64_t pairs, int64_t D, int64_t R, int64_t E, const void* in, const void* a,
               const void* b, void* out, bool gate_up, cudaStream_t stream) {
  // The kernels' dynamic shared-memory limit, raised once per type.
  [[maybe_unused]] static const bool raised =
      allow_shared_memory(kSharedBytes, tiled_experts_kernel<AT, true>, tiled_experts_kernel<AT, false>);
  constexpr bool bf16 = std::is_same_v<AT, __nv_bfloat16>;
  const CUtensorMap in_map = swizzled_row_tiles(in, pairs, D, kTileRows, bf16);
  const CUtensorMap a_map = swizzled_row_tiles(a, E * R, D, kTileCols / 2, bf16);
  const CUtensorMap b_map = swizzled_row_tiles(gate_up ? b : a, E * R, D, kTileCols / 2, bf16);
  const int column_blocks = int(gate_up ? (R + kTileCols / 2 - 1) / (kTileCols / 2) : (R + kTileCols - 1) / kTileCols);
  const unsigned blocks = unsigned(moe_tiles_capacity(pairs, E) * column_blocks);
  launch_overlapped(gate_up ? tiled_experts_kernel<AT, true> : tiled_experts_kernel<AT, false>, blocks, kThreads,
                    kSharedBytes, stream, in_map, a_map, b_map, D, R, s.tiles, column_blocks, out);
}

}  // namespace

int64_t moe_tiles_capacity(int64_t pairs, int64_t E) { return pairs / kTileRows + E; }

bool tiled_experts_supported(DType dtype, int64_t H, int64_t I, int64_t E) {
  return (dtype == DType::BF16 || dtype == DType::F16) && H % 8 == 0 && I % 8 == 0 && E >= 1 &&
         4 * E * int64_t(sizeof(int32_t)) <= 48 * 1024;
}

void moe_tiled_sort(const void* x, DType x_dtype, int64_t T, int64_t H, int64_t K, int64_t E, const int32_t* expert_ids,
                    DType dtype, const MoeTiledScratch& s, cudaStream_t stream) {
  check(dtype == DType::BF16 || dtype == DType::F16, "tiled experts: bf16 or f16 inputs");
  check(x_dtype == DType::F32 || x_dtype == dtype, "tiled experts: f32 inputs, or inputs already in the GEMMs' dtype");
  check(H % 8 == 0 && aligned16(x) && aligned16(s.xs), "tiled experts: H a multiple of 8, rows 16-byte aligned");
  check(4 * E * int64_t(sizeof(int32_t)) <= 48 * 1024, "tiled experts: at most 3,072 experts");
  const int64_t pairs = T * K;
  launch_overlapped(sort_pairs_kernel, 1, kSortThreads, size_t(4 * E) * sizeof(int32_t), stream, expert_ids, pairs, K,
                    int32_t(E), s.rows, s.slot_of, s.tiles);
  auto pack = [&](auto input_tag, auto type_tag) {
    using XT = decltype(input_tag);
    using AT = decltype(type_tag);
    launch_overlapped(pack_sorted_rows_kernel<XT, AT>, unsigned(pairs), 256, 0, stream, static_cast<const XT*>(x), s.rows, H,
                      static_cast<AT*>(s.xs));
  };
  if (dtype == DType::BF16) {
    if (x_dtype == DType::F32) pack(float{}, __nv_bfloat16{}); else pack(__nv_bfloat16{}, __nv_bfloat16{});
  } else {
    if (x_dtype == DType::F32) pack(float{}, __half{}); else pack(__half{}, __half{});
  }
}

void moe_tiled_gate_up(const MoeTiledScratch& s, int64_t pairs, int64_t H, int64_t I, int64_t E, DType dtype,
                       const void* gate, const void* up, cudaStream_t stream) {
  check(tiled_experts_supported(dtype, H, I, E) && aligned16(gate) && aligned16(up) && aligned16(s.hs),
        "tiled experts: bf16 or f16 weights, 16-byte aligned, sizes multiples of 8");
  if (dtype == DType::BF16)
    run_tiled<__nv_bfloat16>(s, pairs, H, I, E, s.xs, gate, up, s.hs, true, stream);
  else
    run_tiled<__half>(s, pairs, H, I, E, s.xs, gate, up, s.hs, true, stream);
}

void moe_tiled_down(const MoeTiledScratch& s, int64_t pairs, int64_t H, int64_t I, int64_t E, DType dtype,
                    const void* down, cudaStream_t stream) {
  check(tiled_experts_supported(dtype, H, I, E) && aligned16(down) && aligned16(s.y),
        "tiled experts: bf16 or f16 weights, 16-byte aligned, sizes multiples of 8");
  if (dtype == DType::BF16)
    run_tiled<__nv_bfloat16>(s, pairs, I, H, E, s.hs, down, nullptr, s.y, false, stream);
  else
    run_tiled<__half>(s, pairs, I, H, E, s.hs, down, nullptr, s.y, false, stream);
}

}  // namespace dsv2::cuda
