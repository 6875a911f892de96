// A sequence slot of the GPU model seen as a SequenceModel.
#pragma once
#include "engine/sequence_model.h"
#include "model/cuda/deepseek_v2_cuda.h"

namespace dsv2 {

class CudaSequence : public SequenceModel {
 public:
  CudaSequence(CudaDeepseekV2& net, int slot) : net_(net), slot_(slot) { net_.reset(slot); }
  const ModelConfig& config() const override { return net_.config(); }
  void append(const std::vector<int32_t>& ids, AttentionPath path, LogitsRows rows, std::vector<float>& logits) override {
    if (path == AttentionPath::Decompressed) {
      net_.prefill(slot_, ids, rows, &logits);
      return;
    }
    logits.clear();
    std::vector<float> row;
    for (int32_t id : ids) {  // absorbed attention: one decode step per token
      net_.decode({slot_}, {id}, &row, nullptr);
      if (rows == LogitsRows::All || id == ids.back()) logits.insert(logits.end(), row.begin(), row.end());
    }
    if (rows == LogitsRows::Last) logits.erase(logits.begin(), logits.end() - config().vocab_size);
  }
  int64_t length() const override { return net_.length(slot_); }
  int64_t capacity() const override { return net_.options().max_context; }

 private:
  CudaDeepseekV2& net_;
  int slot_;
};

}  // namespace dsv2
