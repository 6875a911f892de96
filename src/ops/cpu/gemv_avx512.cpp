#include "ops/cpu/gemv_avx512.h"

#include <immintrin.h>

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

// One row of 2-byte weights against T tokens; two accumulators per token hide the FMA latency.
template <int T>
DSV2_AVX512 void row_2byte(const uint16_t* w, const float* x, int64_t K, bool bf16, float* out, int64_t out_stride) {
  __m512 acc[T][2];
  for (int t = 0; t < T; ++t) acc[t][0] = acc[t][1] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 w0 = load16(w + k, bf16), w1 = load16(w + k + 16, bf16);
    for (int t = 0; t < T; ++t) {
      acc[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * K + k), acc[t][0]);
      acc[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * K + k + 16), acc[t][1]);
    }
  }
  for (; k < K; k += 16) {
    const int n = int(K - k < 16 ? K - k : 16);
    const __mmask16 m = __mmask16((1u << n) - 1);
    const __m512 w0 = load16_tail(w + k, n, bf16);
    for (int t = 0; t < T; ++t) acc[t][0] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + t * K + k), acc[t][0]);
  }
  for (int t = 0; t < T; ++t) out[t * out_stride] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
}

// Two rows of 2-byte weights against T tokens: each token's loads serve both rows. Every (token, row)
// sum is formed exactly as row_2byte forms it (same accumulators, same order), so results are the
// same bit for bit whichever form computed them.
template <int T>
DSV2_AVX512 void row_pair_2byte(const uint16_t* wa, const uint16_t* wb, const float* x, int64_t K, bool bf16, float* out,
                                int64_t out_stride) {
  __m512 acc[T][2][2];
  for (int t = 0; t < T; ++t) acc[t][0][0] = acc[t][0][1] = acc[t][1][0] = acc[t][1][1] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 a0 = load16(wa + k, bf16), a1 = load16(wa + k + 16, bf16);
    const __m512 b0 = load16(wb + k, bf16), b1 = load16(wb + k + 16, bf16);
    for (int t = 0; t < T; ++t) {
      const __m512 x0 = _mm512_loadu_ps(x + t * K + k), x1 = _mm512_loadu_ps(x + t * K + k + 16);
      acc[t][0][0] = _mm512_fmadd_ps(a0, x0, acc[t][0][0]);
      acc[t][0][1] = _mm512_fmadd_ps(a1, x1, acc[t][0][1]);
      acc[t][1][0] = _mm512_fmadd_ps(b0, x0, acc[t][1][0]);
      acc[t][1][1] = _mm512_fmadd_ps(b1, x1, acc[t][1][1]);
    }
  }
  for (; k < K; k += 16) {
    const int n = int(K - k < 16 ? K - k : 16);
    const __mmask16 m = __mmask16((1u << n) - 1);
    const __m512 a0 = load16_tail(wa + k, n, bf16), b0 = load16_tail(wb + k, n, bf16);
    for (int t = 0; t < T; ++t) {
      const __m512 x0 = _mm512_maskz_loadu_ps(m, x + t * K + k);
      acc[t][0][0] = _mm512_fmadd_ps(a0, x0, acc[t][0][0]);
      acc[t][1][0] = _mm512_fmadd_ps(b0, x0, acc[t][1][0]);
    }
  }
  for (int t = 0; t < T; ++t) {
    out[t * out_stride] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0][0], acc[t][0][1]));
    out[t * out_stride + 1] = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][1][0], acc[t][1][1]));
  }
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

template <int T>
void rows(const float* x, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  const int64_t K = W.cols;
  int64_t r = r0;
  if (W.dtype != DType::F32 && T > 1)  // several tokens: rows in pairs (a single token is bandwidth-bound)
    for (; r + 2 <= r1; r += 2)
      row_pair_2byte<T>(static_cast<const uint16_t*>(W.row(r)), static_cast<const uint16_t*>(W.row(r + 1)), x, K,
                        W.dtype == DType::BF16, y + r, W.rows);
  for (; r < r1; ++r) {
    if (W.dtype == DType::F32) {
      row_f32<T>(static_cast<const float*>(W.row(r)), x, K, y + r, W.rows);
    } else {
      row_2byte<T>(static_cast<const uint16_t*>(W.row(r)), x, K, W.dtype == DType::BF16, y + r, W.rows);
    }
  }
}

}  // namespace

void gemv_rows_avx512(const float* x, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  switch (T) {
    case 1: rows<1>(x, W, r0, r1, y); break;
    case 2: rows<2>(x, W, r0, r1, y); break;
    case 3: rows<3>(x, W, r0, r1, y); break;
    default: rows<4>(x, W, r0, r1, y); break;
  }
}

}  // namespace dsv2::cpu
