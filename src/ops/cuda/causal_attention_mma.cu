// Causal flash attention of a prompt chunk (the decompressed MLA form) on the tensor cores.
// The keys [k_nope | k_pe] and values of every head come in bf16, head-major (decompress_keys_values).
// A block takes 64 queries of one head (4 warps × 16 rows, the mma's rows) and walks the keys up to its
// last query's position in tiles of 64, the next tile's copy in flight while one is attended:
//   S[16, 64] = Q[16, 192] · Kᵀ          per warp; Q's fragments stay in registers for every tile
//   online softmax per query row         (base-2 exponent; the causal mask on tiles past a row's position)
//   O[16, 128] += P[16, 64] · V[64, 128]  P taken from S's accumulators, rounded to bf16
// Sums are f32; Q, K, V and P are rounded to bf16.
#include "ops/cuda/causal_attention_mma.h"
#include "ops/cuda/causal_attention_wgmma.h"

#include <cuda_bf16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/tensor_core.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kQueries = 16 * kWarps;  // per block
constexpr int kKeys = 64;              // per tile

// The head shapes built (d_nope + d_rope, d_v): DeepSeek-V2's, and this project's default model's.
struct HeadShape {
  int qk, v;
};
constexpr HeadShape kV2Heads{192, 128}, kDefaultModelHeads{48, 32};

// Shared row strides (bf16 values): an odd number of 16-byte units, so that the 8 rows of a matrix
// load hit distinct banks.
template <int DQK, int DV>
struct Tiles {
  static_assert(DQK % 16 == 0 && DV % 16 == 0, "whole k-steps and column pairs of 16");
  static constexpr int kQkRow = DQK + 8, kVRow = DV + 8;
  static constexpr size_t kSharedBytes = size_t(kQueries * kQkRow + 2 * kKeys * (kQkRow + kVRow)) * sizeof(__nv_bfloat16);
};

// grid (nh, query tiles), the tiles with the most keys first.
template <int kDqk, int kDv>
__global__ void __launch_bounds__(kThreads, 2)
    causal_attention_mma_kernel(const float* __restrict__ q, int64_t nh, const __nv_bfloat16* __restrict__ keys,
                                const __nv_bfloat16* __restrict__ values, int64_t T, int64_t L, int64_t pos0,
                                float scale_log2, float* __restrict__ out) {
  constexpr int kQkRow = Tiles<kDqk, kDv>::kQkRow, kVRow = Tiles<kDqk, kDv>::kVRow;
  extern __shared__ __align__(16) unsigned char shared[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(shared);  // [kQueries][kQkRow]
  __nv_bfloat16* Ks = Qs + kQueries * kQkRow;                     // [2][kKeys][kQkRow]
  __nv_bfloat16* Vs = Ks + 2 * kKeys * kQkRow;                    // [2][kKeys][kVRow]
  const int64_t h = blockIdx.x, q0 = (int64_t(gridDim.y) - 1 - blockIdx.y) * kQueries;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q4 = lane % 4;
  const int n_tiles = int((pos0 + min(T, q0 + kQueries) - 1) / kKeys) + 1;  // up to the last query's position
  const __nv_bfloat16* Kh = keys + h * L * kDqk;
  const __nv_bfloat16* Vh = values + h * L * kDv;
  // Keys k0 .. k0 + kKeys − 1 into stage s (rows past L: the last key again, masked as causal).
  auto copy_tile = [&](int s, int64_t k0) {
    for (int i = threadIdx.x; i < kKeys * kDqk / 8; i += kThreads) {
      const int r = i / (kDqk / 8), piece = i % (kDqk / 8);
      copy_async16(Ks + (s * kKeys + r) * kQkRow + piece * 8, Kh + min(k0 + r, L - 1) * kDqk + piece * 8);
    }
    for (int i = threadIdx.x; i < kKeys * kDv / 8; i += kThreads) {
      const int r = i / (kDv / 8), piece = i % (kDv / 8);
      copy_async16(Vs + (s * kKeys + r) * kVRow + piece * 8, Vh + min(k0 + r, L - 1) * kDv + piece * 8);
    }
  };
  copy_tile(0, 0);
  copy_async_commit();
  // The queries in bf16 while the first tile arrives (rows past T zero).
  for (int i = threadIdx.x; i < kQueries * kDqk / 4; i += kThreads) {
    const int r = i / (kDqk / 4), c = (i % (kDqk / 4)) * 4;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (q0 + r < T) v = *reinterpret_cast<const float4*>(q + ((q0 + r) * nh + h) * kDqk + c);
    __nv_bfloat162* dst = reinterpret_cast<__nv_bfloat162*>(Qs + r * kQkRow + c);
    dst[0] = __floats2bfloat162_rn(v.x, v.y);
    dst[1] = __floats2bfloat162_rn(v.z, v.w);
  }
  __syncthreads();
  uint32_t qf[kDqk / 16][4];  // this warp's 16 query rows as A fragments, one per k-step
#pragma unroll
  for (int kk = 0; kk < kDqk / 16; ++kk)
    load_matrices_x4(qf[kk], Qs + (16 * warp + lane % 16) * kQkRow + kk * 16 + (lane / 16) * 8);

  const int64_t row0 = q0 + 16 * warp;                              // this warp's first query
  const int64_t pos[2] = {pos0 + row0 + g, pos0 + row0 + g + 8};  // positions of rows g and g + 8
  float o[kDv / 8][4] = {};
  float m_run[2] = {-INFINITY, -INFINITY};  // base-2 units
  float l_run[2] = {0.0f, 0.0f};            // over this lane's keys
  for (int kt = 0; kt < n_tiles; ++kt) {
    // The other stage was last read before the previous tile's final barrier.
    if (kt + 1 < n_tiles) copy_tile((kt + 1) % 2, int64_t(kt + 1) * kKeys);
    copy_async_commit();
    copy_async_wait<1>();
    __syncthreads();
    const int64_t k0 = int64_t(kt) * kKeys;
    if (k0 <= pos0 + row0 + 15) {  // some key of the tile is visible to some row of this warp
      const __nv_bfloat16* K = Ks + (kt % 2) * kKeys * kQkRow;
      const __nv_bfloat16* V = Vs + (kt % 2) * kKeys * kVRow;
      // s[t][i]: row g (i < 2) or g + 8, key k0 + 8t + 2·q4 + (i & 1).
      float s[kKeys / 8][4] = {};
#pragma unroll
      for (int kk = 0; kk < kDqk / 16; ++kk) {
#pragma unroll
        for (int p = 0; p < kKeys / 16; ++p) {
          uint32_t b[4];
          load_matrices_x4(b, K + (16 * p + (lane / 16) * 8 + lane % 8) * kQkRow + kk * 16 + ((lane / 8) % 2) * 8);
          mma_16x8x16<__nv_bfloat16>(s[2 * p], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], b[0], b[1]);
          mma_16x8x16<__nv_bfloat16>(s[2 * p + 1], qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3], b[2], b[3]);
        }
      }
      const bool masked = k0 + kKeys - 1 > pos0 + row0;  // some key lies past some row's position
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int t = 0; t < kKeys / 8; ++t)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          float v = s[t][i] * scale_log2;
          if (masked && k0 + 8 * t + 2 * q4 + (i & 1) > pos[i >> 1]) v = -INFINITY;
          s[t][i] = v;
          mx[i >> 1] = fmaxf(mx[i >> 1], v);
        }
      // Key 0 is visible to every row, so from the first tile on m_run is finite.
      float correction[2];
      online_softmax_step(mx, m_run, l_run, correction);
#pragma unroll
      for (int t = 0; t < kKeys / 8; ++t)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          s[t][i] = exp2f(s[t][i] - m_run[i >> 1]);
          l_run[i >> 1] += s[t][i];
        }
#pragma unroll
      for (int t = 0; t < kDv / 8; ++t) {
        o[t][0] *= correction[0];
        o[t][1] *= correction[0];
        o[t][2] *= correction[1];
        o[t][3] *= correction[1];
      }
      // O += P · V over the tile's keys in k-steps of 16 (score tiles 2kk and 2kk + 1).
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        const uint32_t a0 = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), a1 = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
        const uint32_t a2 = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        const uint32_t a3 = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int c = 0; c < kDv / 16; ++c) {
          uint32_t v[4];
          load_matrices_x4_trans(v, V + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kVRow + 16 * c + (lane / 16) * 8);
          mma_16x8x16<__nv_bfloat16>(o[2 * c], a0, a1, a2, a3, v[0], v[1]);
          mma_16x8x16<__nv_bfloat16>(o[2 * c + 1], a0, a1, a2, a3, v[2], v[3]);
        }
      }
    }
    __syncthreads();  // this stage is free for the tile after next
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + g + 8 * r;
    if (row >= T) continue;
    const float inv = 1.0f / l_run[r];
    float* dst = out + (row * nh + h) * kDv + 2 * q4;
#pragma unroll
    for (int t = 0; t < kDv / 8; ++t)
      *reinterpret_cast<float2*>(dst + 8 * t) = make_float2(o[t][2 * r] * inv, o[t][2 * r + 1] * inv);
  }
}

}  // namespace

bool causal_attention_mma_supported(const MlaShape& s) {
  const auto is = [&](HeadShape h) { return s.d_nope + s.d_rope == h.qk && s.d_v == h.v; };
  return is(kV2Heads) || is(kDefaultModelHeads);
}

namespace {

template <int DQK, int DV>
void launch_causal_attention(const MlaShape& s, const float* q, const __nv_bfloat16* keys, const __nv_bfloat16* values,
                             int64_t T, int64_t pos0, float* out, cudaStream_t stream) {
  constexpr size_t bytes = Tiles<DQK, DV>::kSharedBytes;
  [[maybe_unused]] static const bool raised = allow_shared_memory(bytes, causal_attention_mma_kernel<DQK, DV>);
  const dim3 grid(unsigned(s.n_heads), unsigned((T + kQueries - 1) / kQueries));
  causal_attention_mma_kernel<DQK, DV><<<grid, kThreads, bytes, stream>>>(q, s.n_heads, keys, values, T, pos0 + T,
                                                                          pos0, s.softmax_scale_log2(), out);
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace

void attend_decompressed_mma(const MlaShape& s, const float* q, const void* keys_bf16, const void* values_bf16,
                             int64_t T, int64_t pos0, float* out, cudaStream_t stream, PrefillAttentionKernel kernel) {
  check(causal_attention_mma_supported(s), "tensor-core prefill attention: head dims (qk 192, v 128) or (48, 32) only");
  using K = PrefillAttentionKernel;
  check(kernel != K::warpgroup_mma || causal_attention_wgmma_supported(s),
        "tensor-core prefill attention: the warpgroup kernel takes head dims qk 192 and v 128 only");
  if (kernel == K::automatic) kernel = causal_attention_wgmma_supported(s) ? K::warpgroup_mma : K::warp_mma;
  check(T >= 1 && pos0 >= 0, "tensor-core prefill attention: T >= 1 and pos0 >= 0");
  const auto* keys = static_cast<const __nv_bfloat16*>(keys_bf16);
  const auto* values = static_cast<const __nv_bfloat16*>(values_bf16);
  if (kernel == K::warpgroup_mma) {
    causal_attention_wgmma(s, q, keys, values, T, pos0, out, stream);
  } else if (s.d_nope + s.d_rope == kV2Heads.qk) {
    launch_causal_attention<kV2Heads.qk, kV2Heads.v>(s, q, keys, values, T, pos0, out, stream);
  } else {
    launch_causal_attention<kDefaultModelHeads.qk, kDefaultModelHeads.v>(s, q, keys, values, T, pos0, out, stream);
  }
}

}  // namespace dsv2::cuda
