// The sum of a vector's 8 f32 lanes in a fixed order: lane i + lane i + 4, then those (i + 2), then the
// last two. The AVX2 matmul and attention kernels reduce with it (the bf16-activation kernel's lane-sum
// tree of gemm_bf16.h ends in the same order).
#pragma once
#include <immintrin.h>

#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

DSV2_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

}  // namespace dsv2::cpu
