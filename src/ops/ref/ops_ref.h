// Reference ops: plain scalar loops in f32 (f64 accumulation where it is cheap), the oracle every
// fast backend is tested against. Shapes are row-major.
#pragma once
#include <cstdint>

#include "model/weights.h"

namespace dsv2::ref {

// y[t, o] = Σ_i x[t, i] · W[o, i]      x: [T, W.cols], y: [T, W.rows]
void matmul(const float* x, int64_t T, const Matrix& W, float* y);

// y[t] = x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight      x, y: [T, dim] (may alias), weight: [dim]
void rms_norm(const float* x, const float* weight, float* y, int64_t T, int64_t dim, float eps);

// In place over n values: x ← exp(x - max) / Σ exp(x - max).
void softmax(float* x, int64_t n);

// out[i] = silu(gate[i]) · up[i], silu(z) = z·σ(z)      all: [n]
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// Interleaved-pair rotation of one rotary vector x: [2·n_pairs]:
// (x[2i], x[2i+1]) ← (x[2i]·cos[i] − x[2i+1]·sin[i], x[2i]·sin[i] + x[2i+1]·cos[i]).
void rope_pairs(float* x, const float* cos, const float* sin, int64_t n_pairs);

// Σ_i a[i]·b[i] over n values.
float dot(const float* a, const float* b, int64_t n);

}  // namespace dsv2::ref
