// The warpgroup (wgmma) form of the prompt attention's causal flash kernel, for DeepSeek-V2's head
// shape; attend_decompressed_mma picks it.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

// q·k over 192 values (d_nope + d_rope), 128 value columns.
bool causal_attention_wgmma_supported(const MlaShape& s);
// T queries at positions pos0 .. pos0+T-1 over keys 0 .. pos0+T-1: q [T, nh, 192] f32 (rotated),
// keys [nh, pos0 + T, 192] and values [nh, pos0 + T, 128] in bf16 (16-byte aligned), out [T, nh, 128].
void causal_attention_wgmma(const MlaShape& s, const float* q, const void* keys, const void* values, int64_t T,
                            int64_t pos0, float* out, cudaStream_t stream);

}  // namespace dsv2::cuda
