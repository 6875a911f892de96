// Causal flash attention of a prompt chunk (the decompressed MLA form) on Hopper's warpgroup tensor
// cores, for DeepSeek-V2's head shape (q·k over 192 values, 128 value columns), over the keys and
// values in bf16, head-major (decompress_keys_values). A block takes 128 queries of one head: two
// consumer warpgroups of 64 rows (the wgmma's rows) and a producer warp whose first thread brings the
// key tiles (64 keys and their values) by tensor copies into a ring of kStages stages. Each consumer
// walks the tiles up to its last query's position:
//   S[64, 64] = Q[64, 192] · Kᵀ           12 m64n64k16 steps from swizzled tiles
//   online softmax per query row           (base-2 exponent; the causal mask on tiles past a row's position)
//   O[64, 128] += P[64, 64] · V[64, 128]   P from S's accumulators in registers, V read MN-major: 4 m64n128k16
// software-pipelined and staggered (FlashAttention-3's schedule): a consumer issues tile j's S and tile
// j − 1's P·V together, then runs tile j's softmax while its P·V runs; the two consumers take turns
// issuing (named barriers), so one's softmax overlaps the other's products.
// Sums are f32; Q, K, V and P are rounded to bf16 (the results of the mma.sync kernel, summed in
// another order).
#include "ops/cuda/causal_attention_wgmma.h"

#include <cuda.h>
#include <cuda_bf16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/tensor_core.cuh"
#include "ops/cuda/tensor_map.h"
#include "ops/cuda/warpgroup_mma.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kDqk = 192, kDv = 128;
constexpr int kQueries = 128;  // per block: two consumer warpgroups of 64 rows
constexpr int kKeys = 64;      // per tile: one box of the tensor maps
constexpr int kStages = 4;     // key tiles in the ring: one attended, one's values in P·V, two arriving
constexpr int kConsumerThreads = 256;
constexpr int kThreads = kConsumerThreads + 32;  // + the producer warp
constexpr int kTileBytes = kSwizzledTileBytes;                       // a swizzled tile: 64 rows of 64 values
constexpr int kQkTiles = kDqk / 64, kVTiles = kDv / 64;              // 3 and 2 tiles a row set
constexpr int kQBytes = kQueries / 64 * kQkTiles * kTileBytes;       // 48 KB
constexpr int kStageBytes = (kQkTiles + kVTiles) * kTileBytes;      // keys then values: 40 KB
constexpr size_t kSharedBytes = size_t(kQBytes + kStages * kStageBytes) + 2 * kStages * 8 + 1024;  // + barriers, alignment
// Named barriers: consumer c's turn to issue is id kTurn + c; consumer c's own barrier kQueriesStaged + c.
constexpr int kTurn = 1, kQueriesStaged = 3;

// grid (nh, query tiles), the tiles with the most keys first. key_tiles and value_tiles: tensor maps
// over keys [nh·L, 192] and values [nh·L, 128] in 64 × 64 boxes (rows past a head's L are the next
// head's, or zeros past the last: masked as causal either way).
__global__ void __launch_bounds__(kThreads, 1)
    causal_attention_wgmma_kernel(const __grid_constant__ CUtensorMap key_tiles,
                                  const __grid_constant__ CUtensorMap value_tiles, const float* __restrict__ q,
                                  int64_t nh, int64_t T, int64_t L, int64_t pos0, float scale_log2,
                                  float* __restrict__ out) {
  extern __shared__ __align__(1024) unsigned char shared[];
  const AlignedShared aligned = align_shared_1024(shared);
  unsigned char* const base = aligned.base;
  const uint32_t base_address = aligned.address, ring = base_address + kQBytes;
  const uint32_t full = ring + kStages * kStageBytes, empty = full + kStages * 8;  // [stage] barriers
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      barrier_init(full + 8 * s, 1);
      barrier_init(empty + 8 * s, 2);  // one arrival per consumer
    }
    fence_barrier_init();
  }
  __syncthreads();
  const int64_t h = blockIdx.x, q0 = (int64_t(gridDim.y) - 1 - blockIdx.y) * kQueries;
  // The tiles up to the position of query end − 1 (the last of T at most).
  const auto tiles_through = [&](int64_t end) { return int((pos0 + min(T, end) - 1) / kKeys) + 1; };
  const int n_tiles = tiles_through(q0 + kQueries);  // the block's

  if (threadIdx.x >= kConsumerThreads) {  // the producer
    if (threadIdx.x != kConsumerThreads) return;
    for (int t = 0; t < n_tiles; ++t) {
      const int slot = t % kStages, use = t / kStages;
      if (use > 0) barrier_wait(empty + 8 * slot, (use - 1) & 1);
      const uint32_t stage = ring + slot * kStageBytes, bar = full + 8 * slot;
      barrier_expect_bytes(bar, kStageBytes);
      const int32_t row = int32_t(h * L + int64_t(t) * kKeys);
      for (int i = 0; i < kQkTiles; ++i)
        tensor_copy_2d(stage + i * kTileBytes, &key_tiles, kSwizzledBoxValues * i, row, bar);
      for (int i = 0; i < kVTiles; ++i)
        tensor_copy_2d(stage + (kQkTiles + i) * kTileBytes, &value_tiles, kSwizzledBoxValues * i, row, bar);
    }
    return;
  }

  const int c = threadIdx.x / 128, w = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32, g = lane / 4,
            q4 = lane % 4;
  const int64_t row0 = q0 + 64 * c;  // this consumer's first query
  // Its tiles: up to its last query's position (none if all its rows lie past T); tiles past them are
  // released unread.
  const int n_mine = row0 < T ? tiles_through(row0 + 64) : 0;
  // Its queries in bf16 (rows past T zero) as 3 swizzled tiles at c · 24 KB, while the first tiles arrive.
  for (int i = threadIdx.x % 128; i < 64 * kDqk / 4; i += 128) {
    const int r = i / (kDqk / 4), col = (i % (kDqk / 4)) * 4;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (row0 + r < T) v = *reinterpret_cast<const float4*>(q + ((row0 + r) * nh + h) * kDqk + col);
    *reinterpret_cast<uint2*>(base + c * kQkTiles * kTileBytes + swizzled_offset(r, col)) =
        make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
  }
  fence_shared_for_async_proxy();  // the query writes, before the tensor cores read them
  named_barrier_sync(kQueriesStaged + c, 128);

  // Positions of this thread's rows 16w + g and 16w + g + 8.
  const int64_t pos[2] = {pos0 + row0 + 16 * w + g, pos0 + row0 + 16 * w + g + 8};
  const uint32_t q_tiles = base_address + c * kQkTiles * kTileBytes;
  // o[4j + i]: row 16w + g + 8(i / 2) of the warpgroup, value column 8j + 2·q4 + i % 2.
  float o[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};  // base-2 units
  float l_run[2] = {0.0f, 0.0f};            // over this thread's keys
  float correction[2] = {0.0f, 0.0f};       // the last softmax step's rescale, applied to O before its P·V
  float s[32];                              // s[4j + i]: row 16w + g + 8(i / 2), key k0 + 8j + 2·q4 + i % 2
  uint32_t p[kKeys / 16][4];                // the last softmax's P as the P·V's register fragments
  const auto release = [&](int t) {  // this consumer is done with tile t's stage
    if (threadIdx.x % 128 == 0) barrier_arrive(empty + 8 * (t % kStages));
  };
  const auto take_turn = [&] { named_barrier_sync(kTurn + c, kConsumerThreads); };
  const auto pass_turn = [&](int t) {  // consumer 1's last turn goes to no one
    if (c == 0 || t < n_tiles) named_barrier_arrive(kTurn + 1 - c, kConsumerThreads);
  };
  const auto issue_scores = [&](int t) {
    barrier_wait(full + 8 * (t % kStages), (t / kStages) & 1);
    take_turn();
    warpgroup_scores_m64n64_issue<kDqk / 16>(s, q_tiles, ring + (t % kStages) * kStageBytes);
  };
  // O = O · correction + P · V over tile t's values (P: the tile's softmax, the last one formed).
  const auto issue_products = [&](int t) {
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      o[4 * j] *= correction[0];
      o[4 * j + 1] *= correction[0];
      o[4 * j + 2] *= correction[1];
      o[4 * j + 3] *= correction[1];
    }
    fence_accumulators(o);
    warpgroup_fence();
    const uint32_t values = ring + (t % kStages) * kStageBytes + kQkTiles * kTileBytes;
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk)
      warpgroup_mma_m64n128k16_bf16_registers_a(o, p[kk], swizzled_mn_major_descriptor(values + kk * 16 * 128, kTileBytes));
    warpgroup_commit();
  };
  const auto products_done = [&](int t) {  // after the wait for tile t's P·V
    fence_accumulators(o);
    fence_fragments(p);  // P is read until here
    release(t);
  };
  // Tile t's scores (waited for) → P in s, m_run, l_run and the correction for O.
  const auto softmax = [&](int t) {
    fence_accumulators(s);
    const int64_t k0 = int64_t(t) * kKeys;
    const bool masked = k0 + kKeys - 1 > pos0 + row0;  // some key lies past some row's position
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      float v = s[i] * scale_log2;
      if (masked && k0 + 8 * (i / 4) + 2 * q4 + i % 2 > pos[(i / 2) % 2]) v = -INFINITY;
      s[i] = v;
      mx[(i / 2) % 2] = fmaxf(mx[(i / 2) % 2], v);
    }
    // Key 0 is visible to every row, so from the first tile on m_run is finite (rows past T aside,
    // whose results are dropped).
    online_softmax_step(mx, m_run, l_run, correction);
#pragma unroll
    for (int i = 0; i < 32; ++i) {
      s[i] = exp2f(s[i] - m_run[(i / 2) % 2]);
      l_run[(i / 2) % 2] += s[i];
    }
  };
  // P's fragments: score columns 16kk .. 16kk + 15 are s[8kk .. 8kk + 7].
  const auto pack_p = [&] {
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk)
#pragma unroll
      for (int i = 0; i < 4; ++i) p[kk][i] = pack_bf16x2(s[8 * kk + 2 * i], s[8 * kk + 2 * i + 1]);
  };

  // Turn t of a consumer issues its tile t's S (t < n_mine) and tile t − 1's P·V (0 < t ≤ n_mine);
  // both consumers take n_tiles + 1 turns, so they pair up. The loops' bodies hold no branch around a
  // wgmma or its registers (the compiler would serialize the wgmmas).
  if (c == 1) named_barrier_arrive(kTurn, kConsumerThreads);  // consumer 0 goes first
  int t = 0;
  if (n_mine > 0) {
    issue_scores(0);
    pass_turn(0);
    warpgroup_wait<0>();
    softmax(0);
    pack_p();
    for (t = 1; t < n_mine; ++t) {
      issue_scores(t);
      issue_products(t - 1);
      pass_turn(t);
      warpgroup_wait<1>();  // S is in; the P·V runs on during the softmax
      softmax(t);
      warpgroup_wait<0>();
      products_done(t - 1);
      pack_p();
    }
    take_turn();
    issue_products(t - 1);
    pass_turn(t);
    warpgroup_wait<0>();
    products_done(t - 1);
    if (t < n_tiles) release(t);
    ++t;
  }
  for (; t <= n_tiles; ++t) {  // tiles past this consumer's rows: released unread
    take_turn();
    pass_turn(t);
    if (t < n_tiles) release(t);
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
  const int64_t L = pos0 + T, rows = s.n_heads * L;
  check(rows + kKeys <= INT32_MAX, "warpgroup prefill attention: heads × keys past the tensor copies' row range");
  [[maybe_unused]] static const bool raised = allow_shared_memory(kSharedBytes, causal_attention_wgmma_kernel);
  const CUtensorMap key_tiles = swizzled_row_tiles(keys, rows, kDqk, kKeys, true);
  const CUtensorMap value_tiles = swizzled_row_tiles(values, rows, kDv, kKeys, true);
  const dim3 grid(unsigned(s.n_heads), unsigned((T + kQueries - 1) / kQueries));
  causal_attention_wgmma_kernel<<<grid, kThreads, kSharedBytes, stream>>>(key_tiles, value_tiles, q, s.n_heads, T, L,
                                                                          pos0, s.softmax_scale_log2(), out);
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
