// Test helpers over whole-model logits: every position's logits of a token sequence, their errors
// against other logits, perplexity, and the default model's fixed text.
#pragma once
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "model/deepseek_v2.h"
#include "model/model.h"

namespace dsv2::test {

// All-position logits [n, vocab] of `ids` through `path` (the absorbed path one token at a time), f32 cache.
std::vector<float> all_position_logits(const LoadedModel& m, const std::vector<int32_t>& ids, AttentionPath path,
                                       ThreadPool& pool);

// Relative L2 error per position of a against b ([n, vocab] each): mean and max; max_abs over all values.
struct PositionErrors {
  double mean = 0, max = 0, max_abs = 0;
};
PositionErrors position_errors(const std::vector<float>& a, const std::vector<float>& b, int64_t vocab);

// Mean negative log-likelihood of ids[p + 1] under logits row p.
double mean_nll(const std::vector<float>& logits, const std::vector<int32_t>& ids, int64_t vocab);

// The first n ids of tests/data/brown_tail.txt under models/default's tokenizer (BOS first).
std::vector<int32_t> default_model_text_ids(size_t n);

}  // namespace dsv2::test
