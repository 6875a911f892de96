#include "ops/cpu/head_projections.h"

#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"
#include "ops/cpu/avx2_lanes.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/quant_block_avx512.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace {

constexpr int kLanes = 16;

// Values c .. c + 15 (c a multiple of 16) of a row of W (its bytes and, quantized, its block scales)
// as f32, exactly: BF16/F16/F32 widened, Q8_0 and Q4_0 as d · q (exact in f32: an 11-bit scale times
// an integer of at most 8 bits), as dequantize_rows_avx512 gives them.
template <DType F>
DSV2_AVX512 inline __m512 load16(const uint8_t* row, const uint16_t* scales, int64_t c) {
  if constexpr (F == DType::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + c);
  } else if constexpr (F == DType::BF16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * c));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
  } else if constexpr (F == DType::F16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * c)));
  } else {  // Q8_0, Q4_0
    const int64_t b = c / kQuantBlock;
    const __m512i q = block_half_codes<F>(row + b * quant_row_bytes(F, kQuantBlock), int(c % kQuantBlock / 16));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(q), _mm512_set1_ps(_cvtsh_ss(scales[b])));
  }
}

// Row r's block scales, null for an unquantized W.
const uint16_t* scales_of(const Matrix& W, int64_t r) { return is_quantized(W.dtype) ? W.row_scales(r) : nullptr; }

// The 4 rows row_dots takes at a time, from row `first`: the bytes and block scales of rows first ..
// first + nr − 1, the last of them again for the slots past nr (computed, not stored).
struct FourRows {
  const uint8_t* row[4];
  const uint16_t* scales[4];
};
inline FourRows four_rows(const Matrix& W, int64_t first, int nr) {
  FourRows f;
  for (int r = 0; r < 4; ++r) {
    f.row[r] = static_cast<const uint8_t*>(W.row(first + std::min(r, nr - 1)));
    f.scales[r] = scales_of(W, first + std::min(r, nr - 1));
  }
  return f;
}

// y[0, n) = Σ_i alpha[i] · W[r0 + i][0, n), n a multiple of 16: the columns in groups of 256 held in
// 16 registers while every row passes.
template <DType F>
DSV2_AVX512 void weighted_row_sum_avx512(const Matrix& W, int64_t r0, int64_t rows, const float* alpha, int64_t n,
                                         float* y) {
  constexpr int kGroup = 16;  // registers of columns
  for (int64_t c0 = 0; c0 < n; c0 += kGroup * kLanes) {
    const int g = int(std::min<int64_t>(kGroup, (n - c0) / kLanes));
    __m512 acc[kGroup];
    for (int v = 0; v < kGroup; ++v) acc[v] = _mm512_setzero_ps();
    for (int64_t i = 0; i < rows; ++i) {
      const auto* row = static_cast<const uint8_t*>(W.row(r0 + i));
      const uint16_t* scales = scales_of(W, r0 + i);
      const __m512 a = _mm512_set1_ps(alpha[i]);
      if (g == kGroup) {
        for (int v = 0; v < kGroup; ++v) acc[v] = _mm512_fmadd_ps(a, load16<F>(row, scales, c0 + v * kLanes), acc[v]);
      } else {
        for (int v = 0; v < g; ++v) acc[v] = _mm512_fmadd_ps(a, load16<F>(row, scales, c0 + v * kLanes), acc[v]);
      }
    }
    for (int v = 0; v < g; ++v) _mm512_storeu_ps(y + c0 + v * kLanes, acc[v]);
  }
}

// y[j] = W[r0 + j] · x over n values (a multiple of 16) for j < rows: 4 rows at a time, a register
// of 16 lane sums per row, then each row's lanes added.
template <DType F>
DSV2_AVX512 void row_dots_avx512(const Matrix& W, int64_t r0, int64_t rows, const float* x, int64_t n, float* y) {
  for (int64_t j0 = 0; j0 < rows; j0 += 4) {
    const int nr = int(std::min<int64_t>(4, rows - j0));
    const FourRows f = four_rows(W, r0 + j0, nr);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t c = 0; c < n; c += kLanes) {
      const __m512 xv = _mm512_loadu_ps(x + c);
      for (int r = 0; r < 4; ++r) acc[r] = _mm512_fmadd_ps(load16<F>(f.row[r], f.scales[r], c), xv, acc[r]);
    }
    for (int r = 0; r < nr; ++r) y[j0 + r] = _mm512_reduce_add_ps(acc[r]);
  }
}

// The AVX2 forms of the same, 8 values a register: values c .. c + 7 (c a multiple of 8) of a row as f32,
// exactly as load16 gives them (Q4_0: byte j of a block holds value j in its low nibble and j + 16 in
// its high one).
template <DType F>
DSV2_AVX2 inline __m256 load8(const uint8_t* row, const uint16_t* scales, int64_t c) {
  if constexpr (F == DType::F32 || F == DType::BF16 || F == DType::F16) {
    return widen8<F>(row + c * int64_t(dtype_size(F)));
  } else {  // Q8_0, Q4_0
    const int64_t b = c / kQuantBlock, at = c % kQuantBlock;
    const uint8_t* block = row + b * quant_row_bytes(F, kQuantBlock);
    __m128i q;
    if constexpr (F == DType::Q8_0) {
      q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + at));
    } else {
      const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + at % 16));
      const __m128i nibbles = at < 16 ? bytes : _mm_srli_epi16(bytes, 4);
      q = _mm_sub_epi8(_mm_and_si128(nibbles, _mm_set1_epi8(0x0f)), _mm_set1_epi8(8));
    }
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_set1_ps(_cvtsh_ss(scales[b])));
  }
}

// weighted_row_sum_avx512 at 8 lanes, n a multiple of 8: the columns in groups of 64 (8 registers).
template <DType F>
DSV2_AVX2 void weighted_row_sum_avx2(const Matrix& W, int64_t r0, int64_t rows, const float* alpha, int64_t n, float* y) {
  constexpr int kGroup = 8;
  for (int64_t c0 = 0; c0 < n; c0 += kGroup * 8) {
    const int g = int(std::min<int64_t>(kGroup, (n - c0) / 8));
    __m256 acc[kGroup];
    for (int v = 0; v < kGroup; ++v) acc[v] = _mm256_setzero_ps();
    for (int64_t i = 0; i < rows; ++i) {
      const auto* row = static_cast<const uint8_t*>(W.row(r0 + i));
      const uint16_t* scales = scales_of(W, r0 + i);
      const __m256 a = _mm256_set1_ps(alpha[i]);
      if (g == kGroup) {
        for (int v = 0; v < kGroup; ++v) acc[v] = _mm256_fmadd_ps(a, load8<F>(row, scales, c0 + v * 8), acc[v]);
      } else {
        for (int v = 0; v < g; ++v) acc[v] = _mm256_fmadd_ps(a, load8<F>(row, scales, c0 + v * 8), acc[v]);
      }
    }
    for (int v = 0; v < g; ++v) _mm256_storeu_ps(y + c0 + v * 8, acc[v]);
  }
}

// row_dots_avx512 at 8 lanes, n a multiple of 8.
template <DType F>
DSV2_AVX2 void row_dots_avx2(const Matrix& W, int64_t r0, int64_t rows, const float* x, int64_t n, float* y) {
  for (int64_t j0 = 0; j0 < rows; j0 += 4) {
    const int nr = int(std::min<int64_t>(4, rows - j0));
    const FourRows f = four_rows(W, r0 + j0, nr);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t c = 0; c < n; c += 8) {
      const __m256 xv = _mm256_loadu_ps(x + c);
      for (int r = 0; r < 4; ++r) acc[r] = _mm256_fmadd_ps(load8<F>(f.row[r], f.scales[r], c), xv, acc[r]);
    }
    for (int r = 0; r < nr; ++r) y[j0 + r] = hsum8(acc[r]);
  }
}

// Calls fn with W's dtype as a compile-time constant.
template <typename Fn>
void with_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(std::integral_constant<DType, DType::F32>{});
    case DType::BF16: return fn(std::integral_constant<DType, DType::BF16>{});
    case DType::F16: return fn(std::integral_constant<DType, DType::F16>{});
    case DType::Q8_0: return fn(std::integral_constant<DType, DType::Q8_0>{});
    default: return fn(std::integral_constant<DType, DType::Q4_0>{});
  }
}

// The kernels W takes on this CPU: AVX-512 (columns a multiple of 16), AVX2 (of 8), else the portable
// loops.
enum class Path { Portable, Avx2, Avx512 };
Path path_for(const Matrix& W) {
  const bool known = W.dtype == DType::F32 || W.dtype == DType::BF16 || W.dtype == DType::F16 || is_quantized(W.dtype);
  if (!known) return Path::Portable;
  if (cpu_isa() >= CpuIsa::Avx512 && W.cols % kLanes == 0) return Path::Avx512;
  if (cpu_isa() >= CpuIsa::Avx2 && W.cols % 8 == 0) return Path::Avx2;
  return Path::Portable;
}

}  // namespace

void absorb_query_heads(const Matrix& kv_b, int64_t d_nope, int64_t d_v, const float* q, int64_t q_stride, int64_t h0,
                        int64_t h1, float* q_lat) {
  const int64_t d_c = kv_b.cols, head_rows = d_nope + d_v;
  const Path path = path_for(kv_b);
  if (path != Path::Portable) {
    with_dtype(kv_b.dtype, [&](auto f) {
      constexpr DType F = decltype(f)::value;
      for (int64_t h = h0; h < h1; ++h)
        (path == Path::Avx512 ? weighted_row_sum_avx512<F> : weighted_row_sum_avx2<F>)(kv_b, h * head_rows, d_nope,
                                                                                     q + h * q_stride, d_c, q_lat + h * d_c);
    });
    return;
  }
  std::vector<float> row(static_cast<size_t>(d_c));
  for (int64_t h = h0; h < h1; ++h) {
    float* ql = q_lat + h * d_c;
    std::fill(ql, ql + d_c, 0.0f);
    for (int64_t i = 0; i < d_nope; ++i) {
      matrix_rows_to_f32(kv_b, h * head_rows + i, 1, row.data());
      axpy(q[h * q_stride + i], row.data(), ql, d_c);
    }
  }
}

void expand_latent_heads(const Matrix& kv_b, int64_t d_nope, int64_t d_v, const float* o_lat, int64_t h0, int64_t h1,
                         float* out) {
  const int64_t d_c = kv_b.cols, head_rows = d_nope + d_v;
  const Path path = path_for(kv_b);
  if (path != Path::Portable) {
    with_dtype(kv_b.dtype, [&](auto f) {
      constexpr DType F = decltype(f)::value;
      for (int64_t h = h0; h < h1; ++h)
        (path == Path::Avx512 ? row_dots_avx512<F> : row_dots_avx2<F>)(kv_b, h * head_rows + d_nope, d_v, o_lat + h * d_c,
                                                                     d_c, out + h * d_v);
    });
    return;
  }
  std::vector<float> row(static_cast<size_t>(d_c));
  for (int64_t h = h0; h < h1; ++h)
    for (int64_t j = 0; j < d_v; ++j) {
      matrix_rows_to_f32(kv_b, h * head_rows + d_nope + j, 1, row.data());
      out[h * d_v + j] = dot(row.data(), o_lat + h * d_c, d_c);
    }
}

}  // namespace dsv2::cpu
