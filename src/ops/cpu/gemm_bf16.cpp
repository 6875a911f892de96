#include "ops/cpu/gemm_bf16.h"

#include <immintrin.h>

#include <algorithm>

#include "core/dtype.h"
#include "ops/cpu/count_dispatch.h"
#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/simd_bf16.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace {

constexpr int64_t kStep = kBf16Step;  // values per vdpbf16ps: 16 lanes × 2

// The lane sums' fixed tree: (l[j] + l[j+8]) → (+4) → (+2) → (+1).
float sum_lanes(float l[16]) {
  for (int width = 8; width >= 1; width /= 2)
    for (int j = 0; j < width; ++j) l[j] = l[j] + l[j + width];
  return l[0];
}

DSV2_AVX512_BF16 inline float sum_lanes(__m512 v) {
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// Tokens per tile in prefill: 4 rows × 6 tokens hold 24 accumulators, 4 weight vectors and one token's
// values in the 32 registers, and read each weight vector from L2 once per 6 tokens (4 × 4: per 4).
// `dsv2 bench --model lite4-bf16 --prompt-tokens 512 --activations bf16` (docs/cpu-notes.md, v10).
constexpr int kPrefillTokens = 6;

// One step of 32 values for R rows × T tokens; the last step of a row (Tail) masks the weights past its
// end (the activations are zero there). Masked loads only there: in the main loop they keep GCC from
// holding the accumulators in registers.
template <int R, int T, bool Tail>
DSV2_AVX512_BF16 inline void step(__m512 (&acc)[T][R], const uint16_t* const* w, const uint16_t* x, int64_t P, int64_t k,
                                  __mmask32 m) {
  __m512bh wv[R];
  for (int r = 0; r < R; ++r)
    wv[r] = __m512bh(Tail ? _mm512_maskz_loadu_epi16(m, w[r] + k) : _mm512_loadu_si512(w[r] + k));
  for (int t = 0; t < T; ++t) {
    const __m512bh xv = __m512bh(_mm512_loadu_si512(x + t * P + k));
    for (int r = 0; r < R; ++r) acc[t][r] = _mm512_dpbf16_ps(acc[t][r], wv[r], xv);
  }
}

// R weight rows × T tokens, one accumulator each.   w: R rows of K bf16, x: [T, P] bf16 (P = padded),
// out[t * out_stride + r].
template <int R, int T>
DSV2_AVX512_BF16 void tile(const uint16_t* const* w, const uint16_t* x, int64_t K, int64_t P, float* out,
                           int64_t out_stride) {
  __m512 acc[T][R];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) acc[t][r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + kStep <= K; k += kStep) step<R, T, false>(acc, w, x, P, k, 0);
  if (k < K) step<R, T, true>(acc, w, x, P, k, __mmask32((1u << (K - k)) - 1));
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) out[t * out_stride + r] = sum_lanes(acc[t][r]);
}

// Several tokens: tiles of 4 rows; one token (decode, bandwidth-bound): one row at a time, a single
// stream the hardware prefetcher follows best (4 interleaved rows streamed 15-30% slower).
template <int T>
DSV2_AVX512_BF16 void rows_avx512(const uint16_t* x, int64_t P, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  const auto* w = static_cast<const uint16_t*>(W.data);
  const int64_t K = W.cols;
  int64_t r = r0;
  for (; T > 1 && r + 4 <= r1; r += 4) {
    const uint16_t* rows[4] = {w + r * K, w + (r + 1) * K, w + (r + 2) * K, w + (r + 3) * K};
    tile<4, T>(rows, x, K, P, y + r, W.rows);
  }
  for (; r < r1; ++r) {
    const uint16_t* row = w + r * K;
    tile<1, T>(&row, x, K, P, y + r, W.rows);
  }
}

}  // namespace

void prepare_bf16_activations(int64_t T, int64_t cols, Bf16Activations& out, int64_t token_block) {
  out.tokens = T;
  out.cols = cols;
  out.padded = (cols + kStep - 1) / kStep * kStep;
  out.token_block = token_block;
  out.values.assign(size_t(T * out.padded), 0);
}

namespace {

// 16 f32 values to bf16 as f32_to_bf16 rounds them: nearest even, a NaN kept quiet.
DSV2_AVX512 inline __m256i to_bf16(__m512i bits) {
  const __m512i up = _mm512_srli_epi32(bits, 16);
  const __m512i rounded = _mm512_srli_epi32(bf16_rounded_bits(bits), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(up, _mm512_set1_epi32(0x40))));
}

// One token's K values to dst, pair p (values 2p, 2p + 1) at dst + p · pair_stride.
DSV2_AVX512 void round_row_avx512(const float* x, int64_t K, uint16_t* dst, int64_t pair_stride) {
  const __m256i pair_index = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int(pair_stride / 2)));
  for (int64_t i = 0; i < K; i += 16) {
    const int64_t n = std::min<int64_t>(16, K - i);
    const __m256i h = to_bf16(_mm512_maskz_loadu_epi32(__mmask16((1u << n) - 1), x + i));  // zeros past K
    if (pair_stride == 2) {
      _mm256_mask_storeu_epi16(dst + i, __mmask16((1u << n) - 1), h);
    } else {  // 8 pairs as 32-bit words, pair_stride / 2 words apart
      _mm256_mask_i32scatter_epi32(dst + (i / 2) * pair_stride, __mmask8((1u << ((n + 1) / 2)) - 1), pair_index, h, 4);
    }
  }
}

void round_row_portable(const float* x, int64_t K, uint16_t* dst, int64_t pair_stride) {
  for (int64_t i = 0; i < K; ++i) dst[(i / 2) * pair_stride + i % 2] = f32_to_bf16(x[i]);
}

}  // namespace

void round_activations_to_bf16(const float* x, int64_t t_begin, int64_t t_end, Bf16Activations& out) {
  const int64_t P = out.padded, B = out.token_block;
  for (int64_t t = t_begin; t < t_end; ++t) {
    uint16_t* dst = out.values.data() + t * P;  // token rows: its row
    int64_t pair_stride = 2;                    // elements between pairs (2p, 2p + 1)
    if (B > 0) {  // its slot in its block's pairs: [padded / 2][n][2]
      const int64_t block = t / B, n = std::min(B, out.tokens - block * B);
      dst = out.values.data() + block * B * P + (t - block * B) * 2;
      pair_stride = 2 * n;
    }
    (has_avx512() ? round_row_avx512 : round_row_portable)(x + t * out.cols, out.cols, dst, pair_stride);
  }
}

bool has_avx512_bf16() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  return yes;
}

void gemm_bf16_rows_avx512(const Bf16Activations& xb, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1,
                           float* y) {
  const uint16_t* x = xb.values.data() + t0 * xb.padded;
  with_count<kGemvMaxTokens>(T, [&](auto n) { rows_avx512<decltype(n)::value>(x, xb.padded, W, r0, r1, y); });
}

void gemm_bf16_tokens_avx512(const Bf16Activations& xb, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  for (int64_t t0 = 0; t0 < T; t0 += kPrefillTokens) {
    const uint16_t* x = xb.values.data() + t0 * xb.padded;
    with_count<kPrefillTokens>(T - t0, [&](auto n) {
      rows_avx512<decltype(n)::value>(x, xb.padded, W, r0, r1, y + t0 * W.rows);
    });
  }
}

void gemm_bf16_rows_portable(const Bf16Activations& xb, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1,
                             float* y) {
  const auto* w = static_cast<const uint16_t*>(W.data);
  const int64_t K = W.cols, P = xb.padded;
  std::vector<float> row(size_t(P), 0.0f);  // one weight row as f32, zeros past K
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t i = 0; i < K; ++i) row[size_t(i)] = bf16_to_f32(w[r * K + i]);
    for (int64_t t = 0; t < T; ++t) {
      const uint16_t* xt = xb.values.data() + (t0 + t) * P;
      float lane[16] = {};
      for (int64_t k = 0; k < P; k += kStep)
        for (int j = 0; j < 16; ++j) {
          lane[j] = lane[j] + row[size_t(k + 2 * j + 1)] * bf16_to_f32(xt[k + 2 * j + 1]);
          lane[j] = lane[j] + row[size_t(k + 2 * j)] * bf16_to_f32(xt[k + 2 * j]);
        }
      y[t * W.rows + r] = sum_lanes(lane);
    }
  }
}

}  // namespace dsv2::cpu
