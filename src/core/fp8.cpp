#include "core/fp8.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/dtype.h"

namespace dsv2 {

namespace {

// The 127 non-negative finite E4M3 values in code order (ascending): codes 0x00..0x7e.
const std::array<float, 127>& positive_values() {
  static const std::array<float, 127> v = [] {
    std::array<float, 127> a{};
    for (int c = 0; c < 127; ++c) a[size_t(c)] = f8_e4m3_to_f32(uint8_t(c));
    return a;
  }();
  return v;
}

}  // namespace

uint8_t f32_to_f8_e4m3(float x) {
  if (std::isnan(x)) return 0x7f;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  const auto& v = positive_values();
  if (a >= kFp8Max) return sign | 0x7e;
  // The largest code whose value is <= a, then the nearer of it and the next (ties: the even code).
  const int lo = int(std::upper_bound(v.begin(), v.end(), a) - v.begin()) - 1;
  const float below = a - v[size_t(lo)], above = v[size_t(lo + 1)] - a;
  const int code = below < above ? lo : above < below ? lo + 1 : (lo % 2 == 0 ? lo : lo + 1);
  return sign | uint8_t(code);
}

Fp8Matrix quantize_fp8_tiles(const float* x, int64_t rows, int64_t cols) {
  Fp8Matrix q;
  q.codes.resize(size_t(rows * cols));
  q.scales.resize(size_t(fp8_tiles(rows) * fp8_tiles(cols)));
  for (int64_t tr = 0; tr < fp8_tiles(rows); ++tr)
    for (int64_t tc = 0; tc < fp8_tiles(cols); ++tc) {
      const int64_t r1 = std::min(rows, (tr + 1) * kFp8TileSize), c1 = std::min(cols, (tc + 1) * kFp8TileSize);
      float amax = 0.0f;
      for (int64_t r = tr * kFp8TileSize; r < r1; ++r)
        for (int64_t c = tc * kFp8TileSize; c < c1; ++c) amax = std::max(amax, std::fabs(x[r * cols + c]));
      const float scale = amax > 0.0f ? amax / kFp8Max : 1.0f;
      q.scales[size_t(tr * fp8_tiles(cols) + tc)] = scale;
      for (int64_t r = tr * kFp8TileSize; r < r1; ++r)
        for (int64_t c = tc * kFp8TileSize; c < c1; ++c) q.codes[size_t(r * cols + c)] = f32_to_f8_e4m3(x[r * cols + c] / scale);
    }
  return q;
}

void dequantize_fp8_tiles(const Fp8Matrix& q, int64_t rows, int64_t cols, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r * cols + c] = f8_e4m3_to_f32(q.codes[size_t(r * cols + c)]) *
                          q.scales[size_t((r / kFp8TileSize) * fp8_tiles(cols) + c / kFp8TileSize)];
}

}  // namespace dsv2
