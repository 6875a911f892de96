// The DeepSeek-V2 forward on one NVIDIA GPU: weights uploaded once (stored dtype kept, or FP8), a paged
// latent cache, prefill with decompressed attention and batched decode with absorbed attention,
// each decode step captured once per batch size as a CUDA graph and replayed.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/deepseek_v2.h"
#include "model/weights.h"

namespace dsv2 {

class Checkpoint;

// Prompt tokens per forward for callers that run long prompts (`bench`, the CLI's generate and logits):
// longer chunks keep gaining up to 4K tokens (docs/cuda-notes.md, v16), and the logits of every row come
// out 256 rows at a time whatever the chunk.
constexpr int64_t kLongPromptChunk = 4096;

struct CudaOptions {
  DType cache_dtype = DType::BF16;   // BF16 or F32
  int64_t block_size = 64;           // tokens per cache block
  int64_t max_batch = 1;             // sequences decoded together
  int64_t max_context = 4096;        // tokens per sequence
  int64_t max_prefill_chunk = 1024;  // tokens per prefill forward
  bool shuffle_block_tables = false; // give each sequence its cache blocks in a random order (tests)
  bool use_graphs = true;            // capture decode steps as CUDA graphs
  // Blocks in the cache pool. 0: max_batch x ceil(max_context / block_size), a fixed region per
  // sequence slot (the slot calls below). A caller that hands out blocks itself (the serving engine)
  // sets it and passes block tables to the *_paged calls.
  int64_t cache_blocks = 0;
  // Decode batches of more than 8 tokens run as groups of up to 8 through the exact-f32 kernels
  // (weights read once per group), so that a sequence's results do not depend on the batch it runs
  // in; otherwise they take the tensor-core path, which rounds activations to bf16.
  bool batch_invariant = false;
  // Store the Linear matrices but kv_b_proj as FP8 (E4M3, a scale per 128×128 tile), quantized at
  // upload; the embedding, router, kv_b_proj and norms keep their dtype.
  bool fp8_weights = false;
  // With FP8 weights and decode batches above 8 tokens: each FP8 matrix but the routed experts keeps a
  // bf16 copy, widened once at upload, for the cuBLAS GEMMs of batched decode steps and prompt chunks
  // (2 bytes a value more, 2.08 GB for DeepSeek-V2-Lite); false: widened into a scratch before each GEMM.
  bool fp8_keep_widened = true;
  // Prompt attention of models with 2-byte or FP8 weights on the tensor cores (causal flash attention,
  // Q, K, V and probabilities in bf16; F16 models keep a bf16 copy of kv_b_proj for it) for
  // DeepSeek-V2's head shapes; false: the exact f32 form (every f32 model takes it).
  bool tensor_core_prefill_attention = true;
};

class CudaDeepseekV2 {
 public:
  // Uploads the weights of a checkpoint (already checked against the config by load_model).
  CudaDeepseekV2(const ModelConfig& cfg, const Checkpoint& checkpoint, const CudaOptions& options);
  // Random weights of the config's shapes, generated on the device in `dtype` (benchmarks).
  CudaDeepseekV2(const ModelConfig& cfg, DType dtype, uint64_t seed, const CudaOptions& options);
  ~CudaDeepseekV2();
  CudaDeepseekV2(const CudaDeepseekV2&) = delete;
  CudaDeepseekV2& operator=(const CudaDeepseekV2&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const CudaOptions& options() const { return opt_; }
  int64_t length(int slot) const { return lengths_.at(size_t(slot)); }
  void reset(int slot) { lengths_.at(size_t(slot)) = 0; }

  // Runs ids through sequence `slot` at positions length(slot)...; logits (host): [T, V] or [1, V].
  void prefill(int slot, const std::vector<int32_t>& ids, LogitsRows rows, std::vector<float>* logits);
  // One token for each of the sequences `slots` (absorbed attention). Optional host outputs:
  // logits [B, V], argmax ids [B].
  void decode(const std::vector<int>& slots, const std::vector<int32_t>& ids, std::vector<float>* logits,
              std::vector<int32_t>* argmax);

  // The same over block tables the caller owns (block ids in [0, cache_blocks)); nothing is kept
  // per sequence. table covers pos0 + ids.size() tokens; positions [0, pos0) are already cached.
  void prefill_paged(const std::vector<int32_t>& table, int64_t pos0, const std::vector<int32_t>& ids, LogitsRows rows,
                     std::vector<float>* logits);
  // tables[b] covers positions[b] + 1 tokens; ids[b] goes to position positions[b]. logits: [B, V], or
  // only the rows logit_rows names (ascending) when given, [logit_rows.size(), V]; a group of up to 8
  // rows none of which is wanted (nor argmax) skips the final norm and lm_head.
  void decode_paged(const std::vector<const std::vector<int32_t>*>& tables, const std::vector<int64_t>& positions,
                    const std::vector<int32_t>& ids, std::vector<float>* logits, std::vector<int32_t>* argmax,
                    const std::vector<int64_t>* logit_rows = nullptr);
  int64_t cache_blocks() const;
  // Bytes of weights (scales included) a decode step reads when `experts_per_layer` distinct routed
  // experts of each MoE layer run (num_experts_per_tok for one token): every other matrix once, one
  // embedding row.
  double decode_weight_bytes(double experts_per_layer) const;

  struct Impl;

 private:
  // A row of a decode group whose logits go to host memory at `to`.
  struct LogitsCopy {
    int64_t row;
    float* to;
  };
  // One decode forward over at most max_batch tokens (inputs checked); argmax: [B] host ids or null.
  void decode_group(const std::vector<const std::vector<int32_t>*>& tables, const std::vector<int64_t>& positions,
                    const std::vector<int32_t>& ids, const std::vector<LogitsCopy>& copies, int32_t* argmax);
  const std::vector<int32_t>& slot_table(int slot) const;
  ModelConfig cfg_;
  CudaOptions opt_;
  std::vector<int64_t> lengths_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv2
