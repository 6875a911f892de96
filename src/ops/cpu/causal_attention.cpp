#include "ops/cpu/causal_attention.h"

#include <immintrin.h>

#include <algorithm>

#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/simd_targets.h"
#include "ops/ref/ops_ref.h"

namespace dsv2::cpu {

namespace {

constexpr int kKeys = 4;       // keys whose scores are summed together
constexpr int64_t kOut = 128;  // output values held in registers across the keys (8 registers)

DSV2_AVX512 inline __mmask16 mask_of(int64_t left) { return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1); }

// a · b_i over d values for N vectors b_i = b + i·stride, added into acc[i] lane-wise.
template <int N>
DSV2_AVX512 inline void dot_keys(const float* a, const float* b, int64_t stride, int64_t d, __m512 (&acc)[N]) {
  for (int64_t j = 0; j < d; j += 16) {
    const __mmask16 m = mask_of(d - j);
    const __m512 av = _mm512_maskz_loadu_ps(m, a + j);
    for (int i = 0; i < N; ++i) acc[i] = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, b + i * stride + j), acc[i]);
  }
}

// scores[s .. s + N) for N keys, each summed the same way whatever N.
template <int N>
DSV2_AVX512 inline void score_keys(const float* q, const float* k_nope, int64_t k_stride, const float* k_rope,
                                   int64_t rope_stride, int64_t s, int64_t d_nope, int64_t d_rope, float scale, float* scores) {
  __m512 acc[N];
  for (int i = 0; i < N; ++i) acc[i] = _mm512_setzero_ps();
  dot_keys<N>(q, k_nope + s * k_stride, k_stride, d_nope, acc);
  dot_keys<N>(q + d_nope, k_rope + s * rope_stride, rope_stride, d_rope, acc);
  for (int i = 0; i < N; ++i) scores[s + i] = scale * _mm512_reduce_add_ps(acc[i]);
}

DSV2_AVX512 void attend_row_avx512(const float* q, const float* k_nope, int64_t k_stride, const float* k_rope,
                                   int64_t rope_stride, const float* v, int64_t v_stride, int64_t n, int64_t d_nope,
                                   int64_t d_rope, int64_t d_v, float scale, float* scores, float* out) {
  int64_t s = 0;
  for (; s + kKeys <= n; s += kKeys) score_keys<kKeys>(q, k_nope, k_stride, k_rope, rope_stride, s, d_nope, d_rope, scale, scores);
  for (; s < n; ++s) score_keys<1>(q, k_nope, k_stride, k_rope, rope_stride, s, d_nope, d_rope, scale, scores);
  ref::softmax(scores, n);
  for (int64_t j0 = 0; j0 < d_v; j0 += kOut) {
    __m512 acc[kOut / 16];
    for (auto& a : acc) a = _mm512_setzero_ps();
    const int64_t chunks = (std::min(kOut, d_v - j0) + 15) / 16;
    for (int64_t t = 0; t < n; ++t) {
      const __m512 p = _mm512_set1_ps(scores[t]);
      const float* vs = v + t * v_stride + j0;
      for (int64_t c = 0; c < chunks; ++c)
        acc[c] = _mm512_fmadd_ps(p, _mm512_maskz_loadu_ps(mask_of(d_v - j0 - c * 16), vs + c * 16), acc[c]);
    }
    for (int64_t c = 0; c < chunks; ++c) _mm512_mask_storeu_ps(out + j0 + c * 16, mask_of(d_v - j0 - c * 16), acc[c]);
  }
}

}  // namespace

void attend_row_portable(const float* q, const float* k_nope, int64_t k_stride, const float* k_rope, int64_t rope_stride,
                         const float* v, int64_t v_stride, int64_t n, int64_t d_nope, int64_t d_rope, int64_t d_v,
                         float scale, float* scores, float* out) {
  for (int64_t s = 0; s < n; ++s)
    scores[s] = scale * (dot(q, k_nope + s * k_stride, d_nope) + dot(q + d_nope, k_rope + s * rope_stride, d_rope));
  ref::softmax(scores, n);
  std::fill(out, out + d_v, 0.0f);
  for (int64_t s = 0; s < n; ++s) axpy(scores[s], v + s * v_stride, out, d_v);
}

void attend_row(const float* q, const float* k_nope, int64_t k_stride, const float* k_rope, int64_t rope_stride,
                const float* v, int64_t v_stride, int64_t n, int64_t d_nope, int64_t d_rope, int64_t d_v, float scale,
                float* scores, float* out) {
  (has_avx512() ? attend_row_avx512 : attend_row_portable)(q, k_nope, k_stride, k_rope, rope_stride, v, v_stride, n, d_nope,
                                                          d_rope, d_v, scale, scores, out);
}

}  // namespace dsv2::cpu
