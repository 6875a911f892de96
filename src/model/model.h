// A model directory loaded for inference: config, mapped checkpoint, bound weights.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace dsv2 {

struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
  ModelWeights weights;
  std::vector<std::vector<uint8_t>> quantized_storage;  // matrices quantized at load (model/quantize.h)
};

// Reads config.json, maps the safetensors (or reads them into huge pages where they fit in the memory
// available: core/mapped_file.h) and checks every tensor before any compute. Throws Error naming the
// file, field or tensor at fault.
LoadedModel load_model(const std::string& model_dir, FileResidency residency = FileResidency::Mapped);

}  // namespace dsv2
