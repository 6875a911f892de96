// Routed experts for a batch of decode tokens on the tensor cores (mma.sync m16n8k16, f32
// accumulation): each expert's tokens are packed together, then each active expert's weight rows
// stream from memory once for all of its tokens, and only the 8-token tiles that hold tokens are
// computed. Grids depend on the batch size alone, so a decode step stays capturable as a graph.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/expert_pairs.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/overlapped_launch.cuh"
#include "ops/cuda/tensor_core.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kWarps = 4;        // warps per block of the expert kernels
constexpr int kTokenTiles = 4;   // 8-token tiles a warp computes per pass over its rows
constexpr int kChunk = 64;       // values of k per step: each lane loads 16 bytes at 8q and 32 + 8q
constexpr int kStages = 4;       // steps of k in the shared-memory ring (kStages − 1 in flight)

__device__ __forceinline__ uint32_t word(const uint4& v, int i) { return reinterpret_cast<const uint32_t*>(&v)[i]; }

// The 2-byte type the tensor cores multiply for weights stored as WT: bf16 for BF16 and FP8, f16 for F16.
template <typename WT>
using MmaType = std::conditional_t<std::is_same_v<WT, __half>, __half, __nv_bfloat16>;

// Expert e = blockIdx.x: its pairs into rows e·T + 0..n_e−1 of xs ([E·T, H], inputs rounded to WT),
// counts[e] = n_e, slot_of[p] = the row of pair p. No expert gets a token twice, so n_e <= T. Block
// column y converts the rows j ≡ y (mod gridDim.y), 4 values per thread at a time (H % 4 == 0).
template <typename WT>
__global__ void pack_expert_tokens_kernel(const float* __restrict__ x, int64_t T, int64_t H, int64_t K,
                                          const int32_t* __restrict__ ids, WT* __restrict__ xs, int32_t* counts,
                                          int32_t* slot_of) {
  start_after_previous_kernel();
  __shared__ int32_t list[kGroupedMaxPairs];
  const int32_t e = blockIdx.x;
  const int n = pairs_of_expert(ids, T * K, e, list);
  if (blockIdx.y == 0) {
    if (threadIdx.x == 0) counts[e] = n;
    for (int j = threadIdx.x; j < n; j += blockDim.x) slot_of[list[j]] = int32_t(e * T + j);
  }
  const int quads = int(H / 4);
  for (int j = blockIdx.y; j < n; j += gridDim.y) {
    const float4* src = reinterpret_cast<const float4*>(x + (list[j] / K) * H);
    WT* dst = xs + (e * T + j) * H;
#pragma unroll 2
    for (int c = threadIdx.x; c < quads; c += blockDim.x) {
      const float4 v = src[c];
      from_f32(v.x, dst + 4 * c);
      from_f32(v.y, dst + 4 * c + 1);
      from_f32(v.z, dst + 4 * c + 2);
      from_f32(v.w, dst + 4 * c + 3);
    }
  }
}

// A lane's 8 values of a weight row in the pipeline's shared memory: 16 bytes, or 8 for FP8.
template <typename WT>
constexpr int kPieceBytes = kIsFp8<WT> ? 8 : 16;

// Shared memory of grouped_experts_kernel: per stage, each warp's weight pieces ([warp][piece][lane])
// and the block's token tiles ([tile][p][g][q], 16 bytes each).
template <typename WT>
constexpr size_t kWeightStageBytes = size_t(kWarps) * 8 * 32 * kPieceBytes<WT>;
constexpr size_t kTokenStageBytes = size_t(kTokenTiles) * 2 * 32 * 16;
template <typename WT>
constexpr size_t kGroupedSharedBytes = size_t(kStages) * (kWeightStageBytes<WT> + kTokenStageBytes);

// A weight piece from shared memory as 8 mma values: 2-byte weights as stored; FP8 times the tile's
// scale, rounded to bf16.
template <typename WT>
__device__ __forceinline__ uint4 weights_from_shared(const unsigned char* p, float scale) {
  if constexpr (kIsFp8<WT>) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p);
    float f[8];
    weights_to_f32(reinterpret_cast<const __nv_fp8_e4m3(&)[8]>(raw), f);
    uint4 out;
    uint32_t* words = reinterpret_cast<uint32_t*>(&out);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const __nv_bfloat162 b = __floats2bfloat162_rn(f[2 * j] * scale, f[2 * j + 1] * scale);
      words[j] = *reinterpret_cast<const uint32_t*>(&b);
    }
    return out;
  } else {
    (void)scale;
    return *reinterpret_cast<const uint4*>(p);
  }
}

// For the n_e tokens packed for expert e = blockIdx.y (rows e·T + j of `in`, [E·T, D] in AT = MmaType<WT>):
//   GATE_UP: out[e·T + j, r] = silu(a_e[r] · in_j) · (b_e[r] · in_j), rounded to AT   (a = gate, b = up)
//   else:    out[e·T + j, r] = a_e[r] · in_j, f32                                      (a = down)
// a, b: [E, R, D] (FP8: tile scales s_a, s_b [E, fp8_tiles(R), fp8_tiles(D)]; a 16-row tile and a
// 64-value step of k lie in one scale tile); out: [E·T, R]. A warp takes two 16-row tiles: for GATE_UP
// the same 16 rows of gate and up, else 32 consecutive rows; block x covers kWarps of them.
// Lane (g = lane/4, q = lane%4) owns 8 values of rows g and g + 8 of each tile at k = 8q and 32 + 8q
// of every 64-value step: their four 4-byte words are its k-pairs (2q, 2q+8) of two mma steps. The
// token tiles are read at the same k, so each product still meets its partner; the sum runs over k in
// a different order, as any GEMM's does.
// The steps stream through a kStages-deep ring in shared memory (cp.async): each lane copies its own
// weight pieces (read back by that lane alone), the block copies up to kTokenTiles 8-token tiles (read
// by every warp), so a step's loads are in flight kStages − 1 steps before its products.
template <typename WT, bool GATE_UP>
__global__ void __launch_bounds__(kWarps * 32)
    grouped_experts_kernel(const MmaType<WT>* __restrict__ in, int64_t T, int64_t D, int64_t R,
                           const int32_t* __restrict__ counts, const WT* __restrict__ a, const WT* __restrict__ b,
                           const float* __restrict__ s_a, const float* __restrict__ s_b, void* out) {
  using AT = MmaType<WT>;
  constexpr int kPiece = kPieceBytes<WT>;
  extern __shared__ __align__(16) unsigned char shared[];
  unsigned char* weight_ring = shared;                                                  // [stage][warp][piece][lane]
  uint4* token_ring = reinterpret_cast<uint4*>(shared + kStages * kWeightStageBytes<WT>);  // [stage][tile][p][g][q]
  start_after_previous_kernel();
  const int32_t e = blockIdx.y;
  const int n = counts[e];
  if (n == 0) return;  // the whole block
  constexpr int64_t kRowsPerWarp = GATE_UP ? 16 : 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;
  const int64_t r0 = (int64_t(blockIdx.x) * kWarps + warp) * kRowsPerWarp;
  const bool active = r0 < R;  // a warp past the last row still copies tokens and meets the barriers
  const WT* rows[2][2];        // [tile][half]: the row whose values this lane loads (rows past R: R − 1, not written)
#pragma unroll
  for (int t = 0; t < 2; ++t)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t r = std::min((GATE_UP ? r0 : r0 + 16 * t) + g + 8 * h, R - 1);
      rows[t][h] = (GATE_UP && t == 1 ? b : a) + (int64_t(e) * R + r) * D;
    }
  const float* tile_scales[2] = {nullptr, nullptr};  // FP8: the scale row of each 16-row tile
  if constexpr (kIsFp8<WT>)
#pragma unroll
    for (int t = 0; t < 2; ++t)
      tile_scales[t] = (GATE_UP && t == 1 ? s_b : s_a) +
                       (int64_t(e) * fp8_tiles(R) + std::min(GATE_UP ? r0 : r0 + 16 * t, R - 1) / kFp8TileSize) * fp8_tiles(D);
  const AT* tokens = in + int64_t(e) * T * D;
  const int steps = int((D + kChunk - 1) / kChunk);
  for (int j0 = 0; j0 < n; j0 += 8 * kTokenTiles) {
    const int tiles = min(kTokenTiles + 0, (n - j0 + 7) / 8);
    // Step i's copies into ring slot i % kStages, one commit group per step (empty past the last).
    auto issue = [&](int i) {
      if (i < steps) {
        const int slot = i % kStages;
        const int64_t k0 = int64_t(i) * kChunk;
        if (active) {
          unsigned char* dst = weight_ring + slot * kWeightStageBytes<WT> + warp * 8 * 32 * kPiece;
#pragma unroll
          for (int t = 0; t < 2; ++t)
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
              for (int p = 0; p < 2; ++p) {
                const int64_t k = k0 + 32 * p + 8 * q;
                copy_async_or_zero<kPiece>(dst + ((t * 4 + h * 2 + p) * 32 + lane) * kPiece,
                                           rows[t][h] + (k < D ? k : 0), k < D);
              }
        }
        uint4* dst = token_ring + slot * (kTokenStageBytes / 16);
        for (int c = threadIdx.x; c < tiles * 64; c += kWarps * 32) {
          const int nt = c / 64, p = (c / 32) % 2, cg = (c / 4) % 8, cq = c % 4;
          const int64_t j = min(j0 + nt * 8 + cg, n - 1);  // past n_e: the last token, not written
          const int64_t k = k0 + 32 * p + 8 * cq;
          copy_async_or_zero<16>(dst + c, tokens + j * D + (k < D ? k : 0), k < D);
        }
      }
      copy_async_commit();
    };
#pragma unroll
    for (int i = 0; i < kStages - 1; ++i) issue(i);
    float acc[2][kTokenTiles][4] = {};
    for (int i = 0; i < steps; ++i) {
      copy_async_wait<kStages - 2>();  // this thread's copies of step i have landed
      __syncthreads();                 // everyone's have, and everyone is done with step i − 1's slot
      issue(i + kStages - 1);          // into that slot
      if (!active) continue;
      const int slot = i % kStages;
      const unsigned char* w_src = weight_ring + slot * kWeightStageBytes<WT> + warp * 8 * 32 * kPiece;
      const uint4* x_src = token_ring + slot * (kTokenStageBytes / 16);
      float scale[2] = {1.0f, 1.0f};
      if constexpr (kIsFp8<WT>)
#pragma unroll
        for (int t = 0; t < 2; ++t) scale[t] = tile_scales[t][int64_t(i) * kChunk / kFp8TileSize];
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        uint4 w[2][2];  // [tile][half]
#pragma unroll
        for (int t = 0; t < 2; ++t)
#pragma unroll
          for (int h = 0; h < 2; ++h)
            w[t][h] = weights_from_shared<WT>(w_src + ((t * 4 + h * 2 + p) * 32 + lane) * kPiece, scale[t]);
#pragma unroll
        for (int nt = 0; nt < kTokenTiles; ++nt) {
          if (nt >= tiles) break;
          const uint4 x = x_src[(nt * 2 + p) * 32 + lane];
#pragma unroll
          for (int s = 0; s < 2; ++s)
#pragma unroll
            for (int t = 0; t < 2; ++t)
              mma_16x8x16<AT>(acc[t][nt], word(w[t][0], 2 * s), word(w[t][1], 2 * s), word(w[t][0], 2 * s + 1),
                              word(w[t][1], 2 * s + 1), word(x, 2 * s), word(x, 2 * s + 1));
        }
      }
    }
    __syncthreads();  // every warp is done with the ring before the next pass refills it
    if (!active) continue;
    // acc[t][nt][i]: row g (i < 2) or g + 8 of tile t, token j0 + 8·nt + 2q + (i & 1).
#pragma unroll
    for (int nt = 0; nt < kTokenTiles; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int j = j0 + 8 * nt + 2 * q + (i & 1);
        if (nt >= tiles || j >= n) continue;
        const int64_t out_row = (int64_t(e) * T + j) * R;
        if constexpr (GATE_UP) {
          const int64_t r = r0 + g + 8 * (i >> 1);
          const float gt = acc[0][nt][i], up = acc[1][nt][i];
          if (r < R) from_f32(silu_times(gt, up), static_cast<AT*>(out) + out_row + r);
        } else {
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            const int64_t r = r0 + 16 * t + g + 8 * (i >> 1);
            if (r < R) static_cast<float*>(out)[out_row + r] = acc[t][nt][i];
          }
        }
      }
  }
}

}  // namespace

bool grouped_experts_supported(const ExpertWeights& w, int64_t H, int64_t I) {
  const bool fp8 = w.dtype == DType::F8_E4M3;
  return (w.dtype == DType::BF16 || w.dtype == DType::F16 || fp8) && H % 8 == 0 && I % 8 == 0 && aligned16(w.gate) &&
         aligned16(w.up) && aligned16(w.down) && (!fp8 || (w.gate_scales && w.up_scales && w.down_scales));
}

void moe_experts_grouped(const float* x, int64_t T, int64_t H, int64_t I, int64_t K, int64_t E,
                         const int32_t* expert_ids, const float* gate_weights, const ExpertWeights& w,
                         const MoeGroupedScratch& s, float* out, cudaStream_t stream) {
  check(T * K <= kGroupedMaxPairs, "GPU MoE: at most " + std::to_string(kGroupedMaxPairs) + " (token, expert) pairs per step");
  check(grouped_experts_supported(w, H, I),
        "grouped experts: BF16, F16 or FP8 weights (with scales), 16-byte aligned, with sizes that are multiples of 8");
  check(aligned16(s.xs) && aligned16(s.hs) && aligned16(x), "grouped experts: inputs and scratch must be 16-byte aligned");
  auto run = [&](auto type_tag) {
    using WT = decltype(type_tag);
    using AT = MmaType<WT>;
    // About one row per block column for an expert of average load (n_e ~ T·K / E), at most 16 columns.
    const unsigned columns = unsigned(std::clamp<int64_t>((T * K + E - 1) / E, 1, 16));
    launch_overlapped(pack_expert_tokens_kernel<AT>, dim3(unsigned(E), columns), 256, 0, stream, x, T, H, K, expert_ids,
                      static_cast<AT*>(s.xs), s.counts, s.slot_of);
    constexpr int64_t kGateUpRows = kWarps * 16, kDownRows = kWarps * 32;
    const WT *wg = static_cast<const WT*>(w.gate), *wu = static_cast<const WT*>(w.up), *wd = static_cast<const WT*>(w.down);
    // The kernels' dynamic shared-memory limit, raised once per weight type.
    [[maybe_unused]] static const bool raised =
        allow_shared_memory(kGroupedSharedBytes<WT>, grouped_experts_kernel<WT, true>, grouped_experts_kernel<WT, false>);
    launch_overlapped(grouped_experts_kernel<WT, true>, dim3(unsigned((I + kGateUpRows - 1) / kGateUpRows), unsigned(E)),
                      kWarps * 32, kGroupedSharedBytes<WT>, stream, static_cast<const AT*>(s.xs), T, H, I, s.counts, wg, wu, w.gate_scales,
                      w.up_scales, s.hs);
    launch_overlapped(grouped_experts_kernel<WT, false>, dim3(unsigned((H + kDownRows - 1) / kDownRows), unsigned(E)),
                      kWarps * 32, kGroupedSharedBytes<WT>, stream, static_cast<const AT*>(s.hs), T, I, H, s.counts, wd,
                      static_cast<const WT*>(nullptr), w.down_scales, static_cast<const float*>(nullptr),
                      static_cast<void*>(s.y));
  };
  if (w.dtype == DType::BF16) {
    run(__nv_bfloat16{});
  } else if (w.dtype == DType::F16) {
    run(__half{});
  } else {
    run(__nv_fp8_e4m3{});
  }
  combine_sorted(s.y, s.slot_of, gate_weights, T, H, K, out, stream);
}

}  // namespace dsv2::cuda
