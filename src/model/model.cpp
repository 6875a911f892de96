#include "model/model.h"

namespace dsv2 {

LoadedModel load_model(const std::string& model_dir, FileResidency residency) {
  LoadedModel m;
  m.config = load_model_config(model_dir);
  m.checkpoint = std::make_unique<Checkpoint>(model_dir, residency);
  m.weights = bind_weights(m.config, *m.checkpoint);
  return m;
}

}  // namespace dsv2
