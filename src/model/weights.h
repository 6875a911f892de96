// The weight table: every tensor the config implies, bound to the checkpoint's mapped data after
// checking presence, dtype and shape. Large matrices stay in the file (read in place); norm
// vectors are copied to f32.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/quant.h"
#include "model/config.h"

namespace dsv2 {

class Checkpoint;

// How a matmul rounds its activations before multiplying them with a matrix: F32 keeps them exact;
// BF16 (BF16 matrices only) rounds them to bf16 once per matmul (ops/cpu/gemm_bf16.h).
enum class ActivationFormat { F32, BF16 };

// A row-major [rows, cols] weight in its stored dtype. A linear layer y = x · Wᵀ has
// rows = out_features, cols = in_features. Quantized (Q8_0, Q4_0; core/quant.h): data holds each
// row's whole blocks, [rows, quant_row_bytes(dtype, cols)] bytes, and scales [rows, quant_blocks(cols)] f16.
struct Matrix {
  DType dtype = DType::F32;
  const void* data = nullptr;
  int64_t rows = 0, cols = 0;
  const uint16_t* scales = nullptr;  // quantized only
  ActivationFormat activations = ActivationFormat::F32;

  size_t row_bytes() const {
    return is_quantized(dtype) ? size_t(quant_row_bytes(dtype, cols)) : size_t(cols) * dtype_size(dtype);
  }
  const void* row(int64_t r) const { return static_cast<const std::byte*>(data) + size_t(r) * row_bytes(); }
  const uint16_t* row_scales(int64_t r) const { return scales + r * quant_blocks(cols); }
  // Values and scales.
  size_t bytes() const {
    return size_t(rows) * (row_bytes() + (is_quantized(dtype) ? size_t(quant_blocks(cols)) * 2 : 0));
  }
};

// out: [n, W.cols] = rows [r0, r0 + n) of W as f32 (any dtype).
void matrix_rows_to_f32(const Matrix& W, int64_t r0, int64_t n, float* out);

struct SwigluWeights {
  Matrix gate;  // [I, H]
  Matrix up;    // [I, H]
  Matrix down;  // [H, I]
};

struct LayerWeights {
  std::vector<float> input_norm;           // [H]
  std::vector<float> post_attention_norm;  // [H]
  // Query: q_proj [nh*d_qk, H] when q_lora_rank is null, else q_a_proj [d_cq, H] -> q_a_norm [d_cq] -> q_b_proj [nh*d_qk, d_cq].
  Matrix q_proj, q_a_proj, q_b_proj;
  std::vector<float> q_a_norm;
  Matrix kv_a_proj;                        // [d_c + d_rope, H]: rows [0, d_c) latent, [d_c, d_c+d_rope) rotary key
  std::vector<float> kv_a_norm;            // [d_c]
  Matrix kv_b_proj;                        // [nh*(d_nope+d_v), d_c]: per head [k_nope rows | v rows]
  Matrix o_proj;                           // [H, nh*d_v]
  bool moe = false;
  SwigluWeights dense;                     // dense layers: I = intermediate_size
  Matrix router;                           // MoE layers: [E, H]
  std::vector<SwigluWeights> experts;      // [E], I = moe_intermediate_size
  bool has_shared = false;
  SwigluWeights shared;                    // I = n_shared_experts * moe_intermediate_size
};

struct ModelWeights {
  Matrix embed;                  // [vocab, H]
  std::vector<float> final_norm; // [H]
  Matrix lm_head;                // [vocab, H] (the embedding when tied)
  std::vector<LayerWeights> layers;
};

enum class TensorRole { Embedding, Norm, Linear, Router };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  TensorRole role;
  int64_t layer = -1;       // -1: not in a layer
  int64_t expert = -1;      // routed expert index, -1 otherwise
};

// The checkpoint names of layer i's tensors (spec §2.2). A SwiGLU block's tensors are its prefix
// followed by gate_proj.weight, up_proj.weight and down_proj.weight.
struct LayerTensorNames {
  std::string input_norm, post_attention_norm;
  std::string q_proj;                       // without q compression
  std::string q_a_proj, q_a_norm, q_b_proj; // with it
  std::string kv_a_proj, kv_a_norm, kv_b_proj, o_proj;
  std::string mlp;                          // the dense MLP's prefix
  std::string router;                       // MoE layers
  std::string shared_experts;               // prefix
  std::string expert(int64_t e) const;      // prefix of routed expert e
};
LayerTensorNames layer_tensor_names(int64_t layer);

// Every tensor of the released checkpoint layout for `cfg`, in file order (spec §2.2).
std::vector<TensorSpec> checkpoint_tensor_specs(const ModelConfig& cfg);

// Binds every tensor; throws Error listing the missing, mis-typed or mis-shaped ones.
ModelWeights bind_weights(const ModelConfig& cfg, const Checkpoint& ckpt);

// The Linear-role matrices (attention projections, dense/shared/routed expert matrices, lm_head unless
// tied to the embedding) with their checkpoint names, in checkpoint order: the ones quantization covers.
std::vector<std::pair<std::string, Matrix*>> linear_matrices(const ModelConfig& cfg, ModelWeights& w);

// Bytes of weights one decode token reads in `w` as loaded (quantized scales included; norms as f32):
// every attention and dense matrix, the router, the shared and num_experts_per_tok routed experts,
// the lm_head and one embedding row.
double decode_weight_bytes_per_token(const ModelConfig& cfg, const ModelWeights& w);

struct ParameterCounts {
  int64_t total = 0;
  int64_t active_per_token = 0;                 // excluding the input embedding (one row is read)
  int64_t active_per_token_with_embedding = 0;
  int64_t read_per_decode_token = 0;            // active_per_token plus the one embedding row
};
ParameterCounts count_parameters(const ModelConfig& cfg);

}  // namespace dsv2
