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
  out.weights = weights;
  out.tokens = T;
  out.cols = cols;
  out.padded = (quant_blocks(cols) + 1) / 2 * 2 * kQuantBlock;
  out.values.resize(size_t(T * out.padded));
  out.lane_scale.resize(size_t(T * out.padded / 4));
  if (weights == DType::Q4_0) out.lane_offset.resize(size_t(T * out.padded / 4));
}

void quantize_activations(const float* x, int64_t t_begin, int64_t t_end, QuantizedActivations& out) {
  const int64_t K = out.cols, P = out.padded;
  const bool unsigned_values = out.weights == DType::Q8_0;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* xt = x + t * K;
    uint8_t* v = &out.values[size_t(t * P)];
    float* ls = &out.lane_scale[size_t(t * P / 4)];
    for (int64_t b = 0; b < P / kQuantBlock; ++b) {
      const int64_t k0 = b * kQuantBlock, n = std::clamp<int64_t>(K - k0, 0, kQuantBlock);
      float amax = 0;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(xt[k0 + i]));
      const float d = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
      for (int64_t i = 0; i < kQuantBlock; ++i) {
        const int q = i < n ? int(std::nearbyint(xt[k0 + i] * inv)) : 0;  // |q| <= 127
        v[k0 + i] = uint8_t(unsigned_values ? q + 128 : q);
      }
      for (int64_t l = 0; l < kQuantBlock / 4; ++l) ls[k0 / 4 + l] = d;
    }
    if (out.weights == DType::Q4_0) {
      int32_t* off = &out.lane_offset[size_t(t * P / 4)];
      for (int64_t l = 0; l < P / 4; ++l) {
        int32_t s = 0;
        for (int64_t i = 0; i < 4; ++i) s += int8_t(v[4 * l + i]);
        off[l] = -8 * s;
      }
    }
  }
}

namespace {

// GCC 12 reports the intrinsics' internal _mm512_undefined_* values as uninitialized here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#define DSV2_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c")))

// 64 weights (blocks b and b+1; only b when `pair` is false) as bytes in value order.
template <DType F>
DSV2_VNNI inline __m512i load_pair(const uint8_t* w, int64_t b, bool pair) {
  if constexpr (F == DType::Q8_0) {
    const uint8_t* p = w + b * kQuantBlock;
    return pair ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(__mmask64(0xffffffffull), p);
  } else {
    const uint8_t* p = w + b * kQuantBlock / 2;
    const __m256i packed = pair ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : _mm256_maskz_loadu_epi8(0xffff, p);
    const __m512i z = _mm512_castsi256_si512(packed);
    const __m512i dup = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(1, 1, 0, 0));  // 16-byte lanes [b, b, b+1, b+1]
    const __m512i nibbles = _mm512_mask_blend_epi64(0xCC, dup, _mm512_srli_epi16(dup, 4));  // [lo b, hi b, lo b+1, hi b+1]
    return _mm512_and_si512(nibbles, _mm512_set1_epi8(0x0f));
  }
}

// One weight row against T tokens.
template <int T, DType F>
DSV2_VNNI void row_quantized(const Matrix& W, int64_t r, const QuantizedActivations& xq, int64_t t0, float* out,
                             int64_t out_stride) {
  const int64_t nb = quant_blocks(W.cols), P = xq.padded;
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
      const __m512i wv = load_pair<F>(w, b, j + 1 < ng);
      const __m512 dw = _mm512_permutexvar_ps(_mm512_add_epi32(lane_block, _mm512_set1_epi32(int(j))), wscale);
      __m512i q8_offset = _mm512_setzero_si512();  // Q8_0: -128 · Σ w over each lane's 4 weights
      if constexpr (F == DType::Q8_0)
        q8_offset = _mm512_sub_epi32(q8_offset, _mm512_slli_epi32(_mm512_dpbusd_epi32(q8_offset, _mm512_set1_epi8(1), wv), 7));
      for (int t = 0; t < T; ++t) {
        const int64_t at = (t0 + t) * P + b * kQuantBlock;
        const __m512i xv = _mm512_loadu_si512(&xq.values[size_t(at)]);
        __m512i isum;
        if constexpr (F == DType::Q8_0) {
          isum = _mm512_dpbusd_epi32(q8_offset, xv, wv);
        } else {
          isum = _mm512_dpbusd_epi32(_mm512_loadu_si512(&xq.lane_offset[size_t(at / 4)]), wv, xv);
        }
        const __m512 scale = _mm512_mul_ps(dw, _mm512_loadu_ps(&xq.lane_scale[size_t(at / 4)]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t]);
      }
    }
  }
  for (int t = 0; t < T; ++t) out[t * out_stride] = _mm512_reduce_add_ps(acc[t]);
}

template <int T, DType F>
void rows(const QuantizedActivations& xq, int64_t t0, const Matrix& W, int64_t r0, int64_t r1, float* y) {
  for (int64_t r = r0; r < r1; ++r) row_quantized<T, F>(W, r, xq, t0, y + r, W.rows);
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
