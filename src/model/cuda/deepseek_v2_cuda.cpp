#include "model/cuda/deepseek_v2_cuda.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <type_traits>

#include "model/rope.h"
#include "model/safetensors.h"
#include "ops/cuda/causal_attention_mma.h"
#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_buffer.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/prompt_keys_values.h"

namespace dsv2 {

using cuda::DeviceBuffer;
using cuda::DeviceMatrix;

namespace {

struct DeviceSwiglu {
  DeviceMatrix gate, up, down;  // [I, H], [I, H], [H, I]
};

struct DeviceLayer {
  float *input_norm = nullptr, *post_norm = nullptr, *q_a_norm = nullptr, *kv_a_norm = nullptr;  // f32 [dim]
  DeviceMatrix q_proj, q_a_proj, q_b_proj, kv_a_proj, kv_b_proj, o_proj;
  void* wuk_t = nullptr;  // kv_b_proj's W_UK blocks transposed: [nh, d_c, d_nope]
  // kv_b_proj for the prompt attention's decompression (bf16 latents times bf16 weights): the matrix
  // itself, or for F16 models a copy rounded to bf16 (their absorbed decode reads the stored values).
  DeviceMatrix kv_b_bf16;
  bool moe = false, has_shared = false;
  DeviceSwiglu dense, shared;
  DeviceMatrix router;     // [E, H]
  cuda::ExpertWeights experts;  // gate/up [E, I, H], down [E, H, I]
};

// Rows of lm_head output held at once: a prompt chunk's logits for every row come in pieces this tall.
constexpr int64_t kLogitRowsPerPiece = 256;

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

// Decode batches and prompt chunks of more than this many tokens run the routed experts as the tiled
// grouped GEMMs (moe_tiled); from kGemvMaxTokens + 1 up to it as the grouped tensor-core kernel of
// decode batches (the two measured against each other at 64 to 512 tokens: docs/cuda-notes.md, v21).
// F32 experts: cuBLAS GEMMs per expert for prompt chunks (moe_sorted_by_expert).
constexpr int64_t kGroupedMaxTokens = 128;

struct CudaDeepseekV2::Impl {
  cudaStream_t stream = nullptr;
  // Decode steps of up to 8 tokens run the query absorption and the shared experts on `side` while
  // `stream` writes the latents and runs the router and routed experts (forked and joined through the
  // two events, also inside a captured graph).
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  // Decode steps of up to 8 tokens fetch weights into L2 on `prefetch` while the attention runs.
  cudaStream_t prefetch = nullptr;
  cudaEvent_t prefetch_fork = nullptr, prefetch_join = nullptr;
  cublasHandle_t blas = nullptr;
  // The prefill's routed-expert GEMMs, expert e on stream e % kExpertStreams (each with its own cuBLAS
  // handle): one expert's GEMM of a few hundred tokens fills a fraction of the GPU.
  static constexpr int kExpertStreams = 4;
  cudaStream_t expert_streams[kExpertStreams] = {};
  cublasHandle_t expert_blas[kExpertStreams] = {};
  cudaEvent_t expert_done[kExpertStreams] = {};
  std::vector<DeviceBuffer> owned;  // every device allocation of weights and scratch
  DeviceMatrix embed, lm_head;
  float* final_norm = nullptr;
  std::vector<DeviceLayer> layers;
  float* inv_freq = nullptr;
  float amplitude = 1.0f;
  cuda::PagedLatentCache cache;
  std::vector<std::vector<int32_t>> host_tables;  // [slot][max_blocks]
  int64_t max_blocks = 0;

  // Step inputs (device): ids, positions, sequence rows, block tables, lengths.
  int32_t *ids = nullptr, *pos = nullptr, *seq = nullptr, *tables = nullptr, *seq_lens = nullptr, *argmax = nullptr;
  // Activations (device, f32) sized for max(prefill chunk, batch) tokens.
  float *x = nullptr, *a = nullptr, *q = nullptr, *cq = nullptr, *kv = nullptr, *o = nullptr;
  float *g = nullptr, *u = nullptr, *router_logits = nullptr, *gate_w = nullptr, *moe_h = nullptr, *moe_y = nullptr;
  float *logits = nullptr, *argmax_scratch = nullptr;
  float* shared_out = nullptr;  // [Tm, H]: the shared experts' output, added in by the routed experts' combine
  int32_t* expert_ids = nullptr;
  // Attention scratch.
  // The prompt attention on the tensor cores: bf16 keys and values decompressed into `keys_values`.
  bool prefill_attention_mma = false;
  void* keys_values = nullptr;
  // The exact (f32) prompt attention: latents, rotary keys, kv_b_proj's rows, keys and scores.
  float *c_all = nullptr, *kpe_all = nullptr, *kvb = nullptr, *keys = nullptr, *scores = nullptr;
  float *q_lat = nullptr, *o_lat = nullptr, *abs_partials = nullptr;
  void* absorb_lowp = nullptr;  // [B, nh, max(d_c, d_nope)] 2-byte inputs of the absorption GEMMs (B > 8)
  // Expert-sorted MoE (prefill): gathered inputs [T·K, H], up projections [T·K, I_moe], row and slot maps [T·K].
  float *moe_x = nullptr, *moe_u = nullptr;
  void* moe_lowp = nullptr;  // [T·K, max(H, I_moe)] 2-byte values: moe_x, then silu(gate)·up, rounded
  int32_t *moe_rows = nullptr, *moe_slot_of = nullptr;
  cuda::MoeGroupedScratch moe_grouped{};  // decode batches of more than 8 tokens
  // The routed experts take moe_tiled beyond kGroupedMaxTokens tokens: prompt chunks, and decode batches
  // of 2-byte experts (FP8 experts would be widened every step; the grouped kernel reads them as stored).
  bool tiled_experts = false, tiled_decode = false;
  cuda::MoeTiledScratch moe_tiled{};      // its tile list, and the sorted-MoE buffers below
  void* lowp = nullptr;
  void* widened = nullptr;  // FP8 weights: the bf16 copy of one matrix for the cuBLAS paths
  void* widened_experts = nullptr;  // FP8 weights: two projections' [E, I, H] blocks in bf16 (prefill)
  void* blas_workspace = nullptr;
  std::map<int64_t, cudaGraphExec_t> graphs;  // decode step per (batch size, with or without the lm_head)
  // Weight bytes (scales included): every tensor but the routed experts and the embedding; one routed
  // expert of each MoE layer, summed over the layers; one embedding row.
  double non_expert_weight_bytes = 0, expert_weight_bytes = 0, embedding_row_bytes = 0;

  template <typename T = float>
  T* alloc(size_t count) {
    owned.emplace_back(count * sizeof(T));
    return owned.back().get<T>();
  }
  void* alloc_bytes(size_t bytes) {
    owned.emplace_back(bytes);
    return owned.back().get();
  }
  ~Impl() {
    for (auto& [b, g] : graphs) cudaGraphExecDestroy(g);
    if (blas) cublasDestroy(blas);
    for (int i = 0; i < kExpertStreams; ++i) {
      if (expert_blas[i]) cublasDestroy(expert_blas[i]);
      if (expert_done[i]) cudaEventDestroy(expert_done[i]);
      if (expert_streams[i]) cudaStreamDestroy(expert_streams[i]);
    }
    if (fork) cudaEventDestroy(fork);
    if (join) cudaEventDestroy(join);
    if (side) cudaStreamDestroy(side);
    if (prefetch_fork) cudaEventDestroy(prefetch_fork);
    if (prefetch_join) cudaEventDestroy(prefetch_join);
    if (prefetch) cudaStreamDestroy(prefetch);
    if (stream) cudaStreamDestroy(stream);
  }
};

namespace {

// Where each checkpoint tensor lives on the device; experts of a layer share one block per projection.
struct Placement {
  void* data;
  DType dtype;
  float* scales;  // FP8: its tile scales
};

// The matrices that --weights fp8 stores as FP8: every Linear one but kv_b_proj (its W_UK / W_UV
// blocks serve the absorbed attention's exact head-row kernels); the embedding, router and norms stay.
bool stored_as_fp8(const TensorSpec& s) {
  const std::string kvb = "kv_b_proj.weight";
  return s.role == TensorRole::Linear &&
         !(s.name.size() >= kvb.size() && s.name.compare(s.name.size() - kvb.size(), kvb.size(), kvb) == 0);
}

}  // namespace

// dtype_of: a tensor's dtype as `fill` writes it; with opt.fp8_weights the matrices stored_as_fp8
// picks are written to a scratch buffer first and quantized from there.
static void build(CudaDeepseekV2::Impl& m, const ModelConfig& cfg, const CudaOptions& opt,
                  const std::function<DType(const TensorSpec&)>& dtype_of,
                  const std::function<void(const TensorSpec&, void*, DType)>& fill) {
  DSV2_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  DSV2_CUDA_CHECK(cudaStreamCreateWithFlags(&m.side, cudaStreamNonBlocking));
  DSV2_CUDA_CHECK(cudaEventCreateWithFlags(&m.fork, cudaEventDisableTiming));
  DSV2_CUDA_CHECK(cudaEventCreateWithFlags(&m.join, cudaEventDisableTiming));
  DSV2_CUDA_CHECK(cudaStreamCreateWithFlags(&m.prefetch, cudaStreamNonBlocking));
  DSV2_CUDA_CHECK(cudaEventCreateWithFlags(&m.prefetch_fork, cudaEventDisableTiming));
  DSV2_CUDA_CHECK(cudaEventCreateWithFlags(&m.prefetch_join, cudaEventDisableTiming));
  DSV2_CUBLAS_CHECK(cublasCreate(&m.blas));
  const size_t ws_bytes = 64ull << 20;
  m.blas_workspace = m.alloc_bytes(ws_bytes);
  DSV2_CUBLAS_CHECK(cublasSetWorkspace(m.blas, m.blas_workspace, ws_bytes));
  DSV2_CUBLAS_CHECK(cublasSetStream(m.blas, m.stream));
  for (int i = 0; i < m.kExpertStreams; ++i) {
    DSV2_CUDA_CHECK(cudaStreamCreateWithFlags(&m.expert_streams[i], cudaStreamNonBlocking));
    DSV2_CUDA_CHECK(cudaEventCreateWithFlags(&m.expert_done[i], cudaEventDisableTiming));
    DSV2_CUBLAS_CHECK(cublasCreate(&m.expert_blas[i]));  // cuBLAS's own workspace pool per handle
  }

  const int64_t H = cfg.hidden_size, E = cfg.n_routed_experts, I_moe = cfg.moe_intermediate_size;
  const std::vector<TensorSpec> specs = checkpoint_tensor_specs(cfg);
  std::map<std::string, const TensorSpec*> spec_of;
  for (const TensorSpec& s : specs) spec_of[s.name] = &s;
  std::map<std::string, Placement> placed;
  struct ExpertBlock {
    void* data;
    float* scales;
  };
  std::map<std::pair<int64_t, std::string>, ExpertBlock> expert_blocks;  // (layer, projection) -> [E, rows, cols]
  DeviceBuffer staging;  // a matrix as `fill` writes it, before its FP8 quantization
  size_t widest_fp8 = 0;
  for (const TensorSpec& s : specs) {
    const DType source = s.role == TensorRole::Norm ? DType::F32 : dtype_of(s);
    const bool fp8 = opt.fp8_weights && stored_as_fp8(s);
    const DType dt = fp8 ? DType::F8_E4M3 : source;
    const int64_t rows = s.shape[0], cols = s.shape.size() > 1 ? s.shape[1] : 1;
    const size_t n_scales = fp8 ? size_t(fp8_tiles(rows) * fp8_tiles(cols)) : 0;
    void* dst;
    float* scales = nullptr;
    if (s.expert >= 0) {
      // "model.layers.L.mlp.experts.E.gate_proj.weight" -> "gate_proj.weight"
      const size_t after_index = s.name.find('.', s.name.find(".experts.") + 9) + 1;
      const std::string proj = s.name.substr(after_index);
      auto key = std::make_pair(s.layer, proj);
      auto it = expert_blocks.find(key);
      if (it == expert_blocks.end())
        it = expert_blocks.emplace(key, ExpertBlock{m.alloc_bytes(size_t(E * I_moe * H) * dtype_size(dt)),
                                                    fp8 ? m.alloc(size_t(E) * n_scales) : nullptr}).first;
      dst = static_cast<char*>(it->second.data) + size_t(s.expert * I_moe * H) * dtype_size(dt);
      if (fp8) scales = it->second.scales + size_t(s.expert) * n_scales;
    } else {
      dst = m.alloc_bytes(size_t(numel_of(s.shape)) * dtype_size(dt));
      if (fp8) scales = m.alloc(n_scales);
    }
    if (fp8) {
      const size_t bytes = size_t(rows * cols) * dtype_size(source);
      if (staging.bytes() < bytes) staging = DeviceBuffer(bytes);
      fill(s, staging.get(), source);
      cuda::quantize_fp8(staging.get(), source, rows, cols, dst, scales, nullptr);
      DSV2_CUDA_CHECK(cudaDeviceSynchronize());  // the staging buffer is reused by the next matrix
      widest_fp8 = std::max(widest_fp8, size_t(rows * cols));
    } else {
      fill(s, dst, dt);
    }
    placed[s.name] = {dst, dt, scales};
    const double bytes = double(numel_of(s.shape)) * double(dtype_size(dt)) + 4.0 * double(n_scales);
    if (s.role == TensorRole::Embedding) {
      m.embedding_row_bytes = double(cols) * double(dtype_size(dt));
      if (cfg.tie_word_embeddings) m.non_expert_weight_bytes += bytes;  // also the lm_head
    } else if (s.expert >= 0) {
      if (s.expert == 0) m.expert_weight_bytes += bytes;
    } else {
      m.non_expert_weight_bytes += bytes;
    }
  }
  // FP8 matrices widen to bf16 for cuBLAS: once, into a copy of their own (batched decode), or before
  // each GEMM into one scratch.
  const bool keep_widened = opt.fp8_keep_widened && opt.max_batch > cuda::kGemvMaxTokens;
  if (widest_fp8 > 0 && !keep_widened) m.widened = m.alloc_bytes(widest_fp8 * 2);
  if (opt.fp8_weights && E > 0) m.widened_experts = m.alloc_bytes(size_t(2 * E * I_moe * H) * 2);
  auto matrix = [&](const std::string& name) {
    const Placement& p = placed.at(name);
    const TensorSpec& s = *spec_of.at(name);
    DeviceMatrix W{p.dtype, p.data, s.shape[0], s.shape[1], p.scales};
    if (W.dtype != DType::F8_E4M3) return W;
    if (!keep_widened) {
      W.widened = m.widened;
      return W;
    }
    W.widened = m.alloc_bytes(size_t(W.rows * W.cols) * 2);
    cuda::widen_fp8(W, W.widened, nullptr);
    W.widened_ready = true;
    return W;
  };
  auto vec = [&](const std::string& name) { return static_cast<float*>(placed.at(name).data); };
  auto swiglu = [&](const std::string& p) {
    return DeviceSwiglu{matrix(p + "gate_proj.weight"), matrix(p + "up_proj.weight"), matrix(p + "down_proj.weight")};
  };
  m.embed = matrix("model.embed_tokens.weight");
  m.lm_head = cfg.tie_word_embeddings ? m.embed : matrix("lm_head.weight");
  m.final_norm = vec("model.norm.weight");
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    DeviceLayer L;
    const LayerTensorNames n = layer_tensor_names(i);
    L.input_norm = vec(n.input_norm);
    L.post_norm = vec(n.post_attention_norm);
    if (cfg.q_lora_rank) {
      L.q_a_proj = matrix(n.q_a_proj);
      L.q_a_norm = vec(n.q_a_norm);
      L.q_b_proj = matrix(n.q_b_proj);
    } else {
      L.q_proj = matrix(n.q_proj);
    }
    L.kv_a_proj = matrix(n.kv_a_proj);
    L.kv_a_norm = vec(n.kv_a_norm);
    L.kv_b_proj = matrix(n.kv_b_proj);
    L.wuk_t = m.alloc_bytes(size_t(cfg.num_attention_heads * cfg.kv_lora_rank * cfg.qk_nope_head_dim) * dtype_size(L.kv_b_proj.dtype));
    cuda::transpose_wuk(L.kv_b_proj, cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim, L.wuk_t, nullptr);
    L.kv_b_bf16 = L.kv_b_proj;
    if (L.kv_b_proj.dtype == DType::F16 && opt.tensor_core_prefill_attention) {
      L.kv_b_bf16.dtype = DType::BF16;
      L.kv_b_bf16.data = m.alloc_bytes(L.kv_b_proj.bytes());
      cuda::f16_to_bf16(L.kv_b_proj.data, L.kv_b_proj.rows * L.kv_b_proj.cols, const_cast<void*>(L.kv_b_bf16.data),
                        nullptr);
    }
    L.o_proj = matrix(n.o_proj);
    L.moe = cfg.is_moe_layer(i);
    if (L.moe) {
      L.router = matrix(n.router);
      const ExpertBlock &gate = expert_blocks.at({i, "gate_proj.weight"}), &up = expert_blocks.at({i, "up_proj.weight"}),
                        &down = expert_blocks.at({i, "down_proj.weight"});
      L.experts = {placed.at(n.expert(0) + "gate_proj.weight").dtype, gate.data, up.data, down.data, gate.scales, up.scales,
                   down.scales};
      L.has_shared = cfg.n_shared_experts > 0;
      if (L.has_shared) L.shared = swiglu(n.shared_experts);
    } else {
      L.dense = swiglu(n.mlp);
    }
    m.layers.push_back(L);
  }

  RotaryEmbedding rope(cfg);
  m.inv_freq = m.alloc(rope.inv_freq().size());
  DSV2_CUDA_CHECK(cudaMemcpy(m.inv_freq, rope.inv_freq().data(), rope.inv_freq().size() * 4, cudaMemcpyHostToDevice));
  m.amplitude = rope.amplitude();

  // Paged latent cache; unused slots hold NaN. Without cache_blocks, every sequence slot owns
  // ceil(max_context / block_size) blocks.
  m.max_blocks = (opt.max_context + opt.block_size - 1) / opt.block_size;
  const int64_t n_blocks = opt.cache_blocks > 0 ? opt.cache_blocks : opt.max_batch * m.max_blocks;
  m.cache = {nullptr, opt.cache_dtype, cfg.num_hidden_layers, n_blocks, opt.block_size, cfg.latent_width()};
  const size_t cache_bytes = size_t(m.cache.n_layers * m.cache.n_blocks * m.cache.block_size * m.cache.width) * dtype_size(m.cache.dtype);
  m.cache.data = m.alloc_bytes(cache_bytes);
  DSV2_CUDA_CHECK(cudaMemset(m.cache.data, 0xff, cache_bytes));  // all-ones bits: NaN in f32 and bf16
  if (opt.cache_blocks == 0) {
    std::vector<int32_t> order(size_t(m.cache.n_blocks));
    std::iota(order.begin(), order.end(), 0);
    if (opt.shuffle_block_tables) std::shuffle(order.begin(), order.end(), std::mt19937(12345));
    for (int64_t s = 0; s < opt.max_batch; ++s)
      m.host_tables.emplace_back(order.begin() + s * m.max_blocks, order.begin() + (s + 1) * m.max_blocks);
  }

  // Scratch.
  const int64_t nh = cfg.num_attention_heads, d_qk = cfg.qk_head_dim(), Tm = std::max(opt.max_prefill_chunk, opt.max_batch);
  const int64_t Lm = opt.max_context, K = std::max<int64_t>(cfg.num_experts_per_tok, 1);
  const int64_t I_max = std::max({cfg.intermediate_size, cfg.shared_intermediate(), I_moe});
  m.ids = m.alloc<int32_t>(static_cast<size_t>(Tm));
  m.pos = m.alloc<int32_t>(static_cast<size_t>(Tm));
  m.seq = m.alloc<int32_t>(static_cast<size_t>(Tm));
  m.argmax = m.alloc<int32_t>(static_cast<size_t>(Tm));
  m.seq_lens = m.alloc<int32_t>(size_t(opt.max_batch));
  m.tables = m.alloc<int32_t>(size_t(opt.max_batch * m.max_blocks));
  m.x = m.alloc(size_t(Tm * H));
  m.a = m.alloc(size_t(Tm * H));
  m.q = m.alloc(size_t(Tm * nh * d_qk));
  m.cq = m.alloc(size_t(Tm * cfg.q_lora_rank.value_or(1)));
  m.kv = m.alloc(size_t(Tm * cfg.latent_width()));
  m.o = m.alloc(size_t(Tm * nh * cfg.v_head_dim));
  m.g = m.alloc(size_t(Tm * I_max));
  m.u = m.alloc(size_t(Tm * I_max));
  m.router_logits = m.alloc(size_t(Tm * std::max<int64_t>(E, 1)));
  m.expert_ids = m.alloc<int32_t>(size_t(Tm * K));
  m.gate_w = m.alloc(size_t(Tm * K));
  m.moe_h = m.alloc(size_t(Tm * K * std::max<int64_t>(I_moe, 1)));
  m.moe_y = m.alloc(size_t(Tm * K * H));
  m.logits = m.alloc(size_t(std::max(opt.max_batch, std::min(Tm, kLogitRowsPerPiece)) * cfg.vocab_size));
  m.shared_out = m.alloc(size_t(Tm * H));
  m.argmax_scratch = m.alloc(size_t(cuda::argmax_scratch_floats(Tm)));
  const cuda::MlaShape shape{nh, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank,
                             float(cfg.softmax_scale())};
  m.prefill_attention_mma = opt.tensor_core_prefill_attention && cuda::causal_attention_mma_supported(shape) &&
                            cuda::decompress_keys_values_supported(shape) && m.layers[0].kv_b_bf16.dtype == DType::BF16;
  if (m.prefill_attention_mma) {
    m.keys_values = m.alloc_bytes(cuda::prompt_keys_values_bytes(shape, Lm));
  } else {
    m.c_all = m.alloc(size_t(Lm * cfg.kv_lora_rank));
    m.kpe_all = m.alloc(size_t(Lm * cfg.qk_rope_head_dim));
    m.kvb = m.alloc(size_t(Lm * nh * (cfg.qk_nope_head_dim + cfg.v_head_dim)));
    m.keys = m.alloc(size_t(Lm * nh * d_qk));
    m.scores = m.alloc(size_t(nh * opt.max_prefill_chunk * Lm));
  }
  m.q_lat = m.alloc(size_t(opt.max_batch * nh * cfg.kv_lora_rank));
  m.o_lat = m.alloc(size_t(opt.max_batch * nh * cfg.kv_lora_rank));
  m.abs_partials = m.alloc(size_t(cuda::absorbed_attention_scratch_floats(opt.max_batch, nh, cfg.kv_lora_rank, Lm)));
  if (opt.max_batch > cuda::kGemvMaxTokens)
    m.absorb_lowp = m.alloc_bytes(size_t(opt.max_batch * nh * std::max(cfg.kv_lora_rank, cfg.qk_nope_head_dim)) * 2);
  m.moe_u = m.alloc(size_t(Tm * K * std::max<int64_t>(I_moe, 1)));
  m.moe_lowp = m.alloc_bytes(size_t(Tm * K * std::max(H, I_moe)) * 2);
  m.moe_rows = m.alloc<int32_t>(size_t(Tm * K));
  m.moe_slot_of = m.alloc<int32_t>(size_t(Tm * K));
  const auto moe_layer = std::find_if(m.layers.begin(), m.layers.end(), [](const DeviceLayer& L) { return L.moe; });
  if (moe_layer != m.layers.end()) {
    m.tiled_experts = cuda::tiled_experts_supported(cuda::gemm_operand_dtype(moe_layer->experts.dtype), H, I_moe, E);
    m.tiled_decode = m.tiled_experts && moe_layer->experts.dtype != DType::F8_E4M3;
  }
  if (m.tiled_experts)  // the tiled experts' rows live in the sorted-MoE buffers above
    m.moe_tiled = {m.moe_lowp, m.moe_u, m.moe_y, m.moe_rows, m.moe_slot_of,
                   m.alloc<int32_t>(size_t(1 + 3 * cuda::moe_tiles_capacity(Tm * K, E)))};
  else
    m.moe_x = m.alloc(size_t(Tm * K * H));  // moe_sorted_by_expert's gathered f32 inputs
  // The grouped tensor-core experts: decode batches of more than 8 tokens up to kGroupedMaxTokens (all of
  // them without tiled_decode), prompt chunks of more than 8 up to kGroupedMaxTokens.
  const int64_t grouped_tokens = std::max(m.tiled_decode ? std::min(opt.max_batch, kGroupedMaxTokens) : opt.max_batch,
                                          std::min(opt.max_prefill_chunk, kGroupedMaxTokens));
  if (grouped_tokens > cuda::kGemvMaxTokens && E > 0) {
    const int64_t B = grouped_tokens;
    m.moe_grouped.xs = m.alloc_bytes(size_t(E * B * H) * 2);
    m.moe_grouped.hs = m.alloc_bytes(size_t(E * B * I_moe) * 2);
    m.moe_grouped.y = m.alloc(size_t(E * B * H));
    m.moe_grouped.counts = m.alloc<int32_t>(size_t(E));
    m.moe_grouped.slot_of = m.alloc<int32_t>(size_t(B * K));
  }
  const int64_t K_max = std::max({H, I_max, nh * cfg.v_head_dim, cfg.kv_lora_rank, cfg.q_lora_rank.value_or(0)});
  // 2-byte GEMM inputs of Tm rows; the exact prompt attention rounds the latents of a whole context.
  const int64_t latents_lowp = m.prefill_attention_mma ? 0 : Lm * cfg.kv_lora_rank;
  m.lowp = m.alloc_bytes(size_t(std::max(Tm * K_max, latents_lowp)) * 2);
  DSV2_CUDA_CHECK(cudaDeviceSynchronize());
}

static void validate(const ModelConfig& cfg, const CudaOptions& opt) {
  check(opt.cache_dtype == DType::BF16 || opt.cache_dtype == DType::F32, "CUDA latent cache dtype must be bf16 or f32");
  check(opt.max_batch >= 1 && opt.max_context >= 1 && opt.max_prefill_chunk >= 1 && opt.block_size >= 1,
        "CUDA options: batch, context, prefill chunk and block size must be >= 1");
  check(opt.cache_blocks >= 0 && opt.cache_blocks <= INT32_MAX, "CUDA options: cache_blocks must be in [0, 2^31)");
  check(opt.max_context <= cfg.max_position_embeddings,
        "CUDA options: max_context " + std::to_string(opt.max_context) + " exceeds max_position_embeddings " +
            std::to_string(cfg.max_position_embeddings));
  int n = 0;
  DSV2_CUDA_CHECK(cudaGetDeviceCount(&n));
  check(n > 0, "no CUDA device found");
}

CudaDeepseekV2::CudaDeepseekV2(const ModelConfig& cfg, const Checkpoint& checkpoint, const CudaOptions& opt)
    : cfg_(cfg), opt_(opt), lengths_(size_t(opt.max_batch), 0), impl_(std::make_unique<Impl>()) {
  validate(cfg, opt);
  auto tensor = [&](const TensorSpec& s) -> const TensorRef& {
    const TensorRef* t = checkpoint.find(s.name);
    check(t != nullptr, checkpoint.dir() + ": missing tensor '" + s.name + "'");
    return *t;
  };
  DType expert_dtype = DType::BF16;
  bool seen_expert = false;
  build(*impl_, cfg, opt, [&](const TensorSpec& s) {
        const DType dt = tensor(s).dtype();
        if (s.expert >= 0) {  // one block per projection: every expert must share the dtype
          check(!seen_expert || dt == expert_dtype, "CUDA: routed experts stored in different dtypes");
          expert_dtype = dt;
          seen_expert = true;
        }
        return dt;
      },
      [&](const TensorSpec& s, void* dst, DType) {
        const TensorRef& t = tensor(s);
        if (s.role == TensorRole::Norm) {  // kept as f32 on the device
          std::vector<float> v(static_cast<size_t>(t.numel()));
          convert_to_f32(t.dtype(), t.data, v.data(), v.size());
          DSV2_CUDA_CHECK(cudaMemcpy(dst, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
        } else {
          DSV2_CUDA_CHECK(cudaMemcpy(dst, t.data, t.n_bytes, cudaMemcpyHostToDevice));
        }
      });
}

CudaDeepseekV2::CudaDeepseekV2(const ModelConfig& cfg, DType dtype, uint64_t seed, const CudaOptions& opt)
    : cfg_(cfg), opt_(opt), lengths_(size_t(opt.max_batch), 0), impl_(std::make_unique<Impl>()) {
  validate(cfg, opt);
  uint64_t n = 0;
  build(*impl_, cfg, opt, [&](const TensorSpec&) { return dtype; },
        [&](const TensorSpec& s, void* dst, DType dt) {
          float centre = 0, half = std::sqrt(3.0f / float(s.shape.back()));
          if (s.role == TensorRole::Norm) {
            centre = 1.0f;
            half = 0.1f;
          } else if (s.role == TensorRole::Embedding) {
            half = std::sqrt(3.0f);
          }
          cuda::fill_uniform(dst, dt, numel_of(s.shape), centre, half, seed + 0x9e37ull * ++n, nullptr);
        });
  DSV2_CUDA_CHECK(cudaDeviceSynchronize());
}

CudaDeepseekV2::~CudaDeepseekV2() = default;

namespace {

// The expert blocks ([E, I, H] gate and up, [E, H, I] down) as the GEMMs multiply them: as stored, or for
// FP8 experts widened to bf16 with their scales, a projection at a time, every expert in one launch,
// into m.widened_experts: gate and up into its two halves, then (once their GEMMs are enqueued) down
// into the first.
struct GateUpBlocks {
  const void *gate, *up;
};
GateUpBlocks gate_up_for_gemms(CudaDeepseekV2::Impl& m, const cuda::ExpertWeights& W, int64_t E, int64_t I, int64_t H) {
  if (W.dtype != DType::F8_E4M3) return {W.gate, W.up};
  void* const second = static_cast<char*>(m.widened_experts) + size_t(E * I * H) * 2;
  cuda::widen_fp8_matrices(W.gate, W.gate_scales, E, I, H, m.widened_experts, m.stream);
  cuda::widen_fp8_matrices(W.up, W.up_scales, E, I, H, second, m.stream);
  return {m.widened_experts, second};
}
const void* down_for_gemms(CudaDeepseekV2::Impl& m, const cuda::ExpertWeights& W, int64_t E, int64_t I, int64_t H) {
  if (W.dtype != DType::F8_E4M3) return W.down;
  cuda::widen_fp8_matrices(W.down, W.down_scales, E, H, I, m.widened_experts, m.stream);
  return m.widened_experts;
}

// The routed experts for many tokens (prefill; synchronises with the host): the (token, slot)
// pairs sorted by expert, each expert one GEMM over its rows, then a weighted sum per token added into m.x.
void moe_sorted_by_expert(CudaDeepseekV2::Impl& m, const ModelConfig& cfg, const DeviceLayer& L, int64_t T) {
  cudaStream_t st = m.stream;
  const int64_t H = cfg.hidden_size, I = cfg.moe_intermediate_size, K = cfg.num_experts_per_tok, E = cfg.n_routed_experts;
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  DSV2_CUDA_CHECK(cudaMemcpyAsync(ids.data(), m.expert_ids, ids.size() * 4, cudaMemcpyDeviceToHost, st));
  DSV2_CUDA_CHECK(cudaStreamSynchronize(st));
  std::vector<int64_t> start(size_t(E + 1), 0);
  for (int32_t e : ids) ++start[size_t(e) + 1];
  for (int64_t e = 0; e < E; ++e) start[size_t(e + 1)] += start[size_t(e)];
  std::vector<int32_t> rows(ids.size()), slot_of(ids.size());  // sorted slot -> token; pair -> sorted slot
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t p = 0; p < T * K; ++p) {
    const int64_t slot = fill[size_t(ids[size_t(p)])]++;
    rows[size_t(slot)] = int32_t(p / K);
    slot_of[size_t(p)] = int32_t(slot);
  }
  DSV2_CUDA_CHECK(cudaMemcpyAsync(m.moe_rows, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice, st));
  DSV2_CUDA_CHECK(cudaMemcpyAsync(m.moe_slot_of, slot_of.data(), slot_of.size() * 4, cudaMemcpyHostToDevice, st));
  cuda::gather_rows(m.a, m.moe_rows, T * K, H, m.moe_x, st);
  const cuda::ExpertWeights& W = L.experts;
  const DType dt = cuda::gemm_operand_dtype(W.dtype);
  const size_t esz = dtype_size(dt);
  // Expert e's matrix of a [E, rows, cols] block as the GEMMs multiply it.
  auto expert_matrix = [&](const void* block, int64_t e, int64_t rows, int64_t cols) {
    return DeviceMatrix{dt, static_cast<const char*>(block) + size_t(e * rows * cols) * esz, rows, cols};
  };
  const GateUpBlocks gate_up = gate_up_for_gemms(m, W, E, I, H);
  // 2-byte weights: the gathered inputs rounded once for every expert's GEMMs, and silu(gate)·up
  // rounded as it is formed for the down GEMMs (cuBLAS for every expert, also one of 8 tokens or fewer).
  const bool rounded = dt != DType::F32;
  const auto lowp_rows = [&](int64_t b, int64_t width) { return static_cast<char*>(m.moe_lowp) + size_t(b * width) * 2; };
  if (rounded) cuda::round_rows(m.moe_x, H, T * K, H, dt, m.moe_lowp, st);
  // The experts' GEMMs run on the expert streams, which start after all `st` has enqueued and which
  // `st` waits for when they are done.
  const auto fork_experts = [&] {
    DSV2_CUDA_CHECK(cudaEventRecord(m.fork, st));
    for (cudaStream_t s : m.expert_streams) DSV2_CUDA_CHECK(cudaStreamWaitEvent(s, m.fork, 0));
  };
  const auto join_experts = [&] {
    for (int i = 0; i < m.kExpertStreams; ++i) {
      DSV2_CUDA_CHECK(cudaEventRecord(m.expert_done[i], m.expert_streams[i]));
      DSV2_CUDA_CHECK(cudaStreamWaitEvent(st, m.expert_done[i], 0));
    }
  };
  fork_experts();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = start[size_t(e)], n = start[size_t(e + 1)] - b;
    if (n == 0) continue;
    const DeviceMatrix gate = expert_matrix(gate_up.gate, e, I, H), up = expert_matrix(gate_up.up, e, I, H);
    cublasHandle_t blas = m.expert_blas[e % m.kExpertStreams];
    cudaStream_t es = m.expert_streams[e % m.kExpertStreams];
    if (rounded) {
      cuda::linear_rounded(blas, lowp_rows(b, H), n, gate, m.moe_h + b * I, es);
      cuda::linear_rounded(blas, lowp_rows(b, H), n, up, m.moe_u + b * I, es);
    } else {  // f32 weights: no rounding scratch used
      cuda::linear(blas, m.moe_x + b * H, H, n, gate, m.moe_h + b * I, nullptr, es);
      cuda::linear(blas, m.moe_x + b * H, H, n, up, m.moe_u + b * I, nullptr, es);
    }
  }
  join_experts();
  if (rounded) {
    cuda::silu_mul_rounded(m.moe_h, m.moe_u, dt, m.moe_lowp, T * K * I, st);
  } else {
    cuda::silu_mul(m.moe_h, m.moe_u, m.moe_h, T * K * I, st);
  }
  const void* const down_block = down_for_gemms(m, W, E, I, H);
  fork_experts();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t b = start[size_t(e)], n = start[size_t(e + 1)] - b;
    if (n == 0) continue;
    const DeviceMatrix down = expert_matrix(down_block, e, H, I);
    cublasHandle_t blas = m.expert_blas[e % m.kExpertStreams];
    cudaStream_t es = m.expert_streams[e % m.kExpertStreams];
    if (rounded) {
      cuda::linear_rounded(blas, lowp_rows(b, I), n, down, m.moe_y + b * H, es);
    } else {
      cuda::linear(blas, m.moe_h + b * I, I, n, down, m.moe_y + b * H, nullptr, es);
    }
  }
  join_experts();
  cuda::combine_sorted(m.moe_y, m.moe_slot_of, m.gate_w, T, H, K, m.x, st);
}

// The routed experts of a prompt chunk or a large decode batch as tiled grouped GEMMs on the device (no
// host round trip), then the weighted sum per token added into m.x. `a_rounded`: the layer's normed
// inputs already rounded to the GEMMs' dtype, or null (then m.a, f32, is rounded as it is packed).
void moe_tiled(CudaDeepseekV2::Impl& m, const ModelConfig& cfg, const DeviceLayer& L, int64_t T, const void* a_rounded) {
  cudaStream_t st = m.stream;
  const int64_t H = cfg.hidden_size, I = cfg.moe_intermediate_size, K = cfg.num_experts_per_tok, E = cfg.n_routed_experts;
  const cuda::ExpertWeights& W = L.experts;
  const DType dt = cuda::gemm_operand_dtype(W.dtype);
  if (a_rounded)
    cuda::moe_tiled_sort(a_rounded, dt, T, H, K, E, m.expert_ids, dt, m.moe_tiled, st);
  else
    cuda::moe_tiled_sort(m.a, DType::F32, T, H, K, E, m.expert_ids, dt, m.moe_tiled, st);
  const GateUpBlocks gate_up = gate_up_for_gemms(m, W, E, I, H);
  cuda::moe_tiled_gate_up(m.moe_tiled, T * K, H, I, E, dt, gate_up.gate, gate_up.up, st);
  cuda::moe_tiled_down(m.moe_tiled, T * K, H, I, E, dt, down_for_gemms(m, W, E, I, H), st);
  cuda::combine_sorted(m.moe_tiled.y, m.moe_tiled.slot_of, m.gate_w, T, H, K, m.x, st);
}

// Which rows get the final norm, lm_head and argmax (m.logits, m.argmax): every row (a decode step), the
// last (a prompt's last chunk), or none. NormAllRows: the final norm of every row into m.a and no lm_head
// (a prompt chunk whose every row's logits head_rows then computes in pieces).
enum class Head { AllRows, LastRow, NormAllRows, None };

// One forward over T tokens whose inputs (ids, pos, seq, tables, seq_lens) are already on the device.
// Decode (absorbed) when `prefill_pos0` < 0: token b is the only new token of table row b.
void forward_tokens(CudaDeepseekV2::Impl& m, const ModelConfig& cfg, const CudaOptions& opt, int64_t T,
                    int64_t prefill_pos0, Head head) {
  cudaStream_t st = m.stream;
  const int64_t H = cfg.hidden_size, nh = cfg.num_attention_heads, d_qk = cfg.qk_head_dim();
  const int64_t d_c = cfg.kv_lora_rank, d_rope = cfg.qk_rope_head_dim;
  const float eps = float(cfg.rms_norm_eps);
  const cuda::MlaShape shape{nh, cfg.qk_nope_head_dim, d_rope, cfg.v_head_dim, d_c, float(cfg.softmax_scale())};
  cuda::embed_rows(m.embed, m.ids, T, m.x, st);
  // Work on the side stream starts after everything `st` has enqueued so far; `st` waits for all the
  // side stream has enqueued when it joins.
  const auto fork_side = [&] {
    DSV2_CUDA_CHECK(cudaEventRecord(m.fork, st));
    DSV2_CUDA_CHECK(cudaStreamWaitEvent(m.side, m.fork, 0));
  };
  const auto side_done = [&] { DSV2_CUDA_CHECK(cudaEventRecord(m.join, m.side)); };
  bool a_is_normed_x = false;  // the previous layer's MoE combine already wrote this layer's input norm
  // Decode steps of up to 8 tokens absorb the queries (reading q_nope) on the side stream while
  // write_latents rotates q_rope and caches the latents, and prefetch weights during the attention.
  const bool absorb_beside = prefill_pos0 < 0 && T <= cuda::kGemvMaxTokens;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const DeviceLayer& L = m.layers[size_t(l)];
    if (!a_is_normed_x) cuda::rms_norm(m.x, H, L.input_norm, m.a, H, T, H, eps, st);
    a_is_normed_x = false;
    // The query's first projection and kv_a_proj read the same input: one launch for both.
    if (cfg.q_lora_rank) {
      const int64_t d_cq = *cfg.q_lora_rank;
      cuda::linear_pair(m.blas, m.a, H, T, L.q_a_proj, m.cq, L.kv_a_proj, m.kv, m.lowp, st);
      cuda::rms_norm(m.cq, d_cq, L.q_a_norm, m.cq, d_cq, T, d_cq, eps, st);
      cuda::linear(m.blas, m.cq, d_cq, T, L.q_b_proj, m.q, m.lowp, st);
    } else {
      cuda::linear_pair(m.blas, m.a, H, T, L.q_proj, m.q, L.kv_a_proj, m.kv, m.lowp, st);
    }
    const cuda::QueryRope query{m.q + cfg.qk_nope_head_dim, nh * d_qk, nh, d_qk};
    if (absorb_beside) {
      fork_side();
      cuda::absorb_queries(m.blas, shape, m.q, L.kv_b_proj, L.wuk_t, T, m.q_lat, m.absorb_lowp, m.side);
      side_done();
    }
    cuda::write_latents(m.kv, T, L.kv_a_norm, eps, d_c, d_rope, m.seq, m.pos, m.inv_freq, m.amplitude, m.cache, l, m.tables,
                        m.max_blocks, query, st);
    if (prefill_pos0 >= 0) {
      const int64_t Lk = prefill_pos0 + T;
      if (m.prefill_attention_mma) {
        const cuda::PromptKeysValues kv =
            cuda::decompress_keys_values(m.blas, shape, m.cache, l, m.tables, Lk, L.kv_b_bf16, m.keys_values, st);
        cuda::attend_decompressed_mma(shape, m.q, kv.keys, kv.values, T, prefill_pos0, m.o, st);
      } else {
        cuda::gather_latents(m.cache, l, m.tables, Lk, d_c, m.c_all, m.kpe_all, st);
        cuda::linear(m.blas, m.c_all, d_c, Lk, L.kv_b_proj, m.kvb, m.lowp, st);
        cuda::attend_decompressed(m.blas, shape, m.q, m.kvb, m.kpe_all, T, prefill_pos0, m.o, m.keys, m.scores, st);
      }
    } else if (absorb_beside) {
      DSV2_CUDA_CHECK(cudaStreamWaitEvent(st, m.join, 0));
      // The attention is latency-bound at these batch sizes: meanwhile the output projection's weights
      // (W_UV's rows of kv_b_proj, o_proj) go into L2 on the prefetch stream.
      DSV2_CUDA_CHECK(cudaEventRecord(m.prefetch_fork, st));
      DSV2_CUDA_CHECK(cudaStreamWaitEvent(m.prefetch, m.prefetch_fork, 0));
      const cuda::ByteRange ahead[] = {{L.kv_b_proj.data, L.kv_b_proj.bytes()}, {L.o_proj.data, L.o_proj.bytes()}};
      cuda::prefetch_to_l2(ahead, 2, m.prefetch);
      cuda::attend_latents(shape, m.q, m.q_lat, m.cache, l, m.tables, m.max_blocks, m.seq_lens, T, opt.max_context,
                           m.abs_partials, m.o_lat, st);
      cuda::expand_latents(m.blas, shape, L.kv_b_proj, m.o_lat, T, m.o, m.absorb_lowp, st);
    } else {
      cuda::attend_absorbed(m.blas, shape, m.q, L.kv_b_proj, L.wuk_t, m.cache, l, m.tables, m.max_blocks, m.seq_lens, T,
                            opt.max_context, m.q_lat, m.o_lat, m.abs_partials, m.o, m.absorb_lowp, st);
    }
    cuda::linear_accumulate(m.blas, m.o, nh * cfg.v_head_dim, T, L.o_proj, m.x, m.lowp, st);
    cuda::rms_norm(m.x, H, L.post_norm, m.a, H, T, H, eps, st);
    // x += down · (silu(gate · a) ⊙ (up · a))
    // `a_rounded`: m.a already rounded to the gate and up GEMMs' dtype, or null.
    auto swiglu = [&](const DeviceSwiglu& s, const void* a_rounded) {
      const int64_t I = s.gate.rows;
      if (T <= cuda::kGemvMaxTokens) {
        cuda::swiglu_gate_up(m.a, T, s.gate, s.up, m.g, st);
        cuda::linear_accumulate(m.blas, m.g, I, T, s.down, m.x, m.lowp, st);
      } else if (s.down.dtype != DType::F32) {
        // silu(gate)·up rounded as it is formed: the down GEMM's input, with no pass that rounds it.
        if (a_rounded)
          cuda::linear_pair_rounded(m.blas, a_rounded, T, s.gate, m.g, s.up, m.u, st);
        else
          cuda::linear_pair(m.blas, m.a, H, T, s.gate, m.g, s.up, m.u, m.lowp, st);
        cuda::silu_mul_rounded(m.g, m.u, cuda::gemm_operand_dtype(s.down.dtype), m.lowp, T * I, st);
        cuda::linear_accumulate_rounded(m.blas, m.lowp, T, s.down, m.x, st);
      } else {
        cuda::linear_pair(m.blas, m.a, H, T, s.gate, m.g, s.up, m.u, m.lowp, st);
        cuda::silu_mul(m.g, m.u, m.g, T * I, st);
        cuda::linear_accumulate(m.blas, m.g, I, T, s.down, m.x, m.lowp, st);
      }
    };
    if (L.moe) {
      const cuda::RouterShape r{cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.n_group, cfg.topk_group,
                                cfg.topk_method == TopkMethod::GroupLimitedGreedy, cfg.norm_topk_prob,
                                float(cfg.routed_scaling_factor)};
      const bool tiled = (prefill_pos0 >= 0 ? m.tiled_experts : m.tiled_decode) && T > kGroupedMaxTokens;
      // With the tiled experts the normed rows are rounded once, into m.lowp, for the router, the routed
      // experts' pack and the shared experts' gate and up (each would round them again); m.lowp holds
      // them until the shared experts' silu(gate)·up overwrites it.
      const DType mma = cuda::gemm_operand_dtype(L.experts.dtype);
      const bool round_once = tiled && cuda::gemm_operand_dtype(L.router.dtype) == mma &&
                              (!L.has_shared || (cuda::gemm_operand_dtype(L.shared.gate.dtype) == mma &&
                                                 cuda::gemm_operand_dtype(L.shared.up.dtype) == mma));
      const void* a_rounded = round_once ? m.lowp : nullptr;
      if (round_once) {
        cuda::round_rows(m.a, H, T, H, mma, m.lowp, st);
        cuda::linear_rounded(m.blas, a_rounded, T, L.router, m.router_logits, st);
      } else {
        cuda::linear(m.blas, m.a, H, T, L.router, m.router_logits, m.lowp, st);
      }
      cuda::route_tokens(r, m.router_logits, T, m.expert_ids, m.gate_w, st);
      bool shared_done = false;
      const bool grouped = !tiled && T > cuda::kGemvMaxTokens &&
                           cuda::grouped_experts_supported(L.experts, H, cfg.moe_intermediate_size) &&
                           (prefill_pos0 < 0 || (T <= kGroupedMaxTokens && T * cfg.num_experts_per_tok <= cuda::kGroupedMaxPairs));
      if (tiled) {
        moe_tiled(m, cfg, L, T, a_rounded);
      } else if (prefill_pos0 >= 0 && T > cuda::kGemvMaxTokens && !grouped) {
        moe_sorted_by_expert(m, cfg, L, T);
      } else if (grouped) {
        cuda::moe_experts_grouped(m.a, T, H, cfg.moe_intermediate_size, cfg.num_experts_per_tok, cfg.n_routed_experts,
                                  m.expert_ids, m.gate_w, L.experts, m.moe_grouped, m.x, st);
      } else {
        // The shared experts on the side stream meanwhile (GEMV kernels only: no cuBLAS workspace shared
        // between the streams); the routed experts' combine adds their output after its own, the same
        // two additions into x as one after the other.
        shared_done = L.has_shared && T <= cuda::kGemvMaxTokens;
        if (shared_done) {
          fork_side();
          cuda::swiglu_gate_up(m.a, T, L.shared.gate, L.shared.up, m.g, m.side);
          cuda::linear(m.blas, m.g, L.shared.gate.rows, T, L.shared.down, m.shared_out, m.lowp, m.side);
          side_done();
        }
        // The combine also writes the next layer's input norm (or the final norm, when every row gets the
        // lm_head), when it is the layer's last addition into x.
        const bool last = l + 1 == cfg.num_hidden_layers;
        cuda::NormInto next_norm;
        if ((!L.has_shared || shared_done) && (!last || head == Head::AllRows || head == Head::NormAllRows))
          next_norm = {last ? m.final_norm : m.layers[size_t(l + 1)].input_norm, eps, m.a};
        if (!cuda::fused_norm_supported(H, m.x, next_norm)) next_norm = {};
        cuda::moe_experts(m.a, T, H, cfg.moe_intermediate_size, cfg.num_experts_per_tok, cfg.n_routed_experts,
                          m.expert_ids, m.gate_w, L.experts, m.moe_h, m.moe_y, m.x, st,
                          shared_done ? cuda::AlsoAdd{m.shared_out, m.join} : cuda::AlsoAdd{}, next_norm);
        a_is_normed_x = next_norm.weight != nullptr;
      }
      if (L.has_shared && !shared_done) swiglu(L.shared, a_rounded);
    } else {
      swiglu(L.dense, nullptr);
    }
  }
  if (absorb_beside && cfg.num_hidden_layers > 0) {  // every layer forked the prefetch stream
    DSV2_CUDA_CHECK(cudaEventRecord(m.prefetch_join, m.prefetch));
    DSV2_CUDA_CHECK(cudaStreamWaitEvent(st, m.prefetch_join, 0));
  }
  if (head == Head::None) return;
  const int64_t first = head == Head::LastRow ? T - 1 : 0, n = T - first;
  if (!a_is_normed_x) cuda::rms_norm(m.x + first * H, H, m.final_norm, m.a, H, n, H, eps, st);
  if (head == Head::NormAllRows) return;
  cuda::linear(m.blas, m.a, H, n, m.lm_head, m.logits, m.lowp, st);
  cuda::argmax_rows(m.logits, n, cfg.vocab_size, m.argmax, m.argmax_scratch, st);
}

// Logits [n, V] of the final-normed rows m.a[first, first + n) into m.logits (n <= kLogitRowsPerPiece).
void head_rows(CudaDeepseekV2::Impl& m, const ModelConfig& cfg, int64_t first, int64_t n) {
  cuda::linear(m.blas, m.a + first * cfg.hidden_size, cfg.hidden_size, n, m.lm_head, m.logits, m.lowp, m.stream);
}

}  // namespace

int64_t CudaDeepseekV2::cache_blocks() const { return impl_->cache.n_blocks; }

double CudaDeepseekV2::decode_weight_bytes(double experts_per_layer) const {
  return impl_->non_expert_weight_bytes + impl_->embedding_row_bytes + experts_per_layer * impl_->expert_weight_bytes;
}

const std::vector<int32_t>& CudaDeepseekV2::slot_table(int slot) const {
  check(!impl_->host_tables.empty(), "CUDA: sequence slots need the per-slot cache (cache_blocks 0); use the paged calls");
  check(slot >= 0 && slot < opt_.max_batch, "CUDA: no sequence slot " + std::to_string(slot));
  return impl_->host_tables[size_t(slot)];
}

void CudaDeepseekV2::prefill(int slot, const std::vector<int32_t>& ids, LogitsRows rows, std::vector<float>* logits) {
  prefill_paged(slot_table(slot), lengths_[size_t(slot)], ids, rows, logits);
  lengths_[size_t(slot)] += int64_t(ids.size());
}

void CudaDeepseekV2::decode(const std::vector<int>& slots, const std::vector<int32_t>& ids, std::vector<float>* logits,
                            std::vector<int32_t>* argmax) {
  std::vector<const std::vector<int32_t>*> tables;
  std::vector<int64_t> positions;
  for (int slot : slots) {
    tables.push_back(&slot_table(slot));
    positions.push_back(lengths_[size_t(slot)]);
  }
  decode_paged(tables, positions, ids, logits, argmax);
  for (int slot : slots) ++lengths_[size_t(slot)];
}

namespace {

// Checks that `table` covers `n_tokens` positions with blocks of the pool; returns it padded to
// max_blocks entries (the device's table stride).
std::vector<int32_t> padded_table(const std::vector<int32_t>& table, int64_t n_tokens, const cuda::PagedLatentCache& cache,
                                  int64_t max_blocks, int64_t max_context) {
  check(n_tokens <= max_context, "sequence of " + std::to_string(n_tokens) + " tokens exceeds the context of " +
                                     std::to_string(max_context));
  const int64_t needed = (n_tokens + cache.block_size - 1) / cache.block_size;
  check(int64_t(table.size()) >= needed && int64_t(table.size()) <= max_blocks,
        "CUDA: a block table of " + std::to_string(table.size()) + " blocks for " + std::to_string(n_tokens) + " tokens");
  for (int32_t b : table)
    check(b >= 0 && b < cache.n_blocks, "CUDA: block id " + std::to_string(b) + " outside the cache pool");
  std::vector<int32_t> padded(table);
  padded.resize(size_t(max_blocks), 0);  // entries past the sequence are never read
  return padded;
}

}  // namespace

void CudaDeepseekV2::prefill_paged(const std::vector<int32_t>& table, int64_t pos0, const std::vector<int32_t>& ids,
                                   LogitsRows rows, std::vector<float>* logits) {
  Impl& m = *impl_;
  const int64_t T_all = int64_t(ids.size());
  check(T_all > 0, "CUDA prefill: no tokens");
  check(pos0 >= 0, "CUDA prefill: negative position");
  const std::vector<int32_t> padded = padded_table(table, pos0 + T_all, m.cache, m.max_blocks, opt_.max_context);
  for (int32_t id : ids)
    check(id >= 0 && id < cfg_.vocab_size, "token id " + std::to_string(id) + " is outside the vocabulary");
  DSV2_CUDA_CHECK(cudaMemcpyAsync(m.tables, padded.data(), padded.size() * 4, cudaMemcpyHostToDevice, m.stream));
  if (logits) logits->clear();
  for (int64_t start = 0; start < T_all; start += opt_.max_prefill_chunk) {
    const int64_t T = std::min(opt_.max_prefill_chunk, T_all - start), chunk_pos0 = pos0 + start;
    std::vector<int32_t> pos(static_cast<size_t>(T)), seq(size_t(T), 0);
    for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(chunk_pos0 + t);
    DSV2_CUDA_CHECK(cudaMemcpyAsync(m.ids, ids.data() + start, size_t(T) * 4, cudaMemcpyHostToDevice, m.stream));
    DSV2_CUDA_CHECK(cudaMemcpyAsync(m.pos, pos.data(), size_t(T) * 4, cudaMemcpyHostToDevice, m.stream));
    DSV2_CUDA_CHECK(cudaMemcpyAsync(m.seq, seq.data(), size_t(T) * 4, cudaMemcpyHostToDevice, m.stream));
    const bool last_chunk = start + T == T_all, all = rows == LogitsRows::All && logits;
    forward_tokens(m, cfg_, opt_, T, chunk_pos0, all ? Head::NormAllRows : logits && last_chunk ? Head::LastRow : Head::None);
    const int64_t V = cfg_.vocab_size;
    if (all) {  // every row's logits, kLogitRowsPerPiece rows at a time through m.logits
      const size_t at = logits->size();
      logits->resize(at + size_t(T * V));
      for (int64_t r = 0; r < T; r += kLogitRowsPerPiece) {
        const int64_t n = std::min(kLogitRowsPerPiece, T - r);
        head_rows(m, cfg_, r, n);
        DSV2_CUDA_CHECK(cudaMemcpyAsync(logits->data() + at + size_t(r * V), m.logits, size_t(n * V) * 4,
                                        cudaMemcpyDeviceToHost, m.stream));
      }
    } else if (logits && last_chunk) {
      const size_t at = logits->size();
      logits->resize(at + size_t(V));
      DSV2_CUDA_CHECK(cudaMemcpyAsync(logits->data() + at, m.logits, size_t(V) * 4, cudaMemcpyDeviceToHost, m.stream));
    }
    DSV2_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  }
}

void CudaDeepseekV2::decode_paged(const std::vector<const std::vector<int32_t>*>& tables, const std::vector<int64_t>& positions,
                                  const std::vector<int32_t>& ids, std::vector<float>* logits, std::vector<int32_t>* argmax,
                                  const std::vector<int64_t>* logit_rows) {
  const int64_t B = int64_t(ids.size()), V = cfg_.vocab_size;
  check(B >= 1 && int64_t(tables.size()) == B && int64_t(positions.size()) == B,
        "CUDA decode: need one block table, position and id per sequence");
  const int64_t group = opt_.batch_invariant ? std::min<int64_t>(opt_.max_batch, cuda::kGemvMaxTokens) : opt_.max_batch;
  check(opt_.batch_invariant || B <= opt_.max_batch,
        "CUDA decode: " + std::to_string(B) + " sequences exceed max_batch " + std::to_string(opt_.max_batch));
  std::vector<int64_t> every_row;
  if (logits && !logit_rows) {
    every_row.resize(size_t(B));
    std::iota(every_row.begin(), every_row.end(), 0);
    logit_rows = &every_row;
  }
  if (logits) {
    for (size_t i = 0; i < logit_rows->size(); ++i)
      check((*logit_rows)[i] >= 0 && (*logit_rows)[i] < B && (i == 0 || (*logit_rows)[i] > (*logit_rows)[i - 1]),
            "CUDA decode: logit rows must be ascending rows of the batch");
    logits->resize(logit_rows->size() * size_t(V));
  }
  if (argmax) argmax->resize(static_cast<size_t>(B));
  size_t next = 0;  // the first wanted row not yet copied
  for (int64_t b0 = 0; b0 < B; b0 += group) {
    const int64_t b1 = std::min(B, b0 + group);
    std::vector<LogitsCopy> copies;
    for (; logits && next < logit_rows->size() && (*logit_rows)[next] < b1; ++next)
      copies.push_back({(*logit_rows)[next] - b0, logits->data() + next * size_t(V)});
    const auto at = [&](const auto& v) { return std::decay_t<decltype(v)>(v.begin() + b0, v.begin() + b1); };
    decode_group(at(tables), at(positions), at(ids), copies, argmax ? argmax->data() + b0 : nullptr);
  }
}

void CudaDeepseekV2::decode_group(const std::vector<const std::vector<int32_t>*>& tables, const std::vector<int64_t>& positions,
                                  const std::vector<int32_t>& ids, const std::vector<LogitsCopy>& copies, int32_t* argmax) {
  Impl& m = *impl_;
  const int64_t B = int64_t(ids.size());
  std::vector<int32_t> pos(static_cast<size_t>(B)), seq(static_cast<size_t>(B)), lens(static_cast<size_t>(B)), flat;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t p = positions[size_t(b)];
    check(p >= 0, "CUDA decode: negative position");
    check(ids[size_t(b)] >= 0 && ids[size_t(b)] < cfg_.vocab_size, "token id " + std::to_string(ids[size_t(b)]) + " is outside the vocabulary");
    const std::vector<int32_t> padded = padded_table(*tables[size_t(b)], p + 1, m.cache, m.max_blocks, opt_.max_context);
    flat.insert(flat.end(), padded.begin(), padded.end());
    pos[size_t(b)] = int32_t(p);
    seq[size_t(b)] = int32_t(b);
    lens[size_t(b)] = int32_t(p + 1);
  }
  auto up = [&](int32_t* dst, const std::vector<int32_t>& v) {
    DSV2_CUDA_CHECK(cudaMemcpyAsync(dst, v.data(), v.size() * 4, cudaMemcpyHostToDevice, m.stream));
  };
  up(m.ids, ids);
  up(m.pos, pos);
  up(m.seq, seq);
  up(m.seq_lens, lens);
  up(m.tables, flat);
  // A group whose outputs nobody reads (prompt tokens before a chunk's last) skips the lm_head.
  const Head head = argmax || !copies.empty() ? Head::AllRows : Head::None;
  if (opt_.use_graphs) {
    const int64_t key = 2 * B + (head == Head::None ? 0 : 1);
    auto it = m.graphs.find(key);
    if (it == m.graphs.end()) {
      cudaGraph_t graph;
      DSV2_CUDA_CHECK(cudaStreamBeginCapture(m.stream, cudaStreamCaptureModeThreadLocal));
      forward_tokens(m, cfg_, opt_, B, -1, head);
      DSV2_CUDA_CHECK(cudaStreamEndCapture(m.stream, &graph));
      cudaGraphExec_t exec;
      DSV2_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      DSV2_CUDA_CHECK(cudaGraphDestroy(graph));
      it = m.graphs.emplace(key, exec).first;
    }
    DSV2_CUDA_CHECK(cudaGraphLaunch(it->second, m.stream));
  } else {
    forward_tokens(m, cfg_, opt_, B, -1, head);
  }
  const size_t V = size_t(cfg_.vocab_size);
  for (const LogitsCopy& c : copies)
    DSV2_CUDA_CHECK(cudaMemcpyAsync(c.to, m.logits + size_t(c.row) * V, V * 4, cudaMemcpyDeviceToHost, m.stream));
  if (argmax) DSV2_CUDA_CHECK(cudaMemcpyAsync(argmax, m.argmax, size_t(B) * 4, cudaMemcpyDeviceToHost, m.stream));
  DSV2_CUDA_CHECK(cudaStreamSynchronize(m.stream));
}

}  // namespace dsv2
