// y[t, o] = Σ_i bf16(x[t, i]) · W[o, i] for a BF16 W whose activations are rounded to bf16 once per
// matmul (ActivationFormat::BF16, as transformers computes in bf16): AVX512-BF16's vdpbf16ps multiplies
// 32 bf16 pairs into 16 f32 lanes per instruction, twice the multiply rate of f32 FMAs.
//
// Every (token, row) sum is formed one way whatever the tile, the token count or the kernel: 16 lane
// sums along K in steps of 32 values, lane j adding the products of values 2j+1 then 2j of each step,
// each added with f32 rounding (exactly what vdpbf16ps does: a bf16 product is exact in f32), then the
// lanes summed in a fixed tree, (l[j] + l[j+8]) → (+4) → (+2) → (+1). The portable kernel does the same
// in scalar code, so both give the same bits (but where an input or a sum is subnormal, below FLT_MIN:
// the instruction takes and makes those as zero), and a token's outputs do not depend on the other
// tokens of its matmul.
#pragma once
#include <cstdint>
#include <vector>

#include "model/weights.h"

namespace dsv2::cpu {

// Values per step of the sum order above (16 lanes × a pair each); rounded activations are padded to it.
constexpr int64_t kBf16Step = 32;

// The activations of T tokens rounded to bf16 (nearest even), zero-padded to whole steps of kBf16Step.
struct Bf16Activations {
  int64_t tokens = 0, cols = 0, padded = 0;  // padded: a multiple of kBf16Step
  // 0: token rows, values [T, padded]. B > 0 (the AMX kernel's 16): blocks of B tokens, block b at
  // b · B · padded holding its n tokens (B, the last T - b · B) as [padded / 2][n][2]: value pairs
  // (2p, 2p + 1) of its tokens side by side.
  int64_t token_block = 0;
  std::vector<uint16_t> values;
};

// Sizes `out` for x: [T, cols] in the layout of token_block; then tokens [t_begin, t_end) may be
// rounded on different threads.
void prepare_bf16_activations(int64_t T, int64_t cols, Bf16Activations& out, int64_t token_block = 0);
void round_activations_to_bf16(const float* x, int64_t t_begin, int64_t t_end, Bf16Activations& out);

// True when the CPU has AVX-512 F, BW, VL and BF16 (checked once).
bool has_avx512_bf16();

// Rows [row_begin, row_end) of y = bf16(x) · Wᵀ for tokens [t0, t0 + T) of xb (token rows); W: BF16 [N, xb.cols],
// y: [T, N] (the rows of those tokens).
// AVX512-BF16: T <= kGemvMaxTokens (decode), tiles of 4 rows × T tokens (T = 1: single rows). Needs has_avx512_bf16().
void gemm_bf16_rows_avx512(const Bf16Activations& xb, int64_t t0, int64_t T, const Matrix& W, int64_t row_begin,
                           int64_t row_end, float* y);
// Any T (prefill): every token over the rows in tiles of 4 rows × 6 tokens (then fewer); the same results.
// Needs has_avx512_bf16().
void gemm_bf16_tokens_avx512(const Bf16Activations& xb, int64_t T, const Matrix& W, int64_t row_begin, int64_t row_end,
                             float* y);
// AVX2 + FMA (CPUs without AVX512-BF16), any T (passes of up to 4 tokens over each row): the same
// results as the portable kernel, bit for bit. Needs has_avx2() (gemv_avx2.h).
void gemm_bf16_rows_avx2(const Bf16Activations& xb, int64_t t0, int64_t T, const Matrix& W, int64_t row_begin,
                         int64_t row_end, float* y);
// Plain C++, any T, the same results.
void gemm_bf16_rows_portable(const Bf16Activations& xb, int64_t t0, int64_t T, const Matrix& W, int64_t row_begin,
                             int64_t row_end, float* y);

}  // namespace dsv2::cpu
