// dsv2 generate: continue a prompt given as token ids.
#include <cstdio>

#include "cli/backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "engine/generator.h"

namespace dsv2 {

int cmd_generate(Args& args) {
  const std::string dir = args.required("--model");
  const std::vector<int32_t> prompt = parse_id_list(args.required("--prompt-ids"), "--prompt-ids");
  GenerationOptions opt;
  opt.max_new_tokens = args.integer("--max-new-tokens", 32);
  check(opt.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  opt.sampling.temperature = float(args.number("--temperature", 0.0));
  opt.sampling.top_k = args.integer("--top-k", 0);
  opt.sampling.top_p = float(args.number("--top-p", 1.0));
  opt.sampling.min_p = float(args.number("--min-p", 0.0));
  opt.sampling.repetition_penalty = float(args.number("--repetition-penalty", 1.0));
  opt.sampling.seed = uint64_t(args.integer("--seed", 0));
  opt.stop_at_eos = !args.flag("--no-eos-stop");
  args.flag("--print-ids");  // ids are the only output until text prompts exist
  const Device device = device_option(args);
  const DType cache_dtype = cache_dtype_option(args, DType::F32);
  const int threads = threads_option(args);
  args.finish();
  validate_sampling_options(opt.sampling);

  const int64_t wanted = int64_t(prompt.size()) + std::max<int64_t>(opt.max_new_tokens, 1);
  Backend backend(dir, device, threads, cache_dtype, wanted);
  std::unique_ptr<SequenceModel> seq = backend.new_sequence();
  GenerationResult r = generate(*seq, prompt, opt);
  std::fprintf(stderr, "prompt %zu tokens in %.3f s; generated %zu tokens, %lld decode steps in %.3f s (%.2f tokens/s); stop: %s\n",
               prompt.size(), r.prefill_seconds, r.tokens.size(), static_cast<long long>(r.decode_steps), r.decode_seconds,
               r.decode_seconds > 0 ? double(r.decode_steps) / r.decode_seconds : 0.0, stop_reason_name(r.stop));
  std::string line;
  for (size_t i = 0; i < r.tokens.size(); ++i) line += (i ? "," : "") + std::to_string(r.tokens[i]);
  std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace dsv2
