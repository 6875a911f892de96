#include "cli/commands.h"
#include "core/error.h"

namespace dsv2 {

int threads_option(Args& args) {
  int64_t n = args.integer("--threads", 0);
  check(n >= 0 && n <= 1024, "--threads must be between 0 (all cores) and 1024 (seen " + std::to_string(n) + ")");
  return int(n);
}

DType cache_dtype_option(Args& args, DType fallback) {
  auto v = args.value("--cache-dtype");
  if (!v) return fallback;
  DType t = parse_dtype_name(*v, "--cache-dtype");
  check(t != DType::F16, "--cache-dtype must be f32 or bf16 (seen f16)");
  return t;
}

}  // namespace dsv2
