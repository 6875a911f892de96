#include "model/quantize.h"

#include <algorithm>

#include "core/error.h"

namespace dsv2 {

WeightFormat parse_weight_format(const std::string& name, const std::string& what) {
  if (name == "bf16") return WeightFormat::AsStored;
  if (name == "int8") return WeightFormat::Int8;
  if (name == "q4") return WeightFormat::Q4;
  if (name == "fp8") return WeightFormat::Fp8;
  throw Error(what + " must be bf16, int8, q4 or fp8 (seen '" + name + "')");
}

const char* weight_format_name(WeightFormat f) {
  return f == WeightFormat::Int8 ? "int8" : f == WeightFormat::Q4 ? "q4" : f == WeightFormat::Fp8 ? "fp8" : "bf16";
}

ActivationFormat parse_activation_format(const std::string& name, const std::string& what) {
  if (name == "f32") return ActivationFormat::F32;
  if (name == "bf16") return ActivationFormat::BF16;
  throw Error(what + " must be f32 or bf16 (seen '" + name + "')");
}

const char* activation_format_name(ActivationFormat f) { return f == ActivationFormat::BF16 ? "bf16" : "f32"; }

void set_activation_format(LoadedModel& m, ActivationFormat format) {
  const auto linear = linear_matrices(m.config, m.weights);
  const bool any_bf16 = std::any_of(linear.begin(), linear.end(), [](const auto& l) { return l.second->dtype == DType::BF16; });
  const DType t = linear.front().second->dtype;
  check(format == ActivationFormat::F32 || any_bf16,
        std::string("--activations bf16 needs BF16 weights; this model's Linear matrices are ") + dtype_name(t) +
            (is_quantized(t) ? " (quantized weights round their activations to int8 already)" : ""));
  for (auto& [name, W] : linear)
    if (W->dtype == DType::BF16) W->activations = format;
}

void quantize_matrix(Matrix& W, DType t, std::vector<uint8_t>& storage, ThreadPool& pool) {
  const int64_t row_bytes = quant_row_bytes(t, W.cols), nb = quant_blocks(W.cols);
  storage.resize(size_t(W.rows * (row_bytes + 2 * nb)));  // [rows, row_bytes] values, then [rows, nb] f16 scales
  uint8_t* values = storage.data();
  auto* scales = reinterpret_cast<uint16_t*>(storage.data() + W.rows * row_bytes);
  pool.parallel_for(W.rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(size_t(W.cols));
    for (int64_t r = r0; r < r1; ++r) {
      matrix_rows_to_f32(W, r, 1, row.data());
      quantize_row(t, row.data(), W.cols, values + r * row_bytes, scales + r * nb);
    }
  });
  W = Matrix{t, values, W.rows, W.cols, scales};
}

void quantize_model(LoadedModel& m, WeightFormat format, ThreadPool& pool) {
  if (format == WeightFormat::AsStored) return;
  check(format != WeightFormat::Fp8, "--weights fp8 is a GPU format (--device cuda); the CPU runs bf16, int8 or q4");
  const DType t = format == WeightFormat::Int8 ? DType::Q8_0 : DType::Q4_0;
  if (m.config.quantized_linear) {
    check(*m.config.quantized_linear == t, std::string("the model's weights are already quantized to ") +
                                               dtype_name(*m.config.quantized_linear) + "; --weights " + weight_format_name(format) +
                                               " cannot re-quantize them (use bf16, meaning as stored)");
    return;
  }
  for (auto& [name, W] : linear_matrices(m.config, m.weights)) {
    m.quantized_storage.emplace_back();
    quantize_matrix(*W, t, m.quantized_storage.back(), pool);
  }
}

}  // namespace dsv2
