#include "ops/cpu/latent_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace {


// e^x for x <= 0 (scores minus their maximum), ~1 ulp: x = k·ln2 + r, |r| <= ln2/2, e^r by its
// degree-6 Taylor polynomial, scaled by 2^k.
DSV2_AVX512 inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);  // ln2 split in two for exactness
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, k);
}

constexpr int64_t kHeads = 4;  // heads per register block
constexpr int64_t kKeys = 4;   // keys per register block of the scores
constexpr int64_t kTile = 64;  // latent values per register block of the accumulation (4 registers)

// scores[h, s0 .. s0+kn) for heads h0 .. h0+hn: kn keys × hn heads of sums in registers, so each
// latent load serves hn heads and each query load kn keys.
DSV2_AVX512 inline void score_block(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat, int64_t width,
                                    int64_t n, int64_t s0, int64_t kn, int64_t h0, int64_t hn, int64_t d_c, int64_t d_rope,
                                    float scale, float* scores) {
  __m512 sum[kKeys][kHeads];
  for (int64_t k = 0; k < kKeys; ++k)
    for (int64_t i = 0; i < kHeads; ++i) sum[k][i] = _mm512_setzero_ps();
  auto part = [&](const float* q, int64_t q_stride, int64_t offset, int64_t len) DSV2_AVX512 {
    for (int64_t j = 0; j < len; j += 16) {
      __m512 qv[kHeads];
      for (int64_t i = 0; i < hn; ++i) qv[i] = _mm512_loadu_ps(q + (h0 + i) * q_stride + j);
      for (int64_t k = 0; k < kn; ++k) {
        const __m512 cv = _mm512_loadu_ps(lat + (s0 + k) * width + offset + j);
        for (int64_t i = 0; i < hn; ++i) sum[k][i] = _mm512_fmadd_ps(qv[i], cv, sum[k][i]);
      }
    }
  };
  part(q_lat, d_c, 0, d_c);
  part(q_pe, q_pe_stride, d_c, d_rope);
  for (int64_t k = 0; k < kn; ++k)
    for (int64_t i = 0; i < hn; ++i) scores[(h0 + i) * n + s0 + k] = scale * _mm512_reduce_add_ps(sum[k][i]);
}

DSV2_AVX512 void chunk_avx512(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat, int64_t width,
                              int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l,
                              float* acc, float* scores) {
  for (int64_t s0 = 0; s0 < n; s0 += kKeys)
    for (int64_t h0 = 0; h0 < nh; h0 += kHeads)
      score_block(q_lat, q_pe, q_pe_stride, lat, width, n, s0, std::min(kKeys, n - s0), h0, std::min(kHeads, nh - h0), d_c,
                  d_rope, scale, scores);
  // Per head: the maximum, then the weights exp(score − max) in place and their sum.
  for (int64_t h = 0; h < nh; ++h) {
    float* p = scores + h * n;
    const float mx = *std::max_element(p, p + n);
    const __m512 mv = _mm512_set1_ps(mx);
    __m512 sum = _mm512_setzero_ps();
    int64_t s = 0;
    for (; s + 16 <= n; s += 16) {
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(p + s), mv));
      _mm512_storeu_ps(p + s, e);
      sum = _mm512_add_ps(sum, e);
    }
    if (s < n) {
      const __mmask16 k = __mmask16((1u << (n - s)) - 1);
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p + s), mv));
      _mm512_mask_storeu_ps(p + s, k, e);
      sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, e));
    }
    m[h] = mx;
    l[h] = _mm512_reduce_add_ps(sum);
  }
  // acc[h] = Σ_s p[h, s] · c_s: kHeads heads × kTile values held in registers over all keys.
  for (int64_t h0 = 0; h0 < nh; h0 += kHeads) {
    const int64_t hn = std::min(kHeads, nh - h0);
    for (int64_t j = 0; j < d_c; j += kTile) {
      __m512 a[kHeads][kTile / 16];
      for (int64_t i = 0; i < kHeads; ++i)
        for (int64_t v = 0; v < kTile / 16; ++v) a[i][v] = _mm512_setzero_ps();
      for (int64_t s = 0; s < n; ++s) {
        const float* c = lat + s * width + j;
        __m512 cv[kTile / 16];
        for (int64_t v = 0; v < kTile / 16; ++v) cv[v] = _mm512_loadu_ps(c + 16 * v);
        for (int64_t i = 0; i < hn; ++i) {
          const __m512 pb = _mm512_set1_ps(scores[(h0 + i) * n + s]);
          for (int64_t v = 0; v < kTile / 16; ++v) a[i][v] = _mm512_fmadd_ps(pb, cv[v], a[i][v]);
        }
      }
      for (int64_t i = 0; i < hn; ++i)
        for (int64_t v = 0; v < kTile / 16; ++v) _mm512_storeu_ps(acc + (h0 + i) * d_c + j + 16 * v, a[i][v]);
    }
  }
}

}  // namespace

void latent_attention_chunk_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat,
                                     int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                     float* l, float* acc, float* scores) {
  for (int64_t h = 0; h < nh; ++h)
    for (int64_t s = 0; s < n; ++s)
      scores[h * n + s] = scale * (dot(q_lat + h * d_c, lat + s * width, d_c) + dot(q_pe + h * q_pe_stride, lat + s * width + d_c, d_rope));
  for (int64_t h = 0; h < nh; ++h) {
    float* p = scores + h * n;
    m[h] = *std::max_element(p, p + n);
    l[h] = 0;
    float* a = acc + h * d_c;
    std::fill(a, a + d_c, 0.0f);
    for (int64_t s = 0; s < n; ++s) {
      p[s] = std::exp(p[s] - m[h]);
      l[h] += p[s];
      axpy(p[s], lat + s * width, a, d_c);
    }
  }
}

void latent_attention_chunk(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat, int64_t width,
                            int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc,
                            float* scratch) {
  if (has_avx512() && d_c % kTile == 0 && d_rope % 16 == 0) {
    chunk_avx512(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch);
  } else {
    latent_attention_chunk_portable(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch);
  }
}

}  // namespace dsv2::cpu
