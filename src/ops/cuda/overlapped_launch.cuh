// Kernels that start before the previous kernel of their stream has finished (programmatic dependent
// launch, sm_90). A decode step is a chain of short kernels; launched this way, each one's launch, block
// start-up and first weight loads overlap the previous one's tail instead of following it.
//
// The contract, for every kernel launched with launch_overlapped: it calls wait_for_previous_kernel()
// before it reads or writes anything another kernel of the stream writes (activations, caches, expert
// ids). Before the wait it may only read what no kernel writes during a step (weights). A kernel that
// waits first thing is always safe. allow_next_kernel() then lets the stream's next kernel launch; that
// kernel's own wait holds it until this one has finished and its writes are visible.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "ops/cuda/cuda_check.h"

namespace dsv2::cuda {

__device__ __forceinline__ void wait_for_previous_kernel() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void allow_next_kernel() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
// Both, for kernels that read nothing before their inputs are ready.
__device__ __forceinline__ void start_after_previous_kernel() {
  wait_for_previous_kernel();
  allow_next_kernel();
}
// Starts fetching the 128-byte line at p into L2 (weights, before the wait).
__device__ __forceinline__ void prefetch_to_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// kernel<<<grid, block, shared_bytes, stream>>>(args...) as a programmatic dependent launch.
template <typename... Params, typename... Args>
void launch_overlapped(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchAttribute overlap[1];
  overlap[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  config.attrs = overlap;
  config.numAttrs = 1;
  DSV2_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace dsv2::cuda
