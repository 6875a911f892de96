// One sequence being extended token by token on some backend (the CPU forward with its latent
// cache, or a slot of the GPU model). The generation loop and the CLI work through this.
#pragma once
#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/deepseek_v2.h"
#include "model/latent_cache.h"

namespace dsv2 {

class SequenceModel {
 public:
  virtual ~SequenceModel() = default;
  virtual const ModelConfig& config() const = 0;
  // Appends ids at the end of the sequence and writes their logits: [T, vocab] (All) or [1, vocab] (Last).
  virtual void append(const std::vector<int32_t>& ids, AttentionPath path, LogitsRows rows, std::vector<float>& logits) = 0;
  virtual int64_t length() const = 0;
  virtual int64_t capacity() const = 0;  // tokens the sequence can hold
};

// The CPU forward over a contiguous latent cache of `capacity` tokens.
class CpuSequence : public SequenceModel {
 public:
  CpuSequence(DeepseekV2& net, int64_t capacity, DType cache_dtype) : net_(net), cache_(net.make_cache(capacity, cache_dtype)) {}
  const ModelConfig& config() const override { return net_.config(); }
  void append(const std::vector<int32_t>& ids, AttentionPath path, LogitsRows rows, std::vector<float>& logits) override {
    net_.forward(ids, cache_, path, rows, logits);
  }
  int64_t length() const override { return cache_.length(); }
  int64_t capacity() const override { return cache_.capacity(); }

 private:
  DeepseekV2& net_;
  LatentCache cache_;
};

}  // namespace dsv2
