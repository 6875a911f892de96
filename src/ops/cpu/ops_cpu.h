// Fast CPU ops: threaded over output rows, vectorised dot products with runtime dispatch
// (AVX-512 / AVX2 / baseline). Each is tested against its counterpart in ops/ref.
#pragma once
#include <cstdint>
#include <vector>

#include "core/thread_pool.h"
#include "model/weights.h"

namespace dsv2::cpu {

// The instruction set the matmul and latent-attention kernels use; each level includes the ones before it.
enum class CpuIsa {
  Portable,  // matmul_portable (plain C++), any CPU
  Avx2,      // gemv_avx2.h: AVX2 + FMA + F16C
  Avx512,    // gemv_avx512.h, quant_gemm_avx512.h (with VNNI), gemm_bf16.h (with AVX512-BF16)
  Amx,       // Avx512, and gemm_bf16_amx.h for BF16 weights with bf16 activations (AMX-BF16 tiles)
};
// The best level this CPU has, unless the environment variable DSV2_CPU_ISA (portable, avx2, avx512 or amx;
// read at the first call) asks for a lower one, or set_cpu_isa did. A DSV2_CPU_ISA the CPU cannot run,
// or an unknown value, is an Error (at every call until it is fixed).
CpuIsa cpu_isa();
// Uses `isa` from now on (tests and benchmarks run the AVX2 and portable kernels on an AVX-512 CPU);
// an Error if the CPU lacks it. Not for use while a matmul runs on another thread.
void set_cpu_isa(CpuIsa isa);
const char* cpu_isa_name(CpuIsa isa);
bool cpu_supports(CpuIsa isa);

// y[t, o] = Σ_i x[t, i] · W[o, i]      x: [T, W.cols], y: [T, W.rows]
// Any W dtype, by cpu_isa(): AVX-512 kernels for BF16/F16/F32 (gemv_avx512.h) and, with VNNI, for
// Q8_0/Q4_0 (quant_activations.h: activations quantized to int8 per block of 32); AVX2 kernels for all five
// (gemv_avx2.h; also used for Q8_0/Q4_0 on AVX-512 CPUs without VNNI); else matmul_portable. A BF16 W
// with W.activations == BF16 runs gemm_bf16_amx.h at the Amx level, else gemm_bf16.h (AVX512-BF16, or
// its portable twin: the same results).
void matmul(ThreadPool& pool, const float* x, int64_t T, const Matrix& W, float* y);
// One y = x · Wᵀ of a group.   x: [T, W->cols], y: [T, W->rows]
struct MatmulJob {
  const float* x;
  int64_t T;
  const Matrix* W;
  float* y;
};
// Every job's matmul in one parallel region (the row blocks of all jobs split over the threads), one
// hand-off for many small matrices (a MoE layer's experts) instead of one each. Each output is what
// matmul gives.
void matmul_group(ThreadPool& pool, const std::vector<MatmulJob>& jobs);
// Plain C++: 16 weight rows at a time converted (or dequantized) to f32, dotted with every token.
void matmul_portable(ThreadPool& pool, const float* x, int64_t T, const Matrix& W, float* y);

// out: [n, W.cols] = rows [r0, r0 + n) of W as f32 (matrix_rows_to_f32; AVX-512 or AVX2 for quantized W).
void rows_to_f32(const Matrix& W, int64_t r0, int64_t n, float* out);

// out[i] = silu(gate[i]) · up[i] = gate[i] / (1 + e^(−gate[i])) · up[i] over n values (out may be gate).
struct SiluMulJob {
  const float* gate;
  const float* up;
  float* out;
  int64_t n;
};
// Every job's values in one parallel region (a MoE layer's experts); AVX-512 where present (its e^x
// within 3 ulp of std::exp: simd_exp.h), else ref::silu_mul.
void silu_mul_group(ThreadPool& pool, const std::vector<SiluMulJob>& jobs);

// Σ_i a[i]·b[i] over n values (f32, eight partial sums).
float dot(const float* a, const float* b, int64_t n);

// y[i] += alpha · x[i] over n values.
void axpy(float alpha, const float* x, float* y, int64_t n);

}  // namespace dsv2::cpu
