// Random weights written directly on the device (benchmarks of the released shapes without files).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

namespace {
template <typename WT>
__global__ void fill_uniform_kernel(WT* out, int64_t n, float centre, float half_width, uint64_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t z = seed + uint64_t(i) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = float(z >> 40) * 0x1.0p-24f;  // [0, 1)
    from_f32(centre + half_width * (2.0f * u - 1.0f), out + i);
  }
}
}  // namespace

void fill_uniform(void* data, DType dtype, int64_t n, float centre, float half_width, uint64_t seed, cudaStream_t stream) {
  DSV2_DISPATCH_DTYPE(dtype, {
    fill_uniform_kernel<<<2048, 256, 0, stream>>>(static_cast<WT*>(data), n, centre, half_width, seed);
  });
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
