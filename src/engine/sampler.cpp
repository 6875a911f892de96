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

  // Candidates sorted by logit, descending (ties: lower id first).
  std::vector<int32_t> cand(static_cast<size_t>(vocab));
  std::iota(cand.begin(), cand.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  int64_t n = vocab;
  if (o_.top_k > 0 && o_.top_k < vocab) {
    n = o_.top_k;
    std::partial_sort(cand.begin(), cand.begin() + n, cand.end(), by_logit);
  } else {
    std::sort(cand.begin(), cand.end(), by_logit);
  }
  std::vector<double> p(static_cast<size_t>(n));
  const double mx = logits[cand[0]] / double(o_.temperature);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += p[size_t(i)] = std::exp(logits[cand[size_t(i)]] / double(o_.temperature) - mx);
  for (auto& v : p) v /= sum;
  if (o_.top_p < 1.0f) {  // keep the smallest prefix whose mass reaches top_p
    double mass = 0;
    int64_t keep = 0;
    while (keep < n && mass < o_.top_p) mass += p[size_t(keep++)];
    n = std::max<int64_t>(keep, 1);
  }
  if (o_.min_p > 0.0f) {  // drop tokens below min_p times the top probability
    int64_t keep = 1;
    while (keep < n && p[size_t(keep)] >= o_.min_p * p[0]) ++keep;
    n = keep;
  }
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += p[size_t(i)];
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (int64_t i = 0; i < n; ++i) {
    r -= p[size_t(i)];
    if (r < 0) return cand[size_t(i)];
  }
  return cand[size_t(n - 1)];
}

}  // namespace dsv2
