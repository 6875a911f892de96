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

GenerationResult generate(DeepseekV2& model, const std::vector<int32_t>& prompt, const GenerationOptions& options,
                          const std::function<bool(int32_t)>& on_token) {
  const ModelConfig& cfg = model.config();
  check(!prompt.empty(), "the prompt holds no tokens");
  check(options.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  const int64_t limit = options.context_limit > 0 ? options.context_limit : cfg.max_position_embeddings;
  check(int64_t(prompt.size()) <= limit, "the prompt has " + std::to_string(prompt.size()) +
                                              " tokens, more than the context limit of " + std::to_string(limit));
  const int64_t capacity = std::min<int64_t>(limit, int64_t(prompt.size()) + std::max<int64_t>(options.max_new_tokens, 1));
  LatentCache cache = model.make_cache(capacity, options.cache_dtype);
  Sampler sampler(options.sampling);
  GenerationResult result;
  std::vector<int32_t> history = prompt;
  std::vector<float> logits;

  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  model.forward(prompt, cache, AttentionPath::Decompressed, LogitsRows::Last, logits);
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
    if (cache.length() >= cache.capacity()) {
      result.stop = StopReason::ContextFull;
      break;
    }
    model.forward({next}, cache, AttentionPath::Absorbed, LogitsRows::Last, logits);
  }
  result.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return result;
}

}  // namespace dsv2
