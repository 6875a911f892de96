// Decoupled RoPE with YaRN (spec §6): frequencies, amplitude and the interleaved-pair rotation.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dsv2 {

class RotaryEmbedding {
 public:
  explicit RotaryEmbedding(const ModelConfig& cfg);

  // [qk_rope_head_dim / 2] inverse frequencies, computed in f32 as the reference does.
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  float amplitude() const { return amplitude_; }
  // cos/sin of the angles pos·inv_freq[i] (f32 product), times the amplitude: [n_pairs] each.
  void angles(int64_t pos, float* cos, float* sin) const;
  // Rotates x: [count, 2·n_pairs] vectors (stride `stride` floats apart) at position pos, in place.
  void rotate(float* x, int64_t count, int64_t stride, int64_t pos) const;
  int64_t n_pairs() const { return int64_t(inv_freq_.size()); }

 private:
  std::vector<float> inv_freq_;
  float amplitude_ = 1.0f;
};

// YaRN correction range [low, high] (spec §6.1) for dim, base and original context length.
std::pair<double, double> yarn_correction_range(double beta_fast, double beta_slow, int64_t dim, double base,
                                                int64_t original_max_position_embeddings);

}  // namespace dsv2
