// One query row of MLA attention in the decompressed form (prefill; spec §5.2) for one head: the
// scores against every key the row may see, their softmax, and the weighted sum of the values.
#pragma once
#include <cstdint>

namespace dsv2::cpu {

// Keys s in [0, n): k_nope_s = k_nope + s·k_stride [d_nope], k_rope_s = k_rope + s·rope_stride [d_rope],
// v_s = v + s·v_stride [d_v].   q: [d_nope + d_rope] (nope part first), out: [d_v], scores: scratch [n].
// out = Σ_s softmax_s(scale · (q_nope · k_nope_s + q_rope · k_rope_s)) · v_s
// By cpu_isa(): AVX-512 (4 keys' sums in registers at a time, the output in registers across the keys),
// AVX2 (causal_attention_avx2.h), else portable. Each row's result depends on its own keys only, never
// on other rows.
void attend_row(const float* q, const float* k_nope, int64_t k_stride, const float* k_rope, int64_t rope_stride,
                const float* v, int64_t v_stride, int64_t n, int64_t d_nope, int64_t d_rope, int64_t d_v, float scale,
                float* scores, float* out);

// Up to kAttendRows consecutive query rows of one head together, row i seeing keys [0, n0 + i) (causal
// prefill): each key and value row the rows share is loaded once for all of them. Row i's result is bit
// for bit attend_row's over its n0 + i keys (its scores and weighted sum formed in the same order).
// q: row i at q + i·q_stride; out: row i at out + i·out_stride; scores: scratch [rows, n0 + rows − 1].
constexpr int64_t kAttendRows = 4;
void attend_rows(const float* q, int64_t q_stride, int64_t rows, const float* k_nope, int64_t k_stride, const float* k_rope,
                 int64_t rope_stride, const float* v, int64_t v_stride, int64_t n0, int64_t d_nope, int64_t d_rope,
                 int64_t d_v, float scale, float* scores, float* out, int64_t out_stride);

// The portable form of the same (the reference for the AVX-512 one).
void attend_row_portable(const float* q, const float* k_nope, int64_t k_stride, const float* k_rope, int64_t rope_stride,
                         const float* v, int64_t v_stride, int64_t n, int64_t d_nope, int64_t d_rope, int64_t d_v,
                         float scale, float* scores, float* out);

}  // namespace dsv2::cpu
