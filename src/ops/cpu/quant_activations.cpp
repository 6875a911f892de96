#include "ops/cpu/quant_activations.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "ops/cpu/quant_block_avx512.h"
#include "ops/cpu/simd_targets.h"

namespace dsv2::cpu {

bool has_avx512_vnni() {
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return yes;
}

void prepare_activations(DType weights, int64_t T, int64_t cols, QuantizedActivations& out) {
  const int64_t step_blocks = weights == DType::Q8_0 ? 2 : 4, nb = quant_blocks(cols);
  out.weights = weights;
  out.cols = cols;
  out.padded = (nb + step_blocks - 1) / step_blocks * step_blocks * kQuantBlock;
  out.scale_blocks = (nb + 15) / 16 * 16;
  out.values.resize(size_t(T * out.padded));
  out.lane_offset.resize(size_t(T * out.lanes_per_token()));
  out.block_scale.resize(size_t(T * out.scale_blocks));
  out.block_offset.resize(size_t(T * out.scale_blocks));
}

void quantize_activations(const float* x, int64_t t_begin, int64_t t_end, QuantizedActivations& out) {
  const int64_t K = out.cols, P = out.padded, lanes = out.lanes_per_token();
  const bool q8 = out.weights == DType::Q8_0;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* xt = x + t * K;
    int8_t* v = &out.values[size_t(t * P)];
    int32_t* offset = &out.lane_offset[size_t(t * lanes)];
    float* scale = &out.block_scale[size_t(t * out.scale_blocks)];
    std::fill(scale, scale + out.scale_blocks, 0.0f);
    int32_t* block_offset = &out.block_offset[size_t(t * out.scale_blocks)];
    std::fill(block_offset, block_offset + out.scale_blocks, 0);
    for (int64_t b = 0; b < P / kQuantBlock; ++b) {
      const int64_t k0 = b * kQuantBlock, n = std::clamp<int64_t>(K - k0, 0, kQuantBlock);
      float amax = 0;
      for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(xt[k0 + i]));
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      int8_t q[kQuantBlock];  // |q| <= 127
      for (int64_t i = 0; i < kQuantBlock; ++i) q[i] = int8_t(i < n ? round_small(xt[k0 + i] * inv) : 0);
      scale[b] = amax / 127.0f;
      if (q8) {
        std::copy_n(q, kQuantBlock, v + k0);
        for (int64_t l = 0; l < 8; ++l) offset[b * 8 + l] = -128 * (q[4 * l] + q[4 * l + 1] + q[4 * l + 2] + q[4 * l + 3]);
        for (int64_t l = 0; l < 8; ++l) block_offset[b] += offset[b * 8 + l];
        continue;
      }
      const int64_t step = b / 4 * 128, k = b % 4;  // block k of its 4-block step
      std::copy_n(q, 16, v + step + 16 * k);
      std::copy_n(q + 16, 16, v + step + 64 + 16 * k);
      for (int64_t l = 0; l < 4; ++l) {  // lane 4k + l of the step
        int32_t sum = 0;
        for (int64_t i = 0; i < 4; ++i) sum += q[4 * l + i] + q[16 + 4 * l + i];
        offset[b * 4 + l] = -8 * sum;
        block_offset[b] += offset[b * 4 + l];
      }
    }
  }
}

namespace {

// n <= 16 values of v (int32 codes) times d, stored at out.
DSV2_VNNI inline void store_scaled(__m512i v, float d, float* out, int n) {
  const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(d));
  if (n >= 16) {
    _mm512_storeu_ps(out, f);
  } else if (n > 0) {
    _mm512_mask_storeu_ps(out, __mmask16((1u << n) - 1), f);
  }
}

template <DType F>
DSV2_VNNI void dequantize_rows(const Matrix& W, int64_t r0, int64_t n, float* out) {
  const int64_t K = W.cols, nb = quant_blocks(K);
  for (int64_t r = r0; r < r0 + n; ++r) {
    const uint8_t* w = static_cast<const uint8_t*>(W.row(r));
    const uint16_t* ws = W.row_scales(r);
    float* o = out + (r - r0) * K;
    for (int64_t b = 0; b < nb; ++b) {
      const float d = _cvtsh_ss(ws[b]);
      const int left = int(std::min<int64_t>(kQuantBlock, K - b * kQuantBlock));
      const uint8_t* block = w + b * quant_row_bytes(F, kQuantBlock);
      store_scaled(block_half_codes<F>(block, 0), d, o + b * kQuantBlock, left);
      store_scaled(block_half_codes<F>(block, 1), d, o + b * kQuantBlock + 16, left - 16);
    }
  }
}

}  // namespace

void dequantize_rows_avx512(const Matrix& W, int64_t r0, int64_t n, float* out) {
  if (W.dtype == DType::Q8_0) {
    dequantize_rows<DType::Q8_0>(W, r0, n, out);
  } else {
    dequantize_rows<DType::Q4_0>(W, r0, n, out);
  }
}

}  // namespace dsv2::cpu
