// The prompt attention's bf16 keys and values from the latent cache: one kernel copies each position's
// latent (bf16) and rotary key (into every head's key row), then cuBLAS multiplies the latents by each
// head's W_UK and W_UV blocks, storing bf16.
#include "ops/cuda/prompt_keys_values.h"

#include <cuda_bf16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/tensor_core.cuh"

namespace dsv2::cuda {

namespace {

// Eight cached values from p (16-byte aligned) as eight bf16.
__device__ __forceinline__ uint4 eight_bf16(const __nv_bfloat16* p) { return *reinterpret_cast<const uint4*>(p); }
__device__ __forceinline__ uint4 eight_bf16(const float* p) {
  const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
  return make_uint4(pack_bf16x2(a.x, a.y), pack_bf16x2(a.z, a.w), pack_bf16x2(b.x, b.y), pack_bf16x2(b.z, b.w));
}

// grid (L): position j's latent into latents[j, :] and its rotary key into keys[h, j, d_nope:] of every
// head, 8 values (16 bytes) a thread step.
template <typename CT>
__global__ void gather_latents_and_rotary_keys_kernel(const CT* __restrict__ layer, const int32_t* __restrict__ table,
                                                      int64_t block_size, int64_t d_c, int64_t d_rope, int64_t nh,
                                                      int64_t d_qk, int64_t L, __nv_bfloat16* __restrict__ latents,
                                                      __nv_bfloat16* __restrict__ keys) {
  const int64_t j = blockIdx.x, latent_units = d_c / 8, rope_units = d_rope / 8;
  const CT* src = cache_row(layer, table, block_size, d_c + d_rope, j);
  for (int64_t u = threadIdx.x; u < latent_units + nh * rope_units; u += blockDim.x) {
    if (u < latent_units) {
      *reinterpret_cast<uint4*>(latents + j * d_c + u * 8) = eight_bf16(src + u * 8);
    } else {
      const int64_t h = (u - latent_units) / rope_units, r = (u - latent_units) % rope_units * 8;
      *reinterpret_cast<uint4*>(keys + (h * L + j) * d_qk + (d_qk - d_rope) + r) = eight_bf16(src + d_c + r);
    }
  }
}

}  // namespace

PromptKeysValues prompt_keys_values(const MlaShape& s, int64_t L, void* scratch) {
  auto* keys = static_cast<__nv_bfloat16*>(scratch);
  auto* values = keys + s.n_heads * L * (s.d_nope + s.d_rope);
  auto* latents = values + s.n_heads * L * s.d_v;
  return {keys, values, latents};
}

size_t prompt_keys_values_bytes(const MlaShape& s, int64_t L) {
  return size_t(L * (s.n_heads * (s.d_nope + s.d_rope + s.d_v) + s.d_c)) * sizeof(__nv_bfloat16);
}

bool decompress_keys_values_supported(const MlaShape& s) {
  return s.d_c % 8 == 0 && s.d_nope % 8 == 0 && s.d_rope % 8 == 0 && s.d_v % 8 == 0;
}

PromptKeysValues decompress_keys_values(cublasHandle_t blas, const MlaShape& s, const PagedLatentCache& cache,
                                        int64_t layer, const int32_t* block_table, int64_t L,
                                        const DeviceMatrix& W_kvb, void* scratch, cudaStream_t stream) {
  const int64_t nh = s.n_heads, d_qk = s.d_nope + s.d_rope;
  check(decompress_keys_values_supported(s), "prompt keys and values: d_c, d_nope, d_rope and d_v multiples of 8");
  check(W_kvb.dtype == DType::BF16 && W_kvb.rows == nh * (s.d_nope + s.d_v) && W_kvb.cols == s.d_c,
        "prompt keys and values: kv_b_proj must be bf16 [n_heads * (d_nope + d_v), d_c]");
  check(cache.width == s.d_c + s.d_rope && (cache.dtype == DType::BF16 || cache.dtype == DType::F32),
        "prompt keys and values: a bf16 or f32 cache of d_c + d_rope values a row");
  check(L >= 1, "prompt keys and values: at least one position");
  check(reinterpret_cast<uintptr_t>(scratch) % 16 == 0 && reinterpret_cast<uintptr_t>(cache.data) % 16 == 0,
        "prompt keys and values: 16-byte aligned scratch and cache");
  const PromptKeysValues out = prompt_keys_values(s, L, scratch);
  auto* keys = static_cast<__nv_bfloat16*>(out.keys);
  auto* latents = static_cast<__nv_bfloat16*>(out.latents);
  DSV2_DISPATCH_CACHE(cache.dtype, {
    gather_latents_and_rotary_keys_kernel<<<unsigned(L), 128, 0, stream>>>(
        static_cast<const CT*>(cache.layer(layer)), block_table, cache.block_size, s.d_c, s.d_rope, nh, d_qk, L,
        latents, keys);
  });
  DSV2_CUDA_LAUNCH_CHECK();
  DSV2_CUBLAS_CHECK(cublasSetStream(blas, stream));
  const float one = 1.0f, zero = 0.0f;
  const auto* w = static_cast<const __nv_bfloat16*>(W_kvb.data);
  // Head h: column-major C_h (n×L, ld ldc) = W_hᵀ (n×d_c; rows `first` .. of head h's block) · latents (d_c×L).
  const auto per_head = [&](int64_t first, int64_t n, void* c, int64_t ldc) {
    DSV2_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        blas, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(L), int(s.d_c), &one, w + first * s.d_c, CUDA_R_16BF, int(s.d_c),
        (s.d_nope + s.d_v) * s.d_c, latents, CUDA_R_16BF, int(s.d_c), 0, &zero, c, CUDA_R_16BF, int(ldc), L * ldc,
        int(nh), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  per_head(0, s.d_nope, keys, d_qk);             // keys[h, j, 0:d_nope]
  per_head(s.d_nope, s.d_v, out.values, s.d_v);  // values[h, j, :]
  return out;
}

}  // namespace dsv2::cuda
