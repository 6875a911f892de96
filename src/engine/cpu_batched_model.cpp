#include "engine/cpu_batched_model.h"

namespace dsv2 {

CpuBatchedModel::CpuBatchedModel(DeepseekV2& net, LatentPoolShape shape, DType cache_dtype)
    : net_(net),
      shape_(shape),
      pool_(shape.n_blocks, net.config().num_hidden_layers, shape.block_size, net.config().latent_width(), cache_dtype) {}

void CpuBatchedModel::forward(const std::vector<SequenceChunk>& chunks, std::vector<float>& logits) {
  std::vector<PagedLatentCache> views;
  views.reserve(chunks.size());  // steps point into it
  std::vector<DeepseekV2::SequenceStep> steps;
  for (const SequenceChunk& c : chunks) {
    views.emplace_back(pool_);
    views.back().block_table() = *c.blocks;
    views.back().set_length(c.pos0);
    // The decode token attends in the absorbed form; prompts, and tokens recomputed after a
    // preemption, in the decompressed form, as `dsv2 generate` does.
    steps.push_back({c.ids, &views.back(), c.decode ? AttentionPath::Absorbed : AttentionPath::Decompressed});
  }
  net_.forward_batch(steps, logits);
}

}  // namespace dsv2
