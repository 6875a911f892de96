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

ModelWeights bind_weights(const ModelConfig& c, const Checkpoint& ckpt) {
  std::vector<std::string> problems;
  std::map<std::string, const TensorRef*> found;
  for (const TensorSpec& s : checkpoint_tensor_specs(c)) {
    const TensorRef* t = ckpt.find(s.name);
    if (!t) {
      problems.push_back("missing tensor '" + s.name + "' (expected shape " + shape_str(s.shape) + ")");
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
    return Matrix{t->dtype(), t->data, t->shape[0], t->shape[1]};
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
