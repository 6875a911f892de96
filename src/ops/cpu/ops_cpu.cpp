#include "ops/cpu/ops_cpu.h"

#include "ops/cpu/gemm_bf16.h"
#include "ops/cpu/gemm_bf16_amx.h"
#include "ops/cpu/gemv_avx2.h"
#include "ops/cpu/gemv_avx512.h"
#include "ops/cpu/joint_range.h"
#include "ops/cpu/quant_activations.h"
#include "ops/cpu/quant_gemm_avx512.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"

namespace dsv2::cpu {

#define DSV2_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))

DSV2_MULTIVERSION float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int k = 0; k < 16; ++k) acc[k] += a[i + k] * b[i + k];
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int k = 0; k < 16; ++k) s += acc[k];
  return s;
}

DSV2_MULTIVERSION void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

bool cpu_supports(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Portable: return true;
    case CpuIsa::Avx2: return has_avx2();
    case CpuIsa::Avx512: return has_avx512();
    case CpuIsa::Amx: return has_avx512() && has_amx_bf16();
  }
  return false;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Portable: return "portable";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
    case CpuIsa::Amx: return "amx";
  }
  return "?";
}

namespace {

constexpr int kIsaUnset = -1;
std::atomic<int> chosen_isa{kIsaUnset};

CpuIsa isa_from_environment() {
  CpuIsa best = CpuIsa::Portable;
  for (CpuIsa isa : {CpuIsa::Avx2, CpuIsa::Avx512, CpuIsa::Amx})
    if (cpu_supports(isa)) best = isa;
  const char* env = std::getenv("DSV2_CPU_ISA");
  if (env == nullptr || *env == 0) return best;
  const std::string v = env;
  for (CpuIsa isa : {CpuIsa::Portable, CpuIsa::Avx2, CpuIsa::Avx512, CpuIsa::Amx}) {
    if (v != cpu_isa_name(isa)) continue;
    check(cpu_supports(isa), "DSV2_CPU_ISA=" + v + ": this CPU cannot run it (best: " + cpu_isa_name(best) + ")");
    return isa;
  }
  throw Error("DSV2_CPU_ISA must be portable, avx2, avx512 or amx (seen '" + v + "')");
}

}  // namespace

CpuIsa cpu_isa() {
  int isa = chosen_isa.load(std::memory_order_relaxed);
  if (isa == kIsaUnset) {
    isa = int(isa_from_environment());
    chosen_isa.store(isa, std::memory_order_relaxed);
  }
  return CpuIsa(isa);
}

void set_cpu_isa(CpuIsa isa) {
  check(cpu_supports(isa), std::string("set_cpu_isa: this CPU cannot run ") + cpu_isa_name(isa));
  chosen_isa.store(int(isa), std::memory_order_relaxed);
}

namespace {

// Row blocks of 16 are the unit of work split over the threads (balanced_parts); each thread takes tiles of kTileRows
// weight rows (kept in L2 while every group of up to kGemvMaxTokens tokens, 6 for bf16 prefill, streams over them); each row
// is converted in registers, never stored.
constexpr int64_t kRowBlock = 16;
constexpr int64_t kTileRows = 64;
static_assert(kTileRows <= kQuantTileRows, "a matmul tile fits the quantized kernel's packed tile");
// Parts of a matmul's rows per thread (see matmul_group).
constexpr int kPartsPerThread = 4;
// Token rows of activations to round (int8 or bf16) up to which the calling thread rounds them alone.
constexpr int64_t kRoundOnCaller = 4;

// The kernel a matrix runs with on this CPU.
enum class Kernel {
  Portable,      // matmul_portable: f32 activations, any CPU
  Gemv,          // gemv_avx512: f32 activations
  GemvAvx2,      // gemv_avx2: f32 activations
  Quantized,     // quant_gemm_avx512: activations quantized to int8 per block
  QuantizedAvx2, // qgemv_avx2: the same activations
  Bf16,          // gemm_bf16_rows_avx512: activations rounded to bf16
  Bf16Amx,       // gemm_bf16_rows_amx: the same activations, in AMX token blocks
  Bf16Avx2,      // gemm_bf16_rows_avx2: the same results without AVX512-BF16
  Bf16Portable,  // gemm_bf16_rows_portable: the same results on any CPU
};

Kernel kernel_for(const Matrix& W) {
  const CpuIsa isa = cpu_isa();
  if (W.activations == ActivationFormat::BF16 && W.dtype == DType::BF16) {
    if (isa == CpuIsa::Amx) return Kernel::Bf16Amx;
    if (isa == CpuIsa::Avx512 && has_avx512_bf16()) return Kernel::Bf16;
    return isa != CpuIsa::Portable && has_avx2() ? Kernel::Bf16Avx2 : Kernel::Bf16Portable;
  }
  if (is_quantized(W.dtype)) {
    if (isa >= CpuIsa::Avx512 && has_avx512_vnni()) return Kernel::Quantized;
    return isa != CpuIsa::Portable && has_avx2() ? Kernel::QuantizedAvx2 : Kernel::Portable;
  }
  if (isa >= CpuIsa::Avx512) return Kernel::Gemv;
  return isa == CpuIsa::Avx2 ? Kernel::GemvAvx2 : Kernel::Portable;
}

bool quantizes_activations(Kernel k) { return k == Kernel::Quantized || k == Kernel::QuantizedAvx2; }
bool rounds_to_bf16(Kernel k) {
  return k == Kernel::Bf16 || k == Kernel::Bf16Amx || k == Kernel::Bf16Avx2 || k == Kernel::Bf16Portable;
}

// Splits the joint row-block range into `parts` pieces of about equal work, a block of job j costing
// its token groups (ceil(T / kGemvMaxTokens)): a MoE layer's shared experts run on every token, a
// routed one on a few. Returns the parts' first blocks, and first_block.back() last.
std::vector<int64_t> balanced_parts(const std::vector<MatmulJob>& jobs, const std::vector<int64_t>& first_block, int parts) {
  std::vector<int64_t> groups(jobs.size()), cost(jobs.size() + 1, 0);  // cost[j]: work before job j
  for (size_t j = 0; j < jobs.size(); ++j) {
    groups[j] = std::max<int64_t>(1, (jobs[j].T + kGemvMaxTokens - 1) / kGemvMaxTokens);
    cost[j + 1] = cost[j] + (first_block[j + 1] - first_block[j]) * groups[j];
  }
  std::vector<int64_t> bound(size_t(parts) + 1, first_block.back());
  size_t j = 0;
  for (int p = 0; p < parts; ++p) {
    const int64_t target = cost.back() * p / parts;
    while (j + 1 < jobs.size() && cost[j + 1] <= target) ++j;
    bound[size_t(p)] = std::min(first_block[j + 1], first_block[j] + (target - cost[j] + groups[j] - 1) / groups[j]);
  }
  return bound;
}

}  // namespace

void rows_to_f32(const Matrix& W, int64_t r0, int64_t n, float* out) {
  // Quantized rows are dequantized with the ISA their matmul kernel uses.
  const Kernel k = is_quantized(W.dtype) ? kernel_for(W) : Kernel::Portable;
  if (k == Kernel::Quantized) {
    dequantize_rows_avx512(W, r0, n, out);
  } else if (k == Kernel::QuantizedAvx2) {
    dequantize_rows_avx2(W, r0, n, out);
  } else {
    matrix_rows_to_f32(W, r0, n, out);
  }
}

void matmul(ThreadPool& pool, const float* x, int64_t T, const Matrix& W, float* y) {
  if (kernel_for(W) == Kernel::Portable) {
    matmul_portable(pool, x, T, W, y);
  } else {
    matmul_group(pool, {{x, T, &W, y}});
  }
}

void matmul_group(ThreadPool& pool, const std::vector<MatmulJob>& jobs) {
  // Rounded activations, reused across calls (the workers see this thread's).
  thread_local std::vector<QuantizedActivations> this_thread_quantized;
  thread_local std::vector<Bf16Activations> this_thread_bf16;
  std::vector<QuantizedActivations>& xq = this_thread_quantized;
  std::vector<Bf16Activations>& xb = this_thread_bf16;
  if (xq.size() < jobs.size()) xq.resize(jobs.size());
  if (xb.size() < jobs.size()) xb.resize(jobs.size());
  // Joint ranges: job j's activation rows to round are tokens [first_token[j], first_token[j + 1]), its
  // weight rows are row blocks [first_block[j], first_block[j + 1]).
  std::vector<Kernel> kernel(jobs.size());
  std::vector<int64_t> first_token(jobs.size() + 1, 0), first_block(jobs.size() + 1, 0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    const MatmulJob& job = jobs[j];
    kernel[j] = kernel_for(*job.W);
    if (kernel[j] == Kernel::Portable) matmul_portable(pool, job.x, job.T, *job.W, job.y);
    if (quantizes_activations(kernel[j])) prepare_activations(job.W->dtype, job.T, job.W->cols, xq[j]);
    const bool bf16 = rounds_to_bf16(kernel[j]);
    if (bf16) prepare_bf16_activations(job.T, job.W->cols, xb[j], kernel[j] == Kernel::Bf16Amx ? kAmxTokenBlock : 0);
    first_token[j + 1] = first_token[j] + (quantizes_activations(kernel[j]) || bf16 ? job.T : 0);
    first_block[j + 1] = first_block[j] + (kernel[j] != Kernel::Portable ? (job.W->rows + kRowBlock - 1) / kRowBlock : 0);
  }
  const auto round_tokens = [&](int64_t begin, int64_t end) {
    split_by_job(first_token, begin, end, [&](size_t j, int64_t t0, int64_t t1) {
      if (quantizes_activations(kernel[j])) {
        quantize_activations(jobs[j].x, t0, t1, xq[j]);
      } else {
        round_activations_to_bf16(jobs[j].x, t0, t1, xb[j]);
      }
    });
  };
  if (first_token.back() <= kRoundOnCaller) {
    round_tokens(0, first_token.back());  // a few tokens (decode) cost less than a hand-off to the workers
  } else {
    pool.parallel_for(first_token.back(), 1, round_tokens);
  }
  if (first_block.back() == 0) return;  // every job ran portably
  // Rows [begin, end) of job j, a tile of at most kTileRows rows at a time.
  const auto run_rows = [&](size_t j, int64_t begin, int64_t end) {
    const MatmulJob& job = jobs[j];
    const Matrix& W = *job.W;
    const int64_t K = W.cols, N = W.rows;
    for (int64_t r0 = begin; r0 < end; r0 += kTileRows) {
      const int64_t r1 = std::min(end, r0 + kTileRows);
      if (kernel[j] == Kernel::Bf16Portable) {
        gemm_bf16_rows_portable(xb[j], 0, job.T, W, r0, r1, job.y);
        continue;
      }
      if (kernel[j] == Kernel::Bf16Avx2) {
        gemm_bf16_rows_avx2(xb[j], 0, job.T, W, r0, r1, job.y);  // every token over the tile, 4 at a time
        continue;
      }
      if (kernel[j] == Kernel::Bf16Amx) {
        gemm_bf16_rows_amx(xb[j], job.T, W, r0, r1, job.y);  // every token over the tile at once
        continue;
      }
      if (kernel[j] == Kernel::Bf16 && job.T > kGemvMaxTokens) {
        gemm_bf16_tokens_avx512(xb[j], job.T, W, r0, r1, job.y);  // every token over the tile, 6 at a time
        continue;
      }
      if (kernel[j] == Kernel::Quantized && job.T > kGemvMaxTokens) {
        quant_gemm_tile_avx512(xq[j], job.T, W, r0, r1, job.y);  // every token over the tile at once
        continue;
      }
      for (int64_t t0 = 0; t0 < job.T; t0 += kGemvMaxTokens) {
        const int64_t n = std::min(kGemvMaxTokens, job.T - t0);
        if (kernel[j] == Kernel::Quantized) {
          quant_gemv_rows_avx512(xq[j], t0, n, W, r0, r1, job.y + t0 * N);
        } else if (kernel[j] == Kernel::QuantizedAvx2) {
          qgemv_rows_avx2(xq[j], t0, n, W, r0, r1, job.y + t0 * N);
        } else if (kernel[j] == Kernel::GemvAvx2) {
          gemv_rows_avx2(job.x + t0 * K, n, W, r0, r1, job.y + t0 * N);
        } else if (kernel[j] == Kernel::Bf16) {
          gemm_bf16_rows_avx512(xb[j], t0, n, W, r0, r1, job.y + t0 * N);
        } else {
          gemv_rows_avx512(job.x + t0 * K, n, W, r0, r1, job.y + t0 * N);
        }
      }
    }
  };
  // kPartsPerThread parts of equal cost a thread on average, claimed in turn (a row's result does not
  // depend on its thread).
  const int64_t n_parts = int64_t(pool.size()) * kPartsPerThread;
  const std::vector<int64_t> bound = balanced_parts(jobs, first_block, int(n_parts));
  pool.for_each_part(n_parts, [&](int64_t p) {
    split_by_job(first_block, bound[size_t(p)], bound[size_t(p) + 1], [&](size_t j, int64_t b0, int64_t b1) {
      run_rows(j, b0 * kRowBlock, std::min(jobs[j].W->rows, b1 * kRowBlock));
    });
  });
}

void matmul_portable(ThreadPool& pool, const float* x, int64_t T, const Matrix& W, float* y) {
  const int64_t K = W.cols, N = W.rows;
  pool.parallel_for(N, kRowBlock, [&](int64_t begin, int64_t end) {
    std::vector<float> rows(size_t(kRowBlock * K));
    for (int64_t o0 = begin; o0 < end; o0 += kRowBlock) {
      const int64_t nr = std::min(kRowBlock, end - o0);
      matrix_rows_to_f32(W, o0, nr, rows.data());
      for (int64_t t = 0; t < T; ++t) {
        const float* xt = x + t * K;
        float* yt = y + t * N + o0;
        for (int64_t r = 0; r < nr; ++r) yt[r] = dot(xt, rows.data() + r * K, K);
      }
    }
  });
}

}  // namespace dsv2::cpu
