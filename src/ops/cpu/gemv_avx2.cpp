#include "ops/cpu/gemv_avx2.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/quant.h"
#include "ops/cpu/avx2_lanes.h"
#include "ops/cpu/count_dispatch.h"
#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return yes;
}

namespace {

// Weights are prefetched this far ahead of the step (also across rows and 4 KiB pages, where the
// hardware prefetcher stops).
constexpr int64_t kPrefetchBytes = 1024;

// The first n < 8 weights (stored as W) as f32, the rest zero.
template <DType W>
DSV2_AVX2 inline __m256 widen8_tail(const void* p, int n) {
  alignas(32) uint8_t buf[32] = {};
  std::memcpy(buf, p, size_t(n) * (W == DType::F32 ? 4 : 2));
  return widen8<W>(buf);
}

// R rows against TT tokens: each token's loads serve every row, each row's conversion every token. Two
// accumulators per (token, row): values 0..7 and 8..15 of each step of 16; the last K % 16 values go to
// the first, 8 at a time (a part of 8 zero-filled); the two are added and reduced at the end. The same
// operations in the same order whatever R and TT.
template <DType W, int R, int TT>
DSV2_AVX2 void tile(const void* const* w, const float* x, int64_t K, float* out, int64_t out_stride) {
  constexpr int64_t kBytes = W == DType::F32 ? 4 : 2;
  const uint8_t* row[R];
  for (int r = 0; r < R; ++r) row[r] = static_cast<const uint8_t*>(w[r]);
  __m256 acc[TT][R][2];
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < R; ++r) acc[t][r][0] = acc[t][r][1] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    if constexpr (R == 1) _mm_prefetch(reinterpret_cast<const char*>(row[0] + k * kBytes) + kPrefetchBytes, _MM_HINT_T0);
    __m256 w0[R], w1[R];
    for (int r = 0; r < R; ++r) w0[r] = widen8<W>(row[r] + k * kBytes), w1[r] = widen8<W>(row[r] + (k + 8) * kBytes);
    for (int t = 0; t < TT; ++t) {
      const __m256 x0 = _mm256_loadu_ps(x + t * K + k), x1 = _mm256_loadu_ps(x + t * K + k + 8);
      for (int r = 0; r < R; ++r) {
        acc[t][r][0] = _mm256_fmadd_ps(w0[r], x0, acc[t][r][0]);
        acc[t][r][1] = _mm256_fmadd_ps(w1[r], x1, acc[t][r][1]);
      }
    }
  }
  for (; k < K; k += 8) {
    const int n = int(K - k < 8 ? K - k : 8);
    __m256 w0[R];
    for (int r = 0; r < R; ++r) w0[r] = n == 8 ? widen8<W>(row[r] + k * kBytes) : widen8_tail<W>(row[r] + k * kBytes, n);
    for (int t = 0; t < TT; ++t) {
      const __m256 x0 = load8_first(x + t * K + k, n);
      for (int r = 0; r < R; ++r) acc[t][r][0] = _mm256_fmadd_ps(w0[r], x0, acc[t][r][0]);
    }
  }
  for (int t = 0; t < TT; ++t)
    for (int r = 0; r < R; ++r) out[t * out_stride + r] = hsum8(_mm256_add_ps(acc[t][r][0], acc[t][r][1]));
}

// Rows [r0, r1) for T tokens. One token (decode): one row at a time, a single stream from memory (4
// rows side by side streamed ~35% slower on one core of the Zen 4). Several: tiles of 2 rows × 2 tokens
// (8 accumulators, 4 weight vectors, 2 token vectors: 14 of the 16 registers), the rows of the range
// passing under one pair of tokens (16 KiB of activations per 1,024 values) after another.
template <DType W>
void rows(const float* x, int64_t T, const Matrix& M, int64_t r0, int64_t r1, float* y) {
  const int64_t K = M.cols, N = M.rows;
  const int64_t pairs_end = r0 + (r1 - r0) / 2 * 2;
  for (int64_t t = 0; t < T; t += 2) {
    const float* xt = x + t * K;
    float* yt = y + t * N;
    if (t + 1 == T) {
      for (int64_t r = r0; r < r1; ++r) {
        const void* w[1] = {M.row(r)};
        tile<W, 1, 1>(w, xt, K, yt + r, N);
      }
      continue;
    }
    for (int64_t r = r0; r < pairs_end; r += 2) {
      const void* w[2] = {M.row(r), M.row(r + 1)};
      tile<W, 2, 2>(w, xt, K, yt + r, N);
    }
    if (pairs_end < r1) {
      const void* w[1] = {M.row(pairs_end)};
      tile<W, 1, 2>(w, xt, K, yt + pairs_end, N);
    }
  }
}

// One quantized weight row against T tokens. Per group of 8 blocks, the weight scales times each
// token's activation scales; per block (Q8_0) or pair of blocks (Q4_0), the int32 lane sums (8 lanes of
// 4 values; Q4_0: lanes 0..3 block b, 4..7 block b + 1, each lane 4 low-nibble and 4 high-nibble
// values, as xq.lane_offset is laid out) times their block's product, accumulated in f32.
template <int T, DType F>
DSV2_AVX2 void row_quantized(const Matrix& W, int64_t r, const QuantizedActivations& xq, int64_t t0, float* out,
                             int64_t out_stride) {
  const int64_t nb = quant_blocks(W.cols);
  const uint8_t* w = static_cast<const uint8_t*>(W.row(r));
  const uint16_t* ws = W.row_scales(r);
  const int8_t* x[T];
  const int32_t* offset[T];
  const float* xscale[T];
  for (int t = 0; t < T; ++t) {
    x[t] = xq.values_of(t0 + t);
    offset[t] = xq.lane_offsets_of(t0 + t);
    xscale[t] = xq.scales_of(t0 + t);
  }
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t g = 0; g < nb; g += 8) {
    const int64_t ng = std::min<int64_t>(8, nb - g);
    __m128i wscale_h;
    if (ng == 8) {
      wscale_h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ws + g));
    } else {
      alignas(16) uint16_t part[8] = {};
      std::copy_n(ws + g, ng, part);
      wscale_h = _mm_load_si128(reinterpret_cast<const __m128i*>(part));
    }
    const __m256 wscale = _mm256_cvtph_ps(wscale_h);
    __m256 scale[T];  // [8 blocks] d_weight · d_activation (xq.block_scale has whole groups of 16)
    for (int t = 0; t < T; ++t) scale[t] = _mm256_mul_ps(wscale, _mm256_loadu_ps(xscale[t] + g));
    if constexpr (F == DType::Q8_0) {
#pragma GCC unroll 8
      for (int64_t j = 0; j < 8; ++j) {
        if (j >= ng) break;
        const int64_t b = g + j;
        const uint8_t* p = w + b * kQuantBlock;
        _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
        const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
        const __m256i wabs = _mm256_abs_epi8(wq);
        const __m256i block = _mm256_set1_epi32(int(j));
        for (int t = 0; t < T; ++t) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t] + b * kQuantBlock));
          const __m256i isum = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(xv, wq)), ones16);
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_permutevar8x32_ps(scale[t], block), acc[t]);
        }
      }
    } else {
      const __m256i low4 = _mm256_set1_epi8(0x0f);
#pragma GCC unroll 4
      for (int64_t j = 0; j < 8; j += 2) {
        if (j >= ng) break;
        const int64_t b = g + j;  // blocks b and b + 1 (b even); the second may be past the row
        const uint8_t* p = w + b * (kQuantBlock / 2);
        _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T0);
        const __m256i wbytes = j + 1 < ng ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                          : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m256i lo = _mm256_and_si256(wbytes, low4), hi = _mm256_and_si256(_mm256_srli_epi16(wbytes, 4), low4);
        const __m256i block = _mm256_setr_epi32(int(j), int(j), int(j), int(j), int(j + 1), int(j + 1), int(j + 1), int(j + 1));
        // Activations of blocks b, b + 1 in nibble order: values 0..15 of each, then (64 bytes on) 16..31.
        const int64_t xo = b / 4 * 128 + b % 4 * 16;
        for (int t = 0; t < T; ++t) {
          const __m256i xlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t] + xo));
          const __m256i xhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t] + xo + 64));
          // |pair sums| <= 2 · 15 · 127 each, so the int16 sum of both halves cannot saturate.
          const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
          const __m256i isum = _mm256_add_epi32(_mm256_madd_epi16(s16, ones16),
                                                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(offset[t] + b * 4)));
          acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_permutevar8x32_ps(scale[t], block), acc[t]);
        }
      }
    }
  }
  for (int t = 0; t < T; ++t) out[t * out_stride] = hsum8(acc[t]);
}

// 8 int32 codes times d, the first n (<= 8) stored at out.
DSV2_AVX2 inline void store_scaled(__m256i v, __m256 d, float* out, int n) {
  const __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), d);
  if (n >= 8) {
    _mm256_storeu_ps(out, f);
  } else if (n > 0) {
    _mm256_maskstore_ps(out, lanes_below(n), f);
  }
}

DSV2_AVX2 void dequantize_rows(const Matrix& W, int64_t r0, int64_t n, float* out) {
  const int64_t K = W.cols, nb = quant_blocks(K);
  for (int64_t r = r0; r < r0 + n; ++r) {
    const uint8_t* w = static_cast<const uint8_t*>(W.row(r));
    const uint16_t* ws = W.row_scales(r);
    float* o = out + (r - r0) * K;
    for (int64_t b = 0; b < nb; ++b) {
      const __m256 d = _mm256_set1_ps(_cvtsh_ss(ws[b]));
      const int left = int(std::min<int64_t>(kQuantBlock, K - b * kQuantBlock));
      __m128i q[2];  // values 0..15 and 16..31 of the block as int8
      if (W.dtype == DType::Q8_0) {
        q[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + b * kQuantBlock));
        q[1] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + b * kQuantBlock + 16));
      } else {
        const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + b * kQuantBlock / 2));
        const __m128i low4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
        q[0] = _mm_sub_epi8(_mm_and_si128(p, low4), eight);
        q[1] = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(p, 4), low4), eight);
      }
      for (int h = 0; h < 2; ++h) {
        float* dst = o + b * kQuantBlock + 16 * h;
        store_scaled(_mm256_cvtepi8_epi32(q[h]), d, dst, left - 16 * h);
        store_scaled(_mm256_cvtepi8_epi32(_mm_srli_si128(q[h], 8)), d, dst + 8, left - 16 * h - 8);
      }
    }
  }
}

template <int T, DType F>
void qrows(const QuantizedActivations& xq, int64_t t0, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  for (int64_t r = r0; r < r1; ++r) row_quantized<T, F>(W, r, xq, t0, y + r, W.rows);
}

template <DType F>
void qrows_any(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  with_count<kGemvMaxTokens>(T, [&](auto n) { qrows<decltype(n)::value, F>(xq, t0, W, r0, r1, y); });
}

}  // namespace

void gemv_rows_avx2(const float* x, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  switch (W.dtype) {
    case DType::BF16: rows<DType::BF16>(x, T, W, r0, r1, y); break;
    case DType::F16: rows<DType::F16>(x, T, W, r0, r1, y); break;
    default: rows<DType::F32>(x, T, W, r0, r1, y); break;
  }
}

void qgemv_rows_avx2(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  if (W.dtype == DType::Q8_0) {
    qrows_any<DType::Q8_0>(xq, t0, T, W, r0, r1, y);
  } else {
    qrows_any<DType::Q4_0>(xq, t0, T, W, r0, r1, y);
  }
}

void dequantize_rows_avx2(const Matrix& W, int64_t r0, int64_t n, float* out) { dequantize_rows(W, r0, n, out); }

}  // namespace dsv2::cpu
