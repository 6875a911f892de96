#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"

namespace dsv2 {

void validate_sampling_options(const SamplingOptions& o) {
  check(std::isfinite(o.temperature) && o.temperature >= 0, "--temperature must be >= 0 (seen " + std::to_string(o.temperature) + ")");
  check(o.top_k >= 0, "--top-k must be >= 0 (seen " + std::to_string(o.top_k) + ")");
  check(o.top_p > 0 && o.top_p <= 1, "--top-p must be in (0, 1] (seen " + std::to_string(o.top_p) + ")");
  check(o.min_p >= 0 && o.min_p <= 1, "--min-p must be in [0, 1] (seen " + std::to_string(o.min_p) + ")");
  check(std::isfinite(o.repetition_penalty) && o.repetition_penalty > 0,
        "--repetition-penalty must be > 0 (seen " + std::to_string(o.repetition_penalty) + ")");
  check(std::isfinite(o.presence_penalty) && o.presence_penalty >= -2 && o.presence_penalty <= 2,
        "presence_penalty must be in [-2, 2] (seen " + std::to_string(o.presence_penalty) + ")");
  check(std::isfinite(o.frequency_penalty) && o.frequency_penalty >= -2 && o.frequency_penalty <= 2,
        "frequency_penalty must be in [-2, 2] (seen " + std::to_string(o.frequency_penalty) + ")");
}

Sampler::Sampler(const SamplingOptions& options) : o_(options), rng_(options.seed) { validate_sampling_options(options); }

int32_t Sampler::sample(float* logits, int64_t vocab, const std::vector<int32_t>& history, int64_t n_prompt) {
  if (o_.presence_penalty != 0.0f || o_.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int64_t> counts;
    for (size_t i = size_t(std::clamp<int64_t>(n_prompt, 0, int64_t(history.size()))); i < history.size(); ++i) ++counts[history[i]];
    for (auto [id, count] : counts) {
      if (id < 0 || id >= vocab) continue;
      logits[id] -= float(count) * o_.frequency_penalty + o_.presence_penalty;
    }
  }
  if (o_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen(history.begin(), history.end());
    for (int32_t id : seen) {
      if (id < 0 || id >= vocab) continue;
      float& l = logits[id];
      l = l > 0 ? l / o_.repetition_penalty : l * o_.repetition_penalty;
    }
  }
  if (o_.temperature == 0.0f) return int32_t(std::max_element(logits, logits + vocab) - logits);

  // Weights exp((logit - max) / T) of the candidates the warpers keep, most likely first (ties:
  // lower id first): the top-k, then the shortest prefix reaching top_p of their mass, then those
  // with at least min_p times the top probability. Only as many candidates as the cuts need are
  // sorted; with no cut the draw walks the whole vocabulary in id order (the same distribution,
  // without sorting 100K logits per token).
  const float inv_t = 1.0f / o_.temperature;
  const float mx = *std::max_element(logits, logits + vocab);
  auto weight = [&](int32_t id) { return std::exp((logits[id] - mx) * inv_t); };
  const bool top_k_cuts = o_.top_k > 0 && o_.top_k < vocab;
  if (!top_k_cuts && o_.top_p >= 1.0f && o_.min_p <= 0.0f) {
    weights_.resize(static_cast<size_t>(vocab));
    double total = 0;
    for (int64_t i = 0; i < vocab; ++i) total += weights_[size_t(i)] = weight(int32_t(i));
    double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
    for (int64_t i = 0; i < vocab; ++i)
      if ((r -= weights_[size_t(i)]) < 0) return int32_t(i);
    return int32_t(vocab - 1);
  }
  cand_.resize(static_cast<size_t>(vocab));
  std::iota(cand_.begin(), cand_.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t n = vocab;  // candidates left; the first `sorted` of them in order
  double total = 0;   // their mass
  if (top_k_cuts) {
    n = o_.top_k;
    std::nth_element(cand_.begin(), cand_.begin() + (n - 1), cand_.end(), by_logit);
    for (int64_t i = 0; i < n; ++i) total += weight(cand_[size_t(i)]);
  } else {
    for (int64_t i = 0; i < vocab; ++i) total += weight(int32_t(i));
  }
  const auto first_n = cand_.begin() + n;
  // Grows the sorted prefix until both cuts fall inside it.
  int64_t keep = n;
  for (int64_t sorted = std::min<int64_t>(n, 256);; sorted = std::min(n, sorted * 8)) {
    std::partial_sort(cand_.begin(), cand_.begin() + sorted, first_n, by_logit);
    weights_.resize(static_cast<size_t>(sorted));
    for (int64_t i = 0; i < sorted; ++i) weights_[size_t(i)] = weight(cand_[size_t(i)]);
    keep = sorted;
    bool decided = sorted == n;
    if (o_.top_p < 1.0f) {  // the smallest prefix whose mass reaches top_p
      double mass = 0;
      int64_t k = 0;
      while (k < sorted && mass < o_.top_p * total) mass += weights_[size_t(k++)];
      if (mass >= o_.top_p * total) {
        keep = std::max<int64_t>(k, 1);
        decided = true;
      }
    }
    if (o_.min_p > 0.0f && (decided || o_.top_p >= 1.0f)) {  // drop tokens below min_p times the top one
      int64_t k = 1;
      while (k < keep && weights_[size_t(k)] >= o_.min_p * weights_[0]) ++k;
      decided = decided || k < keep;
      keep = k;
    }
    if (decided) break;
  }
  double kept = 0;
  for (int64_t i = 0; i < keep; ++i) kept += weights_[size_t(i)];
  double r = std::uniform_real_distribution<double>(0.0, kept)(rng_);
  for (int64_t i = 0; i < keep; ++i)
    if ((r -= weights_[size_t(i)]) < 0) return cand_[size_t(i)];
  return cand_[size_t(keep - 1)];
}

}  // namespace dsv2
