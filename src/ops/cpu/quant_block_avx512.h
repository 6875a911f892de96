// Half of a Q8_0 or Q4_0 block (core/quant.h) as 16 int32 codes q, with AVX-512: what the dequantizing
// kernels multiply by the block's scale (d · q, exact in f32).
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "core/dtype.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

// Values 16·half .. 16·half + 15 (half 0 or 1) of the block whose bytes start at `block`: Q8_0 32 int8
// values; Q4_0 16 bytes, value j in the low nibble of byte j and value j + 16 in its high nibble, as q + 8.
template <DType F>
DSV2_AVX512 inline __m512i block_half_codes(const uint8_t* block, int half) {
  if constexpr (F == DType::Q8_0) {
    return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * half)));
  } else {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
    const __m128i nibbles = half == 0 ? bytes : _mm_srli_epi16(bytes, 4);
    return _mm512_cvtepi8_epi32(_mm_sub_epi8(_mm_and_si128(nibbles, _mm_set1_epi8(0x0f)), _mm_set1_epi8(8)));
  }
}

}  // namespace dsv2::cpu
