// gemm_bf16.h's matmul with bf16 activations on AVX2 + FMA (CPUs without AVX512-BF16), the same bits
// as the portable kernel. A 256-bit load of 16 bf16 values holds 8 pairs (2j, 2j + 1) as 32-bit words:
// value 2j + 1 as f32 is the word with its low half cleared, value 2j the word shifted left by 16. A
// step's 16 lane sums are two vectors of 8 (pairs 0–7 and 8–15); each lane adds its odd product, then
// its even one, with an FMA (a bf16 product is exact in f32, so the FMA rounds as a separate add would).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/cpu/avx2_lanes.h"
#include "ops/cpu/count_dispatch.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace {

constexpr int kTokensPerPass = 4;  // tokens a weight row is dotted with per pass (8 accumulators)

// The odd and even values of 8 pairs as f32.
DSV2_AVX2 inline void split_pairs(const uint16_t* p, __m256& odd, __m256& even) {
  const __m256i words = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  odd = _mm256_castsi256_ps(_mm256_and_si256(words, _mm256_set1_epi32(int(0xffff0000u))));
  even = _mm256_castsi256_ps(_mm256_slli_epi32(words, 16));
}

// Tokens' bf16 rows [T, P] as f32 in the order a step reads them: per step, the odd values of pairs
// 0–7, their even values, then the same for pairs 8–15.
DSV2_AVX2 void widen_tokens(const uint16_t* x, int64_t T, int64_t P, float* out) {
  for (int64_t i = 0; i < T * P; i += 16) {
    __m256 odd, even;
    split_pairs(x + i, odd, even);
    _mm256_storeu_ps(out + i, odd);
    _mm256_storeu_ps(out + i + 8, even);
  }
}

// One step of 32 values of a weight row (wk) for T tokens at value k of xf (widen_tokens' layout, row
// stride P): lane sums lo (pairs 0–7) and hi (pairs 8–15).
template <int T>
DSV2_AVX2 inline void step(const uint16_t* wk, const float* xf, int64_t P, int64_t k, __m256 (&lo)[T], __m256 (&hi)[T]) {
  __m256 odd, even;
  split_pairs(wk, odd, even);
  for (int t = 0; t < T; ++t) {
    lo[t] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(xf + t * P + k), lo[t]);
    lo[t] = _mm256_fmadd_ps(even, _mm256_loadu_ps(xf + t * P + k + 8), lo[t]);
  }
  split_pairs(wk + 16, odd, even);
  for (int t = 0; t < T; ++t) {
    hi[t] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(xf + t * P + k + 16), hi[t]);
    hi[t] = _mm256_fmadd_ps(even, _mm256_loadu_ps(xf + t * P + k + 24), hi[t]);
  }
}

// One weight row (K bf16 values) dotted with T tokens of xf: out[t · out_stride].
template <int T>
DSV2_AVX2 void row_tokens(const uint16_t* w, int64_t K, const float* xf, int64_t P, float* out, int64_t out_stride) {
  __m256 lo[T], hi[T];
  for (int t = 0; t < T; ++t) lo[t] = hi[t] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + kBf16Step <= K; k += kBf16Step) step<T>(w + k, xf, P, k, lo, hi);
  if (k < K) {  // the row's last values, zero-padded (the activations are zero there too)
    uint16_t tail[kBf16Step] = {};
    std::memcpy(tail, w + k, size_t(K - k) * sizeof(uint16_t));
    step<T>(tail, xf, P, k, lo, hi);
  }
  // gemm_bf16.h's lane-sum tree, lanes 0–7 in lo and 8–15 in hi: (l[j] + l[j+8]), then hsum8's order.
  for (int t = 0; t < T; ++t) out[t * out_stride] = hsum8(_mm256_add_ps(lo[t], hi[t]));
}

}  // namespace

void gemm_bf16_rows_avx2(const Bf16Activations& xb, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1,
                         float* y) {
  const int64_t K = W.cols, P = xb.padded;
  // One pass's tokens widened at a time: kTokensPerPass rows of P floats stay in L1/L2 beside the
  // weight tile, whatever the number of tokens.
  thread_local std::vector<float> widened;
  widened.resize(size_t(kTokensPerPass * P));
  const auto* w = static_cast<const uint16_t*>(W.data);
  for (int64_t ta = 0; ta < T; ta += kTokensPerPass) {
    const int64_t n = std::min<int64_t>(kTokensPerPass, T - ta);
    widen_tokens(xb.values.data() + (t0 + ta) * P, n, P, widened.data());
    with_count<kTokensPerPass>(n, [&](auto count) {
      for (int64_t r = r0; r < r1; ++r)
        row_tokens<decltype(count)::value>(w + r * K, K, widened.data(), P, y + ta * W.rows + r, W.rows);
    });
  }
}

}  // namespace dsv2::cpu
