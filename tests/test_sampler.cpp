#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "engine/sampler.h"

namespace dsv2 {
namespace {

std::map<int32_t, int> histogram(SamplingOptions o, const std::vector<float>& logits, int draws,
                                 const std::vector<int32_t>& history = {}) {
  Sampler s(o);
  std::map<int32_t, int> h;
  for (int i = 0; i < draws; ++i) {
    std::vector<float> l = logits;
    ++h[s.sample(l.data(), int64_t(l.size()), history)];
  }
  return h;
}

const std::vector<float> kLogits = {1.0f, 3.0f, 2.0f, 0.5f, 2.9f};  // probabilities at T=1: .054 .402 .148 .033 .363

TEST(Sampler, GreedyIsArgmax) {
  auto h = histogram({}, kLogits, 10);
  EXPECT_EQ(h.size(), 1u);
  EXPECT_EQ(h.begin()->first, 1);
}

TEST(Sampler, SameSeedSameTokens) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.seed = 42;
  Sampler a(o), b(o);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> l1 = kLogits, l2 = kLogits;
    EXPECT_EQ(a.sample(l1.data(), 5, {}), b.sample(l2.data(), 5, {}));
  }
}

TEST(Sampler, TemperatureSamplingFollowsTheDistribution) {
  SamplingOptions o;
  o.temperature = 1.0f;
  auto h = histogram(o, kLogits, 20000);
  EXPECT_EQ(h.size(), 5u);
  double z = 0;
  for (float l : kLogits) z += std::exp(double(l));
  // 20000 draws: the standard error of a frequency near 0.4 is 0.0035.
  EXPECT_NEAR(h[1] / 20000.0, std::exp(3.0) / z, 0.015);
  EXPECT_NEAR(h[3] / 20000.0, std::exp(0.5) / z, 0.006);
}

TEST(Sampler, TopKTopPMinPRestrictTheCandidates) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_k = 2;
  auto h = histogram(o, kLogits, 2000);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(1) && h.count(4));
  o.top_k = 0;
  o.top_p = 0.5f;  // 0.402 < 0.5: the nucleus needs tokens 1 and 4
  h = histogram(o, kLogits, 2000);
  EXPECT_EQ(h.size(), 2u);
  o.top_p = 1.0f;
  o.min_p = 0.3f;  // keeps p >= 0.3 * 0.402: tokens 1, 4, 2
  h = histogram(o, kLogits, 2000);
  EXPECT_EQ(h.size(), 3u);
  EXPECT_TRUE(h.count(2));
}

// The warpers' kept set by a full sort (the definition), for a large vocabulary.
std::set<int32_t> kept_by_full_sort(const std::vector<float>& logits, const SamplingOptions& o) {
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  size_t n = o.top_k > 0 ? std::min(order.size(), size_t(o.top_k)) : order.size();
  std::vector<double> p(n);
  double z = 0;
  for (size_t i = 0; i < n; ++i) z += p[i] = std::exp(double(logits[order[i]] - logits[order[0]]) / o.temperature);
  size_t keep = n;
  if (o.top_p < 1) {
    double mass = 0;
    keep = 0;
    while (keep < n && mass < o.top_p) mass += p[keep++] / z;
  }
  if (o.min_p > 0) {
    size_t k = 1;
    while (k < keep && p[k] >= o.min_p * p[0]) ++k;
    keep = k;
  }
  return std::set<int32_t>(order.begin(), order.begin() + ptrdiff_t(keep));
}

TEST(Sampler, CutsOverALargeVocabularyKeepWhatAFullSortKeeps) {
  std::mt19937 rng(7);
  std::normal_distribution<float> peaked(0.0f, 3.0f);
  std::uniform_real_distribution<float> flat(0.0f, 0.05f);  // a random model: the nucleus is half the vocabulary
  for (bool is_flat : {false, true}) {
    std::vector<float> logits(30000);
    for (float& l : logits) l = is_flat ? flat(rng) : peaked(rng);
    for (SamplingOptions o : {SamplingOptions{.temperature = 1.0f, .top_p = 0.9f},
                              SamplingOptions{.temperature = 0.7f, .min_p = 0.05f},
                              SamplingOptions{.temperature = 1.0f, .top_k = 500, .top_p = 0.8f},
                              SamplingOptions{.temperature = 1.0f, .top_p = 0.5f, .min_p = 0.9f}}) {
      const std::set<int32_t> want = kept_by_full_sort(logits, o);
      auto h = histogram(o, logits, is_flat ? 40 : 300);
      for (auto [id, count] : h) EXPECT_TRUE(want.count(id)) << "token " << id << " is outside the kept set (flat " << is_flat << ")";
      if (want.size() <= 3) {
        EXPECT_EQ(h.size(), want.size());
      }
    }
  }
}

TEST(Sampler, RepetitionPenaltyDemotesSeenTokens) {
  SamplingOptions o;
  o.repetition_penalty = 1.1f;  // 3.0 / 1.1 = 2.73 < 2.9
  auto h = histogram(o, kLogits, 3, {1});
  EXPECT_EQ(h.begin()->first, 4);
  std::vector<float> neg = {-1.0f, -1.05f};
  o.repetition_penalty = 2.0f;  // negative logits are multiplied: -1 -> -2
  h = histogram(o, neg, 3, {0});
  EXPECT_EQ(h.begin()->first, 1);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountGeneratedTokensOnly) {
  // history: prompt {1, 1} then generated {1, 4, 4}; token 1 counted once, token 4 twice.
  const std::vector<int32_t> history = {1, 1, 1, 4, 4};
  SamplingOptions o;
  o.presence_penalty = 0.5f;
  o.frequency_penalty = 0.25f;
  Sampler s(o);
  std::vector<float> l = kLogits;
  s.sample(l.data(), 5, history, 2);
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[1], 3.0f - 0.25f - 0.5f);
  EXPECT_FLOAT_EQ(l[2], 2.0f);
  EXPECT_FLOAT_EQ(l[4], 2.9f - 2 * 0.25f - 0.5f);
  // Greedy follows the penalised logits: 2.9 - 1.0 < 2.0 < 3.0 - 0.75.
  o.frequency_penalty = 1.0f;
  o.presence_penalty = 0.5f;
  Sampler strong(o);
  std::vector<float> l2 = kLogits;
  EXPECT_EQ(strong.sample(l2.data(), 5, history, 2), 2);
  SamplingOptions bad;
  bad.presence_penalty = 2.5f;
  EXPECT_THROW(validate_sampling_options(bad), Error);
  bad.presence_penalty = 0;
  bad.frequency_penalty = -3;
  EXPECT_THROW(validate_sampling_options(bad), Error);
}

TEST(Sampler, RejectsBadOptions) {
  SamplingOptions o;
  o.temperature = -1;
  EXPECT_THROW(Sampler{o}, Error);
  o = {};
  o.top_p = 0;
  EXPECT_THROW(Sampler{o}, Error);
  o = {};
  o.min_p = 1.5f;
  EXPECT_THROW(Sampler{o}, Error);
  o = {};
  o.repetition_penalty = 0;
  EXPECT_THROW(Sampler{o}, Error);
  o = {};
  o.top_k = -3;
  EXPECT_THROW(Sampler{o}, Error);
}

}  // namespace
}  // namespace dsv2
