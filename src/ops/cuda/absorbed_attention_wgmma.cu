// Absorbed MLA decode attention on Hopper's warpgroup tensor cores (wgmma) over a bf16 paged latent
// cache of the family's shape: rows of 512 latent and 64 rotary values. A block takes one sequence, one
// split of its keys and 64 query heads (the wgmma's 64 rows; rows past nh are zero queries whose
// outputs are dropped) with two warpgroups, and walks the split in chunks of 64 keys, the next chunk's
// copy in flight while one is attended:
//   S[64 heads, 64 keys] = Q[64, 576] · Kᵀ        warpgroup 0: 36 m64n64k16 steps
//   online softmax per head (base-2 exponents)     warpgroup 0: P in bf16 and the rescale factors to shared memory
//   O[64, 512] += P[64, 64] · V[64, 512]           warpgroup w: columns 256w .. 256w + 255, 4 m64n256k16 steps
// Each chunk's cached rows are copied once into shared memory as 9 swizzled tiles of 64 values and serve
// as keys (K-major, all 576 values) and values (MN-major, the first 8 tiles). A 128-head model takes two
// blocks per sequence and split, where the 16-head kernel (absorbed_attention_mma) takes eight. Q and P
// are rounded to bf16; sums are f32. Writes the same partials as the other kernels.
#include <cuda_bf16.h>

#include "ops/cuda/absorbed_attention_wgmma.h"
#include "ops/cuda/absorbed_attention_mma.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/overlapped_launch.cuh"
#include "ops/cuda/tensor_core.cuh"
#include "ops/cuda/warpgroup_mma.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kLatent = 512, kRope = 64, kWidth = kLatent + kRope;
constexpr int kHeads = int(kWarpgroupAttentionHeads);
constexpr int kChunk = 64;                       // keys per chunk
constexpr int kTiles = kWidth / 64;              // 9 swizzled tiles of 64 values a row
constexpr int kTileBytes = kSwizzledTileBytes;   // a tile: 64 rows of 128 bytes
constexpr int kRowSetBytes = kTiles * kTileBytes;  // 64 rows of 576 values: the queries, or one chunk's keys
constexpr int kThreads = 256;                    // two warpgroups
// Shared memory from a 1,024-byte aligned base: Q, two key stages, P (one tile), then per-head floats:
// the rescale factors of the chunk and the final sums.
constexpr int kQOffset = 0, kKeysOffset = kRowSetBytes, kPOffset = kKeysOffset + 2 * kRowSetBytes;
constexpr int kCorrectionOffset = kPOffset + kTileBytes, kSumOffset = kCorrectionOffset + kHeads * 4;
constexpr size_t kSharedBytes = size_t(kSumOffset + kHeads * 4) + 1024;  // + the base's alignment
static_assert(kSharedBytes <= 227 * 1024, "more shared memory than a block may have");
static_assert(kWarpgroupAttentionBlocksPerMultiprocessor == 1 && 2 * kSharedBytes > 228 * 1024,
              "the split count assumes one block a multiprocessor");
static_assert(kThreads == 4 * kChunk, "four threads copy each key row");

__global__ void __launch_bounds__(kThreads, 1)
    absorbed_attention_wgmma_kernel(const float* __restrict__ q, const float* __restrict__ q_lat, int64_t nh,
                                    int64_t d_nope, float scale_log2, const __nv_bfloat16* __restrict__ layer,
                                    const int32_t* __restrict__ block_tables, int64_t max_blocks, int64_t block_size,
                                    const int32_t* __restrict__ seq_lens, float* partials, float* o_lat) {
  start_after_previous_kernel();
  extern __shared__ __align__(1024) unsigned char shared[];
  const AlignedShared aligned = align_shared_1024(shared);
  unsigned char* const base = aligned.base;
  const uint32_t base_address = aligned.address;
  float* correction = reinterpret_cast<float*>(base + kCorrectionOffset);  // [kHeads]
  float* sums = reinterpret_cast<float*>(base + kSumOffset);               // [kHeads]
  const int64_t h0 = int64_t(blockIdx.x) * kHeads, b = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z;
  const int warpgroup = threadIdx.x / 128, w = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32, g = lane / 4,
            q4 = lane % 4;
  auto part = [&](int64_t h) { return partials + ((b * nh + h) * n_splits + split) * partial_stride(kLatent); };

  // This sequence's keys in n_splits pieces of whole chunks.
  const SplitKeys keys_of_split = split_keys(seq_lens[b], split, n_splits, kChunk);
  const int64_t begin = keys_of_split.begin, end = keys_of_split.end;
  if (begin >= end) {  // nothing left for this split: empty partials
    if (threadIdx.x < kHeads && h0 + threadIdx.x < nh) {
      store_split_stats(part(h0 + threadIdx.x), kLatent, -INFINITY, 0.0f);
    }
    return;
  }
  // Copies the cached rows of keys c0 .. c0 + 63 into key stage s (rows past the end: the last key
  // again, whose probability is 0, so that no unused slot's bits reach the sums). Four threads a row,
  // each looking its row up in the block table once.
  const int32_t* table = block_tables + b * max_blocks;
  auto copy_keys = [&](int s, int64_t c0) {
    const int r = threadIdx.x / 4, pos = int(min(c0 + r, end - 1)), block = int(block_size);
    const __nv_bfloat16* src = layer + (int64_t(table[pos / block]) * block_size + pos % block) * kWidth;
    unsigned char* dst = base + kKeysOffset + s * kRowSetBytes;
    for (int piece = threadIdx.x % 4; piece < kWidth / 8; piece += 4)
      copy_async16(dst + swizzled_offset(r, 8 * piece), src + 8 * piece);
  };
  copy_keys(0, begin);
  copy_async_commit();
  // While the first keys arrive: the query rows [q_lat | q_rope] (zero past nh) into Q in bf16, six
  // 16-byte loads of a thread in flight at a time.
  {
    constexpr int kQuads = kHeads * kWidth / 4, kPerThread = kQuads / kThreads, kInFlight = 6;
    static_assert(kPerThread % kInFlight == 0, "whole rounds of query loads");
    for (int i0 = 0; i0 < kPerThread; i0 += kInFlight) {
      float4 v[kInFlight];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int idx = threadIdx.x + (i0 + u) * kThreads, r = idx / (kWidth / 4), c = 4 * (idx % (kWidth / 4));
        const int64_t h = h0 + r;
        v[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (h < nh)
          v[u] = *reinterpret_cast<const float4*>(c < kLatent ? q_lat + (b * nh + h) * kLatent + c
                                                              : q + (b * nh + h) * (d_nope + kRope) + d_nope + c - kLatent);
      }
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int idx = threadIdx.x + (i0 + u) * kThreads, r = idx / (kWidth / 4), c = 4 * (idx % (kWidth / 4));
        *reinterpret_cast<uint2*>(base + kQOffset + swizzled_offset(r, c)) =
            make_uint2(pack_bf16x2(v[u].x, v[u].y), pack_bf16x2(v[u].z, v[u].w));
      }
    }
  }

  // o[4j + i]: head row 16w + g + 8(i / 2), column 256·warpgroup + 8j + 2·q4 + i % 2.
  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};  // warpgroup 0: rows 16w + g and + 8, base-2 units
  float l_run[2] = {0.0f, 0.0f};            // warpgroup 0: over this thread's keys
  int stage = 0;
  for (int64_t c0 = begin; c0 < end; c0 += kChunk, stage ^= 1) {
    copy_async_wait<0>();
    fence_shared_for_async_proxy();  // this thread's copies (and query or P writes) before the tensor cores read them
    __syncthreads();                 // every copy of this chunk has arrived; the previous chunk is done with
    if (c0 + kChunk < end) copy_keys(stage ^ 1, c0 + kChunk);
    copy_async_commit();
    const uint32_t keys = base_address + kKeysOffset + stage * kRowSetBytes, p_tile = base_address + kPOffset;
    if (warpgroup == 0) {
      // s[4j + i]: head row 16w + g + 8(i / 2), key 8j + 2·q4 + i % 2.
      float s[32];
      warpgroup_scores_m64n64<kWidth / 16>(s, base_address + kQOffset, keys);
      const int n_keys = int(min(int64_t(kChunk), end - c0));
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        const int key = 8 * (i / 4) + 2 * q4 + i % 2;
        s[i] = key < n_keys ? s[i] * scale_log2 : -INFINITY;
        mx[(i / 2) % 2] = fmaxf(mx[(i / 2) % 2], s[i]);
      }
      float factor[2];  // 0 on the first chunk
      online_softmax_step(mx, m_run, l_run, factor);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = 16 * w + g + 8 * r;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float p0 = exp2f(s[4 * j + 2 * r] - m_run[r]), p1 = exp2f(s[4 * j + 2 * r + 1] - m_run[r]);
          l_run[r] += p0 + p1;
          *reinterpret_cast<uint32_t*>(base + kPOffset + swizzled_offset(row, 8 * j + 2 * q4)) = pack_bf16x2(p0, p1);
        }
        if (q4 == 0) correction[row] = factor[r];
      }
      fence_shared_for_async_proxy();
    }
    __syncthreads();  // P and the rescale factors are written
    const float lo = correction[16 * w + g], hi = correction[16 * w + g + 8];
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      o[4 * j] *= lo;
      o[4 * j + 1] *= lo;
      o[4 * j + 2] *= hi;
      o[4 * j + 3] *= hi;
    }
    fence_accumulators(o);
    warpgroup_fence();
#pragma unroll
    for (int kk = 0; kk < kChunk / 16; ++kk)
      warpgroup_mma_m64n256k16<__nv_bfloat16, true>(
          o, swizzled_tile_descriptor(p_tile + kk * 32),
          swizzled_mn_major_descriptor(keys + 4 * warpgroup * kTileBytes + kk * 16 * 128, kTileBytes));
    warpgroup_commit();
    warpgroup_wait<0>();
    fence_accumulators(o);
  }

  if (warpgroup == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
      l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
      if (q4 == 0) sums[16 * w + g + 8 * r] = l_run[r];
    }
  __syncthreads();
  // One split (the whole sequence in this block): o / l into o_lat; else the unnormalised o, m (natural
  // log units) and l into the partials.
  const bool whole = n_splits == 1;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = 16 * w + g + 8 * r;
    const int64_t h = h0 + row;
    if (h >= nh) continue;
    const float factor = whole ? 1.0f / sums[row] : 1.0f;
    float* dst = (whole ? o_lat + (b * nh + h) * kLatent : part(h)) + 256 * warpgroup + 2 * q4;
#pragma unroll
    for (int j = 0; j < 32; ++j)
      *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(o[4 * j + 2 * r] * factor, o[4 * j + 2 * r + 1] * factor);
    if (!whole && warpgroup == 0 && q4 == 0) {
      store_split_stats(part(h), kLatent, m_run[r] * kLn2, sums[row]);
    }
  }
}

}  // namespace

bool absorbed_attention_wgmma_supported(const MlaShape& s, const PagedLatentCache& cache) {
  return cache.dtype == DType::BF16 && s.d_c == kLatent && s.d_rope == kRope && cache.width == kWidth &&
         s.d_nope % 4 == 0 && reinterpret_cast<uintptr_t>(cache.data) % 16 == 0;
}

void absorbed_attention_wgmma(const MlaShape& s, const float* q, const float* q_lat, const PagedLatentCache& cache,
                              int64_t layer, const int32_t* block_tables, int64_t max_blocks, const int32_t* seq_lens,
                              int64_t B, int64_t n_splits, float* partials, float* o_lat, cudaStream_t stream) {
  check(absorbed_attention_wgmma_supported(s, cache),
        "warpgroup MLA decode: a bf16 cache of 512 latent and 64 rotary values a row, d_nope a multiple of 4");
  check(reinterpret_cast<uintptr_t>(q) % 16 == 0 && reinterpret_cast<uintptr_t>(q_lat) % 16 == 0,
        "warpgroup MLA decode: 16-byte aligned queries");
  check(reinterpret_cast<uintptr_t>(partials) % 8 == 0 && reinterpret_cast<uintptr_t>(o_lat) % 8 == 0,
        "warpgroup MLA decode: 8-byte aligned outputs (written two floats at a time)");
  check(cache.block_size >= 1 && cache.block_size <= INT32_MAX, "warpgroup MLA decode: a cache block size below 2^31");
  [[maybe_unused]] static const bool raised = allow_shared_memory(kSharedBytes, absorbed_attention_wgmma_kernel);
  const dim3 grid(unsigned((s.n_heads + kHeads - 1) / kHeads), unsigned(B), unsigned(n_splits));
  launch_overlapped(absorbed_attention_wgmma_kernel, grid, kThreads, kSharedBytes, stream, q, q_lat, s.n_heads,
                    s.d_nope, s.softmax_scale_log2(), static_cast<const __nv_bfloat16*>(cache.layer(layer)),
                    block_tables, max_blocks, cache.block_size, seq_lens, partials, o_lat);
}

}  // namespace dsv2::cuda
