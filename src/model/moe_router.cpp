#include "model/moe_router.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace dsv2 {

namespace {
// Indices of the k largest values (ties: lower index first), in descending order of value.
std::vector<int32_t> top_k(const std::vector<float>& v, int64_t k) {
  std::vector<int32_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    return v[size_t(a)] > v[size_t(b)] || (v[size_t(a)] == v[size_t(b)] && a < b);
  });
  idx.resize(static_cast<size_t>(k));
  return idx;
}
}  // namespace

void route_token(const ModelConfig& cfg, const float* scores, int32_t* expert_ids, float* gate_weights) {
  const int64_t E = cfg.n_routed_experts, K = cfg.num_experts_per_tok;
  std::vector<float> s(scores, scores + E);
  if (cfg.topk_method == TopkMethod::GroupLimitedGreedy) {
    const int64_t per_group = E / cfg.n_group;
    std::vector<float> group_score(size_t(cfg.n_group));
    for (int64_t g = 0; g < cfg.n_group; ++g)
      group_score[size_t(g)] = *std::max_element(s.begin() + g * per_group, s.begin() + (g + 1) * per_group);
    std::vector<bool> keep(size_t(cfg.n_group), false);
    for (int32_t g : top_k(group_score, cfg.topk_group)) keep[size_t(g)] = true;
    for (int64_t e = 0; e < E; ++e)
      if (!keep[size_t(e / per_group)]) s[size_t(e)] = 0.0f;
  }
  std::vector<int32_t> chosen = top_k(s, K);
  float sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    expert_ids[k] = chosen[size_t(k)];
    gate_weights[k] = s[size_t(chosen[size_t(k)])];
    sum += gate_weights[k];
  }
  if (K > 1 && cfg.norm_topk_prob) {
    for (int64_t k = 0; k < K; ++k) gate_weights[k] /= sum + 1e-20f;
  } else {
    for (int64_t k = 0; k < K; ++k) gate_weights[k] *= float(cfg.routed_scaling_factor);
  }
}

}  // namespace dsv2
