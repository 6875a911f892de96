// e^x on 16 lanes (AVX-512) or 8 (AVX2 + FMA), within 3 ulp for x in [-87, 88] (arguments outside are
// clamped to it): x = k·ln2 + r, |r| <= ln2/2, e^r by its degree-6 Taylor polynomial, scaled by 2^k. Both
// widths run the same operations on the constants below (CpuIsa.SimdExpIsWithinThreeUlpAndTheSameAtBothWidths
// checks the bound, and the same bits where the CPU has AVX-512).
#pragma once
#include <immintrin.h>

#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace exp_poly {
constexpr float kLow = -87.0f, kHigh = 88.0f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187045e-06f;  // ln2 split in two for exactness
constexpr float kCoefficients[7] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};  // Horner, highest first
}  // namespace exp_poly

DSV2_AVX512 inline __m512 exp_avx512(__m512 x) {
  using namespace exp_poly;
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(kLow)), _mm512_set1_ps(kHigh));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kCoefficients[0]);
#pragma GCC unroll 6
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kCoefficients[i]));
  return _mm512_scalef_ps(p, k);
}

// The same on 8 lanes; 2^k built in the exponent bits (k is in [-126, 127] after the clamp).
DSV2_AVX2 inline __m256 exp_avx2(__m256 x) {
  using namespace exp_poly;
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kLow)), _mm256_set1_ps(kHigh));
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kCoefficients[0]);
#pragma GCC unroll 6
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kCoefficients[i]));
  const __m256i two_k = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(two_k));
}

}  // namespace dsv2::cpu
