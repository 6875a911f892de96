// Absorbed MLA decode attention on the tensor cores over a bf16 paged latent cache. A block takes
// one sequence, one split of its keys and a group of 16 query heads (the mma's 16 rows), and walks the
// split in chunks of 32 keys, the next chunk's copy in flight while one is attended: each chunk's
// cached rows are copied once into shared memory and serve all 16 heads both as keys (all 576 values:
// latent and rotary part) and as values (the latent part).
//   scores S[16, 32] = Q[16, width] · Kᵀ          each warp 8 keys
//   online softmax per head over the split         (base-2 exponent, maxima shared through smem)
//   O[16, d_c] += P[16, 32] · V[32, d_c]           each warp a quarter of the d_c columns
// Q and P are rounded to bf16 for the tensor cores; sums are f32. Writes the same partials as the
// CUDA-core kernel: unnormalised o, the maximum m (natural log units) and l = Σ exp(score − m).
#include <cuda_bf16.h>

#include <algorithm>

#include "ops/cuda/absorbed_attention_mma.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/overlapped_launch.cuh"
#include "ops/cuda/tensor_core.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kHeads = 16;         // heads per block: the mma's rows
constexpr int kChunk = 32;         // keys per chunk: 8 per warp
constexpr int kStages = 2;         // chunks in shared memory: one attended while the next arrives
constexpr int kChains = 4;         // independent score accumulators (k-steps taken in turn)
constexpr int kMaxVTiles = 16;     // 8-column output tiles per warp: d_c <= 512
constexpr int kPRow = kChunk + 8;  // P row stride in shared memory (bf16), padded against bank conflicts
constexpr int kOutPad = 8;         // the output tile's row stride is d_c + kOutPad floats (bank spread)
// The output tile (kHeads rows of at most row − 8 + kOutPad floats) fits in the key stages.
static_assert(kStages * kChunk * 2 >= kHeads * 4, "output tile larger than the key stages");
constexpr int kThreads = kWarps * 32;
// 16-byte pieces of the block's query rows per thread, for the widest rows supported (512 + 64).
constexpr int kQueryQuadsPerThread = (kHeads * (512 + 64) / 4 + kThreads - 1) / kThreads;

__host__ __device__ int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Shared-memory row stride (bf16 values) of the Q and key tiles: the score k-steps read
// round64(width) columns (kChains steps of 16 at a time), the value tiles round64(d_c) (each warp a
// multiple of 16 columns); 8 more make the stride an odd number of 16-byte units, so that the 8 rows
// of a matrix load hit distinct banks.
int64_t tile_row(int64_t d_c, int64_t d_rope) {
  return std::max(round_up(d_c + d_rope, 16 * kChains), round_up(d_c, 64)) + 8;
}
size_t shared_bytes(int64_t row) {
  return size_t((kHeads + kStages * kChunk) * row + kHeads * kPRow) * 2 + size_t(kWarps * kHeads) * sizeof(float);
}

__global__ void __launch_bounds__(kWarps * 32, 2)
    absorbed_attention_mma_kernel(const float* __restrict__ q, const float* __restrict__ q_lat, int64_t nh,
                                  int64_t d_nope, int64_t d_rope, int64_t d_c, float scale_log2,
                                  const __nv_bfloat16* __restrict__ layer, const int32_t* __restrict__ block_tables,
                                  int64_t max_blocks, int64_t block_size, const int32_t* __restrict__ seq_lens, int row,
                                  float* partials, float* o_lat) {
  start_after_previous_kernel();
  extern __shared__ __align__(16) unsigned char shared[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(shared);  // [kHeads][row]
  __nv_bfloat16* Ks = Qs + kHeads * row;                          // [kStages][kChunk][row]
  __nv_bfloat16* Ps = Ks + kStages * kChunk * row;                // [kHeads][kPRow]
  float* red = reinterpret_cast<float*>(Ps + kHeads * kPRow);     // [kWarps][kHeads]
  const int64_t h0 = int64_t(blockIdx.x) * kHeads, b = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z;
  const int64_t width = d_c + d_rope;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q4 = lane % 4;
  auto part = [&](int64_t h) { return partials + ((b * nh + h) * n_splits + split) * partial_stride(d_c); };
  // The query rows [q_lat | q_rope] (zero for heads past nh) are loaded first, beside the sequence's
  // length, the block table and the first keys' copies, which depend on each other in turn: 4 values
  // per 16-byte load, all of a thread's loads in flight before the first is converted; quad i of the
  // thread is quad threadIdx.x + i·kThreads of the block's kHeads × width/4.
  const int quads = int(width / 4);
  float4 v[kQueryQuadsPerThread];
  int dst[kQueryQuadsPerThread];  // offset in Qs, or −1 past the block's quads
  {
    int r = threadIdx.x / quads, c4 = threadIdx.x % quads;
#pragma unroll
    for (int i = 0; i < kQueryQuadsPerThread; ++i) {
      const int64_t h = h0 + r, c = 4 * c4;
      const bool inside = threadIdx.x + i * kThreads < kHeads * quads;
      dst[i] = inside ? r * row + int(c) : -1;
      v[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (inside && h < nh)
        v[i] = *reinterpret_cast<const float4*>(c < d_c ? q_lat + (b * nh + h) * d_c + c
                                                        : q + (b * nh + h) * (d_nope + d_rope) + d_nope + c - d_c);
      for (c4 += kThreads; c4 >= quads; c4 -= quads) ++r;
    }
  }
  // This sequence's keys in n_splits pieces of whole chunks.
  const SplitKeys keys_of_split = split_keys(seq_lens[b], split, n_splits, kChunk);
  const int64_t begin = keys_of_split.begin, end = keys_of_split.end;
  if (begin >= end) {  // nothing left for this split: empty partials
    if (threadIdx.x < kHeads && h0 + threadIdx.x < nh) {
      store_split_stats(part(h0 + threadIdx.x), d_c, -INFINITY, 0.0f);
    }
    return;
  }
  const int pieces = int(width / 8);  // 16-byte pieces of a cached row
  const int32_t* table = block_tables + b * max_blocks;
  // Copies the cached rows of keys c0 .. c0 + kChunk − 1 into stage s of Ks (rows past the end: the
  // last key again, masked later). Four threads per row, each looking its row up in the block table once.
  static_assert(kWarps * 32 == 4 * kChunk, "four threads per key row");
  auto copy_keys = [&](int s, int64_t c0) {
    const int r = threadIdx.x / 4;
    const int pos = int(min(c0 + r, end - 1)), block = int(block_size);  // 32-bit division (lengths are int32)
    const __nv_bfloat16* src = layer + (int64_t(table[pos / block]) * block_size + pos % block) * width;
    __nv_bfloat16* dst = Ks + (s * kChunk + r) * row;
    for (int piece = threadIdx.x % 4; piece < pieces; piece += 4) copy_async16(dst + piece * 8, src + piece * 8);
  };
  // One copy group per chunk (empty past the end), so that waiting for all but the last
  // kStages − 1 groups means the chunk about to be attended has arrived.
  for (int s = 0; s < kStages - 1; ++s) {
    if (begin + s * kChunk < end) copy_keys(s, begin + s * kChunk);
    copy_async_commit();
  }
  // While the first keys arrive: the query rows into Qs in bf16.
#pragma unroll
  for (int i = 0; i < kQueryQuadsPerThread; ++i)
    if (dst[i] >= 0) {
      const __nv_bfloat162 lo = __floats2bfloat162_rn(v[i].x, v[i].y), hi = __floats2bfloat162_rn(v[i].z, v[i].w);
      *reinterpret_cast<uint2*>(Qs + dst[i]) = make_uint2(*reinterpret_cast<const uint32_t*>(&lo), *reinterpret_cast<const uint32_t*>(&hi));
    }
  // Columns past width zero in the Q rows and in every stage of the keys (the copies write only [0, width)).
  const int pad = row - int(width);
  for (int i = threadIdx.x; i < (kHeads + kStages * kChunk) * pad; i += kThreads)
    Qs[(i / pad) * row + width + i % pad] = __float2bfloat16_rn(0.0f);

  const int k_steps = int(round_up(width, 16 * kChains) / 16);  // a multiple of kChains
  const int cols_per_warp = int(round_up(d_c, 64) / kWarps), col0 = warp * cols_per_warp;
  float o[kMaxVTiles][4] = {};
  float m_run[2] = {-INFINITY, -INFINITY};  // rows g and g + 8, base-2 units, the same in every warp
  float l_run[2] = {0.0f, 0.0f};            // over this warp's keys
  int stage = 0;
  for (int64_t c0 = begin; c0 < end; c0 += kChunk, stage = (stage + 1) % kStages) {
    const int n_keys = int(min(int64_t(kChunk), end - c0));
    // The stage before this one was last read before the previous chunk's final barrier.
    const int64_t ahead = c0 + (kStages - 1) * kChunk;
    if (ahead < end) copy_keys((stage + kStages - 1) % kStages, ahead);
    copy_async_commit();
    copy_async_wait<kStages - 1>();
    __syncthreads();
    const __nv_bfloat16* K = Ks + stage * kChunk * row;

    // s[c][i]: head g (i < 2) or g + 8, key 8·warp + 2q + (i & 1), over the k-steps ≡ c (mod kChains):
    // independent dependency chains, added at the end.
    float s[kChains][4] = {};
    for (int kk = 0; kk < k_steps; kk += kChains) {
#pragma unroll
      for (int c = 0; c < kChains; c += 2) {
        uint32_t a0[4], a1[4], k[4];
        load_matrices_x4(a0, Qs + (lane % 16) * row + (kk + c) * 16 + (lane / 16) * 8);
        load_matrices_x4(a1, Qs + (lane % 16) * row + (kk + c + 1) * 16 + (lane / 16) * 8);
        load_matrices_x4(k, K + (8 * warp + lane % 8) * row + (kk + c) * 16 + (lane / 8) * 8);
        mma_16x8x16<__nv_bfloat16>(s[c], a0[0], a0[1], a0[2], a0[3], k[0], k[1]);
        mma_16x8x16<__nv_bfloat16>(s[c + 1], a1[0], a1[1], a1[2], a1[3], k[2], k[3]);
      }
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int key = 8 * warp + 2 * q4 + (i & 1);
      float sum = 0.0f;
#pragma unroll
      for (int c = 0; c < kChains; ++c) sum += s[c][i];
      s[0][i] = key < n_keys ? sum * scale_log2 : -INFINITY;
      mx[i >> 1] = fmaxf(mx[i >> 1], s[0][i]);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      if (q4 == 0) red[warp * kHeads + g + 8 * r] = mx[r];
    }
    __syncthreads();
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float m_new = m_run[r];
#pragma unroll
      for (int w = 0; w < kWarps; ++w) m_new = fmaxf(m_new, red[w * kHeads + g + 8 * r]);
      correction[r] = exp2f(m_run[r] - m_new);  // 0 on the first chunk
      m_run[r] = m_new;
      const float p0 = exp2f(s[0][2 * r] - m_new), p1 = exp2f(s[0][2 * r + 1] - m_new);
      l_run[r] = l_run[r] * correction[r] + p0 + p1;
      *reinterpret_cast<__nv_bfloat162*>(Ps + (g + 8 * r) * kPRow + 8 * warp + 2 * q4) = __floats2bfloat162_rn(p0, p1);
    }
#pragma unroll
    for (int t = 0; t < kMaxVTiles; ++t) {
      o[t][0] *= correction[0];
      o[t][1] *= correction[0];
      o[t][2] *= correction[1];
      o[t][3] *= correction[1];
    }
    __syncthreads();

    // O[:, col0 .. col0 + cols_per_warp) += P · V, the values being the keys' first d_c columns.
#pragma unroll
    for (int kk = 0; kk < kChunk / 16; ++kk) {
      uint32_t a[4];
      load_matrices_x4(a, Ps + (lane % 16) * kPRow + kk * 16 + (lane / 16) * 8);
#pragma unroll
      for (int t = 0; t < kMaxVTiles; t += 2) {
        if (8 * t >= cols_per_warp) break;
        uint32_t v[4];
        load_matrices_x4_trans(v, K + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * row + col0 + 8 * t + (lane / 16) * 8);
        mma_16x8x16<__nv_bfloat16>(o[t], a[0], a[1], a[2], a[3], v[0], v[1]);
        mma_16x8x16<__nv_bfloat16>(o[t + 1], a[0], a[1], a[2], a[3], v[2], v[3]);
      }
    }
    __syncthreads();  // this stage, P and the maxima are free for the next chunks
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 1);
    l_run[r] += __shfl_xor_sync(0xffffffffu, l_run[r], 2);
    if (q4 == 0) red[warp * kHeads + g + 8 * r] = l_run[r];
  }
  __syncthreads();
  // One split (the whole sequence in this block): the output itself, o / l, into o_lat; else the
  // unnormalised o into the partials. The warps' tiles go through shared memory (the key stages, free
  // now) so that the rows leave in contiguous 16-byte pieces.
  const bool whole = n_splits == 1;
  float factor[2] = {1.0f, 1.0f};
  if (whole)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) l += red[w * kHeads + g + 8 * r];
      factor[r] = 1.0f / l;
    }
  float* Os = reinterpret_cast<float*>(Ks);  // [kHeads][d_c + kOutPad]
  const int64_t os_row = d_c + kOutPad;
#pragma unroll
  for (int t = 0; t < kMaxVTiles; ++t) {
    if (8 * t >= cols_per_warp) break;
    const int64_t c = col0 + 8 * t + 2 * q4;
#pragma unroll
    for (int r = 0; r < 2; ++r)
      if (c < d_c)
        *reinterpret_cast<float2*>(Os + (g + 8 * r) * os_row + c) =
            make_float2(o[t][2 * r] * factor[r], o[t][2 * r + 1] * factor[r]);
  }
  __syncthreads();
  for (int hh = 0; hh < kHeads && h0 + hh < nh; ++hh) {
    float* dst = whole ? o_lat + (b * nh + h0 + hh) * d_c : part(h0 + hh);
    for (int c = 4 * threadIdx.x; c < d_c; c += 4 * kThreads)
      *reinterpret_cast<float4*>(dst + c) = *reinterpret_cast<const float4*>(Os + hh * os_row + c);
  }
  if (whole) return;
  if (warp == 0 && q4 == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t h = h0 + g + 8 * r;
      if (h >= nh) continue;
      float l = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) l += red[w * kHeads + g + 8 * r];
      store_split_stats(part(h), d_c, m_run[r] * kLn2, l);
    }
  }
}

}  // namespace

bool absorbed_attention_mma_supported(const MlaShape& s, const PagedLatentCache& cache) {
  return cache.dtype == DType::BF16 && cache.width == s.d_c + s.d_rope && cache.width % 8 == 0 && s.d_c <= 512 &&
         s.d_rope <= 64 && s.d_c % 4 == 0 && s.d_nope % 4 == 0 && s.d_rope % 4 == 0 &&
         reinterpret_cast<uintptr_t>(cache.data) % 16 == 0;
}

void absorbed_attention_mma(const MlaShape& s, const float* q, const float* q_lat, const PagedLatentCache& cache,
                            int64_t layer, const int32_t* block_tables, int64_t max_blocks, const int32_t* seq_lens,
                            int64_t B, int64_t n_splits, float* partials, float* o_lat, cudaStream_t stream) {
  check(absorbed_attention_mma_supported(s, cache),
        "tensor-core MLA decode: a bf16 cache of d_c <= 512, d_rope <= 64, width % 8 == 0, head dims multiples of 4");
  check(reinterpret_cast<uintptr_t>(q) % 16 == 0 && reinterpret_cast<uintptr_t>(q_lat) % 16 == 0,
        "tensor-core MLA decode: 16-byte aligned queries");
  check(reinterpret_cast<uintptr_t>(partials) % 16 == 0 && reinterpret_cast<uintptr_t>(o_lat) % 16 == 0,
        "tensor-core MLA decode: 16-byte aligned outputs (its rows are written 16 bytes at a time)");
  check(cache.block_size >= 1 && cache.block_size <= INT32_MAX, "tensor-core MLA decode: a cache block size below 2^31");
  const int64_t row = tile_row(s.d_c, s.d_rope);
  const size_t bytes = shared_bytes(row);
  // The kernel's dynamic shared-memory limit, raised once to the largest shape supported.
  [[maybe_unused]] static const bool raised =
      allow_shared_memory(shared_bytes(tile_row(512, 64)), absorbed_attention_mma_kernel);
  const dim3 grid(unsigned((s.n_heads + kHeads - 1) / kHeads), unsigned(B), unsigned(n_splits));
  launch_overlapped(absorbed_attention_mma_kernel, grid, kWarps * 32, bytes, stream, q, q_lat, s.n_heads, s.d_nope,
                    s.d_rope, s.d_c, s.softmax_scale_log2(), static_cast<const __nv_bfloat16*>(cache.layer(layer)),
                    block_tables, max_blocks, cache.block_size, seq_lens, int(row), partials, o_lat);
}

}  // namespace dsv2::cuda
