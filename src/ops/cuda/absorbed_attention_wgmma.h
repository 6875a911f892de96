// The warpgroup (wgmma) form of the absorbed MLA decode attention, for a bf16 cache of the family's
// shape (512 latent + 64 rotary values a row); attend_latents picks it for such caches but in large
// batches of short contexts.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

// Heads a block attends (the wgmma's rows); one block fits a multiprocessor (its shared memory).
constexpr int64_t kWarpgroupAttentionHeads = 64;
constexpr int64_t kWarpgroupAttentionBlocksPerMultiprocessor = 1;

// A bf16 cache of rows [latent 512 | rotary 64], 16-byte aligned.
bool absorbed_attention_wgmma_supported(const MlaShape& s, const PagedLatentCache& cache);
// The same results as absorbed_attention_mma (its header gives them), from blocks of 64 heads walking
// their split in 64-key chunks: splits are whole 64-key chunks here.
void absorbed_attention_wgmma(const MlaShape& s, const float* q, const float* q_lat, const PagedLatentCache& cache,
                              int64_t layer, const int32_t* block_tables, int64_t max_blocks, const int32_t* seq_lens,
                              int64_t B, int64_t n_splits, float* partials, float* o_lat, cudaStream_t stream);

}  // namespace dsv2::cuda
