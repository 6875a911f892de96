// The generation loop for one sequence: prefill the prompt (decompressed attention), then
// decode one token at a time over the latent cache (absorbed attention).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/sampler.h"
#include "model/deepseek_v2.h"

namespace dsv2 {

enum class StopReason { Eos, MaxTokens, ContextFull, Cancelled };
const char* stop_reason_name(StopReason r);

struct GenerationOptions {
  int64_t max_new_tokens = 16;
  SamplingOptions sampling;
  bool stop_at_eos = true;
  DType cache_dtype = DType::F32;
  int64_t context_limit = 0;  // 0: the model's max_position_embeddings
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (the EOS that stopped it included)
  StopReason stop = StopReason::MaxTokens;
  double prefill_seconds = 0, decode_seconds = 0;
};

// on_token(id) is called as each token is produced; returning false stops generation.
GenerationResult generate(DeepseekV2& model, const std::vector<int32_t>& prompt, const GenerationOptions& options,
                          const std::function<bool(int32_t)>& on_token = {});

}  // namespace dsv2
