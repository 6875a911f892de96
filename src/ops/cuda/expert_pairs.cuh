// The (token, slot) pairs routed to one expert, found by one block of the MoE kernels.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv2::cuda {

// The pairs p (ids[p] == e) in ascending order into list[0..n); warp 0 compacts with ballots, so the
// order is deterministic. Returns n to every thread of the block (it synchronises the block).
__device__ __forceinline__ int pairs_of_expert(const int32_t* __restrict__ ids, int64_t n_pairs, int32_t e,
                                               int32_t* list) {
  __shared__ int count;
  if (threadIdx.x < 32) {
    int n = 0;
    for (int64_t base = 0; base < n_pairs; base += 32) {
      const int64_t p = base + threadIdx.x;
      const bool mine = p < n_pairs && ids[p] == e;
      const unsigned ballot = __ballot_sync(0xffffffffu, mine);
      if (mine) list[n + __popc(ballot & ((1u << threadIdx.x) - 1))] = int32_t(p);
      n += __popc(ballot);
    }
    if (threadIdx.x == 0) count = n;
  }
  __syncthreads();
  return count;
}

}  // namespace dsv2::cuda
