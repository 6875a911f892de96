#include "ops/cpu/qgemv_avx512.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "ops/cpu/gemv_avx512.h"

namespace dsv2::cpu {

bool has_avx512_vnni() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return yes;
}

void prepare_activations(DType weights, int64_t T, int64_t cols, QuantizedActivations& out) {
  const int64_t step_blocks = weights == DType::Q8_0 ? 2 : 4;
  out.weights = weights;
  out.tokens = T;
  out.cols = cols;
  out.padded = (quant_blocks(cols) + step_blocks - 1) / step_blocks * step_blocks * kQuantBlock;
  out.values.resize(size_t(T * out.padded));
  out.lane_scale.resize(size_t(T * out.lanes_per_token()));
  if (weights == DType::Q4_0) out.lane_offset.resize(size_t(T * out.lanes_per_token()));
}

void quantize_activations(const float* x, int64_t t_begin, int64_t t_end, QuantizedActivations& out) {
  const int64_t K = out.cols, P = out.padded, lanes = out.lanes_per_token();
  const bool q8 = out.weights == DType::Q8_0;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* xt = x + t * K;
    uint8_t* v = &out.values[size_t(t * P)];
    float* scale = &out.lane_scale[size_t(t * lanes)];
    int32_t* offset = q8 ? nullptr : &out.lane_offset[size_t(t * lanes)];
    for (int64_t b = 0; b < P / kQuantBlock; ++b) {
      const int64_t k0 = b * kQuantBlock, n = std::clamp<int64_t>(K - k0, 0, kQuantBlock);
      float amax = 0;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(xt[k0 + i]));
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      int8_t q[kQuantBlock];  // |q| <= 127
      for (int64_t i = 0; i < kQuantBlock; ++i) q[i] = int8_t(i < n ? round_small(xt[k0 + i] * inv) : 0);
      if (q8) {
        for (int64_t i = 0; i < kQuantBlock; ++i) v[k0 + i] = uint8_t(q[i] + 128);
        for (int64_t l = 0; l < 8; ++l) scale[b * 8 + l] = amax / 127.0f;
        continue;
      }
      const int64_t step = b / 4 * 128, k = b % 4;  // block k of its 4-block step
      for (int64_t i = 0; i < 16; ++i) {
        v[step + 16 * k + i] = uint8_t(q[i]);
        v[step + 64 + 16 * k + i] = uint8_t(q[16 + i]);
      }
      for (int64_t l = 0; l < 4; ++l) {  // lanes 4k .. 4k+3 of the step
        int32_t sum = 0;
        for (int64_t i = 0; i < 4; ++i) sum += q[4 * l + i] + q[16 + 4 * l + i];
        scale[b / 4 * 16 + 4 * k + l] = amax / 127.0f;
        offset[b / 4 * 16 + 4 * k + l] = -8 * sum;
      }
    }
  }
}

namespace {

// GCC 12 reports the intrinsics' internal _mm512_undefined_* values as uninitialized here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define DSV2_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c")))

// One weight row against T tokens, Q8_0: 2 blocks (64 bytes) a step.
template <int T>
DSV2_VNNI void row_q8(const Matrix& W, int64_t r, const QuantizedActivations& xq, int64_t t0, float* out, int64_t out_stride) {
  const int64_t nb = quant_blocks(W.cols), P = xq.padded, lanes = xq.lanes_per_token();
  const uint8_t* w = static_cast<const uint8_t*>(W.row(r));
  const uint16_t* ws = W.row_scales(r);
  const __m512i lane_block = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);  // lanes 8..15: block b+1
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t g = 0; g < nb; g += 16) {  // 16 weight scales at a time
    const int64_t ng = std::min<int64_t>(16, nb - g);
    const __m512 wscale = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(__mmask16((1u << ng) - 1), ws + g));
    for (int64_t j = 0; j < ng; j += 2) {
      const int64_t b = g + j;
      const uint8_t* p = w + b * kQuantBlock;
      const __m512i wv = j + 1 < ng ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(__mmask64(0xffffffffull), p);
      const __m512 dw = _mm512_permutexvar_ps(_mm512_add_epi32(lane_block, _mm512_set1_epi32(int(j))), wscale);
      // -128 · Σ w over each lane's 4 weights: removes the +128 of the unsigned activations.
      const __m512i offset = _mm512_sub_epi32(_mm512_setzero_si512(),
                                              _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), wv), 7));
      for (int t = 0; t < T; ++t) {
        const int64_t at = (t0 + t) * P + b * kQuantBlock, lane = (t0 + t) * lanes + b * 8;
        const __m512i isum = _mm512_dpbusd_epi32(offset, _mm512_loadu_si512(&xq.values[size_t(at)]), wv);
        const __m512 scale = _mm512_mul_ps(dw, _mm512_loadu_ps(&xq.lane_scale[size_t(lane)]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) out[t * out_stride] = _mm512_reduce_add_ps(acc[t]);
}

// Q4_0: 4 blocks (64 bytes, 128 weights) a step; low nibbles then high nibbles meet the activations.
template <int T>
DSV2_VNNI void row_q4(const Matrix& W, int64_t r, const QuantizedActivations& xq, int64_t t0, float* out, int64_t out_stride) {
  const int64_t nb = quant_blocks(W.cols), P = xq.padded, lanes = xq.lanes_per_token();
  const uint8_t* w = static_cast<const uint8_t*>(W.row(r));
  const uint16_t* ws = W.row_scales(r);
  const __m512i lane_block = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);  // lane l: block b + l/4
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t g = 0; g < nb; g += 16) {
    const int64_t ng = std::min<int64_t>(16, nb - g);
    const __m512 wscale = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(__mmask16((1u << ng) - 1), ws + g));
    for (int64_t j = 0; j < ng; j += 4) {
      const int64_t b = g + j, n = std::min<int64_t>(4, ng - j);
      const uint8_t* p = w + b * kQuantBlock / 2;
      const __m512i packed = n == 4 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(__mmask64((1ull << (16 * n)) - 1), p);
      const __m512i lo = _mm512_and_si512(packed, low4), hi = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low4);
      const __m512 dw = _mm512_permutexvar_ps(_mm512_add_epi32(lane_block, _mm512_set1_epi32(int(j))), wscale);
      for (int t = 0; t < T; ++t) {
        const int64_t at = (t0 + t) * P + b * kQuantBlock, lane = (t0 + t) * lanes + b * 4;
        __m512i isum = _mm512_dpbusd_epi32(_mm512_loadu_si512(&xq.lane_offset[size_t(lane)]), lo,
                                           _mm512_loadu_si512(&xq.values[size_t(at)]));
        isum = _mm512_dpbusd_epi32(isum, hi, _mm512_loadu_si512(&xq.values[size_t(at + 64)]));
        const __m512 scale = _mm512_mul_ps(dw, _mm512_loadu_ps(&xq.lane_scale[size_t(lane)]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) out[t * out_stride] = _mm512_reduce_add_ps(acc[t]);
}

template <int T, DType F>
void rows(const QuantizedActivations& xq, int64_t t0, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  for (int64_t r = r0; r < r1; ++r) {
    if constexpr (F == DType::Q8_0) {
      row_q8<T>(W, r, xq, t0, y + r, W.rows);
    } else {
      row_q4<T>(W, r, xq, t0, y + r, W.rows);
    }
  }
}

template <DType F>
void rows_any(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  switch (T) {
    case 1: rows<1, F>(xq, t0, W, r0, r1, y); break;
    case 2: rows<2, F>(xq, t0, W, r0, r1, y); break;
    case 3: rows<3, F>(xq, t0, W, r0, r1, y); break;
    default: rows<4, F>(xq, t0, W, r0, r1, y); break;
  }
}

}  // namespace

void qgemv_rows_avx512(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  static_assert(kGemvMaxTokens == 4, "rows_any covers T = 1..4");
  if (W.dtype == DType::Q8_0) {
    rows_any<DType::Q8_0>(xq, t0, T, W, r0, r1, y);
  } else {
    rows_any<DType::Q4_0>(xq, t0, T, W, r0, r1, y);
  }
}

}  // namespace dsv2::cpu
