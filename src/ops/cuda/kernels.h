// Host-side launchers of the CUDA kernels (implemented in *.cu). All pointers are device
// pointers; activations are f32, weights are stored BF16, F16, F32 or FP8 (F8_E4M3 with a scale per
// 128×128 tile). Every launch goes on
// `stream` and is checked. Sizes that change between decode steps (positions, sequence
// lengths, block tables, token ids) are read from device memory so that a decode step can be
// captured once as a CUDA graph and replayed.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "core/fp8.h"

namespace dsv2::cuda {

// FP8 weights: value [r, c] = fp8[r, c] · scales[r / kFp8TileSize, c / kFp8TileSize], one f32 scale per
// tile (DeepSeek-V3's weight_scale_inv layout; core/fp8.h: the tile size, fp8_tiles and the host
// reference of the quantization), chosen so that the tile's largest |value| is 448.

// A row-major [rows, cols] weight in device memory.
struct DeviceMatrix {
  DType dtype = DType::BF16;
  const void* data = nullptr;
  int64_t rows = 0, cols = 0;
  const float* scales = nullptr;  // F8_E4M3: [fp8_tiles(rows), fp8_tiles(cols)]
  void* widened = nullptr;        // F8_E4M3: scratch of rows·cols bf16 values where the cuBLAS path widens it
  bool widened_ready = false;     // F8_E4M3: `widened` holds this matrix's bf16 values for good (widened once)
  size_t bytes() const { return size_t(rows * cols) * dtype_size(dtype); }
};

// ---- FP8 weights (fp8.cu) ----
// dst = src (rows×cols in src_dtype: BF16, F16 or F32) quantized per tile: scale = max|tile| / 448 (1
// for a tile of zeros), dst = src / scale rounded to nearest even, saturated to ±448.
// dst: [rows, cols] FP8 bytes, scales: [fp8_tiles(rows), fp8_tiles(cols)].
void quantize_fp8(const void* src, DType src_dtype, int64_t rows, int64_t cols, void* dst, float* scales,
                  cudaStream_t stream);
// out = bf16(W's values with their scales applied)      W: FP8, out: [rows, cols] bf16
void widen_fp8(const DeviceMatrix& W, void* out, cudaStream_t stream);
// The same for n_mats FP8 matrices [rows, cols] stored one after another, their scales likewise (a
// layer's routed experts): out: [n_mats, rows, cols] bf16.
void widen_fp8_matrices(const void* data, const float* scales, int64_t n_mats, int64_t rows, int64_t cols, void* out,
                        cudaStream_t stream);

// The paged latent cache: [layers][blocks][block_size][width] in `dtype` (BF16 or F32).
struct PagedLatentCache {
  void* data = nullptr;
  DType dtype = DType::BF16;
  int64_t n_layers = 0, n_blocks = 0, block_size = 64, width = 0;
  const void* layer(int64_t l) const {
    return static_cast<const char*>(data) + size_t(l * n_blocks * block_size * width) * dtype_size(dtype);
  }
  void* layer(int64_t l) { return static_cast<char*>(data) + size_t(l * n_blocks * block_size * width) * dtype_size(dtype); }
};

// ---- dense algebra (linear.cu) ----
// y[t, n] = Σ_k x[t, k] · W[n, k]      x: [T, K] f32 (row stride x_stride), y: [T, N] f32.
// T <= kGemvMaxTokens: a bandwidth-bound GEMV kernel; larger T: cuBLAS (x rounded to the weight
// dtype for BF16/F16 weights, f32 accumulation; FP8 weights widened to bf16 in W.widened first).
// `lowp` is scratch of T·K 2-byte values.
constexpr int64_t kGemvMaxTokens = 8;
void linear(cublasHandle_t blas, const float* x, int64_t x_stride, int64_t T, const DeviceMatrix& W, float* y,
            void* lowp, cudaStream_t stream);
// y0 = x·W0ᵀ and y1 = x·W1ᵀ (the same width K), each as linear() forms it: for T <= kGemvMaxTokens
// one GEMV launch for both, else x rounded once for both GEMMs.
void linear_pair(cublasHandle_t blas, const float* x, int64_t x_stride, int64_t T, const DeviceMatrix& W0, float* y0,
                 const DeviceMatrix& W1, float* y1, void* lowp, cudaStream_t stream);
// y[t, n] += Σ_k x[t, k] · W[n, k]: linear() added into y (a residual stream), as one more f32 addition
// of the same sum.
void linear_accumulate(cublasHandle_t blas, const float* x, int64_t x_stride, int64_t T, const DeviceMatrix& W,
                       float* y, void* lowp, cudaStream_t stream);

// y = x·Wᵀ for inputs already rounded to gemm_operand_dtype(W.dtype) (BF16, F16 or FP8 weights; a cuBLAS
// GEMM whatever T): x: [T, W.cols] 2-byte values. The pair: both products of one such x.
void linear_rounded(cublasHandle_t blas, const void* x, int64_t T, const DeviceMatrix& W, float* y, cudaStream_t stream);
void linear_pair_rounded(cublasHandle_t blas, const void* x, int64_t T, const DeviceMatrix& W0, float* y0,
                         const DeviceMatrix& W1, float* y1, cudaStream_t stream);

// The dtype the GEMMs multiply for weights stored as `w` (their inputs are rounded to it): bf16 for FP8
// weights, which are widened first; the stored dtype otherwise.
DType gemm_operand_dtype(DType w);
// y += x·Wᵀ for inputs already rounded to gemm_operand_dtype(W.dtype) (BF16, F16 or FP8 weights; a
// cuBLAS GEMM whatever T): x: [T, W.cols] 2-byte values.
void linear_accumulate_rounded(cublasHandle_t blas, const void* x, int64_t T, const DeviceMatrix& W, float* y,
                               cudaStream_t stream);

// out[r, k] = x[r·x_stride + k] rounded to dtype (BF16 or F16)      out: [rows, K]
void round_rows(const float* x, int64_t x_stride, int64_t rows, int64_t K, DType dtype, void* out, cudaStream_t stream);

// ---- elementwise and per-row kernels (elementwise.cu) ----
// out[t] = f32(table[ids[t]])      ids: [T] int32, out: [T, H]
void embed_rows(const DeviceMatrix& table, const int32_t* ids, int64_t T, float* out, cudaStream_t stream);
// y[t] = x[t] / sqrt(mean(x[t]²) + eps) ⊙ w      x: [T, D] (row stride x_stride), y: [T, D] (stride y_stride)
void rms_norm(const float* x, int64_t x_stride, const float* w, float* y, int64_t y_stride, int64_t T, int64_t D,
              float eps, cudaStream_t stream);
// out[i] = silu(gate[i]) · up[i] (may alias gate)
void silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
// out[i] = silu(gate[i]) · up[i] rounded to dtype (BF16 or F16): the input of a GEMM that follows.
void silu_mul_rounded(const float* gate, const float* up, DType dtype, void* out, int64_t n, cudaStream_t stream);
// out[i] = src[i] (n f16 values) rounded to bf16, to nearest even.
void f16_to_bf16(const void* src, int64_t n, void* out, cudaStream_t stream);
// ids[t] = argmax_v logits[t, v] (ties: the lower index)      logits: [T, V]; scratch: argmax_scratch_floats(T)
void argmax_rows(const float* logits, int64_t T, int64_t V, int32_t* ids, float* scratch, cudaStream_t stream);
int64_t argmax_scratch_floats(int64_t T);
// Starts copying the byte ranges into L2 without waiting for them (Hopper's bulk L2 prefetch, one
// 16-byte-aligned piece per instruction; no thread waits, nothing is written): weights a later kernel
// reads, fetched while the memory would otherwise idle (a latency-bound kernel runs). At most
// kMaxL2Ranges ranges a call, each shrunk to whole aligned 16-byte units.
constexpr int kMaxL2Ranges = 8;
struct ByteRange {
  const void* data = nullptr;
  size_t bytes = 0;
};
void prefetch_to_l2(const ByteRange* ranges, int n, cudaStream_t stream);

// ---- MLA (mla.cu) ----
// The tokens' query rotary parts: n_heads vectors of d_rope values per token t at q + t·token_stride
// + h·head_stride (f32, rotated in place).
struct QueryRope {
  float* q = nullptr;
  int64_t token_stride = 0, n_heads = 0, head_stride = 0;
};
// For each token t: rotate its query heads' rotary parts at pos[t], normalise kv[t, 0:d_c] with
// kv_norm, rotate kv[t, d_c:] at pos[t], and store the row in the cache slot of position pos[t] of
// sequence seq[t] (block_tables: [n_seqs, max_blocks]). kv: [T, width] f32 (updated in place).
void write_latents(float* kv, int64_t T, const float* kv_norm, float eps, int64_t d_c, int64_t d_rope,
                   const int32_t* seq, const int32_t* pos, const float* inv_freq, float amplitude,
                   PagedLatentCache& cache, int64_t layer, const int32_t* block_tables, int64_t max_blocks,
                   const QueryRope& query, cudaStream_t stream);
// Copies positions [0, L) of sequence `seq_index` out of the cache: c: [L, d_c], k_pe: [L, d_rope] (f32).
void gather_latents(const PagedLatentCache& cache, int64_t layer, const int32_t* block_table, int64_t L, int64_t d_c,
                    float* c, float* k_pe, cudaStream_t stream);

struct MlaShape {
  int64_t n_heads, d_nope, d_rope, d_v, d_c;
  float softmax_scale;
  // The scale in base-2 units, for kernels whose softmax exponentiates with exp2: scale · log2(e).
  float softmax_scale_log2() const { return softmax_scale * 1.44269504f; }
};

// Decompressed attention of T queries at positions pos0 .. pos0+T-1 over keys 0 .. pos0+T-1 of one sequence.
// q: [T, nh, d_nope + d_rope] (rotated), kvb: [L, nh, d_nope + d_v] (kv_b_proj of the cached latents),
// k_pe: [L, d_rope]; out: [T, nh, d_v]. scratch_k: [L, nh, d_nope + d_rope] f32; scratch_s: [nh, T, L] f32.
void attend_decompressed(cublasHandle_t blas, const MlaShape& s, const float* q, const float* kvb, const float* k_pe,
                         int64_t T, int64_t pos0, float* out, float* scratch_k, float* scratch_s, cudaStream_t stream);

// The attention of the absorbed form on the latent cache, for one query per sequence b = 0..B-1 at
// position seq_lens[b] - 1 (<= max_len): o_lat[b, h] = Σ_t softmax_t(scale·(q_lat[b, h]·c_t + q_rope[b, h]·k_pe_t))·c_t
// over the cached rows [c_t | k_pe_t] of sequence b. q: [B, nh, d_nope + d_rope] (q_rope its rotated
// tail), q_lat: [B, nh, d_c], o_lat: [B, nh, d_c]; partials: absorbed_attention_scratch_floats() floats.
// A bf16 cache takes a tensor-core kernel: `kernel` names one (benchmarks and tests compare them) or,
// left automatic, the shape picks it (warpgroup_mma where it applies, rows of 512 + 64 values, but for
// contexts under 512 keys in batches whose blocks fill the multiprocessors more than once, and for up to
// kGemvMaxTokens sequences of a max_len up to 2,048).
enum class DecodeAttentionKernel { automatic, warp_mma, warpgroup_mma };
void attend_latents(const MlaShape& s, const float* q, const float* q_lat, const PagedLatentCache& cache, int64_t layer,
                    const int32_t* block_tables, int64_t max_blocks, const int32_t* seq_lens, int64_t B, int64_t max_len,
                    float* partials, float* o_lat, cudaStream_t stream,
                    DecodeAttentionKernel kernel = DecodeAttentionKernel::automatic);
// Absorbed decode attention: one query per sequence b = 0..B-1, at position seq_lens[b] - 1 (<= max_len).
// q: [B, nh, d_nope + d_rope] (rotated); W_kvb: kv_b_proj [nh·(d_nope + d_v), d_c]; wuk_t: its W_UK
// blocks transposed, [nh, d_c, d_nope] in W_kvb's dtype (transpose_wuk);
// q_lat scratch: [B, nh, d_c]; o_lat scratch: [B, nh, d_c]; partials scratch: the count of floats
// absorbed_attention_scratch_floats() gives (the context is split into pieces attended in parallel,
// their size set by max_len alone); out: [B, nh, d_v].  block_tables: [B, max_blocks], seq_lens: [B]
// (device). A bf16 cache takes a tensor-core kernel (query and probabilities rounded to bf16), an
// f32 cache exact f32 sums. The query absorption and output expansion are exact f32 GEMVs for
// B <= kGemvMaxTokens, else cuBLAS GEMMs over inputs rounded to W_kvb's dtype in `lowp` (B·nh·d_c
// 2-byte values).
void attend_absorbed(cublasHandle_t blas, const MlaShape& s, const float* q, const DeviceMatrix& W_kvb, const void* wuk_t,
                     const PagedLatentCache& cache, int64_t layer, const int32_t* block_tables, int64_t max_blocks,
                     const int32_t* seq_lens, int64_t B, int64_t max_len, float* q_lat, float* o_lat, float* partials,
                     float* out, void* lowp, cudaStream_t stream);
// attend_absorbed's first and last parts: q_lat[b, h] = W_UK[h]ᵀ · q_nope[b, h] and out[b, h] = W_UV[h] · o_lat[b, h].
void absorb_queries(cublasHandle_t blas, const MlaShape& s, const float* q, const DeviceMatrix& W_kvb, const void* wuk_t,
                    int64_t B, float* q_lat, void* lowp, cudaStream_t stream);
void expand_latents(cublasHandle_t blas, const MlaShape& s, const DeviceMatrix& W_kvb, const float* o_lat, int64_t B,
                    float* out, void* lowp, cudaStream_t stream);
// out[h, j, i] = W_kvb[h·(d_nope + d_v) + i, j]: the W_UK blocks of kv_b_proj transposed, [nh, d_c, d_nope].
void transpose_wuk(const DeviceMatrix& W_kvb, int64_t n_heads, int64_t d_nope, int64_t d_v, void* out, cudaStream_t stream);
// The partials scratch of attend_latents / attend_absorbed for batches of up to B sequences.
int64_t absorbed_attention_scratch_floats(int64_t B, int64_t n_heads, int64_t d_c, int64_t max_len);

// ---- DeepSeekMoE (moe.cu) ----
struct RouterShape {
  int64_t n_experts, top_k, n_group, topk_group;
  bool group_limited, norm_topk_prob;
  float routed_scaling_factor;
};
// logits: [T, E] router logits (f32) -> expert ids [T, K] and gate weights [T, K] (DeepSeek's rules, ties to the lower index).
void route_tokens(const RouterShape& r, const float* logits, int64_t T, int32_t* expert_ids, float* gate_weights,
                  cudaStream_t stream);
// A layer's routed experts, each expert's matrices contiguous: gate/up [E, I, H], down [E, H, I].
// FP8: the scales of each expert's matrices after one another, [E, fp8_tiles(I), fp8_tiles(H)] and
// [E, fp8_tiles(H), fp8_tiles(I)].
struct ExpertWeights {
  DType dtype = DType::BF16;
  const void *gate = nullptr, *up = nullptr, *down = nullptr;
  const float *gate_scales = nullptr, *up_scales = nullptr, *down_scales = nullptr;
};
// Routed experts for a few tokens, expert-major (each active expert's rows read once): for pair
// p = t·K + k with expert e = expert_ids[p]: h[p] = silu(gate_e · x[t]) ⊙ (up_e · x[t]); y[p] = down_e · h[p];
// out[t] += Σ_k gate_weights[t, k] · y[t, k] (summed in slot order, then added to the residual stream
// out), then out[t] += also.values[t] when given (the shared experts' output, [T, H], computed on
// another stream: the sum waits for also.ready). h: [T·K, I], y: [T·K, H] scratch; out: [T, H]. T·K <= 4096.
struct AlsoAdd {
  const float* values = nullptr;
  cudaEvent_t ready = nullptr;
};
// With norm.weight given, the same launch then writes rms_norm(out[t]) · norm.weight into norm.out[t] (the
// next layer's input norm; the sums in another order than rms_norm's), where fused_norm_supported(H, ...)
// says so (H a multiple of 4, at most 16,384, rows 16-byte aligned).
struct NormInto {
  const float* weight = nullptr;
  float eps = 0;
  float* out = nullptr;
};
bool fused_norm_supported(int64_t H, const float* out, const NormInto& norm);
void moe_experts(const float* x, int64_t T, int64_t H, int64_t I, int64_t K, int64_t E, const int32_t* expert_ids,
                 const float* gate_weights, const ExpertWeights& w, float* h, float* y, float* out, cudaStream_t stream,
                 const AlsoAdd& also = {}, const NormInto& norm = {});
// A dense SwiGLU's first half (the shared experts, the dense layers' MLP) for a few tokens in one
// kernel, with the routed experts' row code: h[t, i] = silu(gate[i] · x[t]) · (up[i] · x[t]).
// x: [T, H], gate/up: [I, H], h: [T, I]; T <= kGemvMaxTokens.
void swiglu_gate_up(const float* x, int64_t T, const DeviceMatrix& gate, const DeviceMatrix& up, float* h,
                    cudaStream_t stream);

// Routed experts for a batch of decode tokens on the tensor cores, with grids fixed by T (so the step
// stays capturable as a graph): expert e's tokens are packed into rows [e·T, e·T + n_e) of xs (inputs
// rounded to bf16, or to f16 for F16 weights), each active expert's gate/up rows then its down rows
// stream once for all its tokens (mma.sync, f32 sums; FP8 rows widened to bf16 with their scales in
// registers; only filled 8-token tiles computed), and the weighted sum is added into out as
// moe_experts does. BF16, F16 or FP8 weights (grouped_experts_supported).
struct MoeGroupedScratch {
  void* xs;          // [E·T, H] 2-byte values
  void* hs;          // [E·T, I] 2-byte values
  float* y;          // [E·T, H]
  int32_t* counts;   // [E]
  int32_t* slot_of;  // [T·K]
};
bool grouped_experts_supported(const ExpertWeights& w, int64_t H, int64_t I);
constexpr int64_t kGroupedMaxPairs = 4096;  // (token, expert) pairs per moe_experts_grouped call
void moe_experts_grouped(const float* x, int64_t T, int64_t H, int64_t I, int64_t K, int64_t E,
                         const int32_t* expert_ids, const float* gate_weights, const ExpertWeights& w,
                         const MoeGroupedScratch& scratch, float* out, cudaStream_t stream);
// Routed experts for many tokens (prompt chunks, large decode batches) as grouped tensor-core GEMMs with
// no host round trip and grids fixed by T·K (capturable in a graph; moe_tiled.cu):
// moe_tiled_sort sorts the (token, slot) pairs by expert on the device (slot_of[p]: pair p's sorted row,
// rows[s]: row s's token) and packs each sorted row's input x[t] into xs (x: [T, H], f32 rounded to
// `dtype` as it is packed, or already in `dtype`); then
// moe_tiled_gate_up writes hs[s] = silu(gate_e · xs[s]) ⊙ (up_e · xs[s]) (2 bytes) and moe_tiled_down
// y[s] = down_e · hs[s] (f32), each as one launch over 128-row tiles of every expert's rows; combine_sorted
// adds the weighted rows. Weights BF16 or F16 ([E, I, H] gate/up, [E, H, I] down; FP8 is widened first).
struct MoeTiledScratch {
  void* xs;          // [T·K, H] 2-byte values
  void* hs;          // [T·K, I] 2-byte values
  float* y;          // [T·K, H]
  int32_t* rows;     // [T·K]
  int32_t* slot_of;  // [T·K]
  int32_t* tiles;    // [1 + 3·moe_tiles_capacity(T·K, E)]
};
int64_t moe_tiles_capacity(int64_t pairs, int64_t E);
bool tiled_experts_supported(DType dtype, int64_t H, int64_t I, int64_t E);
void moe_tiled_sort(const void* x, DType x_dtype, int64_t T, int64_t H, int64_t K, int64_t E, const int32_t* expert_ids,
                    DType dtype, const MoeTiledScratch& scratch, cudaStream_t stream);
void moe_tiled_gate_up(const MoeTiledScratch& scratch, int64_t pairs, int64_t H, int64_t I, int64_t E, DType dtype,
                       const void* gate, const void* up, cudaStream_t stream);
void moe_tiled_down(const MoeTiledScratch& scratch, int64_t pairs, int64_t H, int64_t I, int64_t E, DType dtype,
                    const void* down, cudaStream_t stream);
// For many tokens (prefill): the (token, slot) pairs sorted by expert so that each expert runs one
// GEMM over its rows. out[i] = x[rows[i]] (rows: [n], x: [*, H], out: [n, H]).
void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t H, float* out, cudaStream_t stream);
// out[t] += Σ_k gate_weights[t, k] · y[slot_of[t·K + k]]      y: [T·K, H] in expert-sorted order.
void combine_sorted(const float* y, const int32_t* slot_of, const float* gate_weights, int64_t T, int64_t H, int64_t K,
                    float* out, cudaStream_t stream);

// ---- random weights on the device (random_fill.cu) ----
// Fills n values of `dtype` uniformly in centre ± half_width from (seed, stream of values).
void fill_uniform(void* data, DType dtype, int64_t n, float centre, float half_width, uint64_t seed, cudaStream_t stream);

}  // namespace dsv2::cuda
