#include <cuda_bf16.h>

#include <algorithm>

#include "ops/cuda/ceilings.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_buffer.h"
#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

namespace {
// Best time in ms of `repeats` runs of fn (after one warm-up), timed with events.
template <typename Fn>
float best_ms(int repeats, Fn fn) {
  cudaEvent_t a, b;
  DSV2_CUDA_CHECK(cudaEventCreate(&a));
  DSV2_CUDA_CHECK(cudaEventCreate(&b));
  fn();
  float best = 1e30f;
  for (int r = 0; r < repeats; ++r) {
    DSV2_CUDA_CHECK(cudaEventRecord(a));
    fn();
    DSV2_CUDA_CHECK(cudaEventRecord(b));
    DSV2_CUDA_CHECK(cudaEventSynchronize(b));
    float ms;
    DSV2_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}
}  // namespace

double measure_copy_bandwidth(size_t bytes, int repeats) {
  DeviceBuffer src(bytes), dst(bytes);
  fill_uniform(src.get(), DType::BF16, int64_t(bytes / 2), 0.0f, 1.0f, 1, nullptr);
  float ms = best_ms(repeats, [&] { DSV2_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice)); });
  return 2.0 * double(bytes) / (double(ms) * 1e-3);
}

double measure_bf16_gemm_flops(int n, int repeats) {
  const size_t elems = size_t(n) * size_t(n);
  DeviceBuffer A(elems * 2), B(elems * 2), C(elems * 2);
  fill_uniform(A.get(), DType::BF16, int64_t(elems), 0.0f, 1.0f, 2, nullptr);
  fill_uniform(B.get(), DType::BF16, int64_t(elems), 0.0f, 1.0f, 3, nullptr);
  cublasHandle_t h;
  DSV2_CUBLAS_CHECK(cublasCreate(&h));
  const float one = 1.0f, zero = 0.0f;
  float ms = best_ms(repeats, [&] {
    DSV2_CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A.get(), CUDA_R_16BF, n, B.get(), CUDA_R_16BF, n,
                                   &zero, C.get(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
  cublasDestroy(h);
  return 2.0 * double(n) * double(n) * double(n) / (double(ms) * 1e-3);
}

}  // namespace dsv2::cuda
