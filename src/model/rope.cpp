#include "model/rope.h"

#include <algorithm>
#include <cmath>

#include "ops/ref/ops_ref.h"

namespace dsv2 {

namespace {
double correction_dim(double n_rotations, int64_t dim, double base, int64_t original) {
  return double(dim) * std::log(double(original) / (n_rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}
}  // namespace

std::pair<double, double> yarn_correction_range(double beta_fast, double beta_slow, int64_t dim, double base,
                                                int64_t original) {
  double low = std::floor(correction_dim(beta_fast, dim, base, original));
  double high = std::ceil(correction_dim(beta_slow, dim, base, original));
  return {std::max(low, 0.0), std::min(high, double(dim - 1))};
}

RotaryEmbedding::RotaryEmbedding(const ModelConfig& cfg) {
  const int64_t dim = cfg.qk_rope_head_dim;
  const int64_t n = dim / 2;
  inv_freq_.resize(static_cast<size_t>(n));
  std::vector<float> pos_freq(static_cast<size_t>(n));  // base ** (2i / dim), the exponent in f32 as arange(0, dim, 2).float() / dim
  for (int64_t i = 0; i < n; ++i) {
    pos_freq[size_t(i)] = float(std::pow(cfg.rope_theta, double(float(2 * i) / float(dim))));
    inv_freq_[size_t(i)] = 1.0f / pos_freq[size_t(i)];
  }
  if (cfg.yarn) {
    const YarnScaling& y = *cfg.yarn;
    auto [low, high] = yarn_correction_range(y.beta_fast, y.beta_slow, dim, cfg.rope_theta, y.original_max_position_embeddings);
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < n; ++i) {
      float extra = inv_freq_[size_t(i)];
      float inter = 1.0f / (float(y.factor) * pos_freq[size_t(i)]);
      float ramp = std::clamp((float(i) - float(low)) / (float(high) - float(low)), 0.0f, 1.0f);
      float w_extra = 1.0f - ramp;
      inv_freq_[size_t(i)] = inter * (1.0f - w_extra) + extra * w_extra;
    }
  }
  amplitude_ = float(cfg.rope_amplitude());
}

void RotaryEmbedding::angles(int64_t pos, float* cos, float* sin) const {
  for (size_t i = 0; i < inv_freq_.size(); ++i) {
    float phi = float(pos) * inv_freq_[i];
    cos[i] = float(std::cos(double(phi))) * amplitude_;
    sin[i] = float(std::sin(double(phi))) * amplitude_;
  }
}

void RotaryEmbedding::rotate(float* x, int64_t count, int64_t stride, int64_t pos) const {
  const int64_t n = n_pairs();
  std::vector<float> c(static_cast<size_t>(n)), s(static_cast<size_t>(n));
  angles(pos, c.data(), s.data());
  for (int64_t k = 0; k < count; ++k) ref::rope_pairs(x + k * stride, c.data(), s.data(), n);
}

}  // namespace dsv2
