// The mma.sync form of the absorbed MLA decode attention (a bf16 cache, 16 heads a block); attend_latents
// picks it for caches the warpgroup kernel (absorbed_attention_wgmma) does not take, and for large
// batches of short contexts.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

// Floats per (sequence, head, split) row of the decode attention's partials: [o (d_c) | m | l], padded
// to a multiple of 4 so that the rows start 16 bytes apart.
__host__ __device__ inline int64_t partial_stride(int64_t d_c) { return (d_c + 2 + 3) / 4 * 4; }

// A partials row's tail: the split's maximum score m (natural-log units) and its sum l (an empty split:
// m = −∞, l = 0). Kernels that track base-2 maxima scale them by kLn2.
constexpr float kLn2 = 0.69314718f;
__device__ __forceinline__ void store_split_stats(float* row, int64_t d_c, float m, float l) {
  row[d_c] = m;
  row[d_c + 1] = l;
}

// The keys [begin, end) of split `split` of n_splits over a sequence of len keys, each split whole chunks
// of `chunk` keys (begin >= end: nothing left for this split).
struct SplitKeys {
  int64_t begin, end;
};
__host__ __device__ inline SplitKeys split_keys(int64_t len, int64_t split, int64_t n_splits, int64_t chunk) {
  const int64_t per_split = chunk * ((len + chunk * n_splits - 1) / (chunk * n_splits)), begin = split * per_split;
  return {begin, begin + per_split < len ? begin + per_split : len};
}

// A bf16 cache of rows [latent d_c <= 512 | rotary d_rope <= 64], 16-byte aligned.
bool absorbed_attention_mma_supported(const MlaShape& s, const PagedLatentCache& cache);
// For sequence b, split k of n_splits (keys [k·S, min(len, (k+1)·S)) with S = len / n_splits rounded
// up to whole 32-key chunks, len = seq_lens[b]) and head h: partials[b, h, k] = [o (d_c) | m | l]
// (rows of partial_stride(d_c) floats),
// unnormalised o = Σ exp(score − m)·c over the split (m = −inf, l = 0 for an empty split). With one
// split the attention output itself goes to o_lat [B, nh, d_c] instead (nothing to combine).
// q: [B, nh, d_nope + d_rope] (its rotary part rotated), q_lat: [B, nh, d_c].
void absorbed_attention_mma(const MlaShape& s, const float* q, const float* q_lat, const PagedLatentCache& cache,
                            int64_t layer, const int32_t* block_tables, int64_t max_blocks, const int32_t* seq_lens,
                            int64_t B, int64_t n_splits, float* partials, float* o_lat, cudaStream_t stream);

}  // namespace dsv2::cuda
