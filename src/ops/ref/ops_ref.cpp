#include "ops/ref/ops_ref.h"

#include <cmath>
#include <vector>

namespace dsv2::ref {

void matmul(const float* x, int64_t T, const Matrix& W, float* y) {
  std::vector<float> row(size_t(W.cols));
  for (int64_t o = 0; o < W.rows; ++o) {
    matrix_rows_to_f32(W, o, 1, row.data());
    for (int64_t t = 0; t < T; ++t) {
      double acc = 0;
      const float* xt = x + t * W.cols;
      for (int64_t i = 0; i < W.cols; ++i) acc += double(xt[i]) * row[size_t(i)];
      y[t * W.rows + o] = float(acc);
    }
  }
}

void rms_norm(const float* x, const float* weight, float* y, int64_t T, int64_t dim, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += double(x[t * dim + i]) * x[t * dim + i];
    float r = float(1.0 / std::sqrt(ss / double(dim) + double(eps)));
    for (int64_t i = 0; i < dim; ++i) y[t * dim + i] = x[t * dim + i] * r * weight[i];
  }
}

void softmax(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::fmax(mx, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  float inv = float(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void rope_pairs(float* x, const float* cos, const float* sin, int64_t n_pairs) {
  for (int64_t i = 0; i < n_pairs; ++i) {
    float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * cos[i] - b * sin[i];
    x[2 * i + 1] = a * sin[i] + b * cos[i];
  }
}

float dot(const float* a, const float* b, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += double(a[i]) * b[i];
  return float(acc);
}

}  // namespace dsv2::ref
