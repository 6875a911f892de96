// The engine's model on the CPU: DeepseekV2::forward_batch over views of a LatentBlockPool.
#pragma once
#include <climits>

#include "engine/batched_model.h"
#include "engine/paged_latent_cache.h"
#include "model/deepseek_v2.h"

namespace dsv2 {

class CpuBatchedModel : public BatchedModel {
 public:
  CpuBatchedModel(DeepseekV2& net, LatentPoolShape shape, DType cache_dtype);
  const ModelConfig& config() const override { return net_.config(); }
  LatentPoolShape pool_shape() const override { return shape_; }
  int32_t max_batch() const override { return INT32_MAX; }
  void forward(const std::vector<SequenceChunk>& chunks, std::vector<float>& logits) override;

 private:
  DeepseekV2& net_;
  LatentPoolShape shape_;
  LatentBlockPool pool_;
};

}  // namespace dsv2
