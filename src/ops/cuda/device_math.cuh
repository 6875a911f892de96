// Small device helpers shared by the kernels: loads of any weight dtype as f32, warp and block reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "core/error.h"

namespace dsv2::cuda {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_fp8_e4m3 v) { return float(v); }

// Row `pos` of a sequence in one layer of the paged latent cache (`width` values a row).
template <typename CT>
__device__ __forceinline__ const CT* cache_row(const CT* layer, const int32_t* block_table, int64_t block_size,
                                               int64_t width, int64_t pos) {
  return layer + (int64_t(block_table[pos / block_size]) * block_size + pos % block_size) * width;
}

template <typename WT>
constexpr bool kIsFp8 = std::is_same_v<WT, __nv_fp8_e4m3>;

// f[j] = the N weight values w[j] as f32 (FP8: without their scale; pairs converted together).
template <typename WT, int N>
__device__ __forceinline__ void weights_to_f32(const WT (&w)[N], float (&f)[N]) {
  if constexpr (kIsFp8<WT> && N % 2 == 0) {
    const __nv_fp8x2_storage_t* pairs = reinterpret_cast<const __nv_fp8x2_storage_t*>(w);
#pragma unroll
    for (int j = 0; j < N / 2; ++j) {
      const float2 v = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(pairs[j], __NV_E4M3)));
      f[2 * j] = v.x;
      f[2 * j + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) f[j] = to_f32(w[j]);
  }
}

// acc += Σ_j w[j]·x[j] over N values of a weight row (as weights_to_f32 gives them) and their inputs.
// Plain dtypes add each product in turn; FP8 values lie in one scale tile (a lane's N values), so
// they are dotted first and the dot is added times the tile's `scale`.
template <typename WT, int N>
__device__ __forceinline__ void add_products(float& acc, const float (&w)[N], const float (&x)[N], float scale) {
  if constexpr (kIsFp8<WT>) {
    float dot = 0.0f;
#pragma unroll
    for (int j = 0; j < N; ++j) dot += w[j] * x[j];
    acc += dot * scale;
  } else {
#pragma unroll
    for (int j = 0; j < N; ++j) acc += w[j] * x[j];
  }
}

// silu(g) · u, the SwiGLU product every gate/up kernel forms (one expression, so one set of bits).
__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// Whether p may be read or written 16 bytes at a time.
__host__ __device__ inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ __forceinline__ void from_f32(float v, float* p) { *p = v; }
__device__ __forceinline__ void from_f32(float v, __nv_bfloat16* p) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void from_f32(float v, __half* p) { *p = __float2half_rn(v); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max) over the whole block; every thread gets the result. `shared` holds >= 32 floats.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = (blockDim.x + 31) / 32;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < n_warps ? shared[lane] : 0.0f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = (blockDim.x + 31) / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < n_warps ? shared[lane] : -FLT_MAX;
  return warp_max(v);
}

// RMSNorm of one row by the block: thread i holds row pieces v[j] = row[4·(i + j·blockDim.x) ..] (zeros
// past the row, D a multiple of 4 and at most N·4·blockDim.x); y = row / sqrt(mean(row²) + eps) ⊙ w
// (w, y 16-byte aligned). `red` holds >= 32 floats.
template <int N>
__device__ __forceinline__ void rms_norm_row_registers(const float4 (&v)[N], int64_t D, const float* __restrict__ w,
                                                       float* __restrict__ y, float eps, float* red) {
  float ss = 0;
#pragma unroll
  for (int j = 0; j < N; ++j) ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / float(D) + eps);
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4* y4 = reinterpret_cast<float4*>(y);
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const int64_t i = threadIdx.x + int64_t(j) * blockDim.x;
    if (i < D / 4) {
      const float4 g = __ldg(w4 + i);
      y4[i] = make_float4(v[j].x * r * g.x, v[j].y * r * g.y, v[j].z * r * g.z, v[j].w * r * g.w);
    }
  }
}

// 16 bytes of a weight row. Weights stream through once per step: the load is marked evict-first
// so that it does not push the step's inputs (re-read for every row) out of L1.
template <typename WT>
__device__ __forceinline__ uint4 load_weights16(const WT* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));
}

// v[0..N) = p[0..N) with 16-byte loads (p 16-byte aligned, N a multiple of 4): a warp whose lanes
// read consecutive N-value pieces then touches each cache line once per load.
template <int N>
__device__ __forceinline__ void load_f32x(const float* __restrict__ p, float (&v)[N]) {
#pragma unroll
  for (int j = 0; j < N; j += 4) {
    const float4 q = __ldg(reinterpret_cast<const float4*>(p + j));
    v[j] = q.x;
    v[j + 1] = q.y;
    v[j + 2] = q.z;
    v[j + 3] = q.w;
  }
}

// Σ_k w[k]·x[k] over K values by one warp (every lane gets the sum); 16-byte weight and input
// loads when both are aligned and K is a multiple of the vector width.
template <typename WT>
__device__ __forceinline__ float warp_dot_row(const WT* __restrict__ w, const float* __restrict__ x, int64_t K) {
  constexpr int kVec = 16 / sizeof(WT);
  const int lane = threadIdx.x % 32;
  float acc = 0;
  if (K % kVec == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0) {
#pragma unroll 2
    for (int64_t k = int64_t(lane) * kVec; k < K; k += 32 * kVec) {
      const uint4 raw = load_weights16(w + k);
      const WT* wv = reinterpret_cast<const WT*>(&raw);
      float xv[kVec];
      load_f32x(x + k, xv);
#pragma unroll
      for (int j = 0; j < kVec; ++j) acc += to_f32(wv[j]) * xv[j];
    }
  } else {
    for (int64_t k = lane; k < K; k += 32) acc += to_f32(w[k]) * x[k];
  }
  return warp_sum(acc);
}

}  // namespace dsv2::cuda

// Calls fn.template operator()<T>() with T the device type of `dtype`.
#define DSV2_DISPATCH_DTYPE(dtype, ...)                                \
  switch (dtype) {                                                     \
    case ::dsv2::DType::F32: { using WT = float; __VA_ARGS__; break; }   \
    case ::dsv2::DType::BF16: { using WT = __nv_bfloat16; __VA_ARGS__; break; } \
    case ::dsv2::DType::F16: { using WT = __half; __VA_ARGS__; break; }  \
    default: throw ::dsv2::Error("the GPU kernels take F32, BF16 or F16 weights (the matrix kernels also FP8)"); \
  }

// CT: the device type of a latent cache's dtype (F32, else BF16).
#define DSV2_DISPATCH_CACHE(dtype, ...)  \
  if ((dtype) == ::dsv2::DType::F32) {   \
    using CT = float;                    \
    __VA_ARGS__;                         \
  } else {                               \
    using CT = __nv_bfloat16;            \
    __VA_ARGS__;                         \
  }

// The same for the kernels that also take FP8 weights (with their tile scales).
#define DSV2_DISPATCH_WEIGHT_DTYPE(dtype, ...)             \
  if ((dtype) == ::dsv2::DType::F8_E4M3) {                 \
    using WT = __nv_fp8_e4m3;                              \
    __VA_ARGS__;                                           \
  } else {                                                 \
    DSV2_DISPATCH_DTYPE(dtype, __VA_ARGS__)                \
  }
