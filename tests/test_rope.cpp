#include <gtest/gtest.h>

#include <cmath>

#include "model/config.h"
#include "model/rope.h"

namespace dsv2 {
namespace {

TEST(Rope, YarnFrequenciesMatchTheSpecTable) {
  // spec §6.1, fp64 values; the f32 computation differs in the last ulp.
  const double table[32] = {1.0,            7.498942093e-1, 5.623413252e-1, 4.216965034e-1, 3.162277660e-1,
                            2.371373706e-1, 1.778279410e-1, 1.333521432e-1, 1.0e-1,         7.498942093e-2,
                            5.623413252e-2, 3.900692657e-2, 2.687936011e-2, 1.837814622e-2, 1.244795587e-2,
                            8.334508951e-3, 5.5e-3,         3.561997494e-3, 2.249365301e-3, 1.370513636e-3,
                            7.905694150e-4, 4.149903985e-4, 1.778279410e-4, 3.333803580e-5, 2.5e-5,
                            1.874735523e-5, 1.405853313e-5, 1.054241259e-5, 7.905694150e-6, 5.928434264e-6,
                            4.445698525e-6, 3.333803580e-6};
  RotaryEmbedding rope(preset_config("v2"));
  ASSERT_EQ(rope.inv_freq().size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(rope.inv_freq()[size_t(i)], table[i], table[i] * 1e-6) << "i=" << i;
  EXPECT_EQ(rope.amplitude(), 1.0f);
}

TEST(Rope, CorrectionRangeOfTheReleasedModels) {
  auto [low, high] = yarn_correction_range(32, 1, 64, 10000, 4096);
  EXPECT_EQ(low, 10);
  EXPECT_EQ(high, 23);
}

TEST(Rope, PlainRopeAndAmplitude) {
  ModelConfig c = preset_config("v2");
  c.yarn.reset();
  RotaryEmbedding plain(c);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(plain.inv_freq()[size_t(i)], std::pow(10000.0, -i / 32.0), 1e-6 * std::pow(10000.0, -i / 32.0));
  c = preset_config("v2");
  c.yarn->mscale = 1.0;  // != mscale_all_dim: amplitude m(1.0) / m(0.707)
  EXPECT_NEAR(RotaryEmbedding(c).amplitude(), (0.1 * std::log(40.0) + 1) / (0.0707 * std::log(40.0) + 1), 1e-6);
}

TEST(Rope, RotatesAdjacentPairsByPositionTimesFrequency) {
  ModelConfig c = preset_config("tiny");
  RotaryEmbedding rope(c);
  const int64_t d = c.qk_rope_head_dim;
  std::vector<float> x(static_cast<size_t>(d));
  for (int64_t i = 0; i < d; ++i) x[size_t(i)] = float(i + 1);
  std::vector<float> y = x;
  const int64_t pos = 37;
  rope.rotate(y.data(), 1, d, pos);
  for (int64_t i = 0; i < d / 2; ++i) {
    double phi = double(float(pos) * rope.inv_freq()[size_t(i)]);
    double a = x[size_t(2 * i)], b = x[size_t(2 * i + 1)];
    EXPECT_NEAR(y[size_t(2 * i)], a * std::cos(phi) - b * std::sin(phi), 1e-5);
    EXPECT_NEAR(y[size_t(2 * i + 1)], a * std::sin(phi) + b * std::cos(phi), 1e-5);
  }
  // Position 0 is the identity.
  std::vector<float> z = x;
  rope.rotate(z.data(), 1, d, 0);
  EXPECT_EQ(z, x);
}

}  // namespace
}  // namespace dsv2
