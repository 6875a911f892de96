// DeepSeekMoE on the GPU: routing (softmax, greedy or group-limited top-k, scaling) and the routed
// experts, expert-major: each active expert's weight rows are read once per step for all the tokens
// routed to it (decode), or the pairs sorted by expert for one GEMM per expert (prefill).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/expert_pairs.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/overlapped_launch.cuh"

namespace dsv2::cuda {

namespace {

constexpr int kMaxExperts = 1024;
constexpr int kMaxTopK = 32;

// Warp argmax over (value, index) pairs: larger value wins, ties go to the lower index.
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (ov > v || (ov == v && oi < i)) {
      v = ov;
      i = oi;
    }
  }
}

// One warp per token: softmax over the experts, the group limit, then K rounds of argmax.
__global__ void route_kernel(RouterShape r, const float* __restrict__ logits, int32_t* ids, float* weights) {
  start_after_previous_kernel();
  __shared__ float s[kMaxExperts];       // probabilities (0 outside the kept groups)
  __shared__ bool taken[kMaxExperts];
  __shared__ float prob[kMaxTopK];
  const int lane = threadIdx.x;
  const int64_t E = r.n_experts, t = blockIdx.x;
  float mx = -INFINITY;
  for (int64_t e = lane; e < E; e += 32) mx = fmaxf(mx, logits[t * E + e]);
  mx = warp_max(mx);
  float sum = 0;
  for (int64_t e = lane; e < E; e += 32) {
    s[e] = expf(logits[t * E + e] - mx);
    sum += s[e];
    taken[e] = false;
  }
  sum = warp_sum(sum);
  for (int64_t e = lane; e < E; e += 32) s[e] /= sum;
  __syncwarp();
  if (r.group_limited) {
    const int64_t per = E / r.n_group;
    float gm = -INFINITY;  // lane g < n_group: max probability in group g
    if (lane < r.n_group)
      for (int64_t e = lane * per; e < (lane + 1) * per; ++e) gm = fmaxf(gm, s[e]);
    bool kept = false;
    for (int64_t k = 0; k < r.topk_group; ++k) {
      float v = kept ? -INFINITY : gm;
      int g = lane < r.n_group ? lane : 0x7fffffff;
      warp_argmax(v, g);
      kept |= g == lane;
    }
    // Zero the experts of the groups not kept.
    __shared__ bool group_kept[32];
    if (lane < r.n_group) group_kept[lane] = kept;
    __syncwarp();
    for (int64_t e = lane; e < E; e += 32)
      if (!group_kept[e / per]) s[e] = 0.0f;
    __syncwarp();
  }
  float chosen_sum = 0;
  for (int64_t k = 0; k < r.top_k; ++k) {
    float v = -INFINITY;
    int best = 0x7fffffff;
    for (int64_t e = lane; e < E; e += 32)
      if (!taken[e] && (s[e] > v || (s[e] == v && int(e) < best))) {
        v = s[e];
        best = int(e);
      }
    warp_argmax(v, best);
    if (lane == 0) {
      taken[best] = true;
      ids[t * r.top_k + k] = best;
      prob[k] = v;
    }
    chosen_sum += v;
    __syncwarp();
  }
  const bool renormalise = r.top_k > 1 && r.norm_topk_prob;
  for (int64_t k = lane; k < r.top_k; k += 32)
    weights[t * r.top_k + k] = renormalise ? prob[k] / (chosen_sum + 1e-20f) : prob[k] * r.routed_scaling_factor;
}

constexpr int kRowsPerBlock = 8;  // warps per block (each takes a few weight rows)
constexpr int kMaxPairs = 4096;   // (token, slot) pairs per step that the expert-major kernels accept
constexpr int kTokenGroup = 8;    // tokens dotted with one load of a weight row

// out[list[j], r] = f(W_e[r] · in[list[j] / in_div]) for every pair j routed to the expert and the
// rows r = r0 .. r0 + UNITS - 1 (those below R): each weight row is read from memory once per step
// whatever the number of tokens routed to it. A warp takes UNITS rows (their loads in flight
// together); tokens in groups of GROUP share each 16-byte load of a row, rows share each input load.
// A warp for one token at a time (GROUP 1, batch-1 decode) has the registers to keep the loads of two
// steps of K in flight.
// GATE_UP: a unit is two rows (gate and up), f = silu(gate)·up; else one row, f = identity.
// FP8 rows (s_a, s_b: their matrices' tile scales): a warp's UNITS rows and each lane's kVec values
// lie in one tile, so a lane dots them unscaled and adds the sum times the tile's scale.
template <typename WT, bool GATE_UP, bool VECTORISED, int UNITS, int GROUP>
__device__ void expert_rows(const WT* __restrict__ w_a, const WT* __restrict__ w_b, const float* __restrict__ s_a,
                            const float* __restrict__ s_b, int64_t r0, int64_t R, const float* __restrict__ in,
                            int64_t in_stride, int64_t in_div, int64_t K, const int32_t* list, int n,
                            float* __restrict__ out, int64_t out_stride) {
  constexpr int kVec = VECTORISED ? 16 / sizeof(WT) : 1;
  constexpr int64_t kStep = 32 * kVec;
  constexpr int UNROLL = GROUP == 1 ? 2 : 1;
  const int lane = threadIdx.x % 32;
  const WT *rows_a[UNITS], *rows_b[UNITS];
#pragma unroll
  for (int u = 0; u < UNITS; ++u) {
    const int64_t r = r0 + u < R ? r0 + u : 0;  // rows past R: computed, not written
    rows_a[u] = w_a + r * K;
    rows_b[u] = GATE_UP ? w_b + r * K : nullptr;
  }
  const int64_t tile_row = (min(r0, R - 1) / kFp8TileSize) * fp8_tiles(K);
  for (int g0 = 0; g0 < n; g0 += GROUP) {
    float acc_a[UNITS][GROUP] = {}, acc_b[UNITS][GROUP] = {};
    const float* x[GROUP];
#pragma unroll
    for (int g = 0; g < GROUP; ++g) x[g] = in + (g0 + g < n ? list[g0 + g] / in_div : 0) * in_stride;
    // acc[u][g] += row u's values at k .. k + kVec (gate and up for GATE_UP) · token g's inputs there.
    auto accumulate = [&](int64_t k, const WT (&wa)[UNITS][kVec], const WT (&wb)[UNITS][kVec]) {
      float fa[UNITS][kVec], fb[UNITS][kVec];
#pragma unroll
      for (int u = 0; u < UNITS; ++u) {
        weights_to_f32(wa[u], fa[u]);
        if constexpr (GATE_UP) weights_to_f32(wb[u], fb[u]);
      }
      float scale_a = 1.0f, scale_b = 1.0f;
      if constexpr (kIsFp8<WT>) {
        scale_a = s_a[tile_row + k / kFp8TileSize];
        if constexpr (GATE_UP) scale_b = s_b[tile_row + k / kFp8TileSize];
      }
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        if (g0 + g < n) {
          float xv[kVec];
          if constexpr (VECTORISED) {
            load_f32x(x[g] + k, xv);
          } else {
            xv[0] = x[g][k];
          }
#pragma unroll
          for (int u = 0; u < UNITS; ++u) {
            add_products<WT>(acc_a[u][g], fa[u], xv, scale_a);
            if constexpr (GATE_UP) add_products<WT>(acc_b[u][g], fb[u], xv, scale_b);
          }
        }
      }
    };
    int64_t k = int64_t(lane) * kVec;
    if constexpr (VECTORISED) {
      // The loads of UNROLL steps in flight before the first is used; the sums keep their order.
      for (; k + (UNROLL - 1) * kStep < K; k += UNROLL * kStep) {
        uint4 ra[UNROLL][UNITS], rb[UNROLL][UNITS];
#pragma unroll
        for (int s = 0; s < UNROLL; ++s)
#pragma unroll
          for (int u = 0; u < UNITS; ++u) {
            ra[s][u] = load_weights16(rows_a[u] + k + s * kStep);
            if constexpr (GATE_UP) rb[s][u] = load_weights16(rows_b[u] + k + s * kStep);
          }
#pragma unroll
        for (int s = 0; s < UNROLL; ++s)
          accumulate(k + s * kStep, reinterpret_cast<const WT(&)[UNITS][kVec]>(ra[s]),
                     reinterpret_cast<const WT(&)[UNITS][kVec]>(rb[s]));
      }
      for (; k < K; k += kStep) {
        uint4 ra[UNITS], rb[UNITS];
#pragma unroll
        for (int u = 0; u < UNITS; ++u) {
          ra[u] = load_weights16(rows_a[u] + k);
          if constexpr (GATE_UP) rb[u] = load_weights16(rows_b[u] + k);
        }
        accumulate(k, reinterpret_cast<const WT(&)[UNITS][kVec]>(ra), reinterpret_cast<const WT(&)[UNITS][kVec]>(rb));
      }
    } else {
      for (; k < K; k += kStep) {
        WT wa[UNITS][1], wb[UNITS][1];
#pragma unroll
        for (int u = 0; u < UNITS; ++u) {
          wa[u][0] = rows_a[u][k];
          wb[u][0] = GATE_UP ? rows_b[u][k] : wa[u][0];
        }
        accumulate(k, wa, wb);
      }
    }
#pragma unroll
    for (int u = 0; u < UNITS; ++u)
#pragma unroll
      for (int g = 0; g < GROUP; ++g) {
        if (g0 + g >= n) continue;
        const float a = warp_sum(acc_a[u][g]);
        const float b = GATE_UP ? warp_sum(acc_b[u][g]) : 0.0f;
        if (lane == 0 && r0 + u < R) out[list[g0 + g] * out_stride + r0 + u] = GATE_UP ? silu_times(a, b) : a;
      }
  }
}

// Gate/up row pairs per warp: 2 for a group of 2-byte rows (twice the blocks, each input load still
// shared by a warp's rows), else 4 (one token; FP8 rows, which 2 pairs a warp made slower at 8 tokens).
template <typename WT, int GROUP>
constexpr int kGateUpUnits = GROUP > 1 && !kIsFp8<WT> ? 2 : 4;
constexpr int kDownUnits = 4;    // down rows per warp

// The expert this block works for, with its pairs in list[0..n). One token (GROUP 1): its K experts
// are distinct, so block column y is pair y, the only pair of expert ids[y]. Else block column y is
// expert y (n = 0 when no token chose it).
template <int GROUP>
__device__ int32_t expert_of_block(const int32_t* __restrict__ ids, int64_t n_pairs, int32_t* list, int& n) {
  if constexpr (GROUP == 1) {
    if (threadIdx.x == 0) list[0] = int32_t(blockIdx.y);
    __syncthreads();
    n = 1;
    return ids[blockIdx.y];
  } else {
    n = pairs_of_expert(ids, n_pairs, int32_t(blockIdx.y), list);
    return int32_t(blockIdx.y);
  }
}

// h[p, i] = silu(gate_e[i] · x[t]) · (up_e[i] · x[t]) for the pairs p = t·K + k routed to expert
// e = expert_of_block; grid (I / (8·kGateUpUnits<WT, GROUP>), K for one token else E); blocks of absent experts
// return at once.
template <typename WT, bool VECTORISED, int GROUP>
__global__ void expert_gate_up_kernel(const float* __restrict__ x, int64_t H, int64_t I, int64_t K, int64_t n_pairs,
                                      const int32_t* __restrict__ ids, const WT* __restrict__ gate, const WT* __restrict__ up,
                                      const float* gate_scales, const float* up_scales, float* h) {
  start_after_previous_kernel();
  __shared__ int32_t list[GROUP == 1 ? 1 : kMaxPairs];
  int n;
  const int32_t e = expert_of_block<GROUP>(ids, n_pairs, list, n);
  const int64_t i0 = (int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32) * kGateUpUnits<WT, GROUP>;
  if (n == 0 || i0 >= I) return;
  const int64_t offset = int64_t(e) * I * H, scale_offset = kIsFp8<WT> ? int64_t(e) * fp8_tiles(I) * fp8_tiles(H) : 0;
  expert_rows<WT, true, VECTORISED, kGateUpUnits<WT, GROUP>, GROUP>(gate + offset, up + offset, gate_scales + scale_offset,
                                                                    up_scales + scale_offset, i0, I, x, H, K, H, list, n, h, I);
}

// y[p, j] = down_e[j] · h[p] with e = expert_of_block; grid (H / (8·kDownUnits), K for one token else E)
template <typename WT, bool VECTORISED, int GROUP>
__global__ void expert_down_kernel(const float* __restrict__ h, int64_t H, int64_t I, int64_t n_pairs,
                                   const int32_t* __restrict__ ids, const WT* __restrict__ down, const float* down_scales,
                                   float* y) {
  start_after_previous_kernel();
  __shared__ int32_t list[GROUP == 1 ? 1 : kMaxPairs];
  int n;
  const int32_t e = expert_of_block<GROUP>(ids, n_pairs, list, n);
  const int64_t j0 = (int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32) * kDownUnits;
  if (n == 0 || j0 >= H) return;
  const int64_t scale_offset = kIsFp8<WT> ? int64_t(e) * fp8_tiles(H) * fp8_tiles(I) : 0;
  expert_rows<WT, false, VECTORISED, kDownUnits, GROUP>(down + int64_t(e) * H * I, nullptr, down_scales + scale_offset,
                                                        nullptr, j0, H, h, I, 1, I, list, n, y, H);
}

// h[t, i] = silu(gate[i] · x[t]) · (up[i] · x[t]) for the T <= GROUP tokens; grid I / (8·kGateUpUnits<WT, GROUP>).
template <typename WT, bool VECTORISED, int GROUP>
__global__ void swiglu_gate_up_kernel(const float* __restrict__ x, int T, int64_t H, int64_t I, const WT* __restrict__ gate,
                                      const WT* __restrict__ up, const float* gate_scales, const float* up_scales, float* h) {
  start_after_previous_kernel();
  __shared__ int32_t tokens[GROUP];
  if (threadIdx.x < T) tokens[threadIdx.x] = int32_t(threadIdx.x);
  __syncthreads();
  const int64_t i0 = (int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32) * kGateUpUnits<WT, GROUP>;
  if (i0 >= I) return;
  expert_rows<WT, true, VECTORISED, kGateUpUnits<WT, GROUP>, GROUP>(gate, up, gate_scales, up_scales, i0, I, x, H, 1, H,
                                                                    tokens, T, h, I);
}

// out[t, j] += Σ_k w[t, k] · y[t·K + k, j], summed in slot order; then out[t, j] += also[t, j] (when given).
__global__ void combine_kernel(const float* __restrict__ y, const float* __restrict__ w, int64_t T, int64_t H, int64_t K,
                               const float* __restrict__ also, float* out) {
  start_after_previous_kernel();
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * H) return;
  const int64_t t = i / H, j = i % H;
  float acc = 0;
  for (int64_t k = 0; k < K; ++k) acc += w[t * K + k] * y[(t * K + k) * H + j];
  out[i] += acc;
  if (also) out[i] += also[i];
}

// combine_kernel's sums for token t = blockIdx.x (each value's sum in the same order), then the RMSNorm of
// its updated row into a: one block of kCombineNormThreads per token, 4 values a thread, the row in registers.
constexpr int kCombineNormThreads = 1024, kCombineNormVecs = 4;
__global__ void __launch_bounds__(kCombineNormThreads)
    combine_norm_kernel(const float* __restrict__ y, const float* __restrict__ w, int64_t H, int64_t K,
                        const float* __restrict__ also, float* out, const float* __restrict__ norm_w, float eps, float* a) {
  start_after_previous_kernel();
  __shared__ float red[32];
  const int64_t t = blockIdx.x;
  float4 v[kCombineNormVecs];
#pragma unroll
  for (int j = 0; j < kCombineNormVecs; ++j) {
    const int64_t i4 = threadIdx.x + int64_t(j) * kCombineNormThreads;
    v[j] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (i4 >= H / 4) continue;
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const float wk = w[t * K + k];
      const float4 yk = reinterpret_cast<const float4*>(y + (t * K + k) * H)[i4];
      acc.x += wk * yk.x;
      acc.y += wk * yk.y;
      acc.z += wk * yk.z;
      acc.w += wk * yk.w;
    }
    float4 o = reinterpret_cast<float4*>(out + t * H)[i4];
    o.x += acc.x;
    o.y += acc.y;
    o.z += acc.z;
    o.w += acc.w;
    if (also) {
      const float4 s = reinterpret_cast<const float4*>(also + t * H)[i4];
      o.x += s.x;
      o.y += s.y;
      o.z += s.z;
      o.w += s.w;
    }
    reinterpret_cast<float4*>(out + t * H)[i4] = o;
    v[j] = o;
  }
  rms_norm_row_registers(v, H, norm_w, a + t * H, eps, red);
}

// out[i] = x[rows[i]]      rows: [n], x: [*, H], out: [n, H]
__global__ void gather_rows_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows, int64_t H, float* out) {
  const float* src = x + int64_t(rows[blockIdx.x]) * H;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) out[blockIdx.x * H + j] = src[j];
}

// Vector of V consecutive floats (V = 4: one 16-byte load).
template <int V>
using FloatVec = std::conditional_t<V == 4, float4, float>;
template <int V>
__device__ __forceinline__ void add_scaled(FloatVec<V>& acc, float w, const FloatVec<V>& v) {
  if constexpr (V == 4) {
    acc.x += w * v.x, acc.y += w * v.y, acc.z += w * v.z, acc.w += w * v.w;
  } else {
    acc += w * v;
  }
}

// out[t, j] += Σ_k w[t, k] · y[slot_of[t·K + k], j], summed in slot order: one block per token (its slots
// and weights read once), V values per thread at a time (V = 4: H % 4 == 0 and 16-byte aligned rows),
// the K rows' loads independent.
template <int V>
__global__ void combine_sorted_kernel(const float* __restrict__ y, const int32_t* __restrict__ slot_of,
                                      const float* __restrict__ w, int64_t H, int64_t K, float* out) {
  using Vec = FloatVec<V>;
  const int64_t t = blockIdx.x, vecs = H / V;
  const Vec* yv = reinterpret_cast<const Vec*>(y);
  Vec* out_t = reinterpret_cast<Vec*>(out) + t * vecs;
  for (int64_t c = threadIdx.x; c < vecs; c += blockDim.x) {
    Vec acc{};
    for (int64_t k = 0; k < K; ++k) add_scaled<V>(acc, w[t * K + k], yv[int64_t(slot_of[t * K + k]) * vecs + c]);
    Vec o = out_t[c];
    add_scaled<V>(o, 1.0f, acc);
    out_t[c] = o;
  }
}

}  // namespace

void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t H, float* out, cudaStream_t stream) {
  if (n == 0) return;
  gather_rows_kernel<<<unsigned(n), 256, 0, stream>>>(x, rows, H, out);
  DSV2_CUDA_LAUNCH_CHECK();
}

void combine_sorted(const float* y, const int32_t* slot_of, const float* gate_weights, int64_t T, int64_t H, int64_t K,
                    float* out, cudaStream_t stream) {
  if (H % 4 == 0 && aligned16(y) && aligned16(out))
    combine_sorted_kernel<4><<<unsigned(T), 256, 0, stream>>>(y, slot_of, gate_weights, H, K, out);
  else
    combine_sorted_kernel<1><<<unsigned(T), 256, 0, stream>>>(y, slot_of, gate_weights, H, K, out);
  DSV2_CUDA_LAUNCH_CHECK();
}

void route_tokens(const RouterShape& r, const float* logits, int64_t T, int32_t* expert_ids, float* gate_weights,
                  cudaStream_t stream) {
  check(r.n_experts <= kMaxExperts && r.top_k <= kMaxTopK && r.n_group <= 32,
        "GPU router: at most 1024 experts, top-32 and 32 groups");
  launch_overlapped(route_kernel, unsigned(T), 32, 0, stream, r, logits, expert_ids, gate_weights);
}

void moe_experts(const float* x, int64_t T, int64_t H, int64_t I, int64_t K, int64_t E, const int32_t* expert_ids,
                 const float* gate_weights, const ExpertWeights& w, float* h, float* y, float* out, cudaStream_t stream,
                 const AlsoAdd& also, const NormInto& norm) {
  check(T * K <= kMaxPairs, "GPU MoE: at most " + std::to_string(kMaxPairs) + " (token, expert) pairs per step");
  check(w.dtype != DType::F8_E4M3 || (w.gate_scales && w.up_scales && w.down_scales), "GPU MoE: FP8 experts without scales");
  const void *gate = w.gate, *up = w.up, *down = w.down;
  DSV2_DISPATCH_WEIGHT_DTYPE(w.dtype, {
    // 16-byte loads need every weight and input row 16-byte aligned: H and I multiples of the
    // vector width (a multiple of 4 floats), the buffers aligned.
    constexpr int64_t kVec = 16 / sizeof(WT);
    const bool vectorised = H % kVec == 0 && I % kVec == 0 && reinterpret_cast<uintptr_t>(gate) % 16 == 0 &&
                            reinterpret_cast<uintptr_t>(up) % 16 == 0 && reinterpret_cast<uintptr_t>(down) % 16 == 0 &&
                            reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(h) % 16 == 0;
    constexpr int64_t kDownRows = kRowsPerBlock * kDownUnits;
    const unsigned columns = unsigned(T == 1 ? K : E);  // one token: a column per pair, else per expert
    const dim3 g2 = dim3(unsigned((H + kDownRows - 1) / kDownRows), columns);
    const WT *wg = static_cast<const WT*>(gate), *wu = static_cast<const WT*>(up), *wd = static_cast<const WT*>(down);
    auto launch = [&](auto vectorised_tag, auto group_tag) {
      constexpr bool kVectorised = decltype(vectorised_tag)::value;
      constexpr int kGroup = decltype(group_tag)::value;
      constexpr int64_t kGateUpRows = kRowsPerBlock * kGateUpUnits<WT, kGroup>;
      const dim3 g1 = dim3(unsigned((I + kGateUpRows - 1) / kGateUpRows), columns);
      launch_overlapped(expert_gate_up_kernel<WT, kVectorised, kGroup>, g1, kRowsPerBlock * 32, 0, stream,
                        x, H, I, K, T * K, expert_ids, wg, wu, w.gate_scales, w.up_scales, h);
      launch_overlapped(expert_down_kernel<WT, kVectorised, kGroup>, g2, kRowsPerBlock * 32, 0, stream,
                        h, H, I, T * K, expert_ids, wd, w.down_scales, y);
    };
    // One token: every expert has one pair (GROUP 1).
    using One = std::integral_constant<int, 1>;
    using Group = std::integral_constant<int, kTokenGroup>;
    if (T == 1) {
      vectorised ? launch(std::true_type{}, One{}) : launch(std::false_type{}, One{});
    } else {
      vectorised ? launch(std::true_type{}, Group{}) : launch(std::false_type{}, Group{});
    }
  });
  if (also.ready) DSV2_CUDA_CHECK(cudaStreamWaitEvent(stream, also.ready, 0));
  if (norm.weight) {
    check(fused_norm_supported(H, out, norm), "GPU MoE: the fused norm needs H % 4 == 0, H <= 4096 and aligned rows");
    launch_overlapped(combine_norm_kernel, unsigned(T), kCombineNormThreads, 0, stream, y, gate_weights, H, K, also.values,
                      out, norm.weight, norm.eps, norm.out);
  } else {
    launch_overlapped(combine_kernel, unsigned((T * H + 255) / 256), 256, 0, stream, y, gate_weights, T, H, K, also.values,
                      out);
  }
}

bool fused_norm_supported(int64_t H, const float* out, const NormInto& norm) {
  return H % 4 == 0 && H <= kCombineNormVecs * 4 * kCombineNormThreads && aligned16(out) && aligned16(norm.weight) &&
         aligned16(norm.out);
}

void swiglu_gate_up(const float* x, int64_t T, const DeviceMatrix& gate, const DeviceMatrix& up, float* h,
                    cudaStream_t stream) {
  check(T >= 1 && T <= kTokenGroup, "swiglu_gate_up: 1 to " + std::to_string(kTokenGroup) + " tokens");
  check(gate.dtype == up.dtype && gate.rows == up.rows && gate.cols == up.cols, "swiglu_gate_up: gate and up differ in shape");
  check(gate.dtype != DType::F8_E4M3 || (gate.scales && up.scales), "swiglu_gate_up: FP8 matrices without scales");
  const int64_t H = gate.cols, I = gate.rows;
  DSV2_DISPATCH_WEIGHT_DTYPE(gate.dtype, {
    constexpr int64_t kVec = 16 / sizeof(WT);
    const bool vectorised = H % kVec == 0 && reinterpret_cast<uintptr_t>(gate.data) % 16 == 0 &&
                            reinterpret_cast<uintptr_t>(up.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
    // Blocks for the kernel's token group.
    const auto blocks = [&](int64_t units) { return unsigned((I + kRowsPerBlock * units - 1) / (kRowsPerBlock * units)); };
    const WT *wg = static_cast<const WT*>(gate.data), *wu = static_cast<const WT*>(up.data);
    if (vectorised && T == 1) {
      launch_overlapped(swiglu_gate_up_kernel<WT, true, 1>, blocks(kGateUpUnits<WT, 1>), kRowsPerBlock * 32, 0, stream,
                        x, int(T), H, I, wg, wu, gate.scales, up.scales, h);
    } else if (vectorised) {
      launch_overlapped(swiglu_gate_up_kernel<WT, true, kTokenGroup>, blocks(kGateUpUnits<WT, kTokenGroup>), kRowsPerBlock * 32,
                        0, stream, x, int(T), H, I, wg, wu, gate.scales, up.scales, h);
    } else {
      launch_overlapped(swiglu_gate_up_kernel<WT, false, kTokenGroup>, blocks(kGateUpUnits<WT, kTokenGroup>), kRowsPerBlock * 32,
                        0, stream, x, int(T), H, I, wg, wu, gate.scales, up.scales, h);
    }
  });
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
