// The DeepSeek-V2 forward pass in f32 (spec §3-§7): embedding, RMSNorm, MLA over the latent
// cache (decompressed or absorbed), dense SwiGLU or DeepSeekMoE, final norm, lm_head.
#pragma once
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "model/config.h"
#include "model/latent_cache.h"
#include "model/rope.h"
#include "model/weights.h"

namespace dsv2 {

// How attention reads the latent cache. Both give the same result (spec §5.3).
enum class AttentionPath {
  Decompressed,  // expand every cached latent to per-head keys and values (prefill, training)
  Absorbed,      // fold W_UK into the query and W_UV after the sum: attend on the 576-wide latent (decode)
};

enum class LogitsRows { All, Last };

class DeepseekV2 {
 public:
  DeepseekV2(const ModelConfig& cfg, const ModelWeights& weights, ThreadPool& pool);

  // Runs tokens ids[0..T) at positions cache.length() .. cache.length()+T-1, appends their
  // latents to the cache and writes logits: [T, vocab] (All) or [1, vocab] (Last).
  void forward(const std::vector<int32_t>& ids, LatentStorage& cache, AttentionPath path, LogitsRows rows,
               std::vector<float>& logits);

  // One sequence's part of a multi-sequence step: its new tokens, its cache, how it attends.
  struct SequenceStep {
    const std::vector<int32_t>* ids;  // tokens appended at positions cache->length() ..
    LatentStorage* cache;
    AttentionPath path;
  };
  // Runs several sequences in one pass: attention per sequence (over its own cache), every projection,
  // MLP/MoE and the lm_head over all their tokens together, so each weight is read once per step.
  // logits: [n_sequences, vocab], the last token's row of each. A sequence's rows are computed as
  // forward() computes them alone (each output row is its own dot products).
  void forward_batch(const std::vector<SequenceStep>& steps, std::vector<float>& logits);

  const ModelConfig& config() const { return cfg_; }
  LatentCache make_cache(int64_t capacity, DType dtype) const;

 private:
  // The sequences of a step laid out in the residual stream: rows [row0, row0 + n) are sequence i's.
  struct SequenceRows {
    int64_t row0, n, pos0;
    LatentStorage* cache;
    AttentionPath path;
  };
  // x: [T, H] residual stream over every sequence's rows, updated in place.
  void attention_block(int64_t layer, std::vector<float>& x, int64_t T, const std::vector<SequenceRows>& seqs);
  // Embeds the ids of every sequence and runs all layers; returns x: [T, H] before the final norm.
  std::vector<float> run_layers(const std::vector<const std::vector<int32_t>*>& ids, const std::vector<SequenceRows>& seqs, int64_t T);
  // q: [T, nh, d_qk] (rotary part already rotated); lat: [L, d_c + d_rope] cached latents of
  // positions 0..L-1, L = pos0 + T; out: [T, nh, d_v].
  void attend_decompressed(const LayerWeights& w, const float* q, const float* lat, int64_t T, int64_t pos0, float* out);
  // lat: [pos0 + T, width] f32 rows, or (lat null) lat_bf16: the same as bf16.
  void attend_absorbed(int64_t layer, const float* q, const float* lat, const uint16_t* lat_bf16, int64_t T, int64_t pos0,
                       float* out);
  // x: [T, H] in, out: [T, H] (overwritten).
  void mlp_block(int64_t layer, const float* x, int64_t T, float* out);
  void swiglu(const SwigluWeights& w, const float* x, int64_t T, float* out);
  // One SwiGLU block on its tokens: x: [T, H] in, out: [T, H]; gate, up: [T, I] scratch.
  struct SwigluRun {
    const SwigluWeights* w;
    const float* x;
    int64_t T;
    float* out;
    std::vector<float> gate, up;
  };
  // Runs every block with two parallel regions in all (gate/up, then down).
  void swiglu_group(std::vector<SwigluRun>& runs);
  void moe(const LayerWeights& w, const float* x, int64_t T, float* out);

  const ModelConfig& cfg_;
  const ModelWeights& w_;
  ThreadPool& pool_;
  RotaryEmbedding rope_;
  float softmax_scale_;
  // Scratch kept across calls (a fresh multi-MB vector per layer and token costs page faults):
  std::vector<float> lat_buffer_;   // cached latents read back when the cache cannot be read in place
  std::vector<uint16_t> lat_bf16_buffer_;  // the same, copied as stored, for the absorbed path over bf16 pages
  std::vector<float> partial_acc_;  // absorbed attention's per-group accumulators [groups, nh, d_c]
};

}  // namespace dsv2
