#include "model/weights.h"

#include <map>
#include <sstream>

#include "core/error.h"
#include "model/safetensors.h"

namespace dsv2 {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

void add_swiglu(std::vector<TensorSpec>& out, const std::string& prefix, int64_t inter, int64_t hidden, int64_t layer,
                int64_t expert) {
  out.push_back({prefix + "gate_proj.weight", {inter, hidden}, TensorRole::Linear, layer, expert});
  out.push_back({prefix + "up_proj.weight", {inter, hidden}, TensorRole::Linear, layer, expert});
  out.push_back({prefix + "down_proj.weight", {hidden, inter}, TensorRole::Linear, layer, expert});
}

}  // namespace

void matrix_rows_to_f32(const Matrix& W, int64_t r0, int64_t n, float* out) {
  if (!is_quantized(W.dtype)) {
    convert_to_f32(W.dtype, W.row(r0), out, size_t(n * W.cols));
    return;
  }
  for (int64_t r = r0; r < r0 + n; ++r) dequantize_row(W.dtype, W.row(r), W.row_scales(r), W.cols, out + (r - r0) * W.cols);
}

std::string LayerTensorNames::expert(int64_t e) const { return mlp + "experts." + std::to_string(e) + "."; }

LayerTensorNames layer_tensor_names(int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".", a = p + "self_attn.";
  LayerTensorNames n;
  n.input_norm = p + "input_layernorm.weight";
  n.post_attention_norm = p + "post_attention_layernorm.weight";
  n.q_proj = a + "q_proj.weight";
  n.q_a_proj = a + "q_a_proj.weight";
  n.q_a_norm = a + "q_a_layernorm.weight";
  n.q_b_proj = a + "q_b_proj.weight";
  n.kv_a_proj = a + "kv_a_proj_with_mqa.weight";
  n.kv_a_norm = a + "kv_a_layernorm.weight";
  n.kv_b_proj = a + "kv_b_proj.weight";
  n.o_proj = a + "o_proj.weight";
  n.mlp = p + "mlp.";
  n.router = n.mlp + "gate.weight";
  n.shared_experts = n.mlp + "shared_experts.";
  return n;
}

std::vector<TensorSpec> checkpoint_tensor_specs(const ModelConfig& c) {
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  std::vector<TensorSpec> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, H}, TensorRole::Embedding});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerTensorNames n = layer_tensor_names(i);
    out.push_back({n.input_norm, {H}, TensorRole::Norm, i});
    if (c.q_lora_rank) {
      out.push_back({n.q_a_proj, {*c.q_lora_rank, H}, TensorRole::Linear, i});
      out.push_back({n.q_a_norm, {*c.q_lora_rank}, TensorRole::Norm, i});
      out.push_back({n.q_b_proj, {nh * c.qk_head_dim(), *c.q_lora_rank}, TensorRole::Linear, i});
    } else {
      out.push_back({n.q_proj, {nh * c.qk_head_dim(), H}, TensorRole::Linear, i});
    }
    out.push_back({n.kv_a_proj, {c.latent_width(), H}, TensorRole::Linear, i});
    out.push_back({n.kv_a_norm, {c.kv_lora_rank}, TensorRole::Norm, i});
    out.push_back({n.kv_b_proj, {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}, TensorRole::Linear, i});
    out.push_back({n.o_proj, {H, nh * c.v_head_dim}, TensorRole::Linear, i});
    if (c.is_moe_layer(i)) {
      out.push_back({n.router, {c.n_routed_experts, H}, TensorRole::Router, i});
      for (int64_t e = 0; e < c.n_routed_experts; ++e) add_swiglu(out, n.expert(e), c.moe_intermediate_size, H, i, e);
      if (c.n_shared_experts > 0) add_swiglu(out, n.shared_experts, c.shared_intermediate(), H, i, -1);
    } else {
      add_swiglu(out, n.mlp, c.intermediate_size, H, i, -1);
    }
    out.push_back({n.post_attention_norm, {H}, TensorRole::Norm, i});
  }
  out.push_back({"model.norm.weight", {H}, TensorRole::Norm});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, H}, TensorRole::Linear});
  return out;
}

namespace {

// A Linear matrix of a quantized checkpoint: values [rows, quant_row_bytes] as I8 (Q8_0) or U8 (Q4_0),
// scales `<name>.scales` [rows, quant_blocks(cols)] F16. Returns the problem, or "" when it is fine.
std::string check_quantized(DType q, const TensorSpec& s, const TensorRef& t, const TensorRef* scales) {
  const int64_t rows = s.shape[0], cols = s.shape[1];
  const std::vector<int64_t> values_shape = {rows, quant_row_bytes(q, cols)}, scales_shape = {rows, quant_blocks(cols)};
  const std::string fmt = std::string(" (") + dtype_name(q) + " of logical shape " + shape_str(s.shape) + ")";
  if (t.dtype_name != safetensors_dtype_name(q))
    return *t.file + ": tensor '" + s.name + "' has dtype " + t.dtype_name + ", expected " + safetensors_dtype_name(q) + fmt;
  if (t.shape != values_shape)
    return *t.file + ": tensor '" + s.name + "' has shape " + shape_str(t.shape) + ", expected " + shape_str(values_shape) + fmt;
  if (!scales) return "missing tensor '" + s.name + ".scales' (F16 " + shape_str(scales_shape) + ")" + fmt;
  if (scales->dtype_name != "F16")
    return *scales->file + ": tensor '" + s.name + ".scales' has dtype " + scales->dtype_name + ", expected F16";
  if (scales->shape != scales_shape)
    return *scales->file + ": tensor '" + s.name + ".scales' has shape " + shape_str(scales->shape) + ", expected " +
           shape_str(scales_shape) + fmt;
  return "";
}

}  // namespace

ModelWeights bind_weights(const ModelConfig& c, const Checkpoint& ckpt) {
  std::vector<std::string> problems;
  std::map<std::string, const TensorRef*> found;
  std::map<std::string, const TensorSpec*> quantized;  // name -> spec, for the quantized Linear matrices
  const std::vector<TensorSpec> specs = checkpoint_tensor_specs(c);
  for (const TensorSpec& s : specs) {
    const TensorRef* t = ckpt.find(s.name);
    if (!t) {
      problems.push_back("missing tensor '" + s.name + "' (expected shape " + shape_str(s.shape) + ")");
      continue;
    }
    if (c.quantized_linear && s.role == TensorRole::Linear) {
      const std::string problem = check_quantized(*c.quantized_linear, s, *t, ckpt.find(s.name + ".scales"));
      if (!problem.empty()) {
        problems.push_back(problem);
        continue;
      }
      found[s.name] = t;
      quantized[s.name] = &s;
      continue;
    }
    if (t->dtype_name != "BF16" && t->dtype_name != "F16" && t->dtype_name != "F32") {
      problems.push_back(*t->file + ": tensor '" + s.name + "' has dtype " + t->dtype_name + " (supported: BF16, F16, F32)");
      continue;
    }
    if (t->shape != s.shape) {
      problems.push_back(*t->file + ": tensor '" + s.name + "' has shape " + shape_str(t->shape) + ", config.json implies " +
                         shape_str(s.shape));
      continue;
    }
    found[s.name] = t;
  }
  if (!problems.empty()) {
    std::string msg = ckpt.dir() + ": " + std::to_string(problems.size()) + " tensor problem(s):";
    for (size_t i = 0; i < problems.size() && i < 10; ++i) msg += "\n  " + problems[i];
    if (problems.size() > 10) msg += "\n  ... and " + std::to_string(problems.size() - 10) + " more";
    throw Error(msg);
  }

  auto matrix = [&](const std::string& name) {
    const TensorRef* t = found.at(name);
    auto q = quantized.find(name);
    if (q == quantized.end()) return Matrix{t->dtype(), t->data, t->shape[0], t->shape[1]};
    const auto* scales = reinterpret_cast<const uint16_t*>(ckpt.find(name + ".scales")->data);
    return Matrix{*c.quantized_linear, t->data, q->second->shape[0], q->second->shape[1], scales};
  };
  auto vec = [&](const std::string& name) {
    const TensorRef* t = found.at(name);
    std::vector<float> v(size_t(t->numel()));
    convert_to_f32(t->dtype(), t->data, v.data(), v.size());
    return v;
  };
  auto swiglu = [&](const std::string& prefix) {
    return SwigluWeights{matrix(prefix + "gate_proj.weight"), matrix(prefix + "up_proj.weight"),
                         matrix(prefix + "down_proj.weight")};
  };

  ModelWeights w;
  w.embed = matrix("model.embed_tokens.weight");
  w.final_norm = vec("model.norm.weight");
  w.lm_head = c.tie_word_embeddings ? w.embed : matrix("lm_head.weight");
  w.layers.resize(size_t(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LayerWeights& L = w.layers[size_t(i)];
    const LayerTensorNames n = layer_tensor_names(i);
    L.input_norm = vec(n.input_norm);
    L.post_attention_norm = vec(n.post_attention_norm);
    if (c.q_lora_rank) {
      L.q_a_proj = matrix(n.q_a_proj);
      L.q_a_norm = vec(n.q_a_norm);
      L.q_b_proj = matrix(n.q_b_proj);
    } else {
      L.q_proj = matrix(n.q_proj);
    }
    L.kv_a_proj = matrix(n.kv_a_proj);
    L.kv_a_norm = vec(n.kv_a_norm);
    L.kv_b_proj = matrix(n.kv_b_proj);
    L.o_proj = matrix(n.o_proj);
    L.moe = c.is_moe_layer(i);
    if (L.moe) {
      L.router = matrix(n.router);
      for (int64_t e = 0; e < c.n_routed_experts; ++e) L.experts.push_back(swiglu(n.expert(e)));
      L.has_shared = c.n_shared_experts > 0;
      if (L.has_shared) L.shared = swiglu(n.shared_experts);
    } else {
      L.dense = swiglu(n.mlp);
    }
  }
  return w;
}

std::vector<std::pair<std::string, Matrix*>> linear_matrices(const ModelConfig& c, ModelWeights& w) {
  std::vector<std::pair<std::string, Matrix*>> out;
  auto swiglu = [&](const std::string& prefix, SwigluWeights& s) {
    out.push_back({prefix + "gate_proj.weight", &s.gate});
    out.push_back({prefix + "up_proj.weight", &s.up});
    out.push_back({prefix + "down_proj.weight", &s.down});
  };
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LayerWeights& L = w.layers[size_t(i)];
    const LayerTensorNames n = layer_tensor_names(i);
    if (c.q_lora_rank) {
      out.push_back({n.q_a_proj, &L.q_a_proj});
      out.push_back({n.q_b_proj, &L.q_b_proj});
    } else {
      out.push_back({n.q_proj, &L.q_proj});
    }
    out.push_back({n.kv_a_proj, &L.kv_a_proj});
    out.push_back({n.kv_b_proj, &L.kv_b_proj});
    out.push_back({n.o_proj, &L.o_proj});
    if (L.moe) {
      for (int64_t e = 0; e < c.n_routed_experts; ++e) swiglu(n.expert(e), L.experts[size_t(e)]);
      if (L.has_shared) swiglu(n.shared_experts, L.shared);
    } else {
      swiglu(n.mlp, L.dense);
    }
  }
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", &w.lm_head});
  return out;
}

double decode_weight_bytes_per_token(const ModelConfig& c, const ModelWeights& w) {
  auto swiglu = [](const SwigluWeights& s) { return double(s.gate.bytes() + s.up.bytes() + s.down.bytes()); };
  double bytes = double(w.embed.row_bytes() + w.lm_head.bytes() + w.final_norm.size() * 4);
  for (const LayerWeights& L : w.layers) {
    bytes += double(L.q_proj.bytes() + L.q_a_proj.bytes() + L.q_b_proj.bytes() + L.kv_a_proj.bytes() + L.kv_b_proj.bytes() +
                    L.o_proj.bytes());
    bytes += double(L.input_norm.size() + L.post_attention_norm.size() + L.q_a_norm.size() + L.kv_a_norm.size()) * 4;
    if (L.moe) {
      bytes += double(L.router.bytes());
      for (int64_t e = 0; e < c.num_experts_per_tok; ++e) bytes += swiglu(L.experts[size_t(e)]);  // all one size
      if (L.has_shared) bytes += swiglu(L.shared);
    } else {
      bytes += swiglu(L.dense);
    }
  }
  return bytes;
}

ParameterCounts count_parameters(const ModelConfig& c) {
  ParameterCounts n;
  int64_t inactive = 0;
  for (const TensorSpec& s : checkpoint_tensor_specs(c)) {
    int64_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    n.total += numel;
    if (s.expert >= 0 && s.expert >= c.num_experts_per_tok) inactive += numel;  // all experts have one size
    if (s.role == TensorRole::Embedding) n.active_per_token -= numel;
  }
  n.active_per_token_with_embedding = n.total - inactive;
  n.active_per_token += n.total - inactive;
  if (c.tie_word_embeddings) n.active_per_token += c.vocab_size * c.hidden_size;  // the table is still read as lm_head
  n.read_per_decode_token = n.active_per_token + c.hidden_size;
  return n;
}

}  // namespace dsv2
