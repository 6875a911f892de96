// DeepSeekMoE on the GPU: routing (softmax, greedy or group-limited top-k, scaling) and the routed
// experts run per (token, slot) pair, reading the expert's weights with one warp per row.
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

// h[p, i] = silu(gate_e[i] · x[t]) · (up_e[i] · x[t]); grid (I / 8, T·K)
template <typename WT>
__global__ void expert_gate_up_kernel(const float* __restrict__ x, int64_t H, int64_t I, int64_t K,
                                      const int32_t* __restrict__ ids, const WT* __restrict__ gate,
                                      const WT* __restrict__ up, float* h) {
  const int64_t p = blockIdx.y, i = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (i >= I) return;
  const int64_t offset = (int64_t(ids[p]) * I + i) * H;
  const float* xt = x + (p / K) * H;
  const float g = warp_dot_row(gate + offset, xt, H);
  const float u = warp_dot_row(up + offset, xt, H);
  if (lane == 0) h[p * I + i] = g / (1.0f + expf(-g)) * u;
}

// y[p, j] = down_e[j] · h[p]; grid (H / 8, T·K)
template <typename WT>
__global__ void expert_down_kernel(const float* __restrict__ h, int64_t H, int64_t I, const int32_t* __restrict__ ids,
                                   const WT* __restrict__ down, float* y) {
  const int64_t p = blockIdx.y, j = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (j >= H) return;
  const float acc = warp_dot_row(down + (int64_t(ids[p]) * H + j) * I, h + p * I, I);
  if (lane == 0) y[p * H + j] = acc;
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

void moe_experts(const float* x, int64_t T, int64_t H, int64_t I, int64_t K, const int32_t* expert_ids,
                 const float* gate_weights, DType dtype, const void* gate, const void* up, const void* down, float* h,
                 float* y, float* out, cudaStream_t stream) {
  DSV2_DISPATCH_DTYPE(dtype, {
    const dim3 g1 = dim3(unsigned((I + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(T * K));
    expert_gate_up_kernel<<<g1, kRowsPerBlock * 32, 0, stream>>>(x, H, I, K, expert_ids, static_cast<const WT*>(gate),
                                                                  static_cast<const WT*>(up), h);
    DSV2_CUDA_LAUNCH_CHECK();
    const dim3 g2 = dim3(unsigned((H + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(T * K));
    expert_down_kernel<<<g2, kRowsPerBlock * 32, 0, stream>>>(h, H, I, expert_ids, static_cast<const WT*>(down), y);
    DSV2_CUDA_LAUNCH_CHECK();
  });
  combine_kernel<<<unsigned((T * H + 255) / 256), 256, 0, stream>>>(y, gate_weights, T, H, K, out);
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
