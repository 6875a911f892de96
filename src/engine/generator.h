// The generation loop for one sequence: prefill the prompt (decompressed attention), then
// decode one token at a time over the latent cache (absorbed attention).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/sampler.h"
#include "engine/sequence_model.h"

namespace dsv2 {

enum class StopReason { Eos, MaxTokens, ContextFull, Cancelled };
const char* stop_reason_name(StopReason r);

struct GenerationOptions {
  int64_t max_new_tokens = 16;
  SamplingOptions sampling;
  bool stop_at_eos = true;
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (the EOS that stopped it included)
  StopReason stop = StopReason::MaxTokens;
  int64_t decode_steps = 0;     // forwards after the prefill
  double prefill_seconds = 0, decode_seconds = 0;
};

// Extends an empty `sequence` with the prompt and up to max_new_tokens tokens.
// on_token(id) is called as each token is produced; returning false stops generation.
GenerationResult generate(SequenceModel& sequence, const std::vector<int32_t>& prompt, const GenerationOptions& options,
                          const std::function<bool(int32_t)>& on_token = {});

}  // namespace dsv2
