// The absorbed MLA decode attention for models of up to 16 query heads with the keys as the warpgroup
// matrices' rows (absorbed_attention_key_rows.cu says why); attend_latents runs it when named
// (DecodeAttentionKernel::warpgroup_key_rows).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

// The most query heads it takes: the wgmma's N (fewer are padded with zero queries).
constexpr int64_t kKeyRowsAttentionMaxHeads = 16;

// Up to 16 heads and what absorbed_attention_wgmma_supported asks of the cache.
bool absorbed_attention_key_rows_supported(const MlaShape& s, const PagedLatentCache& cache);
// The same results as absorbed_attention_mma (its header gives them), from one block per sequence and
// split (the grid of absorbed_attention_wgmma: splits are whole 64-key chunks, one block a multiprocessor).
void absorbed_attention_key_rows(const MlaShape& s, const float* q, const float* q_lat, const PagedLatentCache& cache,
                                 int64_t layer, const int32_t* block_tables, int64_t max_blocks, const int32_t* seq_lens,
                                 int64_t B, int64_t n_splits, float* partials, float* o_lat, cudaStream_t stream);

}  // namespace dsv2::cuda
