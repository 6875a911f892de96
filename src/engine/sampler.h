// Token selection from one row of logits: greedy, or sampling with the usual warpers applied
// in Hugging Face's order (repetition penalty, temperature, top-k, top-p, min-p), after OpenAI's
// presence and frequency penalties.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace dsv2 {

struct SamplingOptions {
  float temperature = 0.0f;         // 0: greedy (argmax)
  int64_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off; > 1 discourages tokens already in the sequence
  // OpenAI's penalties over the generated tokens: logit -= count * frequency + (count > 0) * presence.
  float presence_penalty = 0.0f;    // 0: off; in [-2, 2]
  float frequency_penalty = 0.0f;   // 0: off; in [-2, 2]
  uint64_t seed = 0;
};

// Throws Error naming the option if a value is out of range.
void validate_sampling_options(const SamplingOptions& o);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // logits: [vocab] (modified in place); history: the tokens so far, the first n_prompt of them the
  // prompt (the presence and frequency penalties count only the tokens after it).
  int32_t sample(float* logits, int64_t vocab, const std::vector<int32_t>& history, int64_t n_prompt = 0);

 private:
  SamplingOptions o_;
  std::mt19937_64 rng_;
  std::vector<int32_t> cand_;   // [vocab] candidate ids (scratch)
  std::vector<double> weights_; // unnormalised probabilities of the sorted candidates (scratch)
};

}  // namespace dsv2
