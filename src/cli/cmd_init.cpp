// dsv2 init: write a random-weight model directory in the released checkpoint layout.
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "model/random_model.h"

namespace dsv2 {

int cmd_init(Args& args) {
  ModelConfig cfg = preset_config(args.required("--preset"));
  check(args.flag("--random"), "dsv2 init: --random is required (random weights are the only initialisation)");
  const std::string out = args.required("--out");
  if (auto layers = args.value("--layers")) {
    int64_t n = parse_integer(*layers, "--layers");
    check(n >= 1 && n <= cfg.num_hidden_layers,
          "--layers must be between 1 and " + std::to_string(cfg.num_hidden_layers) + " (seen " + *layers + ")");
    cfg.num_hidden_layers = n;
    cfg.first_k_dense_replace = std::min(cfg.first_k_dense_replace, n);
  }
  RandomModelOptions opt;
  opt.dtype = parse_dtype_name(args.value("--dtype").value_or("bf16"), "--dtype");
  opt.seed = uint64_t(args.integer("--seed", 0));
  ThreadPool pool(threads_option(args));
  args.finish();
  write_random_model(cfg, out, opt, pool);
  std::fprintf(stderr, "wrote a random %lld-layer model (%s) to %s\n", static_cast<long long>(cfg.num_hidden_layers),
               dtype_name(opt.dtype), out.c_str());
  return 0;
}

}  // namespace dsv2
