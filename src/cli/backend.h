// The model a command runs on the device it asked for (--device cpu|cuda).
#pragma once
#include <memory>
#include <string>

#include "cli/args.h"
#include "core/thread_pool.h"
#include "engine/sequence_model.h"
#include "model/deepseek_v2.h"
#include "model/model.h"
#include "model/quantize.h"

namespace dsv2 {

class CudaDeepseekV2;

enum class Device { Cpu, Cuda };
Device device_option(Args& args);  // --device cpu|cuda (default cpu)
// --weight-pages huge|mapped (default huge): how a CPU run holds the weight files (core/mapped_file.h;
// huge where they fit in the memory available, else mapped). The GPU maps them: they are uploaded once.
FileResidency weight_pages_option(Args& args, Device device);

class Backend {
 public:
  // Loads the model directory for sequences of up to `capacity` tokens (at most max_position_embeddings).
  // The weight files are held as `pages` says (weight_pages_option). On the CPU the Linear matrices are
  // quantized to `weights` first and their matmuls round the activations as `activations` says
  // (model/quantize.h).
  Backend(const std::string& model_dir, Device device, int threads, DType cache_dtype, int64_t capacity,
          WeightFormat weights, ActivationFormat activations, FileResidency pages);
  ~Backend();
  const ModelConfig& config() const { return model_.config; }
  const LoadedModel& model() const { return model_; }
  // A new empty sequence (on the GPU: the single slot, reset).
  std::unique_ptr<SequenceModel> new_sequence();

 private:
  LoadedModel model_;
  DType cache_dtype_;
  int64_t capacity_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<DeepseekV2> cpu_;
  std::shared_ptr<CudaDeepseekV2> gpu_;  // shared_ptr: its deleter is bound where CUDA builds create it
};

}  // namespace dsv2
