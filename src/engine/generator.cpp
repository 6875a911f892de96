#include "engine/generator.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

namespace dsv2 {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::Eos: return "eos";
    case StopReason::MaxTokens: return "max_tokens";
    case StopReason::ContextFull: return "context_full";
    case StopReason::Cancelled: return "cancelled";
  }
  return "?";
}

GenerationResult generate(SequenceModel& sequence, const std::vector<int32_t>& prompt, const GenerationOptions& options,
                          const std::function<bool(int32_t)>& on_token) {
  const ModelConfig& cfg = sequence.config();
  check(!prompt.empty(), "the prompt holds no tokens");
  check(options.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  check(sequence.length() == 0, "generate: the sequence is not empty");
  check(int64_t(prompt.size()) <= sequence.capacity(), "the prompt has " + std::to_string(prompt.size()) +
                                                            " tokens, more than the context of " +
                                                            std::to_string(sequence.capacity()));
  for (int32_t id : prompt)
    check(id >= 0 && id < cfg.vocab_size, "prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                              std::to_string(cfg.vocab_size) + ")");
  Sampler sampler(options.sampling);
  GenerationResult result;
  std::vector<int32_t> history = prompt;
  std::vector<float> logits;

  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  sequence.append(prompt, AttentionPath::Decompressed, LogitsRows::Last, logits);
  result.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  auto t1 = clock::now();
  while (int64_t(result.tokens.size()) < options.max_new_tokens) {
    int32_t next = sampler.sample(logits.data(), cfg.vocab_size, history);
    result.tokens.push_back(next);
    history.push_back(next);
    bool go_on = on_token ? on_token(next) : true;
    if (options.stop_at_eos && std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), next) != cfg.eos_token_ids.end()) {
      result.stop = StopReason::Eos;
      break;
    }
    if (!go_on) {
      result.stop = StopReason::Cancelled;
      break;
    }
    if (int64_t(result.tokens.size()) == options.max_new_tokens) break;
    if (sequence.length() >= sequence.capacity()) {
      result.stop = StopReason::ContextFull;
      break;
    }
    sequence.append({next}, AttentionPath::Absorbed, LogitsRows::Last, logits);
    ++result.decode_steps;
  }
  result.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return result;
}

}  // namespace dsv2
