// Checked CUDA and cuBLAS calls: a failure throws dsv2::Error naming the call and the error.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "core/error.h"

namespace dsv2::cuda {

inline void check_cuda(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess)
    throw Error(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) + "): " + cudaGetErrorString(e));
}
inline void check_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS error in ") + what + " (" + file + ":" + std::to_string(line) + "): status " +
                std::to_string(int(s)));
}

}  // namespace dsv2::cuda

#define DSV2_CUDA_CHECK(call) ::dsv2::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define DSV2_CUBLAS_CHECK(call) ::dsv2::cuda::check_cublas((call), #call, __FILE__, __LINE__)
// After a kernel launch: reports launch-configuration errors at once.
#define DSV2_CUDA_LAUNCH_CHECK() DSV2_CUDA_CHECK(cudaGetLastError())

namespace dsv2::cuda {

// Raises each kernel's dynamic shared-memory limit to `bytes`. Returns true, so that a function-local
// static runs it once: [[maybe_unused]] static const bool raised = allow_shared_memory(bytes, kernel);
template <typename... Kernels>
bool allow_shared_memory(size_t bytes, Kernels... kernels) {
  (DSV2_CUDA_CHECK(cudaFuncSetAttribute(kernels, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes))), ...);
  return true;
}

}  // namespace dsv2::cuda
