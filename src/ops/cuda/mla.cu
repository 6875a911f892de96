// Multi-head Latent Attention on the GPU: writing latents to the paged cache, the decompressed
// form for prefill (cuBLAS batched GEMMs over per-head keys and values) and the absorbed form for
// decode (attention directly on the 576-wide cached latent).
#include <cuda_bf16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

namespace {

template <typename CT>
__device__ __forceinline__ const CT* cache_row(const CT* layer, const int32_t* block_table, int64_t block_size,
                                               int64_t width, int64_t pos) {
  return layer + (int64_t(block_table[pos / block_size]) * block_size + pos % block_size) * width;
}

// One block per token: RMSNorm of the latent, RoPE of the rotary key, store into the cache.
template <typename CT>
__global__ void write_latents_kernel(float* kv, int64_t width, const float* __restrict__ kv_norm, float eps, int64_t d_c,
                                     int64_t n_pairs, const int32_t* __restrict__ seq, const int32_t* __restrict__ pos,
                                     const float* __restrict__ inv_freq, float amplitude, CT* layer,
                                     const int32_t* __restrict__ block_tables, int64_t max_blocks, int64_t block_size) {
  __shared__ float red[32];
  float* row = kv + blockIdx.x * width;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < d_c; i += blockDim.x) ss += row[i] * row[i];
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / float(d_c) + eps);
  for (int64_t i = threadIdx.x; i < d_c; i += blockDim.x) row[i] = row[i] * r * kv_norm[i];
  const int32_t p = pos[blockIdx.x];
  for (int64_t i = threadIdx.x; i < n_pairs; i += blockDim.x) {
    float s, c;
    sincosf(float(p) * inv_freq[i], &s, &c);
    s *= amplitude;
    c *= amplitude;
    float* v = row + d_c + 2 * i;
    const float a = v[0], b = v[1];
    v[0] = a * c - b * s;
    v[1] = a * s + b * c;
  }
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

// q_lat[b, h, j] = Σ_i q_nope[b, h, i] · W_UK[h][i][j]. grid (d_c / 256, nh, B)
template <typename WT>
__global__ void absorb_query_kernel(const float* __restrict__ q, int64_t nh, int64_t d_nope, int64_t d_rope, int64_t d_v,
                                    int64_t d_c, const WT* __restrict__ W, float* q_lat) {
  extern __shared__ float qn[];  // [d_nope]
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const float* qh = q + (b * nh + h) * (d_nope + d_rope);
  for (int64_t i = threadIdx.x; i < d_nope; i += blockDim.x) qn[i] = qh[i];
  __syncthreads();
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= d_c) return;
  const WT* w = W + h * (d_nope + d_v) * d_c + j;
  float acc = 0;
  for (int64_t i = 0; i < d_nope; ++i) acc += qn[i] * to_f32(w[i * d_c]);
  q_lat[(b * nh + h) * d_c + j] = acc;
}

// Split-K decode attention. Block (head h, sequence b, split k) attends to keys
// [k·kSplitKeys, min(len, (k+1)·kSplitKeys)) with one warp per key, and writes its unnormalised
// partial o = Σ_s exp(score_s − m)·c_s together with m and l = Σ_s exp(score_s − m).
// partials: [B, nh, n_splits, d_c + 2] = [o (d_c) | m | l].
constexpr int kAttnThreads = 256;
constexpr int64_t kSplitKeys = 256;
template <typename CT>
__global__ void __launch_bounds__(kAttnThreads)
    absorbed_attention_split_kernel(const float* __restrict__ q, const float* __restrict__ q_lat, int64_t nh, int64_t d_nope,
                                    int64_t d_rope, int64_t d_c, float scale, const CT* __restrict__ layer,
                                    const int32_t* __restrict__ block_tables, int64_t max_blocks, int64_t block_size,
                                    const int32_t* __restrict__ seq_lens, float* partials) {
  extern __shared__ float qs[];  // [d_c + d_rope]: the absorbed query and the rotary query
  __shared__ float sc[kSplitKeys];
  __shared__ const CT* rows[kSplitKeys];
  __shared__ float red[32];
  const int64_t h = blockIdx.x, b = blockIdx.y, split = blockIdx.z, n_splits = gridDim.z, width = d_c + d_rope;
  float* part = partials + ((b * nh + h) * n_splits + split) * (d_c + 2);
  const int64_t begin = split * kSplitKeys, end = min(int64_t(seq_lens[b]), begin + kSplitKeys);
  if (begin >= end) {  // past the end of this sequence: an empty partial
    if (threadIdx.x == 0) {
      part[d_c] = -INFINITY;
      part[d_c + 1] = 0.0f;
    }
    return;
  }
  for (int64_t i = threadIdx.x; i < d_c; i += blockDim.x) qs[i] = q_lat[(b * nh + h) * d_c + i];
  for (int64_t i = threadIdx.x; i < d_rope; i += blockDim.x) qs[d_c + i] = q[(b * nh + h) * (d_nope + d_rope) + d_nope + i];
  const int32_t* table = block_tables + b * max_blocks;
  for (int64_t s = begin + threadIdx.x; s < end; s += blockDim.x) rows[s - begin] = cache_row(layer, table, block_size, width, s);
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = kAttnThreads / 32;
  float mx = -INFINITY;
  for (int64_t s = begin + warp; s < end; s += n_warps) {
    const CT* row = rows[s - begin];
    float acc = 0;
    for (int64_t i = lane; i < width; i += 32) acc += qs[i] * to_f32(row[i]);
    acc = warp_sum(acc) * scale;
    if (lane == 0) sc[s - begin] = acc;
    mx = fmaxf(mx, acc);
  }
  mx = block_max(mx, red);  // its barriers also publish sc to the block
  float sum = 0;
  for (int64_t s = begin + threadIdx.x; s < end; s += blockDim.x) {
    const float e = expf(sc[s - begin] - mx);
    sc[s - begin] = e;
    sum += e;
  }
  sum = block_sum(sum, red);
  for (int64_t j = threadIdx.x; j < d_c; j += blockDim.x) {
    float acc = 0;
    for (int64_t s = 0; s < end - begin; ++s) acc += sc[s] * to_f32(rows[s][j]);
    part[j] = acc;
  }
  if (threadIdx.x == 0) {
    part[d_c] = mx;
    part[d_c + 1] = sum;
  }
}

// o_lat[b, h] = Σ_k exp(m_k − M)·o_k / Σ_k exp(m_k − M)·l_k over the splits. grid (nh, B)
__global__ void combine_splits_kernel(const float* __restrict__ partials, int64_t nh, int64_t n_splits, int64_t d_c,
                                      float* o_lat) {
  const int64_t h = blockIdx.x, b = blockIdx.y;
  const float* base = partials + (b * nh + h) * n_splits * (d_c + 2);
  float M = -INFINITY;
  for (int64_t k = 0; k < n_splits; ++k) M = fmaxf(M, base[k * (d_c + 2) + d_c]);
  float L = 0;
  for (int64_t k = 0; k < n_splits; ++k) {
    const float m = base[k * (d_c + 2) + d_c];
    if (m != -INFINITY) L += expf(m - M) * base[k * (d_c + 2) + d_c + 1];
  }
  for (int64_t j = threadIdx.x; j < d_c; j += blockDim.x) {
    float acc = 0;
    for (int64_t k = 0; k < n_splits; ++k) {
      const float m = base[k * (d_c + 2) + d_c];
      if (m != -INFINITY) acc += expf(m - M) * base[k * (d_c + 2) + j];
    }
    o_lat[(b * nh + h) * d_c + j] = acc / L;
  }
}

// out[b, h, j] = W_UV[h][j] · o_lat[b, h]: one warp per output value.
template <typename WT>
__global__ void unabsorb_output_kernel(const float* __restrict__ o_lat, int64_t B, int64_t nh, int64_t d_nope,
                                       int64_t d_v, int64_t d_c, const WT* __restrict__ W, float* out) {
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (i >= B * nh * d_v) return;
  const int64_t j = i % d_v, h = (i / d_v) % nh, b = i / (d_v * nh);
  const float acc = warp_dot_row(W + (h * (d_nope + d_v) + d_nope + j) * d_c, o_lat + (b * nh + h) * d_c, d_c);
  if (lane == 0) out[i] = acc;
}

#define DSV2_DISPATCH_CACHE(dtype, ...)                                 \
  if ((dtype) == DType::F32) {                                          \
    using CT = float;                                                   \
    __VA_ARGS__;                                                        \
  } else {                                                              \
    using CT = __nv_bfloat16;                                           \
    __VA_ARGS__;                                                        \
  }

}  // namespace

void write_latents(float* kv, int64_t T, const float* kv_norm, float eps, int64_t d_c, int64_t d_rope, const int32_t* seq,
                   const int32_t* pos, const float* inv_freq, float amplitude, PagedLatentCache& cache, int64_t layer,
                   const int32_t* block_tables, int64_t max_blocks, cudaStream_t stream) {
  DSV2_DISPATCH_CACHE(cache.dtype, {
    write_latents_kernel<<<unsigned(T), 256, 0, stream>>>(kv, cache.width, kv_norm, eps, d_c, d_rope / 2, seq, pos,
                                                           inv_freq, amplitude, static_cast<CT*>(cache.layer(layer)),
                                                           block_tables, max_blocks, cache.block_size);
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

void attend_absorbed(const MlaShape& m, const float* q, const DeviceMatrix& W_kvb, const PagedLatentCache& cache,
                     int64_t layer, const int32_t* block_tables, int64_t max_blocks, const int32_t* seq_lens, int64_t B,
                     int64_t max_len, float* q_lat, float* o_lat, float* partials, float* out, cudaStream_t stream) {
  const int64_t nh = m.n_heads;
  DSV2_DISPATCH_DTYPE(W_kvb.dtype, {
    const dim3 grid = dim3(unsigned((m.d_c + 255) / 256), unsigned(nh), unsigned(B));
    absorb_query_kernel<<<grid, 256, size_t(m.d_nope) * sizeof(float), stream>>>(
        q, nh, m.d_nope, m.d_rope, m.d_v, m.d_c, static_cast<const WT*>(W_kvb.data), q_lat);
  });
  DSV2_CUDA_LAUNCH_CHECK();
  const int64_t n_splits = (max_len + kSplitKeys - 1) / kSplitKeys;
  DSV2_DISPATCH_CACHE(cache.dtype, {
    const dim3 grid = dim3(unsigned(nh), unsigned(B), unsigned(n_splits));
    absorbed_attention_split_kernel<<<grid, kAttnThreads, size_t(m.d_c + m.d_rope) * sizeof(float), stream>>>(
        q, q_lat, nh, m.d_nope, m.d_rope, m.d_c, m.softmax_scale, static_cast<const CT*>(cache.layer(layer)),
        block_tables, max_blocks, cache.block_size, seq_lens, partials);
  });
  DSV2_CUDA_LAUNCH_CHECK();
  combine_splits_kernel<<<dim3(unsigned(nh), unsigned(B)), 256, 0, stream>>>(partials, nh, n_splits, m.d_c, o_lat);
  DSV2_CUDA_LAUNCH_CHECK();
  const int64_t warps = B * nh * m.d_v;
  DSV2_DISPATCH_DTYPE(W_kvb.dtype, {
    unabsorb_output_kernel<<<unsigned((warps * 32 + 255) / 256), 256, 0, stream>>>(
        o_lat, B, nh, m.d_nope, m.d_v, m.d_c, static_cast<const WT*>(W_kvb.data), out);
  });
  DSV2_CUDA_LAUNCH_CHECK();
}

int64_t absorbed_attention_scratch_floats(int64_t B, int64_t n_heads, int64_t d_c, int64_t max_len) {
  return B * n_heads * ((max_len + kSplitKeys - 1) / kSplitKeys) * (d_c + 2);
}

}  // namespace dsv2::cuda
