#include "model/deepseek_v2.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/moe_router.h"
#include "ops/cpu/causal_attention.h"
#include "ops/cpu/head_projections.h"
#include "ops/cpu/latent_attention.h"
#include "ops/cpu/ops_cpu.h"
#include "ops/ref/ops_ref.h"

namespace dsv2 {

DeepseekV2::DeepseekV2(const ModelConfig& cfg, const ModelWeights& weights, ThreadPool& pool)
    : cfg_(cfg), w_(weights), pool_(pool), rope_(cfg), softmax_scale_(float(cfg.softmax_scale())) {}

LatentCache DeepseekV2::make_cache(int64_t capacity, DType dtype) const {
  return LatentCache(cfg_.num_hidden_layers, cfg_.latent_width(), capacity, dtype);
}

void DeepseekV2::forward(const std::vector<int32_t>& ids, LatentStorage& cache, AttentionPath path, LogitsRows rows,
                         std::vector<float>& logits) {
  const int64_t T = int64_t(ids.size()), H = cfg_.hidden_size;
  std::vector<float> x = run_layers({&ids}, {{0, T, cache.length(), &cache, path}}, T);
  const int64_t first = rows == LogitsRows::All ? 0 : T - 1, n = T - first;
  std::vector<float> h(size_t(n * H));
  ref::rms_norm(x.data() + first * H, w_.final_norm.data(), h.data(), n, H, float(cfg_.rms_norm_eps));
  logits.resize(size_t(n * cfg_.vocab_size));
  cpu::matmul(pool_, h.data(), n, w_.lm_head, logits.data());
}

void DeepseekV2::forward_batch(const std::vector<SequenceStep>& steps, std::vector<float>& logits) {
  check(!steps.empty(), "forward_batch: no sequences");
  const int64_t H = cfg_.hidden_size, B = int64_t(steps.size());
  std::vector<SequenceRows> seqs;
  std::vector<const std::vector<int32_t>*> ids;
  int64_t T = 0;
  for (const SequenceStep& s : steps) {
    seqs.push_back({T, int64_t(s.ids->size()), s.cache->length(), s.cache, s.path});
    ids.push_back(s.ids);
    T += int64_t(s.ids->size());
  }
  std::vector<float> x = run_layers(ids, seqs, T);
  std::vector<float> last(size_t(B * H)), h(size_t(B * H));
  for (int64_t b = 0; b < B; ++b) {
    const SequenceRows& r = seqs[size_t(b)];
    std::copy_n(&x[size_t((r.row0 + r.n - 1) * H)], H, &last[size_t(b * H)]);
  }
  ref::rms_norm(last.data(), w_.final_norm.data(), h.data(), B, H, float(cfg_.rms_norm_eps));
  logits.resize(size_t(B * cfg_.vocab_size));
  cpu::matmul(pool_, h.data(), B, w_.lm_head, logits.data());
}

std::vector<float> DeepseekV2::run_layers(const std::vector<const std::vector<int32_t>*>& ids, const std::vector<SequenceRows>& seqs,
                                          int64_t T) {
  const int64_t H = cfg_.hidden_size;
  check(T > 0, "forward: no tokens");
  for (const SequenceRows& r : seqs) {
    check(r.n > 0, "forward: no tokens");
    check(r.pos0 + r.n <= r.cache->capacity(), "sequence of " + std::to_string(r.pos0 + r.n) +
                                                   " tokens exceeds the cache capacity of " + std::to_string(r.cache->capacity()));
  }
  std::vector<float> x(size_t(T * H));  // [T, H] residual stream
  for (size_t i = 0; i < seqs.size(); ++i) {
    for (int64_t t = 0; t < seqs[i].n; ++t) {
      const int32_t id = (*ids[i])[size_t(t)];
      check(id >= 0 && id < cfg_.vocab_size, "token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                                 std::to_string(cfg_.vocab_size) + ")");
      convert_to_f32(w_.embed.dtype, w_.embed.row(id), &x[size_t((seqs[i].row0 + t) * H)], size_t(H));
    }
  }
  std::vector<float> h(size_t(T * H)), y(size_t(T * H));
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    attention_block(l, x, T, seqs);
    const LayerWeights& w = w_.layers[size_t(l)];
    ref::rms_norm(x.data(), w.post_attention_norm.data(), h.data(), T, H, float(cfg_.rms_norm_eps));
    mlp_block(l, h.data(), T, y.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];
  }
  for (const SequenceRows& r : seqs) r.cache->set_length(r.pos0 + r.n);
  return x;
}

void DeepseekV2::attention_block(int64_t layer, std::vector<float>& x, int64_t T, const std::vector<SequenceRows>& seqs) {
  const LayerWeights& w = w_.layers[size_t(layer)];
  const int64_t H = cfg_.hidden_size, nh = cfg_.num_attention_heads, d_qk = cfg_.qk_head_dim();
  const int64_t d_nope = cfg_.qk_nope_head_dim, d_rope = cfg_.qk_rope_head_dim, d_c = cfg_.kv_lora_rank;
  const int64_t width = cfg_.latent_width();
  const float eps = float(cfg_.rms_norm_eps);

  std::vector<float> a(size_t(T * H));  // [T, H]
  ref::rms_norm(x.data(), w.input_norm.data(), a.data(), T, H, eps);

  // Query [T, nh, d_qk] = [q_nope (d_nope) | q_pe (d_rope)] per head.
  std::vector<float> q(size_t(T * nh * d_qk));
  // Latent [T, d_c + d_rope] = [RMSNorm(c) | RoPE(k_pe)], appended to the cache. kv_a_proj and the
  // query's first projection read the same input: one parallel region for both.
  std::vector<float> kv(size_t(T * width));
  if (cfg_.q_lora_rank) {
    const int64_t d_cq = *cfg_.q_lora_rank;
    std::vector<float> cq(size_t(T * d_cq));  // [T, d_cq]
    cpu::matmul_group(pool_, {{a.data(), T, &w.q_a_proj, cq.data()}, {a.data(), T, &w.kv_a_proj, kv.data()}});
    ref::rms_norm(cq.data(), w.q_a_norm.data(), cq.data(), T, d_cq, eps);
    cpu::matmul(pool_, cq.data(), T, w.q_b_proj, q.data());
  } else {
    cpu::matmul_group(pool_, {{a.data(), T, &w.q_proj, q.data()}, {a.data(), T, &w.kv_a_proj, kv.data()}});
  }
  std::vector<float> o(size_t(T * nh * cfg_.v_head_dim));  // [T, nh, d_v]
  for (const SequenceRows& r : seqs) {
    for (int64_t t = 0; t < r.n; ++t) {
      const int64_t row_index = r.row0 + t, pos = r.pos0 + t;
      float* row = &kv[size_t(row_index * width)];
      ref::rms_norm(row, w.kv_a_norm.data(), row, 1, d_c, eps);
      rope_.rotate(row + d_c, 1, d_rope, pos);
      rope_.rotate(&q[size_t(row_index * nh * d_qk + d_nope)], nh, d_qk, pos);
      r.cache->write(layer, pos, row);
    }
    // [L, width]: every cached latent of the sequence at cache precision, in place when the cache
    // holds f32 rows contiguously (or bf16 rows, which the absorbed path reads as they are), else
    // read into a buffer kept across calls: bf16 rows copied as they are for the absorbed path (a
    // paged bf16 cache), f32 otherwise.
    const int64_t L = r.pos0 + r.n;
    const float* lat = r.cache->rows_in_place(layer);
    const uint16_t* lat_bf16 = r.path == AttentionPath::Absorbed ? r.cache->bf16_rows_in_place(layer) : nullptr;
    if (!lat && !lat_bf16 && r.path == AttentionPath::Absorbed) {
      if (lat_bf16_buffer_.size() < size_t(L * width)) lat_bf16_buffer_.resize(size_t(L * width));
      if (r.cache->read_bf16(layer, 0, L, lat_bf16_buffer_.data())) lat_bf16 = lat_bf16_buffer_.data();
    }
    if (!lat && !lat_bf16) {
      if (lat_buffer_.size() < size_t(L * width)) lat_buffer_.resize(size_t(L * width));
      r.cache->read(layer, 0, L, lat_buffer_.data());
      lat = lat_buffer_.data();
    }
    const float* q_seq = &q[size_t(r.row0 * nh * d_qk)];
    float* o_seq = &o[size_t(r.row0 * nh * cfg_.v_head_dim)];
    if (r.path == AttentionPath::Decompressed) {
      attend_decompressed(w, q_seq, lat, r.n, r.pos0, o_seq);
    } else {
      attend_absorbed(layer, q_seq, lat, lat_bf16, r.n, r.pos0, o_seq);
    }
  }
  std::vector<float> out(size_t(T * H));
  cpu::matmul(pool_, o.data(), T, w.o_proj, out.data());
  for (size_t i = 0; i < out.size(); ++i) x[i] += out[i];
}

void DeepseekV2::attend_decompressed(const LayerWeights& w, const float* q, const float* lat, int64_t T, int64_t pos0,
                                     float* out) {
  const int64_t nh = cfg_.num_attention_heads, d_qk = cfg_.qk_head_dim(), d_nope = cfg_.qk_nope_head_dim;
  const int64_t d_rope = cfg_.qk_rope_head_dim, d_v = cfg_.v_head_dim, d_c = cfg_.kv_lora_rank;
  const int64_t width = cfg_.latent_width(), L = pos0 + T, kvb_w = nh * (d_nope + d_v);

  // Up-projection of every cached latent: kvb [L, nh, d_nope + d_v] = [k_nope | v] per head.
  std::vector<float> c(size_t(L * d_c));
  for (int64_t s = 0; s < L; ++s) std::copy_n(lat + s * width, d_c, &c[size_t(s * d_c)]);
  std::vector<float> kvb(size_t(L * kvb_w));
  cpu::matmul(pool_, c.data(), L, w.kv_b_proj, kvb.data());

  pool_.parallel_for(nh, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> p(size_t(cpu::kAttendRows * L));
    for (int64_t h = h0; h < h1; ++h) {
      const float* k_nope = &kvb[size_t(h * (d_nope + d_v))];  // key s: k_nope + s·kvb_w, its value d_nope further
      // Causal: query t sees keys 0..pos0+t. Up to kAttendRows queries share each key row's load, each
      // with attend_row's bits.
      for (int64_t t = 0; t < T; t += cpu::kAttendRows)
        cpu::attend_rows(q + (t * nh + h) * d_qk, nh * d_qk, std::min(cpu::kAttendRows, T - t), k_nope, kvb_w, lat + d_c, width,
                         k_nope + d_nope, kvb_w, pos0 + t + 1, d_nope, d_rope, d_v, softmax_scale_, p.data(),
                         out + (t * nh + h) * d_v, nh * d_v);
    }
  });
}

void DeepseekV2::attend_absorbed(int64_t layer, const float* q, const float* lat, const uint16_t* lat_bf16, int64_t T,
                                 int64_t pos0, float* out) {
  const int64_t nh = cfg_.num_attention_heads, d_qk = cfg_.qk_head_dim(), d_nope = cfg_.qk_nope_head_dim;
  const int64_t d_rope = cfg_.qk_rope_head_dim, d_v = cfg_.v_head_dim, d_c = cfg_.kv_lora_rank;
  const int64_t width = cfg_.latent_width();
  const Matrix& kv_b = w_.layers[size_t(layer)].kv_b_proj;  // read in its stored format (head_projections.h)

  // q_lat[t, h] = W_UK[h]ᵀ · q_nope[t, h]      [T, nh, d_c]
  std::vector<float> q_lat(size_t(T * nh * d_c));
  pool_.parallel_for(nh, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t t = 0; t < T; ++t)
      cpu::absorb_query_heads(kv_b, d_nope, d_v, q + t * nh * d_qk, d_qk, h0, h1, &q_lat[size_t(t * nh * d_c)]);
  });

  // o_lat[t, h] = Σ_s softmax_s(score[t, h, s]) · c_s over keys 0 .. pos0 + t: every cached latent is
  // read once for all heads, key groups split over the threads (cpu::latent_attention). A model run with
  // bf16 activations takes the scores over a bf16 cache as bf16 dot products.
  const bool bf16_scores = w_.layers[size_t(layer)].kv_b_proj.activations == ActivationFormat::BF16;
  std::vector<float> o_lat(size_t(T * nh * d_c));
  for (int64_t t = 0; t < T; ++t) {
    const float* q_t = &q_lat[size_t(t * nh * d_c)];
    if (lat_bf16) {
      cpu::latent_attention(pool_, q_t, q + t * nh * d_qk + d_nope, d_qk, lat_bf16, width, pos0 + t + 1, nh, d_c, d_rope,
                            softmax_scale_, &o_lat[size_t(t * nh * d_c)], partial_acc_, bf16_scores);
    } else {
      cpu::latent_attention(pool_, q_t, q + t * nh * d_qk + d_nope, d_qk, lat, width, pos0 + t + 1, nh, d_c, d_rope,
                            softmax_scale_, &o_lat[size_t(t * nh * d_c)], partial_acc_);
    }
  }

  // out[t, h] = W_UV[h] · o_lat[t, h]      [T, nh, d_v]
  pool_.parallel_for(nh, 1, [&](int64_t h0, int64_t h1) {
    for (int64_t t = 0; t < T; ++t)
      cpu::expand_latent_heads(kv_b, d_nope, d_v, &o_lat[size_t(t * nh * d_c)], h0, h1, out + t * nh * d_v);
  });
}

void DeepseekV2::mlp_block(int64_t layer, const float* x, int64_t T, float* out) {
  const LayerWeights& w = w_.layers[size_t(layer)];
  if (w.moe) {
    moe(w, x, T, out);
  } else {
    swiglu(w.dense, x, T, out);
  }
}

void DeepseekV2::swiglu(const SwigluWeights& w, const float* x, int64_t T, float* out) {
  std::vector<SwigluRun> runs = {{&w, x, T, out, {}, {}}};
  swiglu_group(runs);
}

void DeepseekV2::swiglu_group(std::vector<SwigluRun>& runs) {
  // Gate and up of every run in one parallel region, then every down projection in another.
  std::vector<cpu::MatmulJob> jobs;
  for (SwigluRun& r : runs) {
    const int64_t I = r.w->gate.rows;
    r.gate.resize(size_t(r.T * I));  // [T, I]
    r.up.resize(size_t(r.T * I));
    jobs.push_back({r.x, r.T, &r.w->gate, r.gate.data()});
    jobs.push_back({r.x, r.T, &r.w->up, r.up.data()});
  }
  cpu::matmul_group(pool_, jobs);
  jobs.clear();
  std::vector<cpu::SiluMulJob> silu;
  for (SwigluRun& r : runs) {
    silu.push_back({r.gate.data(), r.up.data(), r.gate.data(), int64_t(r.gate.size())});
    jobs.push_back({r.gate.data(), r.T, &r.w->down, r.out});
  }
  cpu::silu_mul_group(pool_, silu);
  cpu::matmul_group(pool_, jobs);
}

void DeepseekV2::moe(const LayerWeights& w, const float* x, int64_t T, float* out) {
  const int64_t H = cfg_.hidden_size, E = cfg_.n_routed_experts, K = cfg_.num_experts_per_tok;
  std::vector<float> scores(size_t(T * E));  // [T, E] router logits -> probabilities (f32)
  cpu::matmul(pool_, x, T, w.router, scores.data());
  std::vector<int32_t> ids(size_t(T * K));
  std::vector<float> gates(size_t(T * K));
  for (int64_t t = 0; t < T; ++t) {
    ref::softmax(&scores[size_t(t * E)], E);
    route_token(cfg_, &scores[size_t(t * E)], &ids[size_t(t * K)], &gates[size_t(t * K)]);
  }
  // Group the (token, gate) pairs by expert; every expert with tokens runs once on them, all the
  // experts (and the shared ones) together.
  std::vector<std::vector<std::pair<int64_t, float>>> assigned(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) assigned[size_t(ids[size_t(t * K + k)])].push_back({t, gates[size_t(t * K + k)]});

  std::vector<int64_t> used;                                // the experts with tokens
  std::vector<std::vector<float>> xe, ye;                   // per used expert: [n, H] its tokens in and out
  for (int64_t e = 0; e < E; ++e) {
    const auto& list = assigned[size_t(e)];
    if (list.empty()) continue;
    const int64_t n = int64_t(list.size());
    used.push_back(e);
    xe.emplace_back(size_t(n * H));
    ye.emplace_back(size_t(n * H));
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + list[size_t(i)].first * H, H, &xe.back()[size_t(i * H)]);
  }
  std::vector<SwigluRun> runs;
  for (size_t i = 0; i < used.size(); ++i)
    runs.push_back({&w.experts[size_t(used[i])], xe[i].data(), int64_t(assigned[size_t(used[i])].size()), ye[i].data(), {}, {}});
  std::vector<float> shared_out;
  if (w.has_shared) {
    shared_out.resize(size_t(T * H));
    runs.push_back({&w.shared, x, T, shared_out.data(), {}, {}});
  }
  swiglu_group(runs);

  std::fill(out, out + T * H, 0.0f);
  for (size_t i = 0; i < used.size(); ++i) {  // in expert order, as each token's sum always was
    const auto& list = assigned[size_t(used[i])];
    for (size_t j = 0; j < list.size(); ++j) cpu::axpy(list[j].second, &ye[i][j * size_t(H)], out + list[j].first * H, H);
  }
  for (size_t i = 0; i < shared_out.size(); ++i) out[i] += shared_out[i];
}

}  // namespace dsv2
