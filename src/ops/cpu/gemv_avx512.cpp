#include "ops/cpu/gemv_avx512.h"

#include <immintrin.h>

#include "ops/cpu/count_dispatch.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  return yes;
}

namespace {

// 16 weights as f32 from their storage.
DSV2_AVX512 inline __m512 load16(const uint16_t* p, bool bf16) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (bf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}
DSV2_AVX512 inline __m512 load16_tail(const uint16_t* p, int n, bool bf16) {
  const __m256i h = _mm256_maskz_loadu_epi16(__mmask16((1u << n) - 1), p);
  if (bf16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}

// R rows of 2-byte weights against T tokens: each token's loads serve every row. Each (token, row) sum
// has two accumulators (values 0..15 and 16..31 of each step of 32; a tail step of up to 16 goes to the
// first), added and reduced at the end: the same operations in the same order whatever R and T, so
// results are the same bit for bit whichever tile computed them.
template <int R, int T>
DSV2_AVX512 void rows_2byte(const uint16_t* const* w, const float* x, int64_t K, bool bf16, float* out, int64_t out_stride) {
  __m512 acc[T][R][2];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) acc[t][r][0] = acc[t][r][1] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    __m512 w0[R], w1[R];
    for (int r = 0; r < R; ++r) w0[r] = load16(w[r] + k, bf16), w1[r] = load16(w[r] + k + 16, bf16);
    for (int t = 0; t < T; ++t) {
      const __m512 x0 = _mm512_loadu_ps(x + t * K + k), x1 = _mm512_loadu_ps(x + t * K + k + 16);
      for (int r = 0; r < R; ++r) {
        acc[t][r][0] = _mm512_fmadd_ps(w0[r], x0, acc[t][r][0]);
        acc[t][r][1] = _mm512_fmadd_ps(w1[r], x1, acc[t][r][1]);
      }
    }
  }
  for (; k < K; k += 16) {
    const int n = int(K - k < 16 ? K - k : 16);
    const __mmask16 m = __mmask16((1u << n) - 1);
    __m512 w0[R];
    for (int r = 0; r < R; ++r) w0[r] = load16_tail(w[r] + k, n, bf16);
    for (int t = 0; t < T; ++t) {
      const __m512 x0 = _mm512_maskz_loadu_ps(m, x + t * K + k);
      for (int r = 0; r < R; ++r) acc[t][r][0] = _mm512_fmadd_ps(w0[r], x0, acc[t][r][0]);
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) out[t * out_stride + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][r][0], acc[t][r][1]));
}

template <int T>
DSV2_AVX512 void row_f32(const float* w, const float* x, int64_t K, float* out, int64_t out_stride) {
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    const int n = int(K - k < 16 ? K - k : 16);
    const __mmask16 m = __mmask16(n == 16 ? 0xffff : (1u << n) - 1);
    const __m512 w0 = _mm512_maskz_loadu_ps(m, w + k);
    for (int t = 0; t < T; ++t) acc[t] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * K + k), acc[t]);
  }
  for (int t = 0; t < T; ++t) out[t * out_stride] = _mm512_reduce_add_ps(acc[t]);
}

// Rows [r0, r1) for T tokens. Several tokens with 2-byte weights: tiles of 4 rows × 2 tokens, the rows
// of the range passing under one pair of tokens (8 KiB of activations per 1,024 values) after another.
template <int T>
void rows(const float* x, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  const int64_t K = W.cols;
  const bool bf16 = W.dtype == DType::BF16;
  auto row = [&](int64_t r) { return static_cast<const uint16_t*>(W.row(r)); };
  int64_t r = r0;
  if (W.dtype != DType::F32 && T > 1) {
    const int64_t quads_end = r0 + (r1 - r0) / 4 * 4;
    for (int t = 0; t < T; t += 2)
      for (r = r0; r < quads_end; r += 4) {
        const uint16_t* w[4] = {row(r), row(r + 1), row(r + 2), row(r + 3)};
        if (t + 1 < T) {
          rows_2byte<4, 2>(w, x + t * K, K, bf16, y + t * W.rows + r, W.rows);
        } else {
          rows_2byte<4, 1>(w, x + t * K, K, bf16, y + t * W.rows + r, W.rows);
        }
      }
    r = quads_end;
  }
  for (; r < r1; ++r) {
    if (W.dtype == DType::F32) {
      row_f32<T>(static_cast<const float*>(W.row(r)), x, K, y + r, W.rows);
    } else {
      const uint16_t* w = row(r);
      rows_2byte<1, T>(&w, x, K, bf16, y + r, W.rows);
    }
  }
}

}  // namespace

void gemv_rows_avx512(const float* x, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  with_count<kGemvMaxTokens>(T, [&](auto n) { rows<decltype(n)::value>(x, W, r0, r1, y); });
}

}  // namespace dsv2::cpu
