// The (token, slot) pairs routed to one expert, found by one block of the MoE kernels.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace dsv2::cuda {

// The pairs p (ids[p] == e) in ascending order into list[0..n); returns n to every thread. Called by
// every thread of the block (it synchronises the block; blockDim.x a multiple of 32, at most 1024).
// Warp w takes the w-th contiguous segment of the pairs: it counts its matches with ballots, the
// counts are summed in warp order, then each warp writes its matches from its offset, so the order
// is deterministic and each warp reads only a few of the ids.
__device__ __forceinline__ int pairs_of_expert(const int32_t* __restrict__ ids, int64_t n_pairs, int32_t e,
                                               int32_t* list) {
  __shared__ int offset[33];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  const int64_t per_warp = (n_pairs + 32 * n_warps - 1) / (32 * n_warps) * 32;
  const int64_t first = warp * per_warp, last = min(n_pairs, first + per_warp);
  int count = 0;
  for (int64_t base = first; base < last; base += 32) {
    const int64_t p = base + lane;
    count += __popc(__ballot_sync(0xffffffffu, p < last && ids[p] == e));
  }
  if (lane == 0) offset[warp + 1] = count;
  __syncthreads();
  if (threadIdx.x == 0) {
    offset[0] = 0;
    for (int w = 0; w < n_warps; ++w) offset[w + 1] += offset[w];
  }
  __syncthreads();
  int n = offset[warp];
  for (int64_t base = first; base < last; base += 32) {
    const int64_t p = base + lane;
    const bool mine = p < last && ids[p] == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (mine) list[n + __popc(ballot & ((1u << lane) - 1))] = int32_t(p);
    n += __popc(ballot);
  }
  const int total = offset[n_warps];
  __syncthreads();  // list complete before anyone reads it
  return total;
}

}  // namespace dsv2::cuda
