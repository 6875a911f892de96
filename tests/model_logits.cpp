#include "model_logits.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace dsv2::test {

std::vector<float> all_position_logits(const LoadedModel& m, const std::vector<int32_t>& ids, AttentionPath path,
                                       ThreadPool& pool) {
  DeepseekV2 net(m.config, m.weights, pool);
  LatentCache cache = net.make_cache(int64_t(ids.size()), DType::F32);
  std::vector<float> all, part;
  if (path == AttentionPath::Decompressed) {
    net.forward(ids, cache, path, LogitsRows::All, all);
    return all;
  }
  for (int32_t id : ids) {
    net.forward({id}, cache, path, LogitsRows::Last, part);
    all.insert(all.end(), part.begin(), part.end());
  }
  return all;
}

PositionErrors position_errors(const std::vector<float>& a, const std::vector<float>& b, int64_t vocab) {
  PositionErrors e;
  const int64_t n = int64_t(a.size()) / vocab;
  for (int64_t p = 0; p < n; ++p) {
    const double r = rel_l2(&a[size_t(p * vocab)], &b[size_t(p * vocab)], size_t(vocab));
    e.mean += r / double(n);
    e.max = std::max(e.max, r);
  }
  for (size_t i = 0; i < a.size(); ++i) e.max_abs = std::max(e.max_abs, std::fabs(double(a[i]) - b[i]));
  return e;
}

double mean_nll(const std::vector<float>& logits, const std::vector<int32_t>& ids, int64_t vocab) {
  double nll = 0;
  const int64_t n = int64_t(ids.size());
  for (int64_t p = 0; p + 1 < n; ++p) {
    const float* row = &logits[size_t(p * vocab)];
    const double mx = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - mx);
    nll += (std::log(sum) + mx - row[ids[size_t(p + 1)]]) / double(n - 1);
  }
  return nll;
}

std::vector<int32_t> default_model_text_ids(size_t n) {
  const std::string dir = std::string(DSV2_SOURCE_DIR) + "/models/default";
  std::vector<int32_t> ids =
      Tokenizer::load(dir).encode(read_file(std::string(DSV2_TEST_DATA_DIR) + "/brown_tail.txt"), SpecialTokens::Add);
  ids.resize(n);
  return ids;
}

}  // namespace dsv2::test
