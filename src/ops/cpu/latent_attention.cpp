#include "ops/cpu/latent_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/thread_pool.h"
#include "ops/cpu/simd_exp.h"
#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/latent_attention_avx2.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/cpu/simd_bf16.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace {

constexpr int64_t kHeads = 4;  // heads per register block
constexpr int64_t kKeys = 4;   // keys per register block of the scores
constexpr int64_t kTile = 64;  // latent values per register block of the accumulation (4 registers)
constexpr int64_t kAhead = 8;  // keys between the scores' reads and their prefetches

// 16 cached latent values as f32: f32 rows as they are, bf16 rows widened (exact: the 16 bits above
// 16 zero bits).
DSV2_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
DSV2_AVX512 inline __m512 load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Sixteen vectors' horizontal sums in one vector, transposed as 4 × 4: lane 4k + j = Σ lanes of v[4j + k].
// Four rounds of pairwise adds of halves (256-bit, 128-bit, then within 128-bit lanes): 45
// instructions for the 16 sums instead of a reduction each.
DSV2_AVX512 inline __m512 sum16_transposed(const __m512 (&v)[16]) {
  __m512 a[8], b[4], c[2];
  // a[i]: lanes 0-7 hold v[2i]'s 8 partials, lanes 8-15 v[2i+1]'s.
  for (int i = 0; i < 8; ++i)
    a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  // b[i]: 128-bit lane 0 holds v[4i]'s 4 partials, then v[4i+1]'s, v[4i+2]'s, v[4i+3]'s.
  for (int i = 0; i < 4; ++i)
    b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  // c[i], 128-bit lane k: [x, y, x, y] partials of x = v[4(2i)+k], y = v[4(2i+1)+k].
  for (int i = 0; i < 2; ++i)
    c[i] = _mm512_add_ps(_mm512_unpacklo_ps(b[2 * i], b[2 * i + 1]), _mm512_unpackhi_ps(b[2 * i], b[2 * i + 1]));
  // 128-bit lane k: the sums of v[k], v[4+k], v[8+k], v[12+k].
  return _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(c[0]), _mm512_castps_pd(c[1]))),
                                 _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(c[0]), _mm512_castps_pd(c[1]))));
}

// Partial dot products of kKeys keys × kHeads heads, in registers: each latent load serves kHeads
// heads and each query load kKeys keys. sum[k·kHeads + i] for key s0 + k, head h0 + i. Also
// prefetches the n_ahead rows at ahead, one cache line per step, spread over the block's work.
template <int64_t KN, typename T>
DSV2_AVX512 inline void score_sums(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const T* lat, int64_t width,
                                   int64_t s0, int64_t h0, int64_t d_c, int64_t d_rope, const T* ahead, int64_t n_ahead,
                                   __m512 (&sum)[16]) {
  for (int i = 0; i < 16; ++i) sum[i] = _mm512_setzero_ps();
  auto part = [&](const float* q, int64_t q_stride, int64_t offset, int64_t len) DSV2_AVX512 {
    for (int64_t j = 0; j < len; j += 16) {
      __m512 qv[kHeads];
      for (int64_t i = 0; i < kHeads; ++i) qv[i] = _mm512_loadu_ps(q + (h0 + i) * q_stride + j);
      if ((offset + j) * int64_t(sizeof(T)) % 64 == 0)
        for (int64_t k = 0; k < n_ahead; ++k) _mm_prefetch(reinterpret_cast<const char*>(ahead + k * width + offset + j), _MM_HINT_T0);
      for (int64_t k = 0; k < KN; ++k) {
        const __m512 cv = load16(lat + (s0 + k) * width + offset + j);
        for (int64_t i = 0; i < kHeads; ++i) sum[k * kHeads + i] = _mm512_fmadd_ps(qv[i], cv, sum[k * kHeads + i]);
      }
    }
  };
  part(q_lat, d_c, 0, d_c);
  part(q_pe, q_pe_stride, d_c, d_rope);
}

// acc[h0 .. h0+kHeads, j .. j+kTile) = f[h − h0] · acc + Σ_s p[h, s] · c_s[j ..]: the kHeads × kTile sums in
// registers over all n keys.
template <typename T>
DSV2_AVX512 inline void accumulate_tile(const T* lat, int64_t width, int64_t n, const float* p, int64_t h0, int64_t j,
                                        int64_t d_c, const float* f, float* acc) {
  constexpr int64_t V = kTile / 16;
  __m512 a[kHeads][V];
  for (int64_t i = 0; i < kHeads; ++i) {
    const __m512 fi = _mm512_set1_ps(f[i]);  // 0 before the first chunk: acc is not read
    for (int64_t v = 0; v < V; ++v)
      a[i][v] = f[i] == 0.0f ? _mm512_setzero_ps() : _mm512_mul_ps(fi, _mm512_loadu_ps(acc + (h0 + i) * d_c + j + 16 * v));
  }
  for (int64_t s = 0; s < n; ++s) {
    const T* c = lat + s * width + j;
    __m512 cv[V];
    for (int64_t v = 0; v < V; ++v) cv[v] = load16(c + 16 * v);
    for (int64_t i = 0; i < kHeads; ++i) {
      const __m512 pb = _mm512_set1_ps(p[(h0 + i) * n + s]);
      for (int64_t v = 0; v < V; ++v) a[i][v] = _mm512_fmadd_ps(pb, cv[v], a[i][v]);
    }
  }
  for (int64_t i = 0; i < kHeads; ++i)
    for (int64_t v = 0; v < V; ++v) _mm512_storeu_ps(acc + (h0 + i) * d_c + j + 16 * v, a[i][v]);
}

// accumulate_tile with the weights in bf16 (p already rounded): keys in pairs, vdpbf16ps multiplying the
// pair's two latents (interleaved per value by unpacking the two rows) by the pair's two weights, the
// key s + 1 first, each product exact and added with f32 rounding (what fmas of the rounded weights in
// that order give). pairs: [kHeads][ceil(n / 2)] words (bf16 weight of key 2k | key 2k + 1's << 16).
// The accumulators hold the tile's 64 values permuted: vector 2u the unpacked low words of values
// 32u .. 32u + 31 ([0-3, 8-11, 16-19, 24-27] + 32u), vector 2u + 1 the high ones.
DSV2_AVX512_BF16 inline void accumulate_tile_dot(const uint16_t* lat, int64_t width, int64_t n, const uint32_t* pairs,
                                                 int64_t n_pairs, int64_t h0, int64_t j, int64_t d_c, const float* f,
                                                 float* acc) {
  const __m512i low = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i high = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  __m512 a[kHeads][4];
  for (int64_t i = 0; i < kHeads; ++i) {
    const __m512 fi = _mm512_set1_ps(f[i]);  // 0 before the first chunk: acc is not read
    for (int u = 0; u < 2; ++u) {
      if (f[i] == 0.0f) {
        a[i][2 * u] = a[i][2 * u + 1] = _mm512_setzero_ps();
        continue;
      }
      const float* src = acc + (h0 + i) * d_c + j + 32 * u;
      const __m512 v0 = _mm512_mul_ps(fi, _mm512_loadu_ps(src)), v1 = _mm512_mul_ps(fi, _mm512_loadu_ps(src + 16));
      a[i][2 * u] = _mm512_permutex2var_ps(v0, low, v1);
      a[i][2 * u + 1] = _mm512_permutex2var_ps(v0, high, v1);
    }
  }
  for (int64_t k = 0; k < n_pairs; ++k) {
    const uint16_t* c0 = lat + 2 * k * width + j;
    const uint16_t* c1 = 2 * k + 1 < n ? c0 + width : c0;  // an odd last key pairs with itself at weight 0
    __m512bh cv[4];
    for (int u = 0; u < 2; ++u) {
      const __m512i r0 = _mm512_loadu_si512(c0 + 32 * u), r1 = _mm512_loadu_si512(c1 + 32 * u);
      cv[2 * u] = (__m512bh)_mm512_unpacklo_epi16(r0, r1);
      cv[2 * u + 1] = (__m512bh)_mm512_unpackhi_epi16(r0, r1);
    }
    for (int64_t i = 0; i < kHeads; ++i) {
      const __m512bh w = (__m512bh)_mm512_set1_epi32(int(pairs[i * n_pairs + k]));
      for (int v = 0; v < 4; ++v) a[i][v] = _mm512_dpbf16_ps(a[i][v], cv[v], w);
    }
  }
  // Back to value order: value 32u + 8q + r is lane 4q + r of vector 2u (r < 4) or 2u + 1 (r >= 4).
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int64_t i = 0; i < kHeads; ++i)
    for (int u = 0; u < 2; ++u) {
      float* dst = acc + (h0 + i) * d_c + j + 32 * u;
      _mm512_storeu_ps(dst, _mm512_permutex2var_ps(a[i][2 * u], first, a[i][2 * u + 1]));
      _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(a[i][2 * u], second, a[i][2 * u + 1]));
    }
}

// The weighted sums of a block of kHeads heads over bf16 rows from their rounded weights (scores rows
// h0 .. h0 + kHeads − 1): the weights packed in pairs, then accumulate_tile_dot per tile.
DSV2_AVX512_BF16 void accumulate_heads_dot(const uint16_t* lat, int64_t width, int64_t n, const float* scores, int64_t h0,
                                           int64_t d_c, const float* f, float* acc) {
  const int64_t n_pairs = (n + 1) / 2;
  thread_local std::vector<uint32_t> pairs;
  pairs.resize(size_t(kHeads * n_pairs));
  for (int64_t i = 0; i < kHeads; ++i) {
    const float* p = scores + (h0 + i) * n;
    uint32_t* out = &pairs[size_t(i * n_pairs)];
    for (int64_t s = 0; s < n; s += 32) {  // 32 weights to 16 pairs (exact: they are bf16 values)
      const int64_t left = std::min<int64_t>(32, n - s);
      const __mmask16 m0 = __mmask16((1u << std::min<int64_t>(16, left)) - 1);
      const __mmask16 m1 = left > 16 ? __mmask16((1u << (left - 16)) - 1) : 0;
      const __m512bh packed = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, p + s + 16), _mm512_maskz_loadu_ps(m0, p + s));
      _mm512_mask_storeu_epi32(out + s / 2, __mmask16((1u << ((left + 1) / 2)) - 1), (__m512i)packed);
    }
  }
  for (int64_t j = 0; j < d_c; j += kTile) accumulate_tile_dot(lat, width, n, pairs.data(), n_pairs, h0, j, d_c, f, acc);
}

// Stores the scale · sums of the kKeys × kHeads block `sum` (sum[k·kHeads + i]: key s0 + k, head h0 + i)
// into scores [nh, n].
DSV2_AVX512 inline void store_score_block(const __m512 (&sum)[16], __m512 sv, float* scores, int64_t n, int64_t s0,
                                          int64_t h0) {
  // Transposed, lane i·kKeys + k: each head's kKeys scores side by side.
  const __m512 r = _mm512_mul_ps(sv, sum16_transposed(sum));
  _mm_storeu_ps(scores + (h0 + 0) * n + s0, _mm512_extractf32x4_ps(r, 0));
  _mm_storeu_ps(scores + (h0 + 1) * n + s0, _mm512_extractf32x4_ps(r, 1));
  _mm_storeu_ps(scores + (h0 + 2) * n + s0, _mm512_extractf32x4_ps(r, 2));
  _mm_storeu_ps(scores + (h0 + 3) * n + s0, _mm512_extractf32x4_ps(r, 3));
}

// The online-softmax update from the chunk's scores [nh, n] (overwritten by their weights). bf16_weights:
// the weights rounded to bf16 before they are summed and used (the attention in bf16); over bf16 rows on
// a CPU with AVX512-BF16 the weighted sum then runs in vdpbf16ps pairs (accumulate_heads_dot).
template <typename T>
DSV2_AVX512 inline void softmax_accumulate(const T* lat, int64_t width, int64_t n, int64_t nh, int64_t d_c, float* m,
                                           float* l, float* acc, float* scores, bool bf16_weights);

// nh a multiple of kHeads, d_c of kTile, d_rope of 16. bf16_weights: see softmax_accumulate.
template <typename T>
DSV2_AVX512 void update_avx512(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const T* lat, int64_t width,
                               int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l,
                               float* acc, float* scores, bool bf16_weights) {
  const __m512 sv = _mm512_set1_ps(scale);
  // scores[h, s]: blocks of kKeys keys × kHeads heads, summed across lanes 16 at a time.
  // The rows kAhead keys ahead are prefetched, ceil(kKeys / head blocks) rows in each head block of
  // the first kKeys heads; none past the chunk's last row.
  const int64_t head_blocks = nh / kHeads, rows_per_block = (kKeys + head_blocks - 1) / head_blocks;
  int64_t s0 = 0;
  for (; s0 + kKeys <= n; s0 += kKeys)
    for (int64_t h0 = 0; h0 < nh; h0 += kHeads) {
      __m512 sum[16];
      const int64_t first = h0 / kHeads * rows_per_block, ahead = s0 + kAhead + first;
      const int64_t n_ahead = std::clamp(std::min(kKeys - first, n - ahead), int64_t(0), rows_per_block);
      score_sums<kKeys, T>(q_lat, q_pe, q_pe_stride, lat, width, s0, h0, d_c, d_rope, n_ahead > 0 ? lat + ahead * width : lat,
                           n_ahead, sum);
      store_score_block(sum, sv, scores, n, s0, h0);
    }
  for (; s0 < n; ++s0)
    for (int64_t h0 = 0; h0 < nh; h0 += kHeads) {
      __m512 sum[16];
      score_sums<1, T>(q_lat, q_pe, q_pe_stride, lat, width, s0, h0, d_c, d_rope, lat, 0, sum);
      for (int64_t i = 0; i < kHeads; ++i) scores[(h0 + i) * n + s0] = scale * _mm512_reduce_add_ps(sum[i]);
    }
  softmax_accumulate(lat, width, n, nh, d_c, m, l, acc, scores, bf16_weights);
}

template <typename T>
DSV2_AVX512 inline void softmax_accumulate(const T* lat, int64_t width, int64_t n, int64_t nh, int64_t d_c, float* m,
                                           float* l, float* acc, float* scores, bool bf16_weights) {
  // Per block of kHeads heads: the new maximum, the old state's factor f = exp(m_old − m_new), the
  // weights exp(score − m_new) in place and their sum, then the weighted latents.
  const int64_t n16 = n & ~int64_t(15);
  const __mmask16 tail = __mmask16((1u << (n - n16)) - 1);
  for (int64_t h0 = 0; h0 < nh; h0 += kHeads) {
    float f[kHeads];
    for (int64_t i = 0; i < kHeads; ++i) {
      const int64_t h = h0 + i;
      float* p = scores + h * n;
      __m512 mx = _mm512_set1_ps(m[h]);
      for (int64_t s = 0; s < n16; s += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(p + s));
      if (tail) mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_maskz_loadu_ps(tail, p + n16));
      const float m_new = _mm512_reduce_max_ps(mx);
      const __m512 mv = _mm512_set1_ps(m_new);
      __m512 sum = _mm512_setzero_ps();
      for (int64_t s = 0; s < n16; s += 16) {
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(p + s), mv));
        if (bf16_weights) e = _mm512_castsi512_ps(bf16_rounded_bits(_mm512_castps_si512(e)));
        _mm512_storeu_ps(p + s, e);
        sum = _mm512_add_ps(sum, e);
      }
      if (tail) {
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, p + n16), mv));
        if (bf16_weights) e = _mm512_castsi512_ps(bf16_rounded_bits(_mm512_castps_si512(e)));
        _mm512_mask_storeu_ps(p + n16, tail, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(tail, e));
      }
      f[i] = m[h] == -INFINITY ? 0.0f : std::exp(m[h] - m_new);
      m[h] = m_new;
      l[h] = (f[i] == 0.0f ? 0.0f : f[i] * l[h]) + _mm512_reduce_add_ps(sum);
    }
    if constexpr (std::is_same_v<T, uint16_t>) {
      if (bf16_weights && has_avx512_bf16()) {
        accumulate_heads_dot(lat, width, n, scores, h0, d_c, f, acc);
        continue;
      }
    }
    for (int64_t j = 0; j < d_c; j += kTile) accumulate_tile(lat, width, n, scores, h0, j, d_c, f, acc);
  }
}

// score_sums over bf16 rows with the query in bf16 (q16: [nh, width] rows [q_lat | q_pe]): vdpbf16ps
// multiplies 32 values at a time, pairs of products summed in f32; width a multiple of 32.
template <int64_t KN>
DSV2_AVX512_BF16 inline void score_sums_dot(const uint16_t* q16, const uint16_t* lat, int64_t width, int64_t s0, int64_t h0,
                                            const uint16_t* ahead, int64_t n_ahead, __m512 (&sum)[16]) {
  for (int i = 0; i < 16; ++i) sum[i] = _mm512_setzero_ps();
  for (int64_t j = 0; j < width; j += 32) {
    __m512bh qv[kHeads];
    for (int64_t i = 0; i < kHeads; ++i) qv[i] = (__m512bh)_mm512_loadu_si512(q16 + (h0 + i) * width + j);
    for (int64_t k = 0; k < n_ahead; ++k) _mm_prefetch(reinterpret_cast<const char*>(ahead + k * width + j), _MM_HINT_T0);
    for (int64_t k = 0; k < KN; ++k) {
      const __m512bh cv = (__m512bh)_mm512_loadu_si512(lat + (s0 + k) * width + j);
      for (int64_t i = 0; i < kHeads; ++i) sum[k * kHeads + i] = _mm512_dpbf16_ps(sum[k * kHeads + i], qv[i], cv);
    }
  }
}

// update_avx512 over bf16 rows with the scores as bf16 dot products (the query rounded to bf16 once
// per call); width = d_c + d_rope, a multiple of 32. Its block loop repeats update_avx512's: a loop
// shared through a callback would call the AVX512-BF16 block code out of line from AVX-512 code (GCC
// does not inline across target attributes), which measured slower than the f32 scores.
DSV2_AVX512_BF16 void update_avx512_dot(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                                        int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale,
                                        float* m, float* l, float* acc, float* scores) {
  thread_local std::vector<uint16_t> q16;
  q16.resize(size_t(nh * width));
  for (int64_t h = 0; h < nh; ++h) {
    for (int64_t j = 0; j < d_c; ++j) q16[size_t(h * width + j)] = f32_to_bf16(q_lat[h * d_c + j]);
    for (int64_t j = 0; j < d_rope; ++j) q16[size_t(h * width + d_c + j)] = f32_to_bf16(q_pe[h * q_pe_stride + j]);
  }
  const __m512 sv = _mm512_set1_ps(scale);
  const int64_t head_blocks = nh / kHeads, rows_per_block = (kKeys + head_blocks - 1) / head_blocks;
  int64_t s0 = 0;
  for (; s0 + kKeys <= n; s0 += kKeys)
    for (int64_t h0 = 0; h0 < nh; h0 += kHeads) {
      __m512 sum[16];
      const int64_t first = h0 / kHeads * rows_per_block, ahead = s0 + kAhead + first;
      const int64_t n_ahead = std::clamp(std::min(kKeys - first, n - ahead), int64_t(0), rows_per_block);
      score_sums_dot<kKeys>(q16.data(), lat, width, s0, h0, n_ahead > 0 ? lat + ahead * width : lat, n_ahead, sum);
      store_score_block(sum, sv, scores, n, s0, h0);
    }
  for (; s0 < n; ++s0)
    for (int64_t h0 = 0; h0 < nh; h0 += kHeads) {
      __m512 sum[16];
      score_sums_dot<1>(q16.data(), lat, width, s0, h0, lat, 0, sum);
      for (int64_t i = 0; i < kHeads; ++i) scores[(h0 + i) * n + s0] = scale * _mm512_reduce_add_ps(sum[i]);
    }
  softmax_accumulate(lat, width, n, nh, d_c, m, l, acc, scores, true);
}

// Which kernel takes a chunk: AVX-512 or AVX2 by cpu_isa() where the shape fits them, else portable.
enum class Kernel { Avx512, Avx2, Portable };
Kernel kernel_for(int64_t nh, int64_t d_c, int64_t d_rope) {
  const CpuIsa isa = cpu_isa();
  if (isa >= CpuIsa::Avx512 && nh % kHeads == 0 && d_c % kTile == 0 && d_rope % 16 == 0) return Kernel::Avx512;
  if (isa >= CpuIsa::Avx2 && latent_attention_avx2_fits(nh, d_c, d_rope)) return Kernel::Avx2;
  return Kernel::Portable;
}

// q_lat [nh, d_c] and q_pe [nh] rows of stride q_pe_stride rounded to bf16 (as f32): q16 = [q_lat | q_pe],
// the rope part's rows of stride d_rope.
void round_query_to_bf16(const float* q_lat, const float* q_pe, int64_t q_pe_stride, int64_t nh, int64_t d_c, int64_t d_rope,
                         std::vector<float>& q16) {
  q16.resize(size_t(nh * (d_c + d_rope)));
  float *ql = q16.data(), *qp = ql + nh * d_c;
  for (int64_t h = 0; h < nh; ++h) {
    for (int64_t j = 0; j < d_c; ++j) ql[h * d_c + j] = bf16_to_f32(f32_to_bf16(q_lat[h * d_c + j]));
    for (int64_t j = 0; j < d_rope; ++j) qp[h * d_rope + j] = bf16_to_f32(f32_to_bf16(q_pe[h * q_pe_stride + j]));
  }
}

// latent_attention_update_portable; bf16_weights: each weight rounded to bf16 before it is summed and used.
// Over bf16 rows, the rows widened to f32 (exactly) first.
void update_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat, int64_t width, int64_t n,
                     int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc, float* scores,
                     bool bf16_weights) {
  for (int64_t h = 0; h < nh; ++h)
    for (int64_t s = 0; s < n; ++s)
      scores[h * n + s] = scale * (dot(q_lat + h * d_c, lat + s * width, d_c) + dot(q_pe + h * q_pe_stride, lat + s * width + d_c, d_rope));
  for (int64_t h = 0; h < nh; ++h) {
    float* p = scores + h * n;
    const float m_new = std::max(m[h], *std::max_element(p, p + n));
    float* a = acc + h * d_c;
    if (m[h] == -INFINITY) {  // the first chunk: acc and l are not read
      l[h] = 0;
      std::fill(a, a + d_c, 0.0f);
    } else {
      const float f = std::exp(m[h] - m_new);
      l[h] *= f;
      for (int64_t j = 0; j < d_c; ++j) a[j] *= f;
    }
    m[h] = m_new;
    for (int64_t s = 0; s < n; ++s) {
      p[s] = std::exp(p[s] - m_new);
      if (bf16_weights) p[s] = bf16_to_f32(f32_to_bf16(p[s]));
      l[h] += p[s];
      axpy(p[s], lat + s * width, a, d_c);
    }
  }
}

void update_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat, int64_t width,
                          int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc,
                          float* scratch, bool bf16_weights) {
  std::vector<float> rows(size_t(n * width));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = bf16_to_f32(lat[i]);
  update_portable(q_lat, q_pe, q_pe_stride, rows.data(), width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, bf16_weights);
}

// The chunk update over rows of T by kernel_for(): the AVX-512 or AVX2 kernel, else update_portable;
// bf16_weights: the softmax weights rounded to bf16 on every path.
template <typename T>
void update_by_isa(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const T* lat, int64_t width, int64_t n,
                   int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc, float* scratch,
                   bool bf16_weights) {
  switch (kernel_for(nh, d_c, d_rope)) {
    case Kernel::Avx512:
      return update_avx512(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, bf16_weights);
    case Kernel::Avx2:
      return latent_attention_update_avx2(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch,
                                          bf16_weights);
    case Kernel::Portable:
      break;
  }
  update_portable(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, bf16_weights);
}

}  // namespace

void latent_attention_update_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat,
                                      int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                      float* l, float* acc, float* scratch) {
  update_portable(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, false);
}

void latent_attention_update(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat, int64_t width,
                             int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc,
                             float* scratch) {
  update_by_isa(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, false);
}

void latent_attention_update_bf16_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                                           int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale,
                                           float* m, float* l, float* acc, float* scratch) {
  update_portable(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, false);
}

void latent_attention_update_bf16_dot_portable(const float* q_lat, const float* q_pe, int64_t q_pe_stride,
                                               const uint16_t* lat, int64_t width, int64_t n, int64_t nh, int64_t d_c,
                                               int64_t d_rope, float scale, float* m, float* l, float* acc, float* scratch) {
  std::vector<float> q16;
  round_query_to_bf16(q_lat, q_pe, q_pe_stride, nh, d_c, d_rope, q16);
  update_portable(q16.data(), q16.data() + nh * d_c, d_rope, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, true);
}

void latent_attention_update_bf16_dot(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                                      int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                      float* l, float* acc, float* scratch) {
  if (kernel_for(nh, d_c, d_rope) == Kernel::Avx512 && has_avx512_bf16() && width == d_c + d_rope && width % 32 == 0)
    return update_avx512_dot(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch);
  // The query rounded to bf16 (what the dot products multiply), then the f32-score update by cpu_isa()
  // with the weights rounded to bf16 (with the portable kernel: latent_attention_update_bf16_dot_portable's
  // operations).
  thread_local std::vector<float> q16;
  round_query_to_bf16(q_lat, q_pe, q_pe_stride, nh, d_c, d_rope, q16);
  update_by_isa(q16.data(), q16.data() + nh * d_c, d_rope, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, true);
}

void latent_attention_update_bf16(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                                  int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                  float* l, float* acc, float* scratch) {
  update_by_isa(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, false);
}

namespace {

void update_rows(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat, int64_t width, int64_t n,
                 int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc, float* scratch,
                 bool /*bf16_scores: f32 rows keep f32 scores*/) {
  latent_attention_update(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch);
}
void update_rows(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat, int64_t width, int64_t n,
                 int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc, float* scratch,
                 bool bf16_scores) {
  (bf16_scores ? latent_attention_update_bf16_dot : latent_attention_update_bf16)(q_lat, q_pe, q_pe_stride, lat, width, n, nh,
                                                                                  d_c, d_rope, scale, m, l, acc, scratch);
}

template <typename T>
void attention_groups(ThreadPool& pool, const float* q_lat, const float* q_pe, int64_t q_pe_stride, const T* lat,
                      int64_t width, int64_t n_keys, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* o_lat,
                      std::vector<float>& part_acc, bool bf16_scores) {
  const int64_t n_groups = (n_keys + kLatentKeyGroup - 1) / kLatentKeyGroup;
  // [n_groups, nh, d_c]: every group writes its whole state, no initialisation needed.
  part_acc.resize(std::max(part_acc.size(), size_t(n_groups * nh * d_c)));
  std::vector<float> part_m(size_t(n_groups * nh), -INFINITY), part_l(size_t(n_groups * nh));
  pool.parallel_for(n_groups, 1, [&](int64_t g0, int64_t g1) {
    std::vector<float> scores(size_t(nh * kLatentKeyChunk));
    for (int64_t g = g0; g < g1; ++g)
      for (int64_t s0 = g * kLatentKeyGroup; s0 < std::min(n_keys, (g + 1) * kLatentKeyGroup); s0 += kLatentKeyChunk)
        update_rows(q_lat, q_pe, q_pe_stride, lat + s0 * width, width, std::min(n_keys, s0 + kLatentKeyChunk) - s0, nh, d_c,
                    d_rope, scale, &part_m[size_t(g * nh)], &part_l[size_t(g * nh)], &part_acc[size_t(g * nh * d_c)],
                    scores.data(), bf16_scores);
  });
  for (int64_t h = 0; h < nh; ++h) {
    float M = -INFINITY;
    for (int64_t g = 0; g < n_groups; ++g) M = std::max(M, part_m[size_t(g * nh + h)]);
    float L = 0;
    float* o = o_lat + h * d_c;
    std::fill(o, o + d_c, 0.0f);
    for (int64_t g = 0; g < n_groups; ++g) {
      const float f = std::exp(part_m[size_t(g * nh + h)] - M);
      L += f * part_l[size_t(g * nh + h)];
      axpy(f, &part_acc[size_t((g * nh + h) * d_c)], o, d_c);
    }
    for (int64_t j = 0; j < d_c; ++j) o[j] /= L;
  }
}

}  // namespace

void latent_attention(ThreadPool& pool, const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat,
                      int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* o_lat,
                      std::vector<float>& partial) {
  attention_groups(pool, q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, o_lat, partial, false);
}

void latent_attention(ThreadPool& pool, const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                      int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* o_lat,
                      std::vector<float>& partial, bool bf16_scores) {
  attention_groups(pool, q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, o_lat, partial, bf16_scores);
}

}  // namespace dsv2::cpu
