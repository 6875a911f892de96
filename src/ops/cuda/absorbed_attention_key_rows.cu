// Absorbed MLA decode attention for models of up to 16 query heads (DeepSeek-V2-Lite) on Hopper's
// warpgroup tensor cores, with the keys as the matrices' rows: a wgmma multiplies 64 rows, and 16 heads
// as rows would leave 48 of them zero (the 64-head kernel's padding, 4× the products), while a chunk's
// 64 keys fill them exactly. For each chunk of 64 cached rows (keys, K-major, all 576 values; values,
// MN-major, the first 512):
//   Sᵀ[64 keys, 16 heads] = K · Qᵀ            36 m64n16k16 steps, Qᵀ from shared memory (16 rows of 576)
//   online softmax per head (column) over the chunk's keys: the maximum across the warpgroup's 4 warps
//   Oᵀ[512, 16] += Vᵀ · Pᵀ                     8 row tiles × 4 m64n16k16 steps, Vᵀ read MN-major, Pᵀ as
//                                              16 rows of 64 keys in shared memory
// A block takes one sequence and one split of its keys with two warpgroups that take alternate chunks,
// each with its own key stage (its next chunk copied once its products are done, the other warpgroup
// working meanwhile), running maxima, sums and Oᵀ; the two are merged at the end. Q and P are rounded to
// bf16; sums are f32. Writes the same partials as the other decode kernels.
#include <cuda_bf16.h>

#include "ops/cuda/absorbed_attention_key_rows.h"
#include "ops/cuda/absorbed_attention_mma.h"
#include "ops/cuda/absorbed_attention_wgmma.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/overlapped_launch.cuh"
#include "ops/cuda/tensor_core.cuh"
#include "ops/cuda/warpgroup_mma.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kLatent = 512, kRope = 64, kWidth = kLatent + kRope;
constexpr int kHeads = int(kKeyRowsAttentionMaxHeads);  // 16: the wgmma's N
constexpr int kChunk = 64;                                // keys per chunk: the wgmma's M
constexpr int kTiles = kWidth / 64;                       // 9 swizzled tiles of 64 values a row
constexpr int kTileBytes = kSwizzledTileBytes;            // a key tile: 64 rows of 128 bytes
constexpr int kRowSetBytes = kTiles * kTileBytes;         // one chunk's cached rows
constexpr int kHeadTileBytes = kHeads * 128;              // 16 rows of 64 values (Qᵀ's tiles, Pᵀ)
constexpr int kValueTiles = kLatent / 64;                 // Oᵀ's 8 row tiles of 64 values
constexpr int kThreads = 256;                             // two warpgroups
// Shared memory from a 1,024-byte aligned base: Qᵀ (9 tiles of 16 rows), a key stage and a Pᵀ tile per
// warpgroup, the warps' per-head maxima and sums [2][4][16]; at the end warpgroup 1's Oᵀ [16][512] and
// its per-head maxima and sums overwrite its key stage.
constexpr int kQOffset = 0, kKeysOffset = kTiles * kHeadTileBytes, kPOffset = kKeysOffset + 2 * kRowSetBytes;
constexpr int kReduceOffset = kPOffset + 2 * kHeadTileBytes;
constexpr size_t kSharedBytes = size_t(kReduceOffset + 2 * 4 * kHeads * 4) + 1024;  // + the base's alignment
static_assert(kKeysOffset % 1024 == 0 && kPOffset % 1024 == 0, "swizzled tiles start on 1,024-byte boundaries");
static_assert(kHeads * kLatent * 4 + 2 * kHeads * 4 <= kRowSetBytes, "warpgroup 1's results fit its key stage");
static_assert(kWarpgroupAttentionBlocksPerMultiprocessor == 1 && 2 * kSharedBytes > 228 * 1024,
              "the split count assumes one block a multiprocessor");
// Named barriers of warpgroup w (128 threads): its keys have landed, its warps' maxima are in, its Pᵀ is written.
constexpr int kKeysLanded = 1, kMaximaIn = 3, kPWritten = 5;

// The byte offset of value v of head row r in tiles of 16 rows of 64 values (the 128-byte swizzle).
__device__ __forceinline__ int head_tile_offset(int r, int v) {
  return (v / 64) * kHeadTileBytes + (r / 8) * 1024 + (r % 8) * 128 + ((((v % 64) / 8) ^ (r % 8)) * 16) + (v % 8) * 2;
}

__global__ void __launch_bounds__(kThreads, 1)
    absorbed_attention_key_rows_kernel(const float* __restrict__ q, const float* __restrict__ q_lat, int64_t nh,
                                       int64_t d_nope, float scale_log2, const __nv_bfloat16* __restrict__ layer,
                                       const int32_t* __restrict__ block_tables, int64_t max_blocks, int64_t block_size,
                                       const int32_t* __restrict__ seq_lens, float* partials, float* o_lat) {
  start_after_previous_kernel();
  extern __shared__ __align__(1024) unsigned char shared[];
  const AlignedShared aligned = align_shared_1024(shared);
  unsigned char* const base = aligned.base;
  const uint32_t base_address = aligned.address;
  const int64_t b = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z;
  const int warpgroup = threadIdx.x / 128, w = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32, g = lane / 4,
            q4 = lane % 4;
  auto part_of = [&](int64_t h) { return partials + ((b * nh + h) * n_splits + split) * partial_stride(kLatent); };

  // This sequence's keys in n_splits pieces of whole chunks.
  const SplitKeys keys_of_split = split_keys(seq_lens[b], split, n_splits, kChunk);
  const int64_t begin = keys_of_split.begin, end = keys_of_split.end;
  if (begin >= end) {  // nothing left for this split: empty partials
    if (threadIdx.x < nh) {
      store_split_stats(part_of(threadIdx.x), kLatent, -INFINITY, 0.0f);
    }
    return;
  }
  // This warpgroup's copies of the cached rows of keys c0 .. c0 + 63 into its stage (rows past the end:
  // the last key again, whose probability is 0, so that no unused slot's bits reach the sums), from
  // `row`: this thread's row (thread % 128) / 2, looked up ahead by row_of; two threads a row.
  const int32_t* table = block_tables + b * max_blocks;
  const int copy_row = (threadIdx.x % 128) / 2;
  auto row_of = [&](int64_t c0) {
    const int pos = int(min(c0 + copy_row, end - 1)), block = int(block_size);
    return layer + (int64_t(table[pos / block]) * block_size + pos % block) * kWidth;
  };
  unsigned char* const stage = base + kKeysOffset + warpgroup * kRowSetBytes;
  auto copy_chunk = [&](const __nv_bfloat16* row) {
    for (int piece = threadIdx.x % 2; piece < kWidth / 8; piece += 2)
      copy_async16(stage + swizzled_offset(copy_row, 8 * piece), row + 8 * piece);
    copy_async_commit();
  };
  int64_t c = begin + warpgroup * kChunk;  // this warpgroup's next chunk
  if (c < end) copy_chunk(row_of(c));

  // While the first keys arrive: Qᵀ's 16 head rows [q_lat | q_rope] in bf16 (zero past nh), each
  // thread's 9 float4 loads in flight together.
  {
    constexpr int kQuads = kHeads * kWidth / 4, kPerThread = kQuads / kThreads;
    static_assert(kQuads % kThreads == 0, "whole rounds of query loads");
    float4 v[kPerThread];
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int idx = threadIdx.x + u * kThreads, r = idx / (kWidth / 4), col = 4 * (idx % (kWidth / 4));
      v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (r < nh)
        v[u] = *reinterpret_cast<const float4*>(col < kLatent ? q_lat + (b * nh + r) * kLatent + col
                                                              : q + (b * nh + r) * (d_nope + kRope) + d_nope + col - kLatent);
    }
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int idx = threadIdx.x + u * kThreads, r = idx / (kWidth / 4), col = 4 * (idx % (kWidth / 4));
      *reinterpret_cast<uint2*>(base + kQOffset + head_tile_offset(r, col)) =
          make_uint2(pack_bf16x2(v[u].x, v[u].y), pack_bf16x2(v[u].z, v[u].w));
    }
  }
  fence_shared_for_async_proxy();  // the Qᵀ writes before the tensor cores read them
  __syncthreads();

  // Accumulator layouts (m64n16): s[4j + i] and each row tile's o[t][4j + i] hold row (key, or value
  // 64t + ...) 16w + g + 8(i / 2) and head column 8j + 2·q4 + i % 2: this thread's 4 heads are
  // head(k) = 8(k / 2) + 2·q4 + k % 2, k = 2j + i % 2.
  float o[kValueTiles][8];
#pragma unroll
  for (int t = 0; t < kValueTiles; ++t)
#pragma unroll
    for (int i = 0; i < 8; ++i) o[t][i] = 0.0f;
  float m_run[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};  // base-2 units, the warpgroup's own
  float l_run[4] = {0.0f, 0.0f, 0.0f, 0.0f};                      // over this thread's keys
  float* reduce = reinterpret_cast<float*>(base + kReduceOffset) + warpgroup * 4 * kHeads;  // [4 warps][16]
  const uint32_t keys = base_address + kKeysOffset + warpgroup * kRowSetBytes;
  const uint32_t p_tile = base_address + kPOffset + warpgroup * kHeadTileBytes;
  unsigned char* const p_bytes = base + kPOffset + warpgroup * kHeadTileBytes;
  for (; c < end; c += 2 * kChunk) {
    const __nv_bfloat16* next_row = c + 2 * kChunk < end ? row_of(c + 2 * kChunk) : nullptr;
    copy_async_wait<0>();
    fence_shared_for_async_proxy();  // this thread's copies before the tensor cores read them
    named_barrier_sync(kKeysLanded + warpgroup, 128);

    float s[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i] = 0.0f;
    fence_accumulators(s);
    warpgroup_fence();
#pragma unroll
    for (int kk = 0; kk < kWidth / 16; ++kk) {
      const uint32_t at = (kk / 4) * kTileBytes + (kk % 4) * 32, q_at = (kk / 4) * kHeadTileBytes + (kk % 4) * 32;
      warpgroup_mma_m64n16k16_bf16(s, swizzled_tile_descriptor(keys + at),
                                   swizzled_tile_descriptor(base_address + kQOffset + q_at));
    }
    warpgroup_commit();
    warpgroup_wait<0>();
    fence_accumulators(s);

    // Each head's maximum over the chunk's keys: this thread's two keys, the warp's 16 (lanes of one q4),
    // then the 4 warps' through shared memory.
    const int n_keys = int(min(int64_t(kChunk), end - c));
    float mx[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int key = 16 * w + g + 8 * (i / 2 % 2), k = 2 * (i / 4) + i % 2;
      s[i] = key < n_keys ? s[i] * scale_log2 : -INFINITY;
      mx[k] = fmaxf(mx[k], s[i]);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      mx[k] = fmaxf(mx[k], __shfl_xor_sync(0xffffffffu, mx[k], 4));
      mx[k] = fmaxf(mx[k], __shfl_xor_sync(0xffffffffu, mx[k], 8));
      mx[k] = fmaxf(mx[k], __shfl_xor_sync(0xffffffffu, mx[k], 16));
      if (g == 0) reduce[w * kHeads + 8 * (k / 2) + 2 * q4 + k % 2] = mx[k];
    }
    named_barrier_sync(kMaximaIn + warpgroup, 128);
    float factor[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int h = 8 * (k / 2) + 2 * q4 + k % 2;
      const float chunk_max = fmaxf(fmaxf(reduce[h], reduce[kHeads + h]), fmaxf(reduce[2 * kHeads + h], reduce[3 * kHeads + h]));
      const float m_new = fmaxf(m_run[k], chunk_max);  // finite: the chunk holds a key
      factor[k] = exp2f(m_run[k] - m_new);
      m_run[k] = m_new;
      l_run[k] *= factor[k];
    }
    // Pᵀ (head rows of 64 keys) in bf16 for the tensor cores; the sums over the unrounded values.
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int key = 16 * w + g + 8 * (i / 2 % 2), k = 2 * (i / 4) + i % 2, h = 8 * (i / 4) + 2 * q4 + i % 2;
      const float p = exp2f(s[i] - m_run[k]);
      l_run[k] += p;
      *reinterpret_cast<__nv_bfloat16*>(p_bytes + head_tile_offset(h, key)) = __float2bfloat16(p);
    }
    fence_shared_for_async_proxy();
    named_barrier_sync(kPWritten + warpgroup, 128);
#pragma unroll
    for (int t = 0; t < kValueTiles; ++t)
#pragma unroll
      for (int i = 0; i < 8; ++i) o[t][i] *= factor[2 * (i / 4) + i % 2];
#pragma unroll
    for (int t = 0; t < kValueTiles; ++t) fence_accumulators(o[t]);
    warpgroup_fence();
#pragma unroll
    for (int t = 0; t < kValueTiles; ++t)
#pragma unroll
      for (int kk = 0; kk < kChunk / 16; ++kk)
        warpgroup_mma_m64n16k16_bf16<true>(o[t],
                                           swizzled_mn_major_descriptor(keys + t * kTileBytes + kk * 16 * 128, kTileBytes),
                                           swizzled_tile_descriptor(p_tile + kk * 32));
    warpgroup_commit();
    warpgroup_wait<0>();
#pragma unroll
    for (int t = 0; t < kValueTiles; ++t) fence_accumulators(o[t]);
    if (next_row) copy_chunk(next_row);  // the stage is free again
  }

  // Each head's sum over the warpgroup's keys: the warp's lanes of one q4, then the 4 warps'.
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    l_run[k] += __shfl_xor_sync(0xffffffffu, l_run[k], 4);
    l_run[k] += __shfl_xor_sync(0xffffffffu, l_run[k], 8);
    l_run[k] += __shfl_xor_sync(0xffffffffu, l_run[k], 16);
  }
  __syncthreads();  // every warp is done with the maxima exchange and with both key stages
  if (g == 0)
#pragma unroll
    for (int k = 0; k < 4; ++k) reduce[w * kHeads + 8 * (k / 2) + 2 * q4 + k % 2] = l_run[k];
  // Warpgroup 1's Oᵀ [16][512] and running maxima [16] into its key stage.
  float* o1 = reinterpret_cast<float*>(base + kKeysOffset + kRowSetBytes);
  float* m1 = o1 + kHeads * kLatent;
  if (warpgroup == 1) {
#pragma unroll
    for (int t = 0; t < kValueTiles; ++t)
#pragma unroll
      for (int i = 0; i < 8; ++i)
        o1[(8 * (i / 4) + 2 * q4 + i % 2) * kLatent + 64 * t + 16 * w + g + 8 * (i / 2 % 2)] = o[t][i];
    if (w == 0 && g == 0)
#pragma unroll
      for (int k = 0; k < 4; ++k) m1[8 * (k / 2) + 2 * q4 + k % 2] = m_run[k];
  }
  __syncthreads();
  if (warpgroup == 1) return;
  // Warpgroup 0 merges: m = max(m0, m1), each side rescaled to it (a side with no chunks: m −∞, l 0).
  const float* sums0 = reinterpret_cast<float*>(base + kReduceOffset);
  const float* sums1 = sums0 + 4 * kHeads;
  const bool whole = n_splits == 1;
  float f0[4], f1[4], inv[4], m[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int h = 8 * (k / 2) + 2 * q4 + k % 2;
    m[k] = fmaxf(m_run[k], m1[h]);
    f0[k] = exp2f(m_run[k] - m[k]);
    f1[k] = exp2f(m1[h] - m[k]);
    const float l0 = sums0[h] + sums0[kHeads + h] + sums0[2 * kHeads + h] + sums0[3 * kHeads + h];
    const float l1 = sums1[h] + sums1[kHeads + h] + sums1[2 * kHeads + h] + sums1[3 * kHeads + h];
    inv[k] = l0 * f0[k] + l1 * f1[k];  // l, for now
    if (!whole && w == 0 && g == 0 && h < nh) {
      store_split_stats(part_of(h), kLatent, m[k] * kLn2, inv[k]);
    }
    inv[k] = whole ? 1.0f / inv[k] : 1.0f;
  }
  // One split (the whole sequence in this block): o / l into o_lat; else the unnormalised o into the partials.
#pragma unroll
  for (int t = 0; t < kValueTiles; ++t)
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int k = 2 * (i / 4) + i % 2, h = 8 * (i / 4) + 2 * q4 + i % 2, v = 64 * t + 16 * w + g + 8 * (i / 2 % 2);
      if (h >= nh) continue;
      const float value = (o[t][i] * f0[k] + o1[h * kLatent + v] * f1[k]) * inv[k];
      (whole ? o_lat + (b * nh + h) * kLatent : part_of(h))[v] = value;
    }
}

}  // namespace

bool absorbed_attention_key_rows_supported(const MlaShape& s, const PagedLatentCache& cache) {
  return s.n_heads <= kHeads && absorbed_attention_wgmma_supported(s, cache);
}

void absorbed_attention_key_rows(const MlaShape& s, const float* q, const float* q_lat, const PagedLatentCache& cache,
                                 int64_t layer, const int32_t* block_tables, int64_t max_blocks, const int32_t* seq_lens,
                                 int64_t B, int64_t n_splits, float* partials, float* o_lat, cudaStream_t stream) {
  check(absorbed_attention_key_rows_supported(s, cache),
        "key-rows MLA decode: up to 16 heads, a bf16 cache of 512 latent and 64 rotary values a row, d_nope a multiple of 4");
  check(reinterpret_cast<uintptr_t>(q) % 16 == 0 && reinterpret_cast<uintptr_t>(q_lat) % 16 == 0,
        "key-rows MLA decode: 16-byte aligned queries");
  check(cache.block_size >= 1 && cache.block_size <= INT32_MAX, "key-rows MLA decode: a cache block size below 2^31");
  [[maybe_unused]] static const bool raised = allow_shared_memory(kSharedBytes, absorbed_attention_key_rows_kernel);
  const dim3 grid(1, unsigned(B), unsigned(n_splits));
  launch_overlapped(absorbed_attention_key_rows_kernel, grid, kThreads, kSharedBytes, stream, q, q_lat, s.n_heads,
                    s.d_nope, s.softmax_scale_log2(), static_cast<const __nv_bfloat16*>(cache.layer(layer)),
                    block_tables, max_blocks, cache.block_size, seq_lens, partials, o_lat);
}

}  // namespace dsv2::cuda
