#include "cli/commands.h"
#include "core/error.h"

namespace dsv2 {

GenerationOptions generation_options(Args& args, const GenerationOptions& fallback) {
  GenerationOptions opt = fallback;
  opt.max_new_tokens = args.integer("--max-new-tokens", fallback.max_new_tokens);
  check(opt.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  opt.sampling.temperature = float(args.number("--temperature", fallback.sampling.temperature));
  opt.sampling.top_k = args.integer("--top-k", fallback.sampling.top_k);
  opt.sampling.top_p = float(args.number("--top-p", fallback.sampling.top_p));
  opt.sampling.min_p = float(args.number("--min-p", fallback.sampling.min_p));
  opt.sampling.repetition_penalty = float(args.number("--repetition-penalty", fallback.sampling.repetition_penalty));
  opt.sampling.seed = uint64_t(args.integer("--seed", int64_t(fallback.sampling.seed)));
  if (args.flag("--no-eos-stop")) opt.stop_at_eos = false;
  validate_sampling_options(opt.sampling);
  return opt;
}

int threads_option(Args& args) {
  int64_t n = args.integer("--threads", 0);
  check(n >= 0 && n <= 1024, "--threads must be between 0 (all cores) and 1024 (seen " + std::to_string(n) + ")");
  return int(n);
}

WeightFormat weights_option(Args& args) {
  return parse_weight_format(args.value("--weights").value_or("bf16"), "--weights");
}

ActivationFormat activations_option(Args& args) {
  return parse_activation_format(args.value("--activations").value_or("f32"), "--activations");
}

DType cache_dtype_option(Args& args, DType fallback) {
  auto v = args.value("--cache-dtype");
  if (!v) return fallback;
  DType t = parse_dtype_name(*v, "--cache-dtype");
  check(t != DType::F16, "--cache-dtype must be f32 or bf16 (seen f16)");
  return t;
}

}  // namespace dsv2
