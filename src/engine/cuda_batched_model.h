// The engine's model on the GPU, over the GPU's paged latent cache whose blocks the engine hands out.
// With a batch-invariant model (CudaOptions::batch_invariant) every token of a step, prompt or not,
// runs through the decode kernels in groups of up to 8 (each token attends in the absorbed form
// over its own context), so that a token's result does not depend on which tokens share its
// group; otherwise prompt chunks run one sequence at a time through the prefill form (tensor cores)
// and the decode tokens of the step together.
#pragma once
#include <algorithm>
#include <climits>
#include <vector>

#include "core/error.h"
#include "engine/batched_model.h"
#include "model/cuda/deepseek_v2_cuda.h"

namespace dsv2 {

class CudaBatchedModel : public BatchedModel {
 public:
  // net must be built with cache_blocks set (the engine owns the block tables).
  explicit CudaBatchedModel(CudaDeepseekV2& net) : net_(net) {
    check(net.options().cache_blocks > 0, "the serving engine needs a GPU model built with cache_blocks");
  }
  const ModelConfig& config() const override { return net_.config(); }
  LatentPoolShape pool_shape() const override {
    return {int32_t(net_.cache_blocks()), int32_t(net_.options().block_size)};
  }
  int32_t max_batch() const override {
    return net_.options().batch_invariant ? INT32_MAX : int32_t(net_.options().max_batch);
  }

  void forward(const std::vector<SequenceChunk>& chunks, std::vector<float>& logits) override {
    const size_t V = size_t(config().vocab_size);
    logits.resize(chunks.size() * V);
    const bool invariant = net_.options().batch_invariant;
    std::vector<const std::vector<int32_t>*> tables;
    std::vector<int64_t> positions;
    std::vector<int32_t> ids;
    std::vector<size_t> chunk_of;   // the chunks that run as decode rows, in order
    std::vector<int64_t> last_row;  // the decode row of each one's last token
    for (size_t i = 0; i < chunks.size(); ++i) {
      const SequenceChunk& c = chunks[i];
      if (c.decode || invariant) {
        for (size_t t = 0; t < c.ids->size(); ++t) {
          tables.push_back(c.blocks);
          positions.push_back(c.pos0 + int64_t(t));
          ids.push_back((*c.ids)[t]);
        }
        chunk_of.push_back(i);
        last_row.push_back(int64_t(ids.size()) - 1);
        continue;
      }
      net_.prefill_paged(*c.blocks, c.pos0, *c.ids, LogitsRows::Last, &out_);
      std::copy(out_.begin(), out_.end(), logits.begin() + ptrdiff_t(i * V));
    }
    if (ids.empty()) return;
    // Only the last token of each chunk is sampled: only its logits come back.
    net_.decode_paged(tables, positions, ids, &out_, nullptr, &last_row);
    for (size_t k = 0; k < chunk_of.size(); ++k)
      std::copy_n(out_.begin() + ptrdiff_t(k * V), V, logits.begin() + ptrdiff_t(chunk_of[k] * V));
  }

 private:
  CudaDeepseekV2& net_;
  std::vector<float> out_;  // host logits of a prefill chunk or of the decode tokens
};

}  // namespace dsv2
