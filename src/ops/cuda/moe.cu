// DeepSeekMoE on the GPU: routing (softmax, greedy or group-limited top-k, scaling) and the routed
// experts, expert-major: each active expert's weight rows are read once per step for all the tokens
// routed to it (decode), or the pairs sorted by expert for one GEMM per expert (prefill).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"

namespace dsv2::cuda {

namespace {

constexpr int kMaxExperts = 1024;
constexpr int kMaxTopK = 32;

// One block per token. The selection itself is a few hundred comparisons: thread 0 does it in the
// reference order (ties go to the lower index).
__global__ void route_kernel(RouterShape r, const float* __restrict__ logits, int32_t* ids, float* weights) {
  __shared__ float s[kMaxExperts];
  __shared__ float red[32];
  const int64_t E = r.n_experts, t = blockIdx.x;
  float mx = -INFINITY;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) mx = fmaxf(mx, logits[t * E + e]);
  mx = block_max(mx, red);
  float sum = 0;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    s[e] = expf(logits[t * E + e] - mx);
    sum += s[e];
  }
  sum = block_sum(sum, red);
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) s[e] /= sum;
  __syncthreads();
  if (threadIdx.x != 0) return;
  if (r.group_limited) {
    const int64_t per = E / r.n_group;
    uint64_t kept = 0;  // bit g: group g kept (n_group <= 64)
    for (int64_t k = 0; k < r.topk_group; ++k) {
      int64_t best = -1;
      float best_v = -INFINITY;
      for (int64_t g = 0; g < r.n_group; ++g) {
        if (kept >> g & 1) continue;
        float gm = -INFINITY;
        for (int64_t e = g * per; e < (g + 1) * per; ++e) gm = fmaxf(gm, s[e]);
        if (gm > best_v) {
          best_v = gm;
          best = g;
        }
      }
      kept |= uint64_t(1) << best;
    }
    for (int64_t e = 0; e < E; ++e)
      if (!(kept >> (e / per) & 1)) s[e] = 0.0f;
  }
  float chosen_sum = 0;
  int32_t chosen[kMaxTopK];
  for (int64_t k = 0; k < r.top_k; ++k) {
    int64_t best = 0;
    float best_v = -INFINITY;
    for (int64_t e = 0; e < E; ++e) {
      bool taken = false;
      for (int64_t j = 0; j < k; ++j) taken |= chosen[j] == e;
      if (!taken && s[e] > best_v) {
        best_v = s[e];
        best = e;
      }
    }
    chosen[k] = int32_t(best);
    chosen_sum += best_v;
  }
  const bool renormalise = r.top_k > 1 && r.norm_topk_prob;
  for (int64_t k = 0; k < r.top_k; ++k) {
    const float w = s[chosen[k]];
    ids[t * r.top_k + k] = chosen[k];
    weights[t * r.top_k + k] = renormalise ? w / (chosen_sum + 1e-20f) : w * r.routed_scaling_factor;
  }
}

constexpr int kRowsPerBlock = 8;  // one warp per weight row
constexpr int kMaxPairs = 4096;   // (token, slot) pairs per step that the expert-major kernels accept
constexpr int kTokenGroup = 8;    // tokens dotted with one load of a weight row

// The pairs routed to expert `e`, in pair order, into list[0..n). Warp 0 compacts with ballots
// (deterministic order); returns n to every thread.
__device__ int pairs_of_expert(const int32_t* __restrict__ ids, int64_t n_pairs, int32_t e, int32_t* list) {
  __shared__ int count;
  if (threadIdx.x < 32) {
    int n = 0;
    for (int64_t base = 0; base < n_pairs; base += 32) {
      const int64_t p = base + threadIdx.x;
      const bool mine = p < n_pairs && ids[p] == e;
      const unsigned ballot = __ballot_sync(0xffffffffu, mine);
      if (mine) list[n + __popc(ballot & ((1u << threadIdx.x) - 1))] = int32_t(p);
      n += __popc(ballot);
    }
    if (threadIdx.x == 0) count = n;
  }
  __syncthreads();
  return count;
}

// out[list[j], r] = f(W_e[r] · in[row_of(list[j])]) for every pair j routed to the expert: each weight
// row is read from memory once per step whatever the number of tokens routed to it.
// Warp = one row r; tokens in groups of kTokenGroup share each 16-byte load of the row.
template <typename WT, bool GATE_UP>
__device__ void expert_rows(const WT* __restrict__ w_a, const WT* __restrict__ w_b, const float* __restrict__ in,
                            int64_t in_stride, int64_t in_div, int64_t K, const int32_t* list, int n, int64_t r,
                            float* __restrict__ out, int64_t out_stride) {
  constexpr int kVec = 16 / sizeof(WT);
  const int lane = threadIdx.x % 32;
  const bool vectorised = K % kVec == 0;
  for (int g0 = 0; g0 < n; g0 += kTokenGroup) {
    float acc_a[kTokenGroup] = {}, acc_b[kTokenGroup] = {};
    const float* x[kTokenGroup];
#pragma unroll
    for (int g = 0; g < kTokenGroup; ++g) x[g] = in + (g0 + g < n ? list[g0 + g] / in_div : 0) * in_stride;
    for (int64_t k = vectorised ? int64_t(lane) * kVec : lane; k < K; k += 32 * (vectorised ? kVec : 1)) {
      float wa[kVec], wb[kVec];
      const int nv = vectorised ? kVec : 1;
      if (vectorised) {
        const uint4 ra = __ldg(reinterpret_cast<const uint4*>(w_a + k));
#pragma unroll
        for (int j = 0; j < kVec; ++j) wa[j] = to_f32(reinterpret_cast<const WT*>(&ra)[j]);
        if (GATE_UP) {
          const uint4 rb = __ldg(reinterpret_cast<const uint4*>(w_b + k));
#pragma unroll
          for (int j = 0; j < kVec; ++j) wb[j] = to_f32(reinterpret_cast<const WT*>(&rb)[j]);
        }
      } else {
        wa[0] = to_f32(w_a[k]);
        if (GATE_UP) wb[0] = to_f32(w_b[k]);
      }
#pragma unroll
      for (int g = 0; g < kTokenGroup; ++g) {
        if (g0 + g < n) {
          for (int j = 0; j < nv; ++j) {
            const float xv = x[g][k + j];
            acc_a[g] += wa[j] * xv;
            if (GATE_UP) acc_b[g] += wb[j] * xv;
          }
        }
      }
    }
#pragma unroll
    for (int g = 0; g < kTokenGroup; ++g) {
      const float a = warp_sum(acc_a[g]);
      const float b = GATE_UP ? warp_sum(acc_b[g]) : 0.0f;
      if (lane == 0 && g0 + g < n) out[list[g0 + g] * out_stride + r] = GATE_UP ? a / (1.0f + expf(-a)) * b : a;
    }
  }
}

// h[p, i] = silu(gate_e[i] · x[t]) · (up_e[i] · x[t]) for the pairs p = t·K + k routed to e; grid (I / 8, E)
template <typename WT>
__global__ void expert_gate_up_kernel(const float* __restrict__ x, int64_t H, int64_t I, int64_t K, int64_t n_pairs,
                                      const int32_t* __restrict__ ids, const WT* __restrict__ gate,
                                      const WT* __restrict__ up, float* h) {
  __shared__ int32_t list[kMaxPairs];
  const int32_t e = blockIdx.y;
  const int n = pairs_of_expert(ids, n_pairs, e, list);
  const int64_t i = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (n == 0 || i >= I) return;
  const int64_t offset = (int64_t(e) * I + i) * H;
  expert_rows<WT, true>(gate + offset, up + offset, x, H, K, H, list, n, i, h, I);
}

// y[p, j] = down_e[j] · h[p]; grid (H / 8, E)
template <typename WT>
__global__ void expert_down_kernel(const float* __restrict__ h, int64_t H, int64_t I, int64_t n_pairs,
                                   const int32_t* __restrict__ ids, const WT* __restrict__ down, float* y) {
  __shared__ int32_t list[kMaxPairs];
  const int32_t e = blockIdx.y;
  const int n = pairs_of_expert(ids, n_pairs, e, list);
  const int64_t j = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  if (n == 0 || j >= H) return;
  expert_rows<WT, false>(down + (int64_t(e) * H + j) * I, nullptr, h, I, 1, I, list, n, j, y, H);
}

// out[t, j] = Σ_k w[t, k] · y[t·K + k, j], summed in slot order.
__global__ void combine_kernel(const float* __restrict__ y, const float* __restrict__ w, int64_t T, int64_t H, int64_t K,
                               float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * H) return;
  const int64_t t = i / H, j = i % H;
  float acc = 0;
  for (int64_t k = 0; k < K; ++k) acc += w[t * K + k] * y[(t * K + k) * H + j];
  out[i] = acc;
}

// out[i] = x[rows[i]]      rows: [n], x: [*, H], out: [n, H]
__global__ void gather_rows_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows, int64_t H, float* out) {
  const float* src = x + int64_t(rows[blockIdx.x]) * H;
  for (int64_t j = threadIdx.x; j < H; j += blockDim.x) out[blockIdx.x * H + j] = src[j];
}

// out[t, j] = Σ_k w[t, k] · y[slot_of[t·K + k], j], summed in slot order.
__global__ void combine_sorted_kernel(const float* __restrict__ y, const int32_t* __restrict__ slot_of,
                                      const float* __restrict__ w, int64_t T, int64_t H, int64_t K, float* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= T * H) return;
  const int64_t t = i / H, j = i % H;
  float acc = 0;
  for (int64_t k = 0; k < K; ++k) acc += w[t * K + k] * y[int64_t(slot_of[t * K + k]) * H + j];
  out[i] = acc;
}

}  // namespace

void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t H, float* out, cudaStream_t stream) {
  if (n == 0) return;
  gather_rows_kernel<<<unsigned(n), 256, 0, stream>>>(x, rows, H, out);
  DSV2_CUDA_LAUNCH_CHECK();
}

void combine_sorted(const float* y, const int32_t* slot_of, const float* gate_weights, int64_t T, int64_t H, int64_t K,
                    float* out, cudaStream_t stream) {
  combine_sorted_kernel<<<unsigned((T * H + 255) / 256), 256, 0, stream>>>(y, slot_of, gate_weights, T, H, K, out);
  DSV2_CUDA_LAUNCH_CHECK();
}

void route_tokens(const RouterShape& r, const float* logits, int64_t T, int32_t* expert_ids, float* gate_weights,
                  cudaStream_t stream) {
  check(r.n_experts <= kMaxExperts && r.top_k <= kMaxTopK && r.n_group <= 64,
        "GPU router: at most 1024 experts, top-32 and 64 groups");
  route_kernel<<<unsigned(T), 256, 0, stream>>>(r, logits, expert_ids, gate_weights);
  DSV2_CUDA_LAUNCH_CHECK();
}

void moe_experts(const float* x, int64_t T, int64_t H, int64_t I, int64_t K, int64_t E, const int32_t* expert_ids,
                 const float* gate_weights, DType dtype, const void* gate, const void* up, const void* down, float* h,
                 float* y, float* out, cudaStream_t stream) {
  check(T * K <= kMaxPairs, "GPU MoE: at most " + std::to_string(kMaxPairs) + " (token, expert) pairs per step");
  DSV2_DISPATCH_DTYPE(dtype, {
    const dim3 g1 = dim3(unsigned((I + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(E));
    expert_gate_up_kernel<<<g1, kRowsPerBlock * 32, 0, stream>>>(x, H, I, K, T * K, expert_ids,
                                                                  static_cast<const WT*>(gate), static_cast<const WT*>(up), h);
    DSV2_CUDA_LAUNCH_CHECK();
    const dim3 g2 = dim3(unsigned((H + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(E));
    expert_down_kernel<<<g2, kRowsPerBlock * 32, 0, stream>>>(h, H, I, T * K, expert_ids, static_cast<const WT*>(down), y);
    DSV2_CUDA_LAUNCH_CHECK();
  });
  combine_kernel<<<unsigned((T * H + 255) / 256), 256, 0, stream>>>(y, gate_weights, T, H, K, out);
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
