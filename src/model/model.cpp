#include "model/model.h"

#include <filesystem>

namespace dsv2 {

LoadedModel load_model(const std::string& model_dir, FileResidency residency) {
  LoadedModel m;
  m.config = load_model_config(model_dir);
  size_t file_bytes = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir, ec)) {
    if (entry.path().extension() != ".safetensors" || !entry.is_regular_file(ec)) continue;
    const uintmax_t n = entry.file_size(ec);
    if (!ec) file_bytes += size_t(n);
  }
  m.residency = residency_that_fits(file_bytes, residency);
  m.checkpoint = std::make_unique<Checkpoint>(model_dir, m.residency);
  m.weights = bind_weights(m.config, *m.checkpoint);
  return m;
}

}  // namespace dsv2
