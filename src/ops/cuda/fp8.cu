// FP8 (E4M3) weights: quantization per 128×128 tile at upload, and widening to bf16 for the cuBLAS
// paths (prefill and large batches). core/fp8.h is the host reference of the quantization.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

namespace {

constexpr int kThreads = 256;

// Block (x, y) quantizes tile (row tile y, column tile x): its largest |value| first, then every value.
template <typename ST>
__global__ void quantize_fp8_kernel(const ST* __restrict__ src, int64_t rows, int64_t cols, __nv_fp8_storage_t* dst,
                                    float* scales) {
  __shared__ float reduce[32];
  const int64_t r0 = int64_t(blockIdx.y) * kFp8TileSize, c0 = int64_t(blockIdx.x) * kFp8TileSize;
  const int64_t nr = min(kFp8TileSize, rows - r0), nc = min(kFp8TileSize, cols - c0);
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < nr * nc; i += kThreads) amax = fmaxf(amax, fabsf(to_f32(src[(r0 + i / nc) * cols + c0 + i % nc])));
  amax = block_max(amax, reduce);
  const float scale = amax > 0.0f ? amax / kFp8Max : 1.0f;
  if (threadIdx.x == 0) scales[int64_t(blockIdx.y) * gridDim.x + blockIdx.x] = scale;
  for (int64_t i = threadIdx.x; i < nr * nc; i += kThreads) {
    const int64_t at = (r0 + i / nc) * cols + c0 + i % nc;
    dst[at] = __nv_cvt_float_to_fp8(to_f32(src[at]) / scale, __NV_SATFINITE, __NV_E4M3);
  }
}

// The scale of value (r, c) of matrices [rows, cols] stored one after another (r counts the rows of all).
__device__ __forceinline__ float tile_scale(const float* scales, int64_t rows, int64_t cols, int64_t r, int64_t c) {
  const int64_t mat = r / rows;
  return scales[(mat * fp8_tiles(rows) + (r - mat * rows) / kFp8TileSize) * fp8_tiles(cols) + c / kFp8TileSize];
}

// Thread i widens values [16·i, 16·i + 16) (cols a multiple of 16: one row, one tile): a 16-byte load,
// two 16-byte stores.
__global__ void widen_fp8_kernel(const uint4* __restrict__ w, const float* __restrict__ scales, int64_t rows, int64_t cols,
                                 int64_t n_chunks, uint4* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n_chunks) return;
  const float scale = tile_scale(scales, rows, cols, i * 16 / cols, i * 16 % cols);
  const uint4 raw = __ldcs(w + i);
  const __nv_fp8_e4m3(&v)[16] = reinterpret_cast<const __nv_fp8_e4m3(&)[16]>(raw);
  float f[16];
  weights_to_f32(v, f);
  uint4 wide[2];
  __nv_bfloat162* pairs = reinterpret_cast<__nv_bfloat162*>(wide);
#pragma unroll
  for (int j = 0; j < 8; ++j) pairs[j] = __floats2bfloat162_rn(f[2 * j] * scale, f[2 * j + 1] * scale);
  out[2 * i] = wide[0];
  out[2 * i + 1] = wide[1];
}

// The same one value a thread, for any number of columns.
__global__ void widen_fp8_scalar_kernel(const __nv_fp8_e4m3* __restrict__ w, const float* __restrict__ scales, int64_t rows,
                                        int64_t cols, int64_t n, __nv_bfloat16* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n) return;
  out[i] = __float2bfloat16_rn(to_f32(w[i]) * tile_scale(scales, rows, cols, i / cols, i % cols));
}

}  // namespace

void quantize_fp8(const void* src, DType src_dtype, int64_t rows, int64_t cols, void* dst, float* scales,
                  cudaStream_t stream) {
  check(rows >= 1 && cols >= 1 && fp8_tiles(rows) <= 65535, "quantize_fp8: a matrix of 1 to 65535·128 rows");
  const dim3 grid(unsigned(fp8_tiles(cols)), unsigned(fp8_tiles(rows)));
  auto* out = static_cast<__nv_fp8_storage_t*>(dst);
  DSV2_DISPATCH_DTYPE(src_dtype, {
    quantize_fp8_kernel<WT><<<grid, kThreads, 0, stream>>>(static_cast<const WT*>(src), rows, cols, out, scales);
  });
  DSV2_CUDA_LAUNCH_CHECK();
}

void widen_fp8(const DeviceMatrix& W, void* out, cudaStream_t stream) {
  check(W.dtype == DType::F8_E4M3, "widen_fp8: an FP8 matrix");
  widen_fp8_matrices(W.data, W.scales, 1, W.rows, W.cols, out, stream);
}

void widen_fp8_matrices(const void* data, const float* scales, int64_t n_mats, int64_t rows, int64_t cols, void* out,
                        cudaStream_t stream) {
  check(data && scales && out && n_mats >= 1 && rows >= 1 && cols >= 1, "widen_fp8: FP8 matrices with their scales and an output");
  const int64_t n = n_mats * rows * cols;
  if (cols % 16 == 0 && reinterpret_cast<uintptr_t>(data) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0) {
    const int64_t chunks = n / 16;
    widen_fp8_kernel<<<unsigned((chunks + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        static_cast<const uint4*>(data), scales, rows, cols, chunks, static_cast<uint4*>(out));
  } else {
    widen_fp8_scalar_kernel<<<unsigned((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        static_cast<const __nv_fp8_e4m3*>(data), scales, rows, cols, n, static_cast<__nv_bfloat16*>(out));
  }
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
