// f32 values rounded to bf16 in registers, as f32_to_bf16 (core/dtype.h) rounds finite values: to nearest,
// ties to even. The result keeps the f32 layout with the low 16 bits zero (the bf16 value as an f32), so
// it can be used as f32 or shifted down to the 16-bit bf16. NaN is not handled: callers round finite
// values or mask NaN themselves.
#pragma once
#include <immintrin.h>

#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

DSV2_AVX512 inline __m512i bf16_rounded_bits(__m512i bits) {
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i sum = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
  return _mm512_and_si512(sum, _mm512_set1_epi32(int(0xffff0000u)));
}

DSV2_AVX2 inline __m256i bf16_rounded_bits(__m256i bits) {
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i sum = _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd));
  return _mm256_and_si256(sum, _mm256_set1_epi32(int(0xffff0000u)));
}

}  // namespace dsv2::cpu
