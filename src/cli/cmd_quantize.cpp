// dsv2 quantize: writes a copy of a model directory with its Linear matrices quantized (int8 or q4)
// that loads in place (model/quantized_checkpoint.h).
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"
#include "model/quantized_checkpoint.h"

namespace dsv2 {

int cmd_quantize(Args& args) {
  const std::string dir = args.required("--model");
  const std::string out = args.required("--out");
  const WeightFormat format = weights_option(args);
  check(format == WeightFormat::Int8 || format == WeightFormat::Q4,
        "dsv2 quantize: --weights must be int8 or q4 (fp8 is quantized at upload by --device cuda)");
  ThreadPool pool(threads_option(args));
  args.finish();
  const LoadedModel m = load_model(dir);
  const DType t = format == WeightFormat::Int8 ? DType::Q8_0 : DType::Q4_0;
  write_quantized_model(dir, m, t, out, pool);
  std::fprintf(stderr, "wrote %s with %s Linear matrices (%.1f MB of weights read per decode token, was %.1f MB)\n", out.c_str(),
               dtype_name(t), decode_weight_bytes_per_token(m.config, load_model(out).weights) / 1e6,
               decode_weight_bytes_per_token(m.config, m.weights) / 1e6);
  return 0;
}

}  // namespace dsv2
