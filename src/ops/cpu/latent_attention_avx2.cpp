#include "ops/cpu/latent_attention_avx2.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "ops/cpu/avx2_lanes.h"
#include "ops/cpu/simd_bf16.h"
#include "ops/cpu/simd_exp.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

namespace {

constexpr int64_t kHeads = 4;  // heads per register block
constexpr int64_t kKeys = 3;   // keys per register block of the scores
constexpr int64_t kTile = 16;  // latent values per narrow register block of the weighted sum (2 registers)
constexpr int64_t kWideTile = 24;  // ... per wide one (3 registers: 12 independent sums, all 16 registers)
constexpr int64_t kAhead = 8;  // keys between the scores' reads and their prefetches

// 8 cached latent values as f32: f32 rows as they are, bf16 rows widened (exact).
DSV2_AVX2 inline __m256 load8(const float* p) { return widen8<DType::F32>(p); }
DSV2_AVX2 inline __m256 load8(const uint16_t* p) { return widen8<DType::BF16>(p); }

// Lane i = the sum of v[i]'s 8 lanes, for 8 vectors.
DSV2_AVX2 inline __m256 sum8(const __m256* v) {
  // Per 128-bit half: hadd(v0, v1) = [v0 0+1, v0 2+3, v1 0+1, v1 2+3] (low half; the high half the same
  // of lanes 4-7), then hadd of two of those = [v0, v1, v2, v3 partial sums].
  const __m256 q0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 q1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
}

// Lane i = the sum of v[i]'s 8 lanes, for 4 vectors.
DSV2_AVX2 inline __m128 sum4(const __m256* v) {
  const __m256 q = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  return _mm_add_ps(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1));
}

// Partial dot products of KN keys × kHeads heads: sum[k·kHeads + i] for key s0 + k, head h0 + i. Each
// latent load serves kHeads heads, each query load (one head at a time) KN keys: 12 accumulators, 3
// latents and a query in the 16 registers. Prefetches n_ahead rows at `ahead`, one cache line per step.
template <int64_t KN, typename T>
DSV2_AVX2 inline void score_sums(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const T* lat, int64_t width,
                                 int64_t s0, int64_t h0, int64_t d_c, int64_t d_rope, const T* ahead, int64_t n_ahead,
                                 __m256 (&sum)[KN * kHeads]) {
  for (int64_t i = 0; i < KN * kHeads; ++i) sum[i] = _mm256_setzero_ps();
  auto part = [&](const float* q, int64_t q_stride, int64_t offset, int64_t len) DSV2_AVX2 {
    for (int64_t j = 0; j < len; j += 8) {
      if ((offset + j) * int64_t(sizeof(T)) % 64 == 0)
        for (int64_t k = 0; k < n_ahead; ++k) _mm_prefetch(reinterpret_cast<const char*>(ahead + k * width + offset + j), _MM_HINT_T0);
      __m256 cv[KN];
      for (int64_t k = 0; k < KN; ++k) cv[k] = load8(lat + (s0 + k) * width + offset + j);
      for (int64_t i = 0; i < kHeads; ++i) {
        const __m256 qv = _mm256_loadu_ps(q + (h0 + i) * q_stride + j);
        for (int64_t k = 0; k < KN; ++k) sum[k * kHeads + i] = _mm256_fmadd_ps(qv, cv[k], sum[k * kHeads + i]);
      }
    }
  };
  part(q_lat, d_c, 0, d_c);
  part(q_pe, q_pe_stride, d_c, d_rope);
}

// acc[h0 .. h0+kHeads, j .. j+8V) = f[h − h0] · acc + Σ_s p[h, s] · c_s[j ..], the sums in registers
// over all n keys (f = 0: acc is not read). Each value's sum is the same whatever V.
template <int64_t V, typename T>
DSV2_AVX2 inline void accumulate_tile(const T* lat, int64_t width, int64_t n, const float* p, int64_t h0, int64_t j,
                                      int64_t d_c, const float* f, float* acc) {
  __m256 a[kHeads][V];
  for (int64_t i = 0; i < kHeads; ++i)
    for (int64_t v = 0; v < V; ++v)
      a[i][v] = f[i] == 0.0f ? _mm256_setzero_ps()
                             : _mm256_mul_ps(_mm256_set1_ps(f[i]), _mm256_loadu_ps(acc + (h0 + i) * d_c + j + 8 * v));
  for (int64_t s = 0; s < n; ++s) {
    const T* c = lat + s * width + j;
    __m256 cv[V];
    for (int64_t v = 0; v < V; ++v) cv[v] = load8(c + 8 * v);
    for (int64_t i = 0; i < kHeads; ++i) {
      const __m256 pb = _mm256_set1_ps(p[(h0 + i) * n + s]);
      for (int64_t v = 0; v < V; ++v) a[i][v] = _mm256_fmadd_ps(pb, cv[v], a[i][v]);
    }
  }
  for (int64_t i = 0; i < kHeads; ++i)
    for (int64_t v = 0; v < V; ++v) _mm256_storeu_ps(acc + (h0 + i) * d_c + j + 8 * v, a[i][v]);
}

// The online-softmax update from the chunk's scores [nh, n] (overwritten by their weights), a block of
// kHeads heads at a time: the new maximum, the old state's factor f = e^{m_old − m_new}, the weights
// e^{score − m_new} and their sum, then the weighted latents.
// bf16_weights: each weight rounded to bf16 before it is summed and used.
template <typename T>
DSV2_AVX2 void softmax_accumulate(const T* lat, int64_t width, int64_t n, int64_t nh, int64_t d_c, float* m, float* l,
                                  float* acc, float* scores, bool bf16_weights) {
  const int64_t n8 = n & ~int64_t(7), rest = n - n8;
  for (int64_t h0 = 0; h0 < nh; h0 += kHeads) {
    float f[kHeads];
    for (int64_t i = 0; i < kHeads; ++i) {
      const int64_t h = h0 + i;
      float* p = scores + h * n;
      __m256 mx = _mm256_set1_ps(m[h]);
      for (int64_t s = 0; s < n8; s += 8) mx = _mm256_max_ps(mx, _mm256_loadu_ps(p + s));
      alignas(32) float lanes[8];  // m[h] and the maxima of the first n8 scores
      _mm256_store_ps(lanes, mx);
      float m_new = *std::max_element(lanes, lanes + 8);
      for (int64_t s = n8; s < n; ++s) m_new = std::max(m_new, p[s]);
      const __m256 mv = _mm256_set1_ps(m_new);
      __m256 sum = _mm256_setzero_ps();
      for (int64_t s = 0; s < n8; s += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(p + s), mv));
        if (bf16_weights) e = _mm256_castsi256_ps(bf16_rounded_bits(_mm256_castps_si256(e)));
        _mm256_storeu_ps(p + s, e);
        sum = _mm256_add_ps(sum, e);
      }
      if (rest) {  // the last n % 8 scores through a padded copy; the padding's lanes are dropped
        alignas(32) float tail[8];
        std::fill(tail, tail + 8, m_new);
        std::copy(p + n8, p + n, tail);
        const __m256 keep = _mm256_castsi256_ps(lanes_below(rest));
        __m256 e = _mm256_and_ps(keep, exp_avx2(_mm256_sub_ps(_mm256_load_ps(tail), mv)));
        if (bf16_weights) e = _mm256_castsi256_ps(bf16_rounded_bits(_mm256_castps_si256(e)));
        _mm256_store_ps(tail, e);
        std::copy(tail, tail + rest, p + n8);
        sum = _mm256_add_ps(sum, e);
      }
      f[i] = m[h] == -INFINITY ? 0.0f : std::exp(m[h] - m_new);
      m[h] = m_new;
      l[h] = (f[i] == 0.0f ? 0.0f : f[i] * l[h]) + hsum8(sum);
    }
    // Wide blocks while more than 32 values (or 24) are left, then narrow ones for the last 16 or 32
    // (d_c is a multiple of 16): 12 sums per key instead of 8, so the multiply-adds do not wait on each other.
    int64_t j = 0;
    for (; d_c - j >= kWideTile && d_c - j != 2 * kTile; j += kWideTile)
      accumulate_tile<kWideTile / 8>(lat, width, n, scores, h0, j, d_c, f, acc);
    for (; j < d_c; j += kTile) accumulate_tile<kTile / 8>(lat, width, n, scores, h0, j, d_c, f, acc);
  }
}

template <typename T>
DSV2_AVX2 void update(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const T* lat, int64_t width, int64_t n,
                      int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m, float* l, float* acc, float* scores,
                      bool bf16_weights) {
  static_assert(kKeys == 3, "the block's sums are reduced as 8 + 4 vectors");
  // scores[h, s] in blocks of kKeys keys × kHeads heads; the rows kAhead keys ahead are prefetched in the
  // first head block (the other head blocks then find the block's rows in L1).
  int64_t s0 = 0;
  for (; s0 + kKeys <= n; s0 += kKeys)
    for (int64_t h0 = 0; h0 < nh; h0 += kHeads) {
      __m256 sum[kKeys * kHeads];
      const int64_t n_ahead = h0 == 0 ? std::clamp(n - (s0 + kAhead), int64_t(0), kKeys) : 0;
      score_sums<kKeys, T>(q_lat, q_pe, q_pe_stride, lat, width, s0, h0, d_c, d_rope,
                           n_ahead > 0 ? lat + (s0 + kAhead) * width : lat, n_ahead, sum);
      alignas(32) float lanes[kKeys * kHeads];  // lane k·kHeads + i: key s0 + k, head h0 + i
      _mm256_store_ps(lanes, _mm256_mul_ps(_mm256_set1_ps(scale), sum8(sum)));
      _mm_store_ps(lanes + 8, _mm_mul_ps(_mm_set1_ps(scale), sum4(sum + 8)));
      for (int64_t k = 0; k < kKeys; ++k)
        for (int64_t i = 0; i < kHeads; ++i) scores[(h0 + i) * n + s0 + k] = lanes[k * kHeads + i];
    }
  for (; s0 < n; ++s0)
    for (int64_t h0 = 0; h0 < nh; h0 += kHeads) {
      __m256 sum[kHeads];
      score_sums<1, T>(q_lat, q_pe, q_pe_stride, lat, width, s0, h0, d_c, d_rope, lat, 0, sum);
      for (int64_t i = 0; i < kHeads; ++i) scores[(h0 + i) * n + s0] = scale * hsum8(sum[i]);
    }
  softmax_accumulate(lat, width, n, nh, d_c, m, l, acc, scores, bf16_weights);
}

}  // namespace

bool latent_attention_avx2_fits(int64_t nh, int64_t d_c, int64_t d_rope) {
  return nh % kHeads == 0 && d_c % kTile == 0 && d_rope % 8 == 0;
}

void latent_attention_update_avx2(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const float* lat,
                                  int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                  float* l, float* acc, float* scratch, bool bf16_weights) {
  update(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, bf16_weights);
}

void latent_attention_update_avx2(const float* q_lat, const float* q_pe, int64_t q_pe_stride, const uint16_t* lat,
                                  int64_t width, int64_t n, int64_t nh, int64_t d_c, int64_t d_rope, float scale, float* m,
                                  float* l, float* acc, float* scratch, bool bf16_weights) {
  update(q_lat, q_pe, q_pe_stride, lat, width, n, nh, d_c, d_rope, scale, m, l, acc, scratch, bf16_weights);
}

}  // namespace dsv2::cpu
