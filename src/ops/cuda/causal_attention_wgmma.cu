// Causal flash attention of a prompt chunk (the decompressed MLA form) on Hopper's warpgroup tensor
// cores, for DeepSeek-V2's head shape (q·k over 192 values, 128 value columns), over the keys and
// values attend_decompressed_mma packs in bf16, head-major. A block takes 128 queries of one head, two
// warpgroups of 64 rows (the wgmma's rows), and walks the keys up to its last query's position in
// tiles of 64, two tiles' copies in flight while one is attended:
//   S[64, 64] = Q[64, 192] · Kᵀ           each warpgroup its rows: 12 m64n64k16 steps from swizzled tiles
//   online softmax per query row           (base-2 exponent; the causal mask on tiles past a row's position)
//   O[64, 128] += P[64, 64] · V[64, 128]   P from S's accumulators in registers, V read MN-major: 4 m64n128k16
// Sums are f32; Q, K, V and P are rounded to bf16 (the results of the mma.sync kernel, summed in
// another order).
#include "ops/cuda/causal_attention_wgmma.h"

#include <cuda_bf16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/tensor_core.cuh"
#include "ops/cuda/warpgroup_mma.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kDqk = 192, kDv = 128;
constexpr int kQueries = 128;  // per block: two warpgroups of 64 rows
constexpr int kKeys = 64;      // per tile
constexpr int kStages = 3;     // key tiles in shared memory: one attended, two arriving
constexpr int kThreads = 256;
constexpr int kTileBytes = kSwizzledTileBytes;                       // a swizzled tile: 64 rows of 64 values
constexpr int kQkTiles = kDqk / 64, kVTiles = kDv / 64;              // 3 and 2 tiles a row set
constexpr int kQBytes = kQueries / 64 * kQkTiles * kTileBytes;       // 48 KB
constexpr int kStageBytes = (kQkTiles + kVTiles) * kTileBytes;      // keys then values: 40 KB
constexpr size_t kSharedBytes = size_t(kQBytes + kStages * kStageBytes) + 1024;  // + the base's alignment
constexpr int kPiecesPerKey = (kDqk + kDv) / 8;                      // 16-byte pieces a key row brings
static_assert(kKeys * kPiecesPerKey % kThreads == 0, "whole rounds of tile copies");

// grid (nh, query tiles), the tiles with the most keys first.
__global__ void __launch_bounds__(kThreads, 1)
    causal_attention_wgmma_kernel(const float* __restrict__ q, int64_t nh, const __nv_bfloat16* __restrict__ keys,
                                  const __nv_bfloat16* __restrict__ values, int64_t T, int64_t L, int64_t pos0,
                                  float scale_log2, float* __restrict__ out) {
  extern __shared__ __align__(1024) unsigned char shared[];
  const uint32_t unaligned = shared_address(shared), skew = (1024 - unaligned % 1024) % 1024;
  unsigned char* base = shared + skew;
  const uint32_t base_address = unaligned + skew;
  const int64_t h = blockIdx.x, q0 = (int64_t(gridDim.y) - 1 - blockIdx.y) * kQueries;
  const int warpgroup = threadIdx.x / 128, w = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32, g = lane / 4,
            q4 = lane % 4;
  const int n_tiles = int((pos0 + min(T, q0 + kQueries) - 1) / kKeys) + 1;  // up to the last query's position
  const __nv_bfloat16* Kh = keys + h * L * kDqk;
  const __nv_bfloat16* Vh = values + h * L * kDv;
  // Keys k0 .. k0 + 63 and their values into stage s (rows past L: the last key again, masked as causal).
  auto copy_tile = [&](int s, int64_t k0) {
    unsigned char* stage = base + kQBytes + s * kStageBytes;
#pragma unroll
    for (int u = 0; u < kKeys * kPiecesPerKey / kThreads; ++u) {
      const int i = threadIdx.x + u * kThreads, r = i / kPiecesPerKey, piece = i % kPiecesPerKey;
      const int64_t key = min(k0 + r, L - 1);
      if (piece < kDqk / 8)
        copy_async16(stage + swizzled_offset(r, 8 * piece), Kh + key * kDqk + 8 * piece);
      else
        copy_async16(stage + kQkTiles * kTileBytes + swizzled_offset(r, 8 * (piece - kDqk / 8)),
                     Vh + key * kDv + 8 * (piece - kDqk / 8));
    }
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_tiles) copy_tile(s, int64_t(s) * kKeys);
    copy_async_commit();
  }
  // The queries in bf16 while the first tiles arrive (rows past T zero): warpgroup w's 64 rows as 3
  // swizzled tiles at w · 24 KB.
  for (int i = threadIdx.x; i < kQueries * kDqk / 4; i += kThreads) {
    const int r = i / (kDqk / 4), c = (i % (kDqk / 4)) * 4;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (q0 + r < T) v = *reinterpret_cast<const float4*>(q + ((q0 + r) * nh + h) * kDqk + c);
    *reinterpret_cast<uint2*>(base + (r / 64) * kQkTiles * kTileBytes + swizzled_offset(r % 64, c)) =
        make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
  }

  const int64_t row0 = q0 + 64 * warpgroup;  // this warpgroup's first query
  // Positions of this thread's rows 16w + g and 16w + g + 8.
  const int64_t pos[2] = {pos0 + row0 + 16 * w + g, pos0 + row0 + 16 * w + g + 8};
  const uint32_t q_tiles = base_address + warpgroup * kQkTiles * kTileBytes;
  // o[4j + i]: row 16w + g + 8(i / 2) of the warpgroup, value column 8j + 2·q4 + i % 2.
  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};  // base-2 units
  float l_run[2] = {0.0f, 0.0f};            // over this thread's keys
  for (int kt = 0; kt < n_tiles; ++kt) {
    copy_async_wait<kStages - 2>();  // this tile's copies (the next one's may still fly)
    fence_shared_for_async_proxy();  // and the query writes, before the tensor cores read them
    __syncthreads();                 // every thread's copies have arrived; tile kt − 1's stage is free
    if (kt + kStages - 1 < n_tiles) copy_tile((kt + kStages - 1) % kStages, int64_t(kt + kStages - 1) * kKeys);
    copy_async_commit();
    const int64_t k0 = int64_t(kt) * kKeys;
    if (k0 > pos0 + row0 + 63) continue;  // every key of the tile lies past every row of this warpgroup
    const uint32_t stage = base_address + kQBytes + (kt % kStages) * kStageBytes;
    // s[4j + i]: row 16w + g + 8(i / 2), key k0 + 8j + 2·q4 + i % 2.
    float s[32];
    warpgroup_scores_m64n64<kDqk / 16>(s, q_tiles, stage);
    const bool masked = k0 + kKeys - 1 > pos0 + row0;  // some key lies past some row's position
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      float v = s[i] * scale_log2;
      if (masked && k0 + 8 * (i / 4) + 2 * q4 + i % 2 > pos[(i / 2) % 2]) v = -INFINITY;
      s[i] = v;
      mx[(i / 2) % 2] = fmaxf(mx[(i / 2) % 2], v);
    }
    // Key 0 is visible to every row, so from the first tile on m_run is finite (rows past T aside, whose
    // results are dropped).
    float correction[2];
    online_softmax_step(mx, m_run, l_run, correction);
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      s[i] = exp2f(s[i] - m_run[(i / 2) % 2]);
      l_run[(i / 2) % 2] += s[i];
    }
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      o[4 * j] *= correction[0];
      o[4 * j + 1] *= correction[0];
      o[4 * j + 2] *= correction[1];
      o[4 * j + 3] *= correction[1];
    }
    // O += P · V over the tile's keys in k-steps of 16: P's fragments (score columns 16kk .. 16kk + 15 are
    // s[8kk .. 8kk + 7]) all formed before the fence that hands the registers to the tensor cores.
    uint32_t p[kKeys / 16][4];
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk)
#pragma unroll
      for (int i = 0; i < 4; ++i) p[kk][i] = pack_bf16x2(s[8 * kk + 2 * i], s[8 * kk + 2 * i + 1]);
#pragma unroll
    for (int i = 0; i < 64; ++i) fence_accumulator(o[i]);
    warpgroup_fence();
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk)
      warpgroup_mma_m64n128k16_bf16_registers_a(
          o, p[kk], swizzled_mn_major_descriptor(stage + kQkTiles * kTileBytes + kk * 16 * 128, kTileBytes));
    warpgroup_commit();
    warpgroup_wait<0>();
#pragma unroll
    for (int i = 0; i < 64; ++i) fence_accumulator(o[i]);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    const int64_t row = row0 + 16 * w + g + 8 * r;
    if (row >= T) continue;
    const float inv = 1.0f / l_run[r];
    float* dst = out + (row * nh + h) * kDv + 2 * q4;
#pragma unroll
    for (int j = 0; j < 16; ++j)
      *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(o[4 * j + 2 * r] * inv, o[4 * j + 2 * r + 1] * inv);
  }
}

}  // namespace

bool causal_attention_wgmma_supported(const MlaShape& s) { return s.d_nope + s.d_rope == kDqk && s.d_v == kDv; }

void causal_attention_wgmma(const MlaShape& s, const float* q, const void* keys, const void* values, int64_t T,
                            int64_t pos0, float* out, cudaStream_t stream) {
  check(causal_attention_wgmma_supported(s), "warpgroup prefill attention: head dims qk 192 and v 128 only");
  [[maybe_unused]] static const bool raised = allow_shared_memory(kSharedBytes, causal_attention_wgmma_kernel);
  const dim3 grid(unsigned(s.n_heads), unsigned((T + kQueries - 1) / kQueries));
  causal_attention_wgmma_kernel<<<grid, kThreads, kSharedBytes, stream>>>(
      q, s.n_heads, static_cast<const __nv_bfloat16*>(keys), static_cast<const __nv_bfloat16*>(values), T, pos0 + T,
      pos0, s.softmax_scale_log2(), out);
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
