// Lane helpers of the AVX2 kernels (8 f32 lanes): the fixed-order lane sum, tail masks, and 8 stored
// values as f32.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "core/dtype.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

// The sum of a vector's 8 f32 lanes in a fixed order: lane i + lane i + 4, then those (i + 2), then the
// last two. The AVX2 matmul and attention kernels reduce with it (the bf16-activation kernel's lane-sum
// tree of gemm_bf16.h ends in the same order).
DSV2_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// All ones in the lanes below n (n <= 8 counts; more is all lanes), for masked loads and stores.
DSV2_AVX2 inline __m256i lanes_below(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n < 8 ? n : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// 8 f32 values at p, the lanes at and past n zero and not read.
DSV2_AVX2 inline __m256 load8_first(const float* p, int64_t n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes_below(n));
}

// 8 values stored as F (F32, BF16 or F16) at p, as f32, exactly.
template <DType F>
DSV2_AVX2 inline __m256 widen8(const void* p) {
  if constexpr (F == DType::F32) {
    return _mm256_loadu_ps(static_cast<const float*>(p));
  } else {
    static_assert(F == DType::BF16 || F == DType::F16, "widen8: F32, BF16 or F16");
    const __m128i h = _mm_loadu_si128(static_cast<const __m128i*>(p));
    if constexpr (F == DType::BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
  }
}

}  // namespace dsv2::cpu
