// y = bf16(x) · Wᵀ for a BF16 W with AMX (Advanced Matrix Extensions: Sapphire Rapids and later Xeons):
// TDPBF16PS multiplies a 16 × 32 bf16 tile of weight rows by a 32 × 16 tile of token values into a
// 16 × 16 f32 tile, 16 times the products of one AVX512-BF16 instruction.
//
// Each output (token t, row o) is the sum over K in steps of 32 values, each step one TDPBF16PS into
// the same f32 accumulator; the instruction's internal order within a step is the hardware's (on the
// CPU this was written on it matches no sequential or pairwise f32 order: within ~6 units in the last
// place of the step's Σ|products|). A (t, o) output depends only on token t and row o, never on the
// other tokens or rows of the tile, so a token gets the same bits alone, in a decode batch or in a
// prompt; but not the bits of the AVX512-BF16 kernel (gemm_bf16.h), whose sums run in another order.
#pragma once
#include <cstdint>

#include "model/weights.h"
#include "ops/cpu/gemm_bf16.h"

namespace dsv2::cpu {

// True when the CPU has AMX-TILE and AMX-BF16 with AVX-512 and the kernel lets this process use the
// tile registers (Linux: arch_prctl ARCH_REQ_XCOMP_PERM, asked once at the first call).
bool has_amx_bf16();

// Tokens per AMX column tile: Bf16Activations with token_block == kAmxTokenBlock hold each block of 16
// tokens pair-interleaved, the layout TDPBF16PS reads its second operand in.
constexpr int64_t kAmxTokenBlock = 16;

// Rows [row_begin, row_end) of y for all T tokens of xb (prepared with token_block = kAmxTokenBlock);
// W: BF16 [N, xb.cols], y: [T, N]. Needs has_amx_bf16().
void gemm_bf16_rows_amx(const Bf16Activations& xb, int64_t T, const Matrix& W, int64_t row_begin, int64_t row_end,
                        float* y);

}  // namespace dsv2::cpu
