// Per-element and per-row kernels: embedding rows, RMSNorm, SwiGLU's product, argmax.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "ops/cuda/cuda_check.h"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/kernels.h"
#include "ops/cuda/overlapped_launch.cuh"

namespace dsv2::cuda {

namespace {

unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

template <typename WT>
__global__ void embed_kernel(const WT* __restrict__ table, int64_t H, const int32_t* __restrict__ ids, float* __restrict__ out) {
  start_after_previous_kernel();
  const int64_t t = blockIdx.x;
  const WT* row = table + int64_t(ids[t]) * H;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) out[t * H + i] = to_f32(row[i]);
}

__global__ void rms_norm_kernel(const float* __restrict__ x, int64_t xs, const float* __restrict__ w, float* y, int64_t ys,
                                int64_t D, float eps) {
  start_after_previous_kernel();
  __shared__ float red[32];
  const float* xr = x + blockIdx.x * xs;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_sum(ss, red);
  const float r = rsqrtf(ss / float(D) + eps);
  float* yr = y + blockIdx.x * ys;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) yr[i] = xr[i] * r * w[i];
}

// The same for rows of at most kNormRegVecs·4·kNormThreads values in 16-byte pieces: each thread reads
// its values once and keeps them in registers for the scaling pass (the row is read from memory once).
constexpr int kNormRegVecs = 4, kNormThreads = 256;
__global__ void rms_norm_registers_kernel(const float* __restrict__ x, int64_t xs, const float* __restrict__ w, float* y,
                                          int64_t ys, int64_t D, float eps) {
  start_after_previous_kernel();
  __shared__ float red[32];
  const float4* xr = reinterpret_cast<const float4*>(x + blockIdx.x * xs);
  float4 v[kNormRegVecs];
#pragma unroll
  for (int j = 0; j < kNormRegVecs; ++j) {
    const int64_t i = threadIdx.x + int64_t(j) * blockDim.x;
    v[j] = i < D / 4 ? xr[i] : make_float4(0, 0, 0, 0);
  }
  rms_norm_row_registers(v, D, w, y + blockIdx.x * ys, eps, red);
}

// OT: float, or the 2-byte type of the GEMM that reads out.
template <typename OT>
__global__ void silu_mul_kernel(const float* gate, const float* up, OT* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const float g = gate[i];
    from_f32(silu_times(g, up[i]), out + i);
  }
}

__global__ void f16_to_bf16_kernel(const __half* __restrict__ src, int64_t n, __nv_bfloat16* __restrict__ out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) from_f32(to_f32(src[i]), out + i);
}

// Argmax in two passes: blocks (row, chunk) reduce kArgmaxChunks slices of a row, then one warp per
// row reduces the chunk winners. Larger value wins; ties go to the lower index.
constexpr int kArgmaxChunks = 64;
__device__ __forceinline__ void better(float& v, int32_t& i, float ov, int32_t oi) {
  if (ov > v || (ov == v && oi < i)) {
    v = ov;
    i = oi;
  }
}
__device__ __forceinline__ void warp_best(float& v, int32_t& i) {
  for (int o = 16; o > 0; o >>= 1) better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
}
__global__ void argmax_chunks_kernel(const float* __restrict__ logits, int64_t V, float* best_v, int32_t* best_i) {
  start_after_previous_kernel();
  __shared__ float sv[32];
  __shared__ int32_t si[32];
  const int64_t row = blockIdx.x, chunk = (V + kArgmaxChunks - 1) / kArgmaxChunks;
  const int64_t b = blockIdx.y * chunk, e = min(V, b + chunk);
  float v = -INFINITY;
  int32_t i = 0x7fffffff;
  for (int64_t k = b + threadIdx.x; k < e; k += blockDim.x) better(v, i, logits[row * V + k], int32_t(k));
  warp_best(v, i);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) {
    sv[warp] = v;
    si[warp] = i;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x / 32) ? sv[lane] : -INFINITY;
    i = lane < int(blockDim.x / 32) ? si[lane] : 0x7fffffff;
    warp_best(v, i);
    if (lane == 0) {
      best_v[row * kArgmaxChunks + blockIdx.y] = v;
      best_i[row * kArgmaxChunks + blockIdx.y] = i;
    }
  }
}
__global__ void argmax_final_kernel(const float* __restrict__ best_v, const int32_t* __restrict__ best_i, int32_t* ids) {
  start_after_previous_kernel();
  float v = -INFINITY;
  int32_t i = 0x7fffffff;
  for (int c = threadIdx.x; c < kArgmaxChunks; c += 32) better(v, i, best_v[blockIdx.x * kArgmaxChunks + c], best_i[blockIdx.x * kArgmaxChunks + c]);
  warp_best(v, i);
  if (threadIdx.x == 0) ids[blockIdx.x] = i;
}

}  // namespace

void embed_rows(const DeviceMatrix& table, const int32_t* ids, int64_t T, float* out, cudaStream_t stream) {
  DSV2_DISPATCH_DTYPE(table.dtype, {
    launch_overlapped(embed_kernel<WT>, unsigned(T), 256, 0, stream, static_cast<const WT*>(table.data), table.cols,
                      ids, out);
  });
  DSV2_CUDA_LAUNCH_CHECK();
}

void rms_norm(const float* x, int64_t xs, const float* w, float* y, int64_t ys, int64_t T, int64_t D, float eps,
              cudaStream_t stream) {
  const bool aligned = D % 4 == 0 && xs % 4 == 0 && ys % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(y) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  if (aligned && D <= kNormRegVecs * 4 * kNormThreads) {
    launch_overlapped(rms_norm_registers_kernel, unsigned(T), kNormThreads, 0, stream, x, xs, w, y, ys, D, eps);
  } else {
    launch_overlapped(rms_norm_kernel, unsigned(T), 256, 0, stream, x, xs, w, y, ys, D, eps);
  }
  DSV2_CUDA_LAUNCH_CHECK();
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
  silu_mul_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(gate, up, out, n);
  DSV2_CUDA_LAUNCH_CHECK();
}

void silu_mul_rounded(const float* gate, const float* up, DType dtype, void* out, int64_t n, cudaStream_t stream) {
  check(dtype == DType::BF16 || dtype == DType::F16, "silu_mul_rounded: bf16 or f16");
  if (dtype == DType::BF16) {
    silu_mul_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(gate, up, static_cast<__nv_bfloat16*>(out), n);
  } else {
    silu_mul_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(gate, up, static_cast<__half*>(out), n);
  }
  DSV2_CUDA_LAUNCH_CHECK();
}

void f16_to_bf16(const void* src, int64_t n, void* out, cudaStream_t stream) {
  if (n == 0) return;
  f16_to_bf16_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(static_cast<const __half*>(src), n,
                                                             static_cast<__nv_bfloat16*>(out));
  DSV2_CUDA_LAUNCH_CHECK();
}

void argmax_rows(const float* logits, int64_t T, int64_t V, int32_t* ids, float* scratch, cudaStream_t stream) {
  float* best_v = scratch;
  int32_t* best_i = reinterpret_cast<int32_t*>(scratch + T * kArgmaxChunks);
  launch_overlapped(argmax_chunks_kernel, dim3(unsigned(T), kArgmaxChunks), 256, 0, stream, logits, V, best_v, best_i);
  launch_overlapped(argmax_final_kernel, unsigned(T), 32, 0, stream, best_v, best_i, ids);
}

int64_t argmax_scratch_floats(int64_t T) { return 2 * T * kArgmaxChunks; }

namespace {

struct L2Ranges {
  uintptr_t begin[kMaxL2Ranges];   // 16-byte aligned
  uint64_t bytes[kMaxL2Ranges];    // multiples of 16
  uint64_t first[kMaxL2Ranges + 1];  // piece index where each range starts
  int n;
};
constexpr uint32_t kL2PrefetchPiece = 16384;  // bytes per bulk prefetch instruction

// Thread i of the grid issues pieces i, i + grid size, ... of the ranges' pieces counted end to end.
__global__ void l2_prefetch_kernel(L2Ranges r) {
  int j = 0;
  for (uint64_t p = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; p < r.first[r.n]; p += uint64_t(gridDim.x) * blockDim.x) {
    while (p >= r.first[j + 1]) ++j;
    const uint64_t at = (p - r.first[j]) * kL2PrefetchPiece;
    const uint32_t bytes = uint32_t(min(uint64_t(kL2PrefetchPiece), r.bytes[j] - at));
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(r.begin[j] + at), "r"(bytes) : "memory");
  }
}

}  // namespace

void prefetch_to_l2(const ByteRange* ranges, int n, cudaStream_t stream) {
  check(n >= 0 && n <= kMaxL2Ranges, "prefetch_to_l2: at most kMaxL2Ranges ranges");
  L2Ranges r{};
  for (int i = 0; i < n; ++i) {
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(ranges[i].data) + 15) / 16 * 16;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(ranges[i].data) + ranges[i].bytes) / 16 * 16;
    if (ranges[i].data == nullptr || end <= begin) continue;
    r.begin[r.n] = begin;
    r.bytes[r.n] = end - begin;
    r.first[r.n + 1] = r.first[r.n] + (end - begin + kL2PrefetchPiece - 1) / kL2PrefetchPiece;
    ++r.n;
  }
  const uint64_t pieces = r.first[r.n];
  if (pieces == 0) return;
  // One warp per block, spread over many multiprocessors (each block's requests go through its own
  // multiprocessor): a piece per thread for the first ~64 MB.
  const unsigned blocks = unsigned(std::min<uint64_t>(128, (pieces + 31) / 32));
  l2_prefetch_kernel<<<blocks, 32, 0, stream>>>(r);
  DSV2_CUDA_LAUNCH_CHECK();
}

}  // namespace dsv2::cuda
