// The prompt attention's keys and values, decompressed from the latent cache straight into the bf16,
// head-major layout its tensor-core flash kernels read (attend_decompressed_mma):
//   c[j]          the cached latent of position j (d_c values; an f32 cache rounded to bf16)
//   keys[h, j]    = [c[j] · W_UK_hᵀ | k_pe[j]]   [nh, L, d_nope + d_rope]
//   values[h, j]  = c[j] · W_UV_hᵀ              [nh, L, d_v]
// W_UK_h and W_UV_h are head h's rows of kv_b_proj [nh·(d_nope + d_v), d_c]: two cuBLAS GEMMs batched
// over the heads, f32 sums stored as bf16 (no f32 copy of the decompressed rows).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

// Where decompress_keys_values puts a context of L keys in its scratch (16-byte aligned parts).
struct PromptKeysValues {
  void* keys;      // [nh, L, d_nope + d_rope] bf16
  void* values;    // [nh, L, d_v] bf16
  void* latents;   // [L, d_c] bf16
};
PromptKeysValues prompt_keys_values(const MlaShape& s, int64_t L, void* scratch);
// Bytes of scratch for contexts of up to L keys.
size_t prompt_keys_values_bytes(const MlaShape& s, int64_t L);

// Head sizes the decompression takes: d_c, d_nope, d_rope, d_v multiples of 8 (16-byte rows).
bool decompress_keys_values_supported(const MlaShape& s);
// Positions [0, L) of the sequence whose block table is `block_table`, from `layer` of the cache, with
// kv_b_proj `W_kvb` (bf16, [nh·(d_nope + d_v), d_c]), into prompt_keys_values(s, L, scratch), which it
// returns.
PromptKeysValues decompress_keys_values(cublasHandle_t blas, const MlaShape& s, const PagedLatentCache& cache,
                                        int64_t layer, const int32_t* block_table, int64_t L,
                                        const DeviceMatrix& W_kvb, void* scratch, cudaStream_t stream);

}  // namespace dsv2::cuda
