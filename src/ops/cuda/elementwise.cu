// Per-element and per-row kernels: embedding rows, RMSNorm, RoPE, SwiGLU's product, residual adds, argmax.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

namespace {

unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

template <typename WT>
__global__ void embed_kernel(const WT* __restrict__ table, int64_t H, const int32_t* __restrict__ ids, float* __restrict__ out) {
  const int64_t t = blockIdx.x;
  const WT* row = table + int64_t(ids[t]) * H;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) out[t * H + i] = to_f32(row[i]);
}

__global__ void rms_norm_kernel(const float* __restrict__ x, int64_t xs, const float* __restrict__ w, float* y, int64_t ys,
                                int64_t D, float eps) {
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * xs;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / float(D) + eps);
  float* yr = y + blockIdx.x * ys;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) yr[i] = xr[i] * r * w[i];
}

// One thread per (token, vector, pair).
__global__ void rope_kernel(float* x, int64_t T, int64_t ts, int64_t count, int64_t vs, const int32_t* __restrict__ pos,
                            const float* __restrict__ inv_freq, int64_t n_pairs, float amplitude) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * count * n_pairs) return;
  const int64_t p = i % n_pairs, c = (i / n_pairs) % count, t = i / (n_pairs * count);
  const float phi = float(pos[t]) * inv_freq[p];
  float s, co;
  sincosf(phi, &s, &co);
  s *= amplitude;
  co *= amplitude;
  float* v = x + t * ts + c * vs + 2 * p;
  const float a = v[0], b = v[1];
  v[0] = a * co - b * s;
  v[1] = a * s + b * co;
}

__global__ void silu_mul_kernel(const float* gate, const float* up, float* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

// One block per row; ties go to the lower index.
__global__ void argmax_kernel(const float* __restrict__ logits, int64_t V, int32_t* ids) {
  __shared__ float best_v[32];
  __shared__ int32_t best_i[32];
  const float* row = logits + blockIdx.x * V;
  float bv = -INFINITY;
  int32_t bi = 0x7fffffff;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    if (row[i] > bv) {
      bv = row[i];
      bi = int32_t(i);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) {
      bv = ov;
      bi = oi;
    }
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    best_v[warp] = bv;
    best_i[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / 32); ++w)
      if (best_v[w] > bv || (best_v[w] == bv && best_i[w] < bi)) {
        bv = best_v[w];
        bi = best_i[w];
      }
    ids[blockIdx.x] = bi;
  }
}

}  // namespace

void embed_rows(const DeviceMatrix& table, const int32_t* ids, int64_t T, float* out, cudaStream_t stream) {
  DSV2_DISPATCH_DTYPE(table.dtype, {
    embed_kernel<<<unsigned(T), 256, 0, stream>>>(static_cast<const WT*>(table.data), table.cols, ids, out);
  });
  DSV2_CUDA_LAUNCH_CHECK();
}

void rms_norm(const float* x, int64_t xs, const float* w, float* y, int64_t ys, int64_t T, int64_t D, float eps,
              cudaStream_t stream) {
  rms_norm_kernel<<<unsigned(T), 256, 0, stream>>>(x, xs, w, y, ys, D, eps);
  DSV2_CUDA_LAUNCH_CHECK();
}

void rope(float* x, int64_t T, int64_t ts, int64_t count, int64_t vs, const int32_t* pos, const float* inv_freq,
          int64_t n_pairs, float amplitude, cudaStream_t stream) {
  const int64_t n = T * count * n_pairs;
  rope_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, T, ts, count, vs, pos, inv_freq, n_pairs, amplitude);
  DSV2_CUDA_LAUNCH_CHECK();
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
  silu_mul_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(gate, up, out, n);
  DSV2_CUDA_LAUNCH_CHECK();
}

void add_inplace(float* x, const float* y, int64_t n, cudaStream_t stream) {
  add_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(x, y, n);
  DSV2_CUDA_LAUNCH_CHECK();
}

void argmax_rows(const float* logits, int64_t T, int64_t V, int32_t* ids, cudaStream_t stream) {
  argmax_kernel<<<unsigned(T), 1024, 0, stream>>>(logits, V, ids);
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
