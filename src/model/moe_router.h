// DeepSeekMoE expert selection (spec §7 steps 2-4), as DeepSeek's original code does it.
#pragma once
#include <cstdint>

#include "model/config.h"

namespace dsv2 {

// scores: [E] softmax probabilities of one token (f32). Writes the K chosen experts and their
// gate weights: greedy top-K, or group-limited (keep the topk_group groups with the largest
// max score, zero the rest, then top-K). Ties go to the lower expert index. Weights are
// renormalised (no scaling) when norm_topk_prob and K > 1, else multiplied by routed_scaling_factor.
void route_token(const ModelConfig& cfg, const float* scores, int32_t* expert_ids, float* gate_weights);

}  // namespace dsv2
