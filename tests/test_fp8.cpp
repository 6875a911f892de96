// The host reference of FP8 (E4M3) weights: the codes' values, rounding to nearest (ties to the
// even code), saturation, and the tile quantization's scales and error.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/dtype.h"
#include "core/fp8.h"
#include "test_util.h"

namespace dsv2 {
namespace {

TEST(Fp8, KnownValues) {
  EXPECT_EQ(f8_e4m3_to_f32(0x38), 1.0f);
  EXPECT_EQ(f8_e4m3_to_f32(0x7e), 448.0f);
  EXPECT_EQ(f8_e4m3_to_f32(0xfe), -448.0f);
  EXPECT_EQ(f8_e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // the smallest subnormal
  EXPECT_EQ(f8_e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // the smallest normal
  EXPECT_TRUE(std::isnan(f8_e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(f8_e4m3_to_f32(0xff)));
  EXPECT_EQ(f32_to_f8_e4m3(1.0f), 0x38);
  EXPECT_EQ(f32_to_f8_e4m3(-1.0f), 0xb8);
  EXPECT_EQ(f32_to_f8_e4m3(448.0f), 0x7e);
  EXPECT_EQ(f32_to_f8_e4m3(1e6f), 0x7e);  // saturated, never NaN
  EXPECT_EQ(f32_to_f8_e4m3(-INFINITY), 0xfe);
  EXPECT_EQ(f32_to_f8_e4m3(NAN), 0x7f);
  EXPECT_EQ(f32_to_f8_e4m3(1e-9f), 0x00);
}

TEST(Fp8, EveryFiniteCodeRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;  // NaN
    EXPECT_EQ(f32_to_f8_e4m3(f8_e4m3_to_f32(uint8_t(c))), c) << c;
  }
}

TEST(Fp8, RoundsToNearestTiesToEven) {
  // Between 1 (0x38) and 1.125 (0x39): the midpoint goes to the even code, anything past it up.
  EXPECT_EQ(f32_to_f8_e4m3(1.0625f), 0x38);
  EXPECT_EQ(f32_to_f8_e4m3(std::nextafter(1.0625f, 2.0f)), 0x39);
  EXPECT_EQ(f32_to_f8_e4m3(std::nextafter(1.0625f, 0.0f)), 0x38);
  EXPECT_EQ(f32_to_f8_e4m3(1.1875f), 0x3a);  // between 0x39 and 0x3a: the even one
  EXPECT_EQ(f32_to_f8_e4m3(std::ldexp(1.0f, -10)), 0x00);  // half the smallest subnormal
  EXPECT_EQ(f32_to_f8_e4m3(std::ldexp(3.0f, -10)), 0x02);  // between 0x01 and 0x02
  // Every value lands on a nearest code.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-460.0f, 460.0f);
  for (int i = 0; i < 20000; ++i) {
    const float x = u(rng) * (i % 2 ? 1.0f : 1e-3f);
    const float got = f8_e4m3_to_f32(f32_to_f8_e4m3(x));
    for (int c = 0; c < 256; ++c) {
      if ((c & 0x7f) == 0x7f) continue;
      ASSERT_LE(std::fabs(got - std::clamp(x, -448.0f, 448.0f)), std::fabs(f8_e4m3_to_f32(uint8_t(c)) - std::clamp(x, -448.0f, 448.0f))) << x;
    }
  }
}

TEST(Fp8, TileQuantization) {
  std::mt19937 rng(5);
  const int64_t rows = 300, cols = 130;  // 3 × 2 tiles, the last ones partial
  std::vector<float> x = test::randn(size_t(rows * cols), rng);
  for (int64_t r = 128; r < 256; ++r)  // tile (1, 0) all zeros; tile (0, 1) holds one outlier
    for (int64_t c = 0; c < 128; ++c) x[size_t(r * cols + c)] = 0.0f;
  x[size_t(5 * cols + 129)] = 1000.0f;
  const Fp8Matrix q = quantize_fp8_tiles(x.data(), rows, cols);
  ASSERT_EQ(q.scales.size(), 6u);
  EXPECT_EQ(q.scales[2], 1.0f);
  EXPECT_EQ(q.scales[1], 1000.0f / 448.0f);
  std::vector<float> back(x.size());
  dequantize_fp8_tiles(q, rows, cols, back.data());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = size_t(r * cols + c);
      const float scale = q.scales[size_t((r / 128) * 2 + c / 128)];
      if (r % 128 == 0 && c % 128 == 0) {  // each tile's scale, once
        float amax = 0;
        for (int64_t rr = r; rr < std::min(rows, r + 128); ++rr)
          for (int64_t cc = c; cc < std::min(cols, c + 128); ++cc) amax = std::max(amax, std::fabs(x[size_t(rr * cols + cc)]));
        EXPECT_EQ(scale, amax > 0 ? amax / 448.0f : 1.0f) << r << "," << c;
      }
      // 3 mantissa bits: within 1/16 relative, or half the smallest subnormal step of the tile.
      EXPECT_LE(std::fabs(back[i] - x[i]), std::max(std::fabs(x[i]) / 16.0f, scale * std::ldexp(1.0f, -10))) << r << "," << c;
    }
  EXPECT_NEAR(back[size_t(5 * cols + 129)], 1000.0f, 1e-3f);
}

}  // namespace
}  // namespace dsv2
