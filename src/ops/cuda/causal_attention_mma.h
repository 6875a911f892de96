// The tensor-core form of the decompressed (prefill) MLA attention: causal flash attention over
// keys and values of every head in bf16. The f32 form, attend_decompressed, stays the exact path.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

// The head shapes the kernel is built for: DeepSeek-V2's (qk_nope + rope = 192, v 128) and this
// project's default model's (48, 32).
bool causal_attention_mma_supported(const MlaShape& s);

// attend_decompressed's result with Q, K, V and the probabilities rounded to bf16 and f32 sums: T
// queries at positions pos0 .. pos0+T-1 over keys 0 .. pos0+T-1 of one sequence.
// q: [T, nh, d_nope + d_rope] f32 (rotated); keys: [nh, L, d_nope + d_rope] and values: [nh, L, d_v] in
// bf16, 16-byte aligned (decompress_keys_values writes them), L = pos0 + T; out: [T, nh, d_v] f32.
// `kernel` names the flash kernel (tests compare them) or, left automatic, the shape picks it: the
// warpgroup (wgmma) kernel for DeepSeek-V2's heads, the mma.sync one for the default model's.
enum class PrefillAttentionKernel { automatic, warp_mma, warpgroup_mma };
void attend_decompressed_mma(const MlaShape& s, const float* q, const void* keys, const void* values, int64_t T,
                             int64_t pos0, float* out, cudaStream_t stream,
                             PrefillAttentionKernel kernel = PrefillAttentionKernel::automatic);

}  // namespace dsv2::cuda
