// The absorbed attention's per-head projections through kv_b_proj, read in its stored format (BF16, F16,
// F32, Q8_0 or Q4_0): each weight converted to f32 exactly as it is loaded (a quantized value d·q is exact
// in f32), the activations and the sums f32. kv_b_proj: [nh·(d_nope + d_v), d_c], head h's rows
// h·(d_nope + d_v) .. being W_UK[h] (d_nope rows), then W_UV[h] (d_v rows).
#pragma once
#include <cstdint>

#include "model/weights.h"

namespace dsv2::cpu {

// For heads [h0, h1): q_lat[h] = Σ_{i < d_nope} q[h·q_stride + i] · W_UK[h][i]      q_lat: [nh, d_c]
// (each column summed over the rows in row order, one fused multiply-add a row).
void absorb_query_heads(const Matrix& kv_b, int64_t d_nope, int64_t d_v, const float* q, int64_t q_stride, int64_t h0,
                        int64_t h1, float* q_lat);

// For heads [h0, h1): out[h·d_v + j] = W_UV[h][j] · o_lat[h]      o_lat: [nh, d_c], out: [nh, d_v]
void expand_latent_heads(const Matrix& kv_b, int64_t d_nope, int64_t d_v, const float* o_lat, int64_t h0, int64_t h1,
                         float* out);

}  // namespace dsv2::cpu
