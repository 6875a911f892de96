#include "ops/cpu/causal_attention_avx2.h"

#include <immintrin.h>

#include "ops/cpu/avx2_lanes.h"
#include "ops/cpu/causal_attention.h"
#include "ops/cpu/count_dispatch.h"
#include "ops/cpu/simd_targets.h"
#include "ops/ref/ops_ref.h"

namespace dsv2::cpu {

namespace {

constexpr int kKeys = 2;        // keys whose scores are summed together (rows × kKeys accumulators)
constexpr int64_t kCols = 16;   // output values per pass of the weighted sum (2 registers per row)

// acc[i][k] += (a + i·a_stride) · (b + k·b_stride) over d values, lane-wise in steps of 8; each key
// vector loaded once for the R rows.
template <int R, int N>
DSV2_AVX2 inline void block_dots(const float* a, int64_t a_stride, const float* b, int64_t b_stride, int64_t d,
                                 __m256 (&acc)[R][N]) {
  for (int64_t j = 0; j < d; j += 8) {
    __m256 kv[N];
    for (int k = 0; k < N; ++k) kv[k] = load8_first(b + k * b_stride + j, d - j);
    for (int i = 0; i < R; ++i) {
      const __m256 qv = load8_first(a + i * a_stride + j, d - j);
      for (int k = 0; k < N; ++k) acc[i][k] = _mm256_fmadd_ps(qv, kv[k], acc[i][k]);
    }
  }
}

// Scores of rows R (queries q + i·q_stride) against keys s .. s + N − 1: per (row, key) the rotary
// part's steps continue the same lane sums as the first part's, then one hsum8; row i's scores at
// scores + i·score_stride. The same operations per (row, key) for any R and N.
template <int R, int N>
DSV2_AVX2 inline void score_block(const float* q, int64_t q_stride, const float* k_nope, int64_t k_stride,
                                  const float* k_rope, int64_t rope_stride, int64_t s, int64_t d_nope, int64_t d_rope,
                                  float scale, float* scores, int64_t score_stride) {
  __m256 acc[R][N];
  for (int i = 0; i < R; ++i)
    for (int k = 0; k < N; ++k) acc[i][k] = _mm256_setzero_ps();
  block_dots<R, N>(q, q_stride, k_nope + s * k_stride, k_stride, d_nope, acc);
  block_dots<R, N>(q + d_nope, q_stride, k_rope + s * rope_stride, rope_stride, d_rope, acc);
  for (int i = 0; i < R; ++i)
    for (int k = 0; k < N; ++k) scores[i * score_stride + s + k] = scale * hsum8(acc[i][k]);
}

// acc[i] += p_i[t] · v_t[j0 .. j0 + kCols) for rows i in [i0, R): value row t loaded once for them.
template <int R>
DSV2_AVX2 inline void add_value_row(const float* v, int64_t v_stride, int64_t t, int64_t j0, int64_t d_v,
                                    const float* scores, int64_t stride, int i0, __m256 (&acc)[R][2]) {
  const float* vs = v + t * v_stride + j0;
  const int64_t left = d_v - j0;
  const __m256 v0 = load8_first(vs, left), v1 = left > 8 ? load8_first(vs + 8, left - 8) : _mm256_setzero_ps();
  for (int i = i0; i < R; ++i) {
    const __m256 p = _mm256_set1_ps(scores[i * stride + t]);
    acc[i][0] = _mm256_fmadd_ps(p, v0, acc[i][0]);
    acc[i][1] = _mm256_fmadd_ps(p, v1, acc[i][1]);
  }
}

template <int R>
DSV2_AVX2 void attend_rows_r(const float* q, int64_t q_stride, const float* k_nope, int64_t k_stride, const float* k_rope,
                             int64_t rope_stride, const float* v, int64_t v_stride, int64_t n0, int64_t d_nope,
                             int64_t d_rope, int64_t d_v, float scale, float* scores, float* out, int64_t out_stride) {
  const int64_t stride = n0 + R - 1;  // row i's scores at scores + i·stride, n0 + i of them
  int64_t s = 0;
  for (; s + kKeys <= n0; s += kKeys)
    score_block<R, kKeys>(q, q_stride, k_nope, k_stride, k_rope, rope_stride, s, d_nope, d_rope, scale, scores, stride);
  for (; s < n0; ++s) score_block<R, 1>(q, q_stride, k_nope, k_stride, k_rope, rope_stride, s, d_nope, d_rope, scale, scores, stride);
  for (int i = 1; i < R; ++i)  // the keys only the later rows see
    for (int64_t t = n0; t < n0 + i; ++t)
      score_block<1, 1>(q + i * q_stride, q_stride, k_nope, k_stride, k_rope, rope_stride, t, d_nope, d_rope, scale,
                        scores + i * stride, stride);
  for (int i = 0; i < R; ++i) ref::softmax(scores + i * stride, n0 + i);
  // The weighted sums, kCols values at a time; per row and value the keys are added in order.
  for (int64_t j0 = 0; j0 < d_v; j0 += kCols) {
    __m256 acc[R][2];
    for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t t = 0; t < n0; ++t) add_value_row<R>(v, v_stride, t, j0, d_v, scores, stride, 0, acc);
    for (int64_t t = n0; t < n0 + R - 1; ++t)  // rows i > t − n0 see key t
      add_value_row<R>(v, v_stride, t, j0, d_v, scores, stride, int(t - n0 + 1), acc);
    const int64_t left = d_v - j0;
    for (int i = 0; i < R; ++i) {
      float* o = out + i * out_stride + j0;
      _mm256_maskstore_ps(o, lanes_below(left), acc[i][0]);
      if (left > 8) _mm256_maskstore_ps(o + 8, lanes_below(left - 8), acc[i][1]);
    }
  }
}

}  // namespace

void attend_rows_avx2(const float* q, int64_t q_stride, int64_t rows, const float* k_nope, int64_t k_stride,
                      const float* k_rope, int64_t rope_stride, const float* v, int64_t v_stride, int64_t n0,
                      int64_t d_nope, int64_t d_rope, int64_t d_v, float scale, float* scores, float* out,
                      int64_t out_stride) {
  with_count<kAttendRows>(rows, [&](auto r) {
    attend_rows_r<decltype(r)::value>(q, q_stride, k_nope, k_stride, k_rope, rope_stride, v, v_stride, n0, d_nope, d_rope,
                                      d_v, scale, scores, out, out_stride);
  });
}

}  // namespace dsv2::cpu
