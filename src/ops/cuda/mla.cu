// Multi-head Latent Attention on the GPU: writing latents to the paged cache, the decompressed
// form for prefill (cuBLAS batched GEMMs over per-head keys and values) and the absorbed form for
// decode (attention directly on the 576-wide cached latent).
#include <cuda_bf16.h>

#include <algorithm>

#include "ops/cuda/absorbed_attention_mma.h"
#include "ops/cuda/absorbed_attention_wgmma.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/overlapped_launch.cuh"

namespace dsv2::cuda {

namespace {

// (a, b) rotated by the angle of RoPE pair i at position p, scaled by amplitude.
__device__ __forceinline__ void rotate_pair(float* v, int32_t p, const float* __restrict__ inv_freq, int64_t i,
                                            float amplitude) {
  float s, c;
  sincosf(float(p) * inv_freq[i], &s, &c);
  s *= amplitude;
  c *= amplitude;
  const float a = v[0], b = v[1];
  v[0] = a * c - b * s;
  v[1] = a * s + b * c;
}

// Block (t, 0): RMSNorm of token t's latent, RoPE of its rotary key, store into the cache. Blocks
// (t, y ≥ 1): RoPE of the query heads' rotary parts, one pair a thread, beside it.
template <typename CT>
__global__ void write_latents_kernel(float* kv, int64_t width, const float* __restrict__ kv_norm, float eps, int64_t d_c,
                                     int64_t n_pairs, const int32_t* __restrict__ seq, const int32_t* __restrict__ pos,
                                     const float* __restrict__ inv_freq, float amplitude, CT* layer,
                                     const int32_t* __restrict__ block_tables, int64_t max_blocks, int64_t block_size,
                                     QueryRope query) {
  start_after_previous_kernel();
  if (blockIdx.y > 0) {
    const int i = int(blockIdx.y - 1) * int(blockDim.x) + int(threadIdx.x), pairs = int(n_pairs);
    if (i < int(query.n_heads) * pairs)
      rotate_pair(query.q + blockIdx.x * query.token_stride + (i / pairs) * query.head_stride + 2 * (i % pairs),
                  pos[blockIdx.x], inv_freq, i % pairs, amplitude);
    return;
  }
  __shared__ float red[32];
  float* row = kv + blockIdx.x * width;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < d_c; i += blockDim.x) ss += row[i] * row[i];
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / float(d_c) + eps);
  for (int64_t i = threadIdx.x; i < d_c; i += blockDim.x) row[i] = row[i] * r * kv_norm[i];
  const int32_t p = pos[blockIdx.x];
  for (int64_t i = threadIdx.x; i < n_pairs; i += blockDim.x) rotate_pair(row + d_c + 2 * i, p, inv_freq, i, amplitude);
  __syncthreads();
  const int32_t* table = block_tables + int64_t(seq[blockIdx.x]) * max_blocks;
  CT* dst = layer + (int64_t(table[p / block_size]) * block_size + p % block_size) * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) from_f32(row[i], dst + i);
}

template <typename CT>
__global__ void gather_latents_kernel(const CT* __restrict__ layer, const int32_t* __restrict__ table, int64_t block_size,
                                      int64_t width, int64_t d_c, float* c, float* k_pe) {
  const CT* src = cache_row(layer, table, block_size, width, blockIdx.x);
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    const float v = to_f32(src[i]);
    if (i < d_c) {
      c[blockIdx.x * d_c + i] = v;
    } else {
      k_pe[blockIdx.x * (width - d_c) + i - d_c] = v;
    }
  }
}

// keys[s, h] = [kvb[s, h, 0:d_nope] ; k_pe[s]]
__global__ void build_keys_kernel(const float* __restrict__ kvb, const float* __restrict__ k_pe, int64_t L, int64_t nh,
                                  int64_t d_nope, int64_t d_rope, int64_t d_v, float* keys) {
  const int64_t d_qk = d_nope + d_rope;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= L * nh * d_qk) return;
  const int64_t j = i % d_qk, h = (i / d_qk) % nh, s = i / (d_qk * nh);
  keys[i] = j < d_nope ? kvb[(s * nh + h) * (d_nope + d_v) + j] : k_pe[s * d_rope + j - d_nope];
}

// Row (h, t) of scores [nh, T, L]: softmax over keys 0 .. pos0 + t, zero beyond.
__global__ void causal_softmax_kernel(float* scores, int64_t T, int64_t L, int64_t pos0) {
  __shared__ float red[32];
  const int64_t t = blockIdx.x % T;
  float* row = scores + int64_t(blockIdx.x) * L;
  const int64_t n = pos0 + t + 1;
  float mx = -INFINITY;
  for (int64_t s = threadIdx.x; s < n; s += blockDim.x) mx = fmaxf(mx, row[s]);
  mx = block_max(mx, red);
  float sum = 0;
  for (int64_t s = threadIdx.x; s < n; s += blockDim.x) sum += expf(row[s] - mx);
  sum = block_sum(sum, red);
  const float inv = 1.0f / sum;
  for (int64_t s = threadIdx.x; s < L; s += blockDim.x) row[s] = s < n ? expf(row[s] - mx) * inv : 0.0f;
}

// out[b, h, r] = Σ_k W[h][r][k] · in[b, h, k] for every sequence b: one warp per (head, kHeadRows
// rows), 16-byte weight and input loads when aligned, the sequences in groups of GROUP (1 for a single
// sequence, else 8) sharing each load of the rows. W rows: head stride w_h, row stride w_r. Absorbs the
// query (W = W_UKᵀ) and expands the attention output (W = W_UV). A sum's order does not depend on B.
constexpr int kHeadGroup = 8;
constexpr int kHeadRows = 4;
template <typename WT, bool VECTORISED, int GROUP>
__global__ void head_rows_kernel(const WT* __restrict__ W, int64_t w_h, int64_t w_r, int64_t nh, int64_t R, int64_t K,
                                 const float* __restrict__ in, int64_t in_b, int64_t in_h, int64_t B, float* out,
                                 int64_t out_b, int64_t out_h) {
  start_after_previous_kernel();
  constexpr int kVec = VECTORISED ? 16 / sizeof(WT) : 1;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t groups = (R + kHeadRows - 1) / kHeadRows;
  if (warp >= nh * groups) return;
  const int64_t h = warp / groups, r0 = (warp % groups) * kHeadRows;
  const WT* w[kHeadRows];
#pragma unroll
  for (int u = 0; u < kHeadRows; ++u) w[u] = W + h * w_h + (r0 + u < R ? r0 + u : r0) * w_r;  // rows past R: not written
  for (int64_t b0 = 0; b0 < B; b0 += GROUP) {
    float acc[kHeadRows][GROUP] = {};
    for (int64_t k = int64_t(lane) * kVec; k < K; k += 32 * kVec) {
      WT wv[kHeadRows][kVec];
#pragma unroll
      for (int u = 0; u < kHeadRows; ++u) {
        if constexpr (VECTORISED) {
          const uint4 raw = load_weights16(w[u] + k);
#pragma unroll
          for (int j = 0; j < kVec; ++j) wv[u][j] = reinterpret_cast<const WT*>(&raw)[j];
        } else {
          wv[u][0] = w[u][k];
        }
      }
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        if (b0 + g < B) {
          const float* x = in + (b0 + g) * in_b + h * in_h + k;
          float xv[kVec];
          if constexpr (VECTORISED) {
            load_f32x(x, xv);
          } else {
            xv[0] = x[0];
          }
#pragma unroll
          for (int u = 0; u < kHeadRows; ++u)
#pragma unroll
            for (int j = 0; j < kVec; ++j) acc[u][g] += to_f32(wv[u][j]) * xv[j];
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kHeadRows; ++u)
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        if (b0 + g >= B) continue;  // the same for every lane
        const float v = warp_sum(acc[u][g]);
        if (lane == 0 && r0 + u < R) out[(b0 + g) * out_b + h * out_h + r0 + u] = v;
      }
  }
}

// head_rows_kernel for every (head, row group), vectorised when K, the strides and the pointers allow.
template <typename WT>
void launch_head_rows(const WT* W, int64_t w_h, int64_t w_r, int64_t nh, int64_t R, int64_t K, const float* in, int64_t in_b,
                      int64_t in_h, int64_t B, float* out, int64_t out_b, int64_t out_h, cudaStream_t stream) {
  constexpr int64_t kVec = 16 / sizeof(WT);
  const bool vectorised = K % kVec == 0 && w_h % kVec == 0 && w_r % kVec == 0 && in_b % 4 == 0 && in_h % 4 == 0 &&
                          reinterpret_cast<uintptr_t>(W) % 16 == 0 && reinterpret_cast<uintptr_t>(in) % 16 == 0;
  const int64_t warps = nh * ((R + kHeadRows - 1) / kHeadRows);
  const unsigned blocks = unsigned((warps * 32 + 255) / 256);
  if (vectorised && B == 1) {
    launch_overlapped(head_rows_kernel<WT, true, 1>, blocks, 256, 0, stream,
                      W, w_h, w_r, nh, R, K, in, in_b, in_h, B, out, out_b, out_h);
  } else if (vectorised) {
    launch_overlapped(head_rows_kernel<WT, true, kHeadGroup>, blocks, 256, 0, stream,
                      W, w_h, w_r, nh, R, K, in, in_b, in_h, B, out, out_b, out_h);
  } else {
    launch_overlapped(head_rows_kernel<WT, false, kHeadGroup>, blocks, 256, 0, stream,
                      W, w_h, w_r, nh, R, K, in, in_b, in_h, B, out, out_b, out_h);
  }
  DSV2_CUDA_LAUNCH_CHECK();
}

// wuk_t[h][j][i] = kv_b[h·(d_nope + d_v) + i][j]: W_UK transposed so that absorbing the query reads rows.
template <typename WT>
__global__ void transpose_wuk_kernel(const WT* __restrict__ kvb, int64_t nh, int64_t d_nope, int64_t d_v, int64_t d_c,
                                     WT* out) {
  const int64_t n = nh * d_c * d_nope;
  for (int64_t o = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; o < n; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = o % d_nope, j = (o / d_nope) % d_c, h = o / (d_nope * d_c);
    out[o] = kvb[(h * (d_nope + d_v) + i) * d_c + j];
  }
}

// Split-K decode attention (flash-decoding) over an f32 cache. Block (head h, sequence b, split k)
// attends to keys [k·S, min(len, (k+1)·S)), S = ceil(len / n_splits); each warp takes every 8th key with an online softmax,
// holding the key's latent in registers for both the score and the weighted sum, so each cached row
// is read once per head. Writes the unnormalised partial o = Σ_s exp(score_s − m)·c_s with m and
// l = Σ_s exp(score_s − m). partials: [B, nh, n_splits, partial_stride(d_c)] = [o (d_c) | m | l | pad].
constexpr int kAttnThreads = 256;
constexpr int kAttnWarps = kAttnThreads / 32;
constexpr int kLatPerLane = 16;  // d_c <= 512
constexpr int kRopePerLane = 2;  // d_rope <= 64
template <typename CT>
__global__ void __launch_bounds__(kAttnThreads)
    absorbed_attention_split_kernel(const float* __restrict__ q, const float* __restrict__ q_lat, int64_t nh, int64_t d_nope,
                                    int64_t d_rope, int64_t d_c, float scale, const CT* __restrict__ layer,
                                    const int32_t* __restrict__ block_tables, int64_t max_blocks, int64_t block_size,
                                    const int32_t* __restrict__ seq_lens, float* partials) {
  start_after_previous_kernel();
  extern __shared__ float smem[];  // [kAttnWarps][d_c] warp accumulators
  __shared__ float warp_m[kAttnWarps], warp_l[kAttnWarps];
  const int64_t h = blockIdx.x, b = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z, width = d_c + d_rope;
  float* part = partials + ((b * nh + h) * n_splits + split) * partial_stride(d_c);
  const SplitKeys keys_of_split = split_keys(seq_lens[b], split, n_splits, 1);
  const int64_t begin = keys_of_split.begin, end = keys_of_split.end;
  if (begin >= end) {  // past the end of this sequence: an empty partial
    if (threadIdx.x == 0) store_split_stats(part, d_c, -INFINITY, 0.0f);
    return;
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float qc[kLatPerLane], qr[kRopePerLane], acc[kLatPerLane];
#pragma unroll
  for (int i = 0; i < kLatPerLane; ++i) {
    const int64_t j = lane + 32 * i;
    qc[i] = j < d_c ? q_lat[(b * nh + h) * d_c + j] : 0.0f;
    acc[i] = 0.0f;
  }
#pragma unroll
  for (int i = 0; i < kRopePerLane; ++i) {
    const int64_t j = lane + 32 * i;
    qr[i] = j < d_rope ? q[(b * nh + h) * (d_nope + d_rope) + d_nope + j] : 0.0f;
  }
  const int32_t* table = block_tables + b * max_blocks;
  float m = -INFINITY, l = 0.0f;
  for (int64_t s = begin + warp; s < end; s += kAttnWarps) {
    const CT* row = cache_row(layer, table, block_size, width, s);
    float c[kLatPerLane];
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kLatPerLane; ++i) {
      const int64_t j = lane + 32 * i;
      c[i] = j < d_c ? to_f32(row[j]) : 0.0f;
      dot += qc[i] * c[i];
    }
#pragma unroll
    for (int i = 0; i < kRopePerLane; ++i) {
      const int64_t j = lane + 32 * i;
      if (j < d_rope) dot += qr[i] * to_f32(row[d_c + j]);
    }
    dot = warp_sum(dot) * scale;
    const float m_new = fmaxf(m, dot), correction = expf(m - m_new), p = expf(dot - m_new);
    l = l * correction + p;
#pragma unroll
    for (int i = 0; i < kLatPerLane; ++i) acc[i] = acc[i] * correction + p * c[i];
    m = m_new;
  }
#pragma unroll
  for (int i = 0; i < kLatPerLane; ++i) {
    const int64_t j = lane + 32 * i;
    if (j < d_c) smem[warp * d_c + j] = acc[i];
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
  __syncthreads();
  float M = -INFINITY;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, warp_m[w]);
  float L = 0.0f, scale_w[kAttnWarps];
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) {
    scale_w[w] = warp_m[w] == -INFINITY ? 0.0f : expf(warp_m[w] - M);
    L += scale_w[w] * warp_l[w];
  }
  for (int64_t j = threadIdx.x; j < d_c; j += blockDim.x) {
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) o += scale_w[w] * smem[w * d_c + j];
    part[j] = o;
  }
  if (threadIdx.x == 0) {
    store_split_stats(part, d_c, M, L);
  }
}

// o_lat[b, h] = Σ_k w_k·o_k with w_k = exp(m_k − M) / Σ_k exp(m_k − M)·l_k over the splits (empty ones:
// m_k = −inf, w_k = 0). grid (nh, B, ceil(d_c / columns)). First the block's threads, one split each,
// form M, L and the weights into shared memory (each split's m and l loaded together, one pass);
// then its warps form `parts` groups (a power of two up to 8, more for more splits), group p summing
// its columns over the splits k ≡ p (mod parts) with all of a warp's loads independent of each other,
// the groups' sums added in a fixed order. columns = 32·kCombineWarps / parts.
constexpr int kCombineWarps = 8;
constexpr int64_t kMaxCombineSplits = 1024;
__global__ void __launch_bounds__(kCombineWarps * 32)
    combine_splits_kernel(const float* __restrict__ partials, int64_t nh, int64_t n_splits, int64_t d_c, int parts,
                          float* o_lat) {
  start_after_previous_kernel();
  __shared__ float weight[kMaxCombineSplits];
  __shared__ float sums[kCombineWarps * 32];
  const int64_t h = blockIdx.x, b = blockIdx.y, stride = partial_stride(d_c);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* base = partials + (b * nh + h) * n_splits * stride;
  constexpr int kPerThread = int(kMaxCombineSplits) / (kCombineWarps * 32);
  float m[kPerThread], l[kPerThread];
  float M = -INFINITY;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t k = threadIdx.x + i * kCombineWarps * 32;
    m[i] = k < n_splits ? base[k * stride + d_c] : -INFINITY;
    l[i] = k < n_splits ? base[k * stride + d_c + 1] : 0.0f;
    M = fmaxf(M, m[i]);
  }
  // Block-wide maximum, then L = Σ exp(m_k − M)·l_k, through `sums` (each warp's value, read by all).
  M = warp_max(M);
  if (lane == 0) sums[warp] = M;
  __syncthreads();
  M = sums[0];
  for (int w = 1; w < kCombineWarps; ++w) M = fmaxf(M, sums[w]);
  float e[kPerThread], L = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    e[i] = m[i] == -INFINITY ? 0.0f : expf(m[i] - M);
    L += e[i] * l[i];
  }
  L = warp_sum(L);
  __syncthreads();  // every thread has read the maxima
  if (lane == 0) sums[warp] = L;
  __syncthreads();
  L = 0.0f;
  for (int w = 0; w < kCombineWarps; ++w) L += sums[w];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t k = threadIdx.x + i * kCombineWarps * 32;
    if (k < n_splits) weight[k] = e[i] / L;
  }
  __syncthreads();  // the weights are written; `sums` is free
  const int columns = kCombineWarps * 32 / parts, part = warp % parts, column = (warp / parts) * 32 + lane;
  const int64_t j = int64_t(blockIdx.z) * columns + column;
  float acc = 0.0f;
  if (j < d_c) {
    // An empty split's o was never written: its value is loaded (so that the loads do not wait on the
    // weights) but not used.
#pragma unroll 8
    for (int64_t k = part; k < n_splits; k += parts) {
      const float w = weight[k], v = base[k * stride + j];
      acc += w == 0.0f ? 0.0f : w * v;
    }
  }
  if (parts == 1) {
    if (j < d_c) o_lat[(b * nh + h) * d_c + j] = acc;
    return;
  }
  sums[part * columns + column] = acc;
  __syncthreads();
  if (part == 0 && j < d_c) {
    float total = 0;
    for (int p = 0; p < parts; ++p) total += sums[p * columns + column];
    o_lat[(b * nh + h) * d_c + j] = total;
  }
}

// The pieces each sequence's keys are split into for the decode attention (each attended by its own
// block, then combined): at most one per 32 keys of max_len up to 64 pieces, then one per 64 keys
// (a short context in a few one-chunk blocks). Up to 8 sequences: up to 128 pieces, set
// by max_len alone, so that a sequence's result does not depend on the batch it runs in. More
// sequences: as many as fill the multiprocessors' block slots once (whole waves: blocks_per_sm blocks
// of the kernel fit a multiprocessor, head_groups blocks attend a sequence's split), but each of at
// least kMinSplitKeys keys of max_len (always fewer pieces than the 32- or 64-key rule gives): a split
// writes partial_stride(d_c) floats a head, 33 KB a sequence at V2-Lite's 16 heads, which the combine
// reads back, together the bytes of ~57 cached rows of 1,152. head_groups = 1 and blocks_per_sm = 2
// give the most pieces (absorbed_attention_scratch_floats sizes the scratch by them).
constexpr int64_t kMinSplitKeys = 256;
int64_t multiprocessor_count() {
  static const int64_t multiprocessors = [] {
    int device = 0, n = 0;
    DSV2_CUDA_CHECK(cudaGetDevice(&device));
    DSV2_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    return int64_t(n);
  }();
  return multiprocessors;
}
int64_t absorbed_splits(int64_t B, int64_t max_len, int64_t head_groups = 1, int64_t blocks_per_sm = 2) {
  const int64_t multiprocessors = multiprocessor_count();
  if (B <= kGemvMaxTokens) {
    // One split per 32 keys up to 64 splits (4,096 keys), then one per 64 keys.
    const int64_t most = max_len <= 4096 ? std::clamp<int64_t>((max_len + 31) / 32, 1, 64) : (max_len + 63) / 64;
    return std::min<int64_t>(most, 128);
  }
  return std::max<int64_t>(1, std::min(blocks_per_sm * multiprocessors / (B * head_groups),
                                       (max_len + kMinSplitKeys - 1) / kMinSplitKeys));
}

// out[b, h, r] = Σ_k W[h][r][k] · in[b, h, k] (W rows: head stride w_h, row stride w_r; in: [B, nh, *]
// with head stride in_h and sequence stride nh·in_h; out: [B, nh, R]) as one cuBLAS GEMM strided over
// the heads; in is rounded to W's dtype first (into lowp, [B, nh, K]) unless W is f32.
void heads_gemm(cublasHandle_t blas, DType dtype, const void* W, int64_t w_h, int64_t w_r, int64_t nh, int64_t R,
                int64_t K, const float* in, int64_t in_h, int64_t B, float* out, void* lowp, cudaStream_t stream) {
  DSV2_CUBLAS_CHECK(cublasSetStream(blas, stream));
  const void* x = in;
  int64_t x_h = in_h;
  cudaDataType_t type = CUDA_R_32F;
  if (dtype != DType::F32) {
    round_rows(in, in_h, B * nh, K, dtype, lowp, stream);
    x = lowp;
    x_h = K;
    type = dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  }
  // Per head: column-major out_h (R×B, ld nh·R) = W_hᵀ (R×K; W_h is column-major K×R, ld w_r) · x_h (K×B, ld nh·x_h).
  const float one = 1.0f, zero = 0.0f;
  DSV2_CUBLAS_CHECK(cublasGemmStridedBatchedEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(R), int(B), int(K), &one, W, type,
                                               int(w_r), w_h, x, type, int(nh * x_h), x_h, &zero, out, CUDA_R_32F,
                                               int(nh * R), R, int(nh), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void write_latents(float* kv, int64_t T, const float* kv_norm, float eps, int64_t d_c, int64_t d_rope, const int32_t* seq,
                   const int32_t* pos, const float* inv_freq, float amplitude, PagedLatentCache& cache, int64_t layer,
                   const int32_t* block_tables, int64_t max_blocks, const QueryRope& query, cudaStream_t stream) {
  DSV2_DISPATCH_CACHE(cache.dtype, {
    constexpr int64_t kThreads = 256;
    const int64_t query_blocks = (query.n_heads * (d_rope / 2) + kThreads - 1) / kThreads;
    launch_overlapped(write_latents_kernel<CT>, dim3(unsigned(T), unsigned(1 + query_blocks)), unsigned(kThreads), 0,
                      stream, kv, cache.width, kv_norm, eps, d_c, d_rope / 2, seq, pos, inv_freq, amplitude,
                      static_cast<CT*>(cache.layer(layer)), block_tables, max_blocks, cache.block_size, query);
  });
  DSV2_CUDA_LAUNCH_CHECK();
}

void gather_latents(const PagedLatentCache& cache, int64_t layer, const int32_t* block_table, int64_t L, int64_t d_c,
                    float* c, float* k_pe, cudaStream_t stream) {
  DSV2_DISPATCH_CACHE(cache.dtype, {
    gather_latents_kernel<<<unsigned(L), 256, 0, stream>>>(static_cast<const CT*>(cache.layer(layer)), block_table,
                                                            cache.block_size, cache.width, d_c, c, k_pe);
  });
  DSV2_CUDA_LAUNCH_CHECK();
}

void attend_decompressed(cublasHandle_t blas, const MlaShape& m, const float* q, const float* kvb, const float* k_pe,
                         int64_t T, int64_t pos0, float* out, float* keys, float* scores, cudaStream_t stream) {
  const int64_t L = pos0 + T, nh = m.n_heads, d_qk = m.d_nope + m.d_rope, kvb_w = nh * (m.d_nope + m.d_v);
  const int64_t n = L * nh * d_qk;
  build_keys_kernel<<<unsigned((n + 255) / 256), 256, 0, stream>>>(kvb, k_pe, L, nh, m.d_nope, m.d_rope, m.d_v, keys);
  DSV2_CUDA_LAUNCH_CHECK();
  DSV2_CUBLAS_CHECK(cublasSetStream(blas, stream));
  const float scale = m.softmax_scale, one = 1.0f, zero = 0.0f;
  // scores_h (column-major L×T) = K_hᵀ · Q_h, K_h and Q_h column-major d_qk×L and d_qk×T.
  DSV2_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      blas, CUBLAS_OP_T, CUBLAS_OP_N, int(L), int(T), int(d_qk), &scale, keys, CUDA_R_32F, int(nh * d_qk), d_qk, q,
      CUDA_R_32F, int(nh * d_qk), d_qk, &zero, scores, CUDA_R_32F, int(L), T * L, int(nh), CUBLAS_COMPUTE_32F,
      CUBLAS_GEMM_DEFAULT));
  causal_softmax_kernel<<<unsigned(nh * T), 256, 0, stream>>>(scores, T, L, pos0);
  DSV2_CUDA_LAUNCH_CHECK();
  // out_h (column-major d_v×T, ld nh·d_v) = V_h (d_v×L, ld kvb_w) · P_h (L×T).
  DSV2_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      blas, CUBLAS_OP_N, CUBLAS_OP_N, int(m.d_v), int(T), int(L), &one, kvb + m.d_nope, CUDA_R_32F, int(kvb_w),
      m.d_nope + m.d_v, scores, CUDA_R_32F, int(L), T * L, &zero, out, CUDA_R_32F, int(nh * m.d_v), m.d_v, int(nh),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void attend_latents(const MlaShape& m, const float* q, const float* q_lat, const PagedLatentCache& cache, int64_t layer,
                    const int32_t* block_tables, int64_t max_blocks, const int32_t* seq_lens, int64_t B, int64_t max_len,
                    float* partials, float* o_lat, cudaStream_t stream, DecodeAttentionKernel kernel) {
  check(m.d_c <= 32 * kLatPerLane && m.d_rope <= 32 * kRopePerLane, "GPU MLA decode: kv_lora_rank <= 512 and qk_rope_head_dim <= 64");
  const int64_t nh = m.n_heads;
  using K = DecodeAttentionKernel;
  check(kernel != K::warp_mma || absorbed_attention_mma_supported(m, cache),
        "GPU MLA decode: the warp_mma kernel takes a bf16 cache of d_c <= 512 and d_rope <= 64");
  check(kernel != K::warpgroup_mma || absorbed_attention_wgmma_supported(m, cache),
        "GPU MLA decode: the warpgroup_mma kernel takes a bf16 cache of 512 latent and 64 rotary values a row");
  // The warpgroup kernel, but for short contexts whose blocks (one a multiprocessor) take more than one
  // wave, and for up to kGemvMaxTokens sequences of at most kFewShortKeys keys (split by max_len alone,
  // so the choice does not depend on the batch either): there the mma.sync kernel's two blocks a
  // multiprocessor and 32-key chunks win (cuda-notes v22, v25).
  constexpr int64_t kFewShortKeys = 2048;
  const int64_t head_blocks = (nh + kWarpgroupAttentionHeads - 1) / kWarpgroupAttentionHeads;
  const bool short_and_many = head_blocks * B > multiprocessor_count() && max_len < 512;
  const bool few_and_short = B <= kGemvMaxTokens && max_len <= kFewShortKeys;
  if (kernel == K::automatic && absorbed_attention_wgmma_supported(m, cache) && !short_and_many && !few_and_short)
    kernel = K::warpgroup_mma;
  if (kernel == K::automatic && absorbed_attention_mma_supported(m, cache)) kernel = K::warp_mma;
  const int64_t n_splits = kernel == K::warpgroup_mma
                               ? absorbed_splits(B, max_len, head_blocks, kWarpgroupAttentionBlocksPerMultiprocessor)
                               : absorbed_splits(B, max_len);
  check(n_splits <= kMaxCombineSplits, "GPU MLA decode: at most 1024 splits of a sequence's keys");
  if (kernel == K::warpgroup_mma) {
    absorbed_attention_wgmma(m, q, q_lat, cache, layer, block_tables, max_blocks, seq_lens, B, n_splits, partials,
                             o_lat, stream);
    if (n_splits == 1) return;  // written to o_lat directly
  } else if (kernel == K::warp_mma) {
    absorbed_attention_mma(m, q, q_lat, cache, layer, block_tables, max_blocks, seq_lens, B, n_splits, partials, o_lat,
                           stream);
    if (n_splits == 1) return;  // written to o_lat directly
  } else {
    DSV2_DISPATCH_CACHE(cache.dtype, {
      const dim3 grid = dim3(unsigned(nh), unsigned(B), unsigned(n_splits));
      launch_overlapped(absorbed_attention_split_kernel<CT>, grid, kAttnThreads, size_t(kAttnWarps * m.d_c) * sizeof(float),
                        stream, q, q_lat, nh, m.d_nope, m.d_rope, m.d_c, m.softmax_scale,
                        static_cast<const CT*>(cache.layer(layer)), block_tables, max_blocks, cache.block_size, seq_lens,
                        partials);
    });
  }
  int parts = 1;  // 1 up to 15 splits, 2 from 16, 4 from 32, 8 from 64
  while (parts < kCombineWarps && parts * 16 <= n_splits) parts *= 2;
  const int64_t columns = kCombineWarps * 32 / parts;
  launch_overlapped(combine_splits_kernel, dim3(unsigned(nh), unsigned(B), unsigned((m.d_c + columns - 1) / columns)),
                    kCombineWarps * 32, 0, stream, partials, nh, n_splits, m.d_c, parts, o_lat);
}

void absorb_queries(cublasHandle_t blas, const MlaShape& m, const float* q, const DeviceMatrix& W_kvb, const void* wuk_t,
                    int64_t B, float* q_lat, void* lowp, cudaStream_t stream) {
  const int64_t nh = m.n_heads, d_qk = m.d_nope + m.d_rope;
  if (B > kGemvMaxTokens) {
    heads_gemm(blas, W_kvb.dtype, wuk_t, m.d_c * m.d_nope, m.d_nope, nh, m.d_c, m.d_nope, q, d_qk, B, q_lat, lowp, stream);
  } else {
    DSV2_DISPATCH_DTYPE(W_kvb.dtype, {
      launch_head_rows(static_cast<const WT*>(wuk_t), m.d_c * m.d_nope, m.d_nope, nh, m.d_c, m.d_nope, q, nh * d_qk, d_qk, B,
                       q_lat, nh * m.d_c, m.d_c, stream);
    });
  }
}

void expand_latents(cublasHandle_t blas, const MlaShape& m, const DeviceMatrix& W_kvb, const float* o_lat, int64_t B,
                    float* out, void* lowp, cudaStream_t stream) {
  const int64_t nh = m.n_heads;
  const size_t esz = dtype_size(W_kvb.dtype);
  const void* w_uv = static_cast<const char*>(W_kvb.data) + size_t(m.d_nope * m.d_c) * esz;
  if (B > kGemvMaxTokens) {
    heads_gemm(blas, W_kvb.dtype, w_uv, (m.d_nope + m.d_v) * m.d_c, m.d_c, nh, m.d_v, m.d_c, o_lat, m.d_c, B, out, lowp, stream);
  } else {
    DSV2_DISPATCH_DTYPE(W_kvb.dtype, {
      launch_head_rows(static_cast<const WT*>(w_uv), (m.d_nope + m.d_v) * m.d_c, m.d_c, nh, m.d_v, m.d_c, o_lat, nh * m.d_c,
                       m.d_c, B, out, nh * m.d_v, m.d_v, stream);
    });
  }
}

void attend_absorbed(cublasHandle_t blas, const MlaShape& m, const float* q, const DeviceMatrix& W_kvb, const void* wuk_t,
                     const PagedLatentCache& cache, int64_t layer, const int32_t* block_tables, int64_t max_blocks,
                     const int32_t* seq_lens, int64_t B, int64_t max_len, float* q_lat, float* o_lat, float* partials,
                     float* out, void* lowp, cudaStream_t stream) {
  absorb_queries(blas, m, q, W_kvb, wuk_t, B, q_lat, lowp, stream);
  attend_latents(m, q, q_lat, cache, layer, block_tables, max_blocks, seq_lens, B, max_len, partials, o_lat, stream);
  expand_latents(blas, m, W_kvb, o_lat, B, out, lowp, stream);
}

void transpose_wuk(const DeviceMatrix& W_kvb, int64_t n_heads, int64_t d_nope, int64_t d_v, void* out, cudaStream_t stream) {
  DSV2_DISPATCH_DTYPE(W_kvb.dtype, {
    transpose_wuk_kernel<<<1024, 256, 0, stream>>>(static_cast<const WT*>(W_kvb.data), n_heads, d_nope, d_v, W_kvb.cols,
                                                   static_cast<WT*>(out));
  });
  DSV2_CUDA_LAUNCH_CHECK();
}

int64_t absorbed_attention_scratch_floats(int64_t B, int64_t n_heads, int64_t d_c, int64_t max_len) {
  int64_t most = 0;  // over every batch size up to B: their split counts differ
  for (int64_t b = 1; b <= B; ++b) most = std::max(most, b * absorbed_splits(b, max_len));
  return most * n_heads * partial_stride(d_c);
}

}  // namespace dsv2::cuda
