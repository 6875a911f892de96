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

// out[list[j], r] = f(W_e[r] · in[list[j] / in_div]) for every pair j routed to expert e = blockIdx.y:
// each weight row is read from memory once per step whatever the number of tokens routed to it.
// Block = kExpertWarps rows (one per warp); the inputs of kTokenGroup tokens at a time are staged in
// shared memory (dynamic, [kTokenGroup, K] f32) and shared by every row of the block.
// GATE_UP: two rows (gate and up) per warp, f = silu(gate)·up; else f = identity.
constexpr int kExpertWarps = 16;
template <typename WT, bool GATE_UP, bool VECTORISED>
__global__ void __launch_bounds__(kExpertWarps * 32)
    expert_rows_kernel(const float* __restrict__ in, int64_t in_stride, int64_t in_div, int64_t K, int64_t R,
                       const int32_t* __restrict__ ids, int64_t n_pairs, const WT* __restrict__ w_a,
                       const WT* __restrict__ w_b, float* __restrict__ out, int64_t out_stride) {
  extern __shared__ float xs[];  // [kTokenGroup, K]
  __shared__ int32_t list[kMaxPairs];
  const int32_t e = blockIdx.y;
  const int n = pairs_of_expert(ids, n_pairs, e, list);
  if (n == 0) return;
  constexpr int kVec = VECTORISED ? 16 / sizeof(WT) : 1;
  constexpr int64_t kStep = 32 * kVec;
  const int lane = threadIdx.x % 32;
  const int64_t r = int64_t(blockIdx.x) * kExpertWarps + threadIdx.x / 32;
  const WT* ra = w_a + (int64_t(e) * R + r) * K;
  const WT* rb = GATE_UP ? w_b + (int64_t(e) * R + r) * K : nullptr;
  for (int g0 = 0; g0 < n; g0 += kTokenGroup) {
    __syncthreads();  // the previous group's inputs are no longer read
    for (int64_t i = threadIdx.x; i < kTokenGroup * K; i += blockDim.x) {
      const int g = int(i / K);
      xs[i] = g0 + g < n ? in[(list[g0 + g] / in_div) * in_stride + i % K] : 0.0f;
    }
    __syncthreads();
    if (r >= R) continue;
    float acc_a[kTokenGroup] = {}, acc_b[kTokenGroup] = {};
    for (int64_t k = int64_t(lane) * kVec; k < K; k += kStep) {
      float wa[kVec], wb[kVec];
      if constexpr (VECTORISED) {
        const uint4 va = __ldg(reinterpret_cast<const uint4*>(ra + k));
#pragma unroll
        for (int j = 0; j < kVec; ++j) wa[j] = to_f32(reinterpret_cast<const WT*>(&va)[j]);
        if constexpr (GATE_UP) {
          const uint4 vb = __ldg(reinterpret_cast<const uint4*>(rb + k));
#pragma unroll
          for (int j = 0; j < kVec; ++j) wb[j] = to_f32(reinterpret_cast<const WT*>(&vb)[j]);
        }
      } else {
        wa[0] = to_f32(ra[k]);
        if constexpr (GATE_UP) wb[0] = to_f32(rb[k]);
      }
#pragma unroll
      for (int g = 0; g < kTokenGroup; ++g) {
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          const float xv = xs[g * K + k + j];
          acc_a[g] += wa[j] * xv;
          if constexpr (GATE_UP) acc_b[g] += wb[j] * xv;
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

constexpr int64_t kMaxExpertInput = 6144;  // staged inputs: kTokenGroup x 6144 f32 = 192 KiB of shared memory

template <typename WT>
void allow_expert_staging() {
  const int bytes = int(kTokenGroup * kMaxExpertInput * sizeof(float));
  DSV2_CUDA_CHECK(cudaFuncSetAttribute(expert_rows_kernel<WT, true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  DSV2_CUDA_CHECK(cudaFuncSetAttribute(expert_rows_kernel<WT, true, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  DSV2_CUDA_CHECK(cudaFuncSetAttribute(expert_rows_kernel<WT, false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  DSV2_CUDA_CHECK(cudaFuncSetAttribute(expert_rows_kernel<WT, false, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

template <typename WT, bool GATE_UP, bool VECTORISED>
void launch_expert_rows(const float* in, int64_t in_stride, int64_t in_div, int64_t K, int64_t R, const int32_t* ids,
                        int64_t n_pairs, int64_t E, const WT* w_a, const WT* w_b, float* out, int64_t out_stride,
                        cudaStream_t stream) {
  const size_t smem = size_t(kTokenGroup * K) * sizeof(float);
  const dim3 grid = dim3(unsigned((R + kExpertWarps - 1) / kExpertWarps), unsigned(E));
  expert_rows_kernel<WT, GATE_UP, VECTORISED>
      <<<grid, kExpertWarps * 32, smem, stream>>>(in, in_stride, in_div, K, R, ids, n_pairs, w_a, w_b, out, out_stride);
  DSV2_CUDA_LAUNCH_CHECK();
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

void prepare_moe_kernels() {
  allow_expert_staging<float>();
  allow_expert_staging<__nv_bfloat16>();
  allow_expert_staging<__half>();
}

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
  check(r.n_experts <= kMaxExperts && r.top_k <= kMaxTopK && r.n_group <= 32,
        "GPU router: at most 1024 experts, top-32 and 32 groups");
  route_kernel<<<unsigned(T), 32, 0, stream>>>(r, logits, expert_ids, gate_weights);
  DSV2_CUDA_LAUNCH_CHECK();
}

void moe_experts(const float* x, int64_t T, int64_t H, int64_t I, int64_t K, int64_t E, const int32_t* expert_ids,
                 const float* gate_weights, DType dtype, const void* gate, const void* up, const void* down, float* h,
                 float* y, float* out, cudaStream_t stream) {
  check(T * K <= kMaxPairs, "GPU MoE: at most " + std::to_string(kMaxPairs) + " (token, expert) pairs per step");
  check(H <= kMaxExpertInput && I <= kMaxExpertInput, "GPU MoE: hidden and expert widths up to 6144 (shared-memory staging)");
  DSV2_DISPATCH_DTYPE(dtype, {
    // 16-byte loads need every row 16-byte aligned: H and I multiples of the vector width.
    constexpr int64_t kVec = 16 / sizeof(WT);
    const bool vectorised = H % kVec == 0 && I % kVec == 0 && reinterpret_cast<uintptr_t>(gate) % 16 == 0 &&
                            reinterpret_cast<uintptr_t>(up) % 16 == 0 && reinterpret_cast<uintptr_t>(down) % 16 == 0;
    const WT *wg = static_cast<const WT*>(gate), *wu = static_cast<const WT*>(up), *wd = static_cast<const WT*>(down);
    if (vectorised) {
      launch_expert_rows<WT, true, true>(x, H, K, H, I, expert_ids, T * K, E, wg, wu, h, I, stream);
      launch_expert_rows<WT, false, true>(h, I, 1, I, H, expert_ids, T * K, E, wd, nullptr, y, H, stream);
    } else {
      launch_expert_rows<WT, true, false>(x, H, K, H, I, expert_ids, T * K, E, wg, wu, h, I, stream);
      launch_expert_rows<WT, false, false>(h, I, 1, I, H, expert_ids, T * K, E, wd, nullptr, y, H, stream);
    }
  });
  combine_kernel<<<unsigned((T * H + 255) / 256), 256, 0, stream>>>(y, gate_weights, T, H, K, out);
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
