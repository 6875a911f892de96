// What the serving engine runs each step: one forward over several sequences' new tokens, their
// latents kept in the blocks of a cache pool that the model owns (block ids handed out by the
// engine's BlockManager). Implemented over the CPU forward (cpu_batched_model.h) and the GPU model
// (cuda_batched_model.h).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/block_manager.h"
#include "model/config.h"

namespace dsv2 {

// The cache pool's geometry.
struct LatentPoolShape {
  int32_t n_blocks = 1024;
  int32_t block_size = 16;  // tokens per block
};

// One sequence's part of a step.
struct SequenceChunk {
  const std::vector<BlockId>* blocks;  // block table covering pos0 + ids->size() tokens
  int64_t pos0;                        // tokens already in the cache
  const std::vector<int32_t>* ids;     // new tokens, written at positions pos0 ..
  bool decode;  // the one token after a sample (absorbed attention); otherwise the prefill form
};

class BatchedModel {
 public:
  virtual ~BatchedModel() = default;
  virtual const ModelConfig& config() const = 0;
  virtual LatentPoolShape pool_shape() const = 0;
  // Sequences one step may hold (the engine caps its running set there).
  virtual int32_t max_batch() const = 0;
  // logits: [chunks, vocab], the last token's row of each chunk. A chunk's logits do not depend
  // on the other chunks of the step.
  virtual void forward(const std::vector<SequenceChunk>& chunks, std::vector<float>& logits) = 0;
};

}  // namespace dsv2
