#include "ops/cpu/causal_attention.h"

#include <immintrin.h>

#include <algorithm>

#include "core/error.h"
#include "ops/cpu/causal_attention_avx2.h"
#include "ops/cpu/count_dispatch.h"
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

// acc[i][k] += (a + i·a_stride) · (b + k·b_stride) over d values, lane-wise, as dot_keys adds them; each
// key vector loaded once for the R rows.
template <int R, int N>
DSV2_AVX512 inline void block_dots(const float* a, int64_t a_stride, const float* b, int64_t b_stride, int64_t d,
                                   __m512 (&acc)[R][N]) {
  for (int64_t j = 0; j < d; j += 16) {
    const __mmask16 m = mask_of(d - j);
    __m512 kv[N];
    for (int k = 0; k < N; ++k) kv[k] = _mm512_maskz_loadu_ps(m, b + k * b_stride + j);
    for (int i = 0; i < R; ++i) {
      const __m512 qv = _mm512_maskz_loadu_ps(m, a + i * a_stride + j);
      for (int k = 0; k < N; ++k) acc[i][k] = _mm512_fmadd_ps(qv, kv[k], acc[i][k]);
    }
  }
}

// Scores of rows R (queries q + i·q_stride) against keys s .. s + N − 1, each (row, key) sum formed as
// score_keys forms it; row i's scores at scores + i·score_stride.
template <int R, int N>
DSV2_AVX512 inline void score_block(const float* q, int64_t q_stride, const float* k_nope, int64_t k_stride,
                                    const float* k_rope, int64_t rope_stride, int64_t s, int64_t d_nope, int64_t d_rope,
                                    float scale, float* scores, int64_t score_stride) {
  __m512 acc[R][N];
  for (int i = 0; i < R; ++i)
    for (int k = 0; k < N; ++k) acc[i][k] = _mm512_setzero_ps();
  block_dots<R, N>(q, q_stride, k_nope + s * k_stride, k_stride, d_nope, acc);
  block_dots<R, N>(q + d_nope, q_stride, k_rope + s * rope_stride, rope_stride, d_rope, acc);
  for (int i = 0; i < R; ++i)
    for (int k = 0; k < N; ++k) scores[i * score_stride + s + k] = scale * _mm512_reduce_add_ps(acc[i][k]);
}

constexpr int64_t kRowCols = 64;  // output values per pass of attend_rows (4 registers per row)

// acc[i] += p_i[t] · v_t[j0 ..] for rows i in [i0, R): value row t loaded once for all of them.
template <int R>
DSV2_AVX512 inline void add_value_row(const float* v, int64_t v_stride, int64_t t, int64_t j0, int64_t d_v, int64_t chunks,
                                      const float* scores, int64_t stride, int i0, __m512 (&acc)[R][kRowCols / 16]) {
  __m512 vv[kRowCols / 16];
  const float* vs = v + t * v_stride + j0;
  for (int64_t c = 0; c < chunks; ++c) vv[c] = _mm512_maskz_loadu_ps(mask_of(d_v - j0 - c * 16), vs + c * 16);
  for (int i = i0; i < R; ++i) {
    const __m512 p = _mm512_set1_ps(scores[i * stride + t]);
    for (int64_t c = 0; c < chunks; ++c) acc[i][c] = _mm512_fmadd_ps(p, vv[c], acc[i][c]);
  }
}

template <int R>
DSV2_AVX512 void attend_rows_avx512(const float* q, int64_t q_stride, const float* k_nope, int64_t k_stride,
                                    const float* k_rope, int64_t rope_stride, const float* v, int64_t v_stride, int64_t n0,
                                    int64_t d_nope, int64_t d_rope, int64_t d_v, float scale, float* scores, float* out,
                                    int64_t out_stride) {
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
  // The weighted sums, 64 values at a time: each value row loaded once for every row that sees it; per
  // row the keys are added in order, as attend_row adds them.
  for (int64_t j0 = 0; j0 < d_v; j0 += kRowCols) {
    __m512 acc[R][kRowCols / 16];
    for (int i = 0; i < R; ++i)
      for (int c = 0; c < kRowCols / 16; ++c) acc[i][c] = _mm512_setzero_ps();
    const int64_t chunks = (std::min(kRowCols, d_v - j0) + 15) / 16;
    for (int64_t t = 0; t < n0; ++t) add_value_row<R>(v, v_stride, t, j0, d_v, chunks, scores, stride, 0, acc);
    for (int64_t t = n0; t < n0 + R - 1; ++t)  // rows i > t − n0 see key t
      add_value_row<R>(v, v_stride, t, j0, d_v, chunks, scores, stride, int(t - n0 + 1), acc);
    for (int i = 0; i < R; ++i)
      for (int64_t c = 0; c < chunks; ++c)
        _mm512_mask_storeu_ps(out + i * out_stride + j0 + c * 16, mask_of(d_v - j0 - c * 16), acc[i][c]);
  }
}

}  // namespace

void attend_rows(const float* q, int64_t q_stride, int64_t rows, const float* k_nope, int64_t k_stride, const float* k_rope,
                 int64_t rope_stride, const float* v, int64_t v_stride, int64_t n0, int64_t d_nope, int64_t d_rope,
                 int64_t d_v, float scale, float* scores, float* out, int64_t out_stride) {
  check(rows >= 1 && rows <= kAttendRows, "attend_rows: 1 to 4 rows");
  const CpuIsa isa = cpu_isa();
  if (isa == CpuIsa::Portable) {
    for (int64_t i = 0; i < rows; ++i)
      attend_row_portable(q + i * q_stride, k_nope, k_stride, k_rope, rope_stride, v, v_stride, n0 + i, d_nope, d_rope, d_v,
                          scale, scores, out + i * out_stride);
    return;
  }
  if (isa == CpuIsa::Avx2) {
    attend_rows_avx2(q, q_stride, rows, k_nope, k_stride, k_rope, rope_stride, v, v_stride, n0, d_nope, d_rope, d_v, scale,
                     scores, out, out_stride);
    return;
  }
  with_count<kAttendRows>(rows, [&](auto r) {
    attend_rows_avx512<decltype(r)::value>(q, q_stride, k_nope, k_stride, k_rope, rope_stride, v, v_stride, n0, d_nope, d_rope,
                                           d_v, scale, scores, out, out_stride);
  });
}

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
  switch (cpu_isa()) {
    case CpuIsa::Portable:
      attend_row_portable(q, k_nope, k_stride, k_rope, rope_stride, v, v_stride, n, d_nope, d_rope, d_v, scale, scores, out);
      return;
    case CpuIsa::Avx2:  // one row of the rows kernel: the bits attend_rows gives it
      attend_rows_avx2(q, 0, 1, k_nope, k_stride, k_rope, rope_stride, v, v_stride, n, d_nope, d_rope, d_v, scale, scores, out,
                       0);
      return;
    default:
      attend_row_avx512(q, k_nope, k_stride, k_rope, rope_stride, v, v_stride, n, d_nope, d_rope, d_v, scale, scores, out);
  }
}

}  // namespace dsv2::cpu
