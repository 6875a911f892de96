// Weight formats chosen at load (--weights bf16|int8|q4|fp8): quantizes the Linear matrices of a loaded
// model into buffers it owns (the embedding, the router and the norms keep their dtype). Activation
// formats (--activations f32|bf16): how the Linear matrices' matmuls round their inputs.
#pragma once
#include <string>

#include "core/thread_pool.h"
#include "model/model.h"

namespace dsv2 {

enum class WeightFormat {
  AsStored,  // "bf16": the matrices as the directory stores them (BF16/F16/F32, or its quantized ones)
  Int8,      // Q8_0
  Q4,        // Q4_0
  Fp8,       // F8_E4M3 with a scale per 128×128 tile: the GPU backend's (--device cuda), quantized at upload
};

// "bf16", "int8", "q4", "fp8"; throws Error naming `what` otherwise.
WeightFormat parse_weight_format(const std::string& name, const std::string& what);
const char* weight_format_name(WeightFormat f);

// Quantizes every Linear matrix of m to `format` (rows split over the pool). A directory that is already
// quantized loads as it is with AsStored or its own format; another format is an Error (no re-quantizing),
// and so is Fp8 (a GPU format).
void quantize_model(LoadedModel& m, WeightFormat format, ThreadPool& pool);

// "f32", "bf16"; throws Error naming `what` otherwise.
ActivationFormat parse_activation_format(const std::string& name, const std::string& what);
const char* activation_format_name(ActivationFormat f);

// Sets how the matmuls of m's BF16 Linear matrices round their activations (the router keeps f32: a
// rounding there changes which experts run). BF16 needs BF16 Linear matrices: an Error for a model
// with none (F16/F32 or quantized weights).
void set_activation_format(LoadedModel& m, ActivationFormat format);

// W as `t` (Q8_0 or Q4_0): its values and scales are written to `storage` (resized), W points into it.
void quantize_matrix(Matrix& W, DType t, std::vector<uint8_t>& storage, ThreadPool& pool);

}  // namespace dsv2
