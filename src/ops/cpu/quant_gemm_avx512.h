// y[t, o] = Σ_i x[t, i] · W[o, i] for block-quantized weights (Q8_0, Q4_0; core/quant.h) and int8
// activations (QuantizedActivations) with AVX-512 VNNI. Every output is formed in one order, whatever
// the number of tokens beside it:
//   acc = +0;  for each block b in order:  acc = fma(float(S_b), d_w[r, b] · d_x[t, b], acc)
// where S_b = Σ_{i in block b} q[r, i] · xq[t, i] is the exact integer block sum and the scale product
// is rounded to f32 first. quant_rows_canonical is that order in plain C++; both kernels equal it bit
// for bit, so a token's outputs are the same alone, in a decode batch or in a prompt. vpdpbusd
// multiplies unsigned weight bytes (Q8_0: q + 128; Q4_0: the stored nibble, q + 8) by signed
// activations; the activations' offsets (−128 or −8 times their sums) make the sums exact.
//   quant_gemv_rows_avx512 (up to kGemvMaxTokens tokens: decode) reads the rows as stored, 16 at a
//     time; each row's lanes of a 64-byte step (Q8_0: two blocks; Q4_0: four, low then high nibbles)
//     are summed per block by a transpose-add tree.
//   quant_gemm_tile_avx512 (any number: prefill) first repacks a tile of up to kQuantTileRows rows
//     into 16-row panels: for block b of a panel, 8 vectors of 64 bytes, vector j holding values
//     4j .. 4j+3 of the block for each of the 16 rows (unsigned, as above). vpdpbusd then multiplies a
//     panel vector by 4 activation bytes of one token broadcast to every lane: the 16 rows' sums in
//     the 16 lanes, no lanes to reduce, each weight vector used by the 8 tokens of a group.
#pragma once
#include <cstdint>

#include "model/weights.h"
#include "ops/cpu/quant_activations.h"

namespace dsv2::cpu {

constexpr int64_t kQuantTileRows = 64;

// Rows [row_begin, row_end) of y = x · Wᵀ for tokens [t0, t0 + T) of xq, T <= kGemvMaxTokens.
// y: [T, W.rows] (the rows of those tokens). W: Q8_0 or Q4_0; xq prepared for it. Needs has_avx512_vnni().
void quant_gemv_rows_avx512(const QuantizedActivations& xq, int64_t t0, int64_t T, const Matrix& W, int64_t row_begin,
                            int64_t row_end, float* y);

// Rows [row_begin, row_end) (at most kQuantTileRows) of y = x · Wᵀ for all xq's tokens [0, T).
// y: [T, W.rows]. W: Q8_0 or Q4_0; xq prepared for it. Needs has_avx512_vnni().
void quant_gemm_tile_avx512(const QuantizedActivations& xq, int64_t T, const Matrix& W, int64_t row_begin,
                            int64_t row_end, float* y);

// The same outputs in plain C++ (the order above; tests).
void quant_rows_canonical(const QuantizedActivations& xq, int64_t T, const Matrix& W, int64_t row_begin,
                          int64_t row_end, float* y);

}  // namespace dsv2::cpu
