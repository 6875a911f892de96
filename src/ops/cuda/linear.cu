// y = x · Wᵀ: a GEMV kernel for a few tokens (bandwidth-bound: each weight row is read once, with
// 16-byte loads, and dotted with every token), cuBLAS for more.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/overlapped_launch.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kGemvThreads = 256;  // 8 warps
constexpr int kGemvWarps = kGemvThreads / 32;

// x: [T, K] (row stride xs), W: [N, K], y: [T, N] (y += x·Wᵀ when ACCUMULATE). A warp takes ROWS
// consecutive rows and one of SPLIT interleaved slices of K (SPLIT > 1 puts more warps on a short
// matrix; the slices' sums are added in slice order). Each input load is used for all ROWS rows and
// each weight load for all T tokens; a lane issues the weight loads of UNROLL steps of K before it
// uses the first (bytes in flight are what a bandwidth-bound kernel needs). A row's sums are formed in
// the same order whatever ROWS, UNROLL and T: a token's result does not depend on the batch it is in.
// Two matrices over the same input can share a launch: blocks [0, first_blocks) take matrix 0, the
// others matrix 1 (each with its own split). FP8 rows: each lane's step of kVec values lies in one
// scale tile (as do a warp's ROWS rows), so it dots them unscaled and adds the sum times the scale.
template <typename WT>
struct GemvMatrices {
  const WT *w0, *w1;
  const float *s0, *s1;  // FP8 tile scales
  float *y0, *y1;
  int64_t n0, n1;
  int split0, split1;
  unsigned first_blocks;
};

template <typename WT, int MAX_T, int ROWS, int UNROLL, bool VECTORISED, bool ACCUMULATE>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const float* __restrict__ x, int64_t xs, int T, int64_t K,
                                                             GemvMatrices<WT> mats) {
  __shared__ float partial[kGemvWarps][ROWS][MAX_T];
  const bool second = blockIdx.x >= mats.first_blocks;
  const WT* __restrict__ W = second ? mats.w1 : mats.w0;
  float* __restrict__ y = second ? mats.y1 : mats.y0;
  const int64_t N = second ? mats.n1 : mats.n0;
  const int split = second ? mats.split1 : mats.split0;
  const int64_t block = second ? blockIdx.x - mats.first_blocks : blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int slice = warp % split, group = warp / split;
  const int64_t row0 = (block * (kGemvWarps / split) + group) * ROWS;
  const float* __restrict__ tile_scales = nullptr;  // FP8: the scales of row0's tile row
  if constexpr (kIsFp8<WT>) tile_scales = (second ? mats.s1 : mats.s0) + (min(row0, N - 1) / kFp8TileSize) * fp8_tiles(K);
  float acc[ROWS][MAX_T];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int t = 0; t < MAX_T; ++t) acc[r][t] = 0.0f;
  const WT* w[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) w[r] = W + (row0 + r < N ? row0 + r : 0) * K;  // rows past N: computed, not written
  constexpr int kVec = VECTORISED ? 16 / sizeof(WT) : 1;
  const int64_t step = int64_t(split) * 32 * kVec;
  // The weights are ready before the input: their first steps start towards L2 while the previous
  // kernel finishes.
  for (int64_t k = (int64_t(slice) * 32 + lane) * kVec, u = 0; u < UNROLL && k < K; ++u, k += step)
#pragma unroll
    for (int r = 0; r < ROWS; ++r) prefetch_to_l2(w[r] + k);
  start_after_previous_kernel();
  // acc[r][t] += W[r, k .. k + kVec) · x[t, k .. k + kVec)
  auto accumulate = [&](int64_t k, const WT (&wv)[ROWS][kVec]) {
    float wf[ROWS][kVec];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) weights_to_f32(wv[r], wf[r]);
    float scale = 1.0f;
    if constexpr (kIsFp8<WT>) scale = tile_scales[k / kFp8TileSize];
#pragma unroll
    for (int t = 0; t < MAX_T; ++t) {
      if (t < T) {
        float xv[kVec];
        if constexpr (VECTORISED) {
          load_f32x(x + t * xs + k, xv);
        } else {
          xv[0] = x[t * xs + k];
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r) add_products<WT>(acc[r][t], wf[r], xv, scale);
      }
    }
  };
  int64_t k = (int64_t(slice) * 32 + lane) * kVec;
  if constexpr (VECTORISED) {
    for (; k + (UNROLL - 1) * step < K; k += UNROLL * step) {
      uint4 raw[UNROLL][ROWS];
#pragma unroll
      for (int u = 0; u < UNROLL; ++u)
#pragma unroll
        for (int r = 0; r < ROWS; ++r) raw[u][r] = load_weights16(w[r] + k + u * step);
#pragma unroll
      for (int u = 0; u < UNROLL; ++u) accumulate(k + u * step, reinterpret_cast<const WT(&)[ROWS][kVec]>(raw[u]));
    }
  }
  for (; k < K; k += step) {
    if constexpr (VECTORISED) {
      uint4 raw[ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) raw[r] = load_weights16(w[r] + k);
      accumulate(k, reinterpret_cast<const WT(&)[ROWS][kVec]>(raw));
    } else {
      WT wv[ROWS][1];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) wv[r][0] = w[r][k];
      accumulate(k, wv);
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int t = 0; t < MAX_T; ++t)
      if (t < T) acc[r][t] = warp_sum(acc[r][t]);
  if (split > 1) {
    if (lane == 0)
#pragma unroll
      for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int t = 0; t < MAX_T; ++t) partial[warp][r][t] = acc[r][t];
    __syncthreads();
    if (slice != 0) return;
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int t = 0; t < MAX_T; ++t) {
        float sum = partial[warp][r][t];
        for (int sl = 1; sl < split; ++sl) sum += partial[warp + sl][r][t];
        acc[r][t] = sum;
      }
  }
  if (lane != 0) return;
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int t = 0; t < MAX_T; ++t)
      if (t < T && row0 + r < N) {
        if constexpr (ACCUMULATE) {
          y[t * N + row0 + r] += acc[r][t];
        } else {
          y[t * N + row0 + r] = acc[r][t];
        }
      }
}

// Warps per row group: enough warps for a short matrix to fill the GPU (~2K warps), at least one
// vector step of K per slice. Depends on the matrix only, never on the number of tokens.
int gemv_split(int64_t N, int64_t K, int64_t k_per_step) {
  int split = 1;
  while (split < kGemvWarps && N * split < 8192 && K >= 2 * split * k_per_step) split *= 2;
  return split;
}

// y_i = x·W_iᵀ (+= with ACCUMULATE) for one or two matrices of the same width, in one launch.
template <typename WT, int MAX_T, int ROWS, int UNROLL, bool ACCUMULATE>
void launch_gemv(const float* x, int64_t xs, int64_t T, const DeviceMatrix& W0, float* y0, const DeviceMatrix* W1,
                 float* y1, cudaStream_t stream) {
  constexpr int64_t kVec = 16 / sizeof(WT);
  const int64_t K = W0.cols;
  const bool vectorised = K % kVec == 0 && reinterpret_cast<uintptr_t>(W0.data) % 16 == 0 &&
                          (!W1 || reinterpret_cast<uintptr_t>(W1->data) % 16 == 0) &&
                          reinterpret_cast<uintptr_t>(x) % 16 == 0 && xs % 4 == 0;
  GemvMatrices<WT> mats{};
  unsigned blocks = 0;
  auto add = [&](const DeviceMatrix& W, float* y, const WT*& w_out, const float*& s_out, float*& y_out, int64_t& n_out,
                 int& split_out) {
    check(!kIsFp8<WT> || W.scales, "GEMV: an FP8 matrix without its scales");
    const int split = gemv_split(W.rows, W.cols, 32 * kVec);
    const int64_t rows_per_block = (kGemvWarps / split) * ROWS;
    w_out = static_cast<const WT*>(W.data);
    s_out = W.scales;
    y_out = y;
    n_out = W.rows;
    split_out = split;
    blocks += unsigned((W.rows + rows_per_block - 1) / rows_per_block);
  };
  add(W0, y0, mats.w0, mats.s0, mats.y0, mats.n0, mats.split0);
  mats.first_blocks = blocks;
  if (W1) add(*W1, y1, mats.w1, mats.s1, mats.y1, mats.n1, mats.split1);
  if (vectorised) {
    launch_overlapped(gemv_kernel<WT, MAX_T, ROWS, UNROLL, true, ACCUMULATE>, blocks, kGemvThreads, 0, stream, x, xs,
                      int(T), K, mats);
  } else {
    launch_overlapped(gemv_kernel<WT, MAX_T, ROWS, 1, false, ACCUMULATE>, blocks, kGemvThreads, 0, stream, x, xs, int(T),
                      K, mats);
  }
}

// out[r, k] = x[r·xs + k] rounded; each thread VEC consecutive values (VEC 4: K and xs multiples of 4,
// x 16-byte aligned).
template <typename LT, int VEC>
__global__ void round_rows_kernel(const float* __restrict__ x, int64_t xs, int64_t T, int64_t K, LT* __restrict__ out) {
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  if (i >= T * K) return;
  const float* src = x + (i / K) * xs + i % K;
  if constexpr (VEC == 4) {
    const float4 v = *reinterpret_cast<const float4*>(src);
    from_f32(v.x, out + i);
    from_f32(v.y, out + i + 1);
    from_f32(v.z, out + i + 2);
    from_f32(v.w, out + i + 3);
  } else {
    from_f32(*src, out + i);
  }
}

}  // namespace

namespace {

// The GEMV for T <= kGemvMaxTokens tokens, over W0 and (when given) W1 of the same dtype and width.
template <bool ACCUMULATE>
void gemv(const float* x, int64_t xs, int64_t T, const DeviceMatrix& W0, float* y0, const DeviceMatrix* W1, float* y1,
          cudaStream_t stream) {
  DSV2_DISPATCH_WEIGHT_DTYPE(W0.dtype, {
    if (T == 1) {
      launch_gemv<WT, 1, 4, 4, ACCUMULATE>(x, xs, T, W0, y0, W1, y1, stream);
    } else if (T <= 4) {
      launch_gemv<WT, 4, 4, 2, ACCUMULATE>(x, xs, T, W0, y0, W1, y1, stream);
    } else {
      launch_gemv<WT, kGemvMaxTokens, 2, 2, ACCUMULATE>(x, xs, T, W0, y0, W1, y1, stream);
    }
  });
}

// y = x·Wᵀ (beta 0) or y += x·Wᵀ (beta 1) with cuBLAS. BF16/F16 weights multiply x rounded to their
// dtype in lowp, rounded here unless `rounded` says lowp already holds it.
template <bool ACCUMULATE>
void gemm_into(cublasHandle_t blas, const float* x, int64_t xs, int64_t T, const DeviceMatrix& W, float* y, void* lowp,
               bool rounded, cudaStream_t stream) {
  const int64_t K = W.cols, N = W.rows;
  const float one = 1.0f, beta = ACCUMULATE ? 1.0f : 0.0f;
  DSV2_CUBLAS_CHECK(cublasSetStream(blas, stream));
  if (W.dtype == DType::F32) {
    // Row-major y[T, N] = x[T, K] · W[N, K]ᵀ is column-major Y(N×T) = Wᵀ(N×K) · X(K×T).
    DSV2_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &one, W.data, CUDA_R_32F,
                                   int(K), x, CUDA_R_32F, int(xs), &beta, y, CUDA_R_32F, int(N), CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
    return;
  }
  // FP8: widened to bf16 (its scales applied) for a bf16 GEMM.
  const bool fp8 = W.dtype == DType::F8_E4M3;
  check(!fp8 || W.widened, "linear: an FP8 matrix without its widening scratch");
  if (fp8 && !W.widened_ready) widen_fp8(W, W.widened, stream);
  const DType lowp_dtype = gemm_operand_dtype(W.dtype);
  if (!rounded) round_rows(x, xs, T, K, lowp_dtype, lowp, stream);
  const cudaDataType_t type = lowp_dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
  DSV2_CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(T), int(K), &one, fp8 ? W.widened : W.data, type, int(K), lowp,
                                 type, int(K), &beta, y, CUDA_R_32F, int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

template <bool ACCUMULATE>
void linear_into(cublasHandle_t blas, const float* x, int64_t xs, int64_t T, const DeviceMatrix& W, float* y, void* lowp,
                 cudaStream_t stream) {
  if (T <= kGemvMaxTokens) {
    gemv<ACCUMULATE>(x, xs, T, W, y, nullptr, nullptr, stream);
  } else {
    gemm_into<ACCUMULATE>(blas, x, xs, T, W, y, lowp, false, stream);
  }
}

}  // namespace

DType gemm_operand_dtype(DType w) { return w == DType::F8_E4M3 ? DType::BF16 : w; }

void round_rows(const float* x, int64_t x_stride, int64_t rows, int64_t K, DType dtype, void* out, cudaStream_t stream) {
  check(dtype == DType::BF16 || dtype == DType::F16, "round_rows: bf16 or f16");
  const bool vectorised = K % 4 == 0 && x_stride % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  auto launch = [&](auto* typed_out) {
    if (vectorised) {
      round_rows_kernel<std::remove_pointer_t<decltype(typed_out)>, 4>
          <<<unsigned((rows * K / 4 + 255) / 256), 256, 0, stream>>>(x, x_stride, rows, K, typed_out);
    } else {
      round_rows_kernel<std::remove_pointer_t<decltype(typed_out)>, 1>
          <<<unsigned((rows * K + 255) / 256), 256, 0, stream>>>(x, x_stride, rows, K, typed_out);
    }
  };
  if (dtype == DType::BF16) {
    launch(static_cast<__nv_bfloat16*>(out));
  } else {
    launch(static_cast<__half*>(out));
  }
  DSV2_CUDA_LAUNCH_CHECK();
}

void linear(cublasHandle_t blas, const float* x, int64_t xs, int64_t T, const DeviceMatrix& W, float* y, void* lowp,
            cudaStream_t stream) {
  linear_into<false>(blas, x, xs, T, W, y, lowp, stream);
}

void linear_accumulate(cublasHandle_t blas, const float* x, int64_t xs, int64_t T, const DeviceMatrix& W, float* y,
                       void* lowp, cudaStream_t stream) {
  linear_into<true>(blas, x, xs, T, W, y, lowp, stream);
}

void linear_rounded(cublasHandle_t blas, const void* x, int64_t T, const DeviceMatrix& W, float* y, cudaStream_t stream) {
  check(W.dtype != DType::F32, "linear_rounded: 2-byte or FP8 weights");
  gemm_into<false>(blas, nullptr, 0, T, W, y, const_cast<void*>(x), true, stream);
}

void linear_pair_rounded(cublasHandle_t blas, const void* x, int64_t T, const DeviceMatrix& W0, float* y0,
                         const DeviceMatrix& W1, float* y1, cudaStream_t stream) {
  check(W0.cols == W1.cols && W0.dtype != DType::F32 && gemm_operand_dtype(W0.dtype) == gemm_operand_dtype(W1.dtype),
        "linear_pair_rounded: matrices of one width and one GEMM operand dtype");
  linear_rounded(blas, x, T, W0, y0, stream);
  linear_rounded(blas, x, T, W1, y1, stream);
}

void linear_accumulate_rounded(cublasHandle_t blas, const void* x, int64_t T, const DeviceMatrix& W, float* y,
                               cudaStream_t stream) {
  check(W.dtype != DType::F32, "linear_accumulate_rounded: 2-byte or FP8 weights");
  gemm_into<true>(blas, nullptr, 0, T, W, y, const_cast<void*>(x), true, stream);
}

void linear_pair(cublasHandle_t blas, const float* x, int64_t xs, int64_t T, const DeviceMatrix& W0, float* y0,
                 const DeviceMatrix& W1, float* y1, void* lowp, cudaStream_t stream) {
  check(W0.cols == W1.cols, "linear_pair: matrices of different widths");
  if (T <= kGemvMaxTokens && W0.dtype == W1.dtype) {
    gemv<false>(x, xs, T, W0, y0, &W1, y1, stream);
    return;
  }
  if (T <= kGemvMaxTokens) {
    linear(blas, x, xs, T, W0, y0, lowp, stream);
    linear(blas, x, xs, T, W1, y1, lowp, stream);
    return;
  }
  gemm_into<false>(blas, x, xs, T, W0, y0, lowp, false, stream);
  gemm_into<false>(blas, x, xs, T, W1, y1, lowp, gemm_operand_dtype(W1.dtype) == gemm_operand_dtype(W0.dtype),
                   stream);  // x rounded once for both
}

}  // namespace dsv2::cuda
