#include "core/quant.h"

#include <algorithm>
#include <cmath>

namespace dsv2 {

namespace {

// One block of n <= 32 values (the rest read as 0).
void quantize_block_q8(const float* x, int n, int8_t* q, uint16_t* scale) {
  float amax = 0;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const uint16_t d16 = f32_to_f16(amax / 127.0f);
  const float d = f16_to_f32(d16), inv = d > 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) q[i] = i < n ? int8_t(std::clamp(round_small(x[i] * inv), -127, 127)) : 0;
  *scale = d16;
}

// Squared error of x[0..n) as d · codes(x / d) (codes clamped to [-8, 7]), and the least-squares scale
// Σ q·x / Σ q² for those codes.
struct Q4Fit {
  float error, refit;
};
Q4Fit fit_q4(const float* x, int n, float d) {
  const float inv = d != 0 ? 1.0f / d : 0.0f;
  float err = 0, qx = 0, qq = 0;
  for (int i = 0; i < n; ++i) {
    const float c = float(std::clamp(round_small(x[i] * inv), -8, 7));
    err += (x[i] - d * c) * (x[i] - d * c);
    qx += c * x[i];
    qq += c * c;
  }
  return {err, qq > 0 ? qx / qq : 0.0f};
}

void quantize_block_q4(const float* x, int n, uint8_t* q, uint16_t* scale) {
  float signed_max = 0;  // the value of largest magnitude, with its sign: it maps to -8
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > std::fabs(signed_max)) signed_max = x[i];
  // Start from signed_max / -8; take the least-squares scale of its codes instead when that (rounded to
  // f16, codes recomputed) has the smaller error.
  float d = f16_to_f32(f32_to_f16(signed_max / -8.0f));
  const Q4Fit first = fit_q4(x, n, d);
  const float refit = f16_to_f32(f32_to_f16(first.refit));
  if (fit_q4(x, n, refit).error < first.error) d = refit;
  const float inv = d != 0 ? 1.0f / d : 0.0f;
  auto code = [&](int i) { return i < n ? uint8_t(std::clamp(round_small(x[i] * inv), -8, 7) + 8) : uint8_t(8); };
  for (int j = 0; j < kQuantBlock / 2; ++j) q[j] = uint8_t(code(j) | code(j + kQuantBlock / 2) << 4);
  *scale = f32_to_f16(d);
}

}  // namespace

void quantize_row(DType t, const float* x, int64_t cols, void* q, uint16_t* scales) {
  for (int64_t b = 0; b < quant_blocks(cols); ++b) {
    const int n = int(std::min(kQuantBlock, cols - b * kQuantBlock));
    if (t == DType::Q8_0) {
      quantize_block_q8(x + b * kQuantBlock, n, static_cast<int8_t*>(q) + b * kQuantBlock, scales + b);
    } else {
      quantize_block_q4(x + b * kQuantBlock, n, static_cast<uint8_t*>(q) + b * kQuantBlock / 2, scales + b);
    }
  }
}

void dequantize_row(DType t, const void* q, const uint16_t* scales, int64_t cols, float* out) {
  for (int64_t b = 0; b < quant_blocks(cols); ++b) {
    const float d = f16_to_f32(scales[b]);
    const int n = int(std::min(kQuantBlock, cols - b * kQuantBlock));
    float* o = out + b * kQuantBlock;
    float partial[kQuantBlock];  // whole-block loops (vectorised); a partial last block goes through here
    float* dst = n == kQuantBlock ? o : partial;
    if (t == DType::Q8_0) {
      const int8_t* qb = static_cast<const int8_t*>(q) + b * kQuantBlock;
      for (int i = 0; i < kQuantBlock; ++i) dst[i] = d * float(qb[i]);
    } else {
      const uint8_t* qb = static_cast<const uint8_t*>(q) + b * kQuantBlock / 2;
      for (int i = 0; i < kQuantBlock / 2; ++i) {
        dst[i] = d * float((qb[i] & 0xf) - 8);
        dst[i + kQuantBlock / 2] = d * float((qb[i] >> 4) - 8);
      }
    }
    if (dst == partial) std::copy_n(partial, n, o);
  }
}

}  // namespace dsv2
