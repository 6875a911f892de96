#include "cli/backend.h"

#include <algorithm>

#include "core/error.h"
#ifdef DSV2_WITH_CUDA
#include "engine/cuda_sequence.h"
#include "model/cuda/deepseek_v2_cuda.h"
#endif

namespace dsv2 {

Device device_option(Args& args) {
  const std::string d = args.value("--device").value_or("cpu");
  if (d == "cpu") return Device::Cpu;
  if (d == "cuda") {
#ifndef DSV2_WITH_CUDA
    throw Error("--device cuda: this dsv2 was built without CUDA (configure with -DDSV2_CUDA=ON)");
#endif
    return Device::Cuda;
  }
  throw Error("--device must be cpu or cuda (seen '" + d + "')");
}

FileResidency weight_pages_option(Args& args, Device device) {
  const std::string v = args.value("--weight-pages").value_or("huge");
  check(v == "huge" || v == "mapped", "--weight-pages must be huge or mapped (seen '" + v + "')");
  return v == "huge" && device == Device::Cpu ? FileResidency::HugePages : FileResidency::Mapped;
}

Backend::Backend(const std::string& model_dir, Device device, int threads, DType cache_dtype, int64_t capacity,
                 WeightFormat weights, ActivationFormat activations, FileResidency pages)
    : model_(load_model(model_dir, pages)), cache_dtype_(cache_dtype),
      capacity_(std::min(capacity, model_.config.max_position_embeddings)) {
  check(capacity >= 1, "sequence capacity must be >= 1 token");
  if (device == Device::Cpu) {
    pool_ = std::make_unique<ThreadPool>(threads);
    quantize_model(model_, weights, *pool_);
    set_activation_format(model_, activations);
    cpu_ = std::make_unique<DeepseekV2>(model_.config, model_.weights, *pool_);
    return;
  }
  check((weights == WeightFormat::AsStored || weights == WeightFormat::Fp8) && !model_.config.quantized_linear,
        "--device cuda runs the BF16/F16/F32 weights as stored or as fp8 (no --weights int8|q4, no quantized directories)");
  check(activations == ActivationFormat::F32, "--activations bf16 is a CPU option (--device cuda: its own kernels)");
#ifdef DSV2_WITH_CUDA
  CudaOptions opt;
  opt.cache_dtype = cache_dtype;
  opt.max_context = capacity_;
  opt.max_prefill_chunk = std::min<int64_t>(capacity_, kLongPromptChunk);
  opt.fp8_weights = weights == WeightFormat::Fp8;
  gpu_ = std::make_shared<CudaDeepseekV2>(model_.config, *model_.checkpoint, opt);
#endif
}

Backend::~Backend() = default;

std::unique_ptr<SequenceModel> Backend::new_sequence() {
#ifdef DSV2_WITH_CUDA
  if (gpu_) return std::make_unique<CudaSequence>(*gpu_, 0);
#endif
  return std::make_unique<CpuSequence>(*cpu_, capacity_, cache_dtype_);
}

}  // namespace dsv2
