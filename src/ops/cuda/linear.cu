// y = x · Wᵀ: a GEMV kernel for a few tokens (bandwidth-bound: each weight row is read once by one
// warp with 16-byte loads and dotted with every token), cuBLAS for more.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

namespace {

constexpr int kGemvThreads = 256;  // 8 warps, one weight row each

// x: [T, K] (row stride xs), W: [N, K], y: [T, N]. One warp per row of W; each lane keeps
// kUnroll 16-byte weight loads in flight before using them (the kernel is bandwidth-bound).
constexpr int kUnroll = 4;
template <typename WT, int MAX_T, bool VECTORISED>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const float* __restrict__ x, int64_t xs, int T, int64_t K,
                                                             const WT* __restrict__ W, int64_t N, float* __restrict__ y) {
  const int64_t row = (int64_t(blockIdx.x) * kGemvThreads + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const WT* w = W + row * K;
  float acc[MAX_T];
#pragma unroll
  for (int t = 0; t < MAX_T; ++t) acc[t] = 0.0f;
  if constexpr (VECTORISED) {
    constexpr int kVec = 16 / sizeof(WT);  // weights per 16-byte load
    constexpr int64_t kStep = 32 * kVec;
    for (int64_t k0 = int64_t(lane) * kVec; k0 < K; k0 += kStep * kUnroll) {
      uint4 raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + u * kStep;
        raw[u] = k < K ? __ldg(reinterpret_cast<const uint4*>(w + k)) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + u * kStep;
        if (k < K) {
          const WT* wv = reinterpret_cast<const WT*>(&raw[u]);
#pragma unroll
          for (int t = 0; t < MAX_T; ++t) {
            if (t < T) {
              const float* xt = x + t * xs + k;
#pragma unroll
              for (int j = 0; j < kVec; ++j) acc[t] += to_f32(wv[j]) * xt[j];
            }
          }
        }
      }
    }
  } else {
    for (int64_t k = lane; k < K; k += 32) {
      const float wk = to_f32(w[k]);
#pragma unroll
      for (int t = 0; t < MAX_T; ++t)
        if (t < T) acc[t] += wk * x[t * xs + k];
    }
  }
#pragma unroll
  for (int t = 0; t < MAX_T; ++t) {
    if (t < T) {
      const float s = warp_sum(acc[t]);
      if (lane == 0) y[t * N + row] = s;
    }
  }
}

template <typename WT, int MAX_T>
void launch_gemv(const float* x, int64_t xs, int64_t T, const DeviceMatrix& W, float* y, cudaStream_t stream) {
  const unsigned blocks = unsigned((W.rows * 32 + kGemvThreads - 1) / kGemvThreads);
  const WT* w = static_cast<const WT*>(W.data);
  const bool vectorised = W.cols % (16 / sizeof(WT)) == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  if (vectorised) {
    gemv_kernel<WT, MAX_T, true><<<blocks, kGemvThreads, 0, stream>>>(x, xs, int(T), W.cols, w, W.rows, y);
  } else {
    gemv_kernel<WT, MAX_T, false><<<blocks, kGemvThreads, 0, stream>>>(x, xs, int(T), W.cols, w, W.rows, y);
  }
}

template <typename LT>
__global__ void round_rows_kernel(const float* __restrict__ x, int64_t xs, int64_t T, int64_t K, LT* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * K) return;
  from_f32(x[(i / K) * xs + i % K], out + i);
}

}  // namespace

void linear(cublasHandle_t blas, const float* x, int64_t xs, int64_t T, const DeviceMatrix& W, float* y, void* lowp,
            cudaStream_t stream) {
  const int64_t K = W.cols, N = W.rows;
  if (T <= kGemvMaxTokens) {
    DSV2_DISPATCH_DTYPE(W.dtype, {
      if (T == 1) {
        launch_gemv<WT, 1>(x, xs, T, W, y, stream);
      } else if (T <= 4) {
        launch_gemv<WT, 4>(x, xs, T, W, y, stream);
      } else {
        launch_gemv<WT, kGemvMaxTokens>(x, xs, T, W, y, stream);
      }
    });
    DSV2_CUDA_LAUNCH_CHECK();
    return;
  }
  const float one = 1.0f, zero = 0.0f;
  DSV2_CUBLAS_CHECK(cublasSetStream(blas, stream));
  if (W.dtype == DType::F32) {
    // Row-major y[T, N] = x[T, K] · W[N, K]ᵀ is column-major Y(N×T) = Wᵀ(N×K) · X(K×T).
    DSV2_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &one, W.data, CUDA_R_32F,
                                   int(K), x, CUDA_R_32F, int(xs), &zero, y, CUDA_R_32F, int(N), CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
    return;
  }
  const unsigned blocks = unsigned((T * K + 255) / 256);
  cudaDataType_t type;
  if (W.dtype == DType::BF16) {
    round_rows_kernel<<<blocks, 256, 0, stream>>>(x, xs, T, K, static_cast<__nv_bfloat16*>(lowp));
    type = CUDA_R_16BF;
  } else {
    round_rows_kernel<<<blocks, 256, 0, stream>>>(x, xs, T, K, static_cast<__half*>(lowp));
    type = CUDA_R_16F;
  }
  DSV2_CUDA_LAUNCH_CHECK();
  DSV2_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &one, W.data, type, int(K), lowp,
                                 type, int(K), &zero, y, CUDA_R_32F, int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace dsv2::cuda
