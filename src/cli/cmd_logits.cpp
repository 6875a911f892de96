// dsv2 logits: the logits of every position, as float32 little-endian [n_ids, vocab_size].
#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "core/error.h"
#include "model/deepseek_v2.h"
#include "model/model.h"

namespace dsv2 {

int cmd_logits(Args& args) {
  const std::string dir = args.required("--model");
  const std::vector<int32_t> ids = parse_id_list(args.required("--ids"), "--ids");
  const std::string out_path = args.required("--out");
  const std::string path = args.value("--path").value_or("prefill");
  check(path == "prefill" || path == "decode", "--path must be prefill or decode (seen '" + path + "')");
  ThreadPool pool(threads_option(args));
  const DType cache_dtype = cache_dtype_option(args, DType::F32);
  args.finish();

  LoadedModel m = load_model(dir);
  DeepseekV2 net(m.config, m.weights, pool);
  LatentCache cache = net.make_cache(int64_t(ids.size()), cache_dtype);
  std::vector<float> logits;
  if (path == "prefill") {
    net.forward(ids, cache, AttentionPath::Decompressed, LogitsRows::All, logits);
  } else {
    std::vector<float> row;
    for (int32_t id : ids) {
      net.forward({id}, cache, AttentionPath::Absorbed, LogitsRows::Last, row);
      logits.insert(logits.end(), row.begin(), row.end());
    }
  }
  static_assert(sizeof(float) == 4, "float32 output");
  std::FILE* f = std::fopen(out_path.c_str(), "wb");
  check(f != nullptr, out_path + ": cannot create: " + std::strerror(errno));
  size_t written = std::fwrite(logits.data(), sizeof(float), logits.size(), f);  // x86-64: little-endian
  bool ok = std::fclose(f) == 0 && written == logits.size();
  check(ok, out_path + ": write failed");
  std::fprintf(stderr, "wrote %zu x %lld float32 logits (%s path) to %s\n", ids.size(),
               static_cast<long long>(m.config.vocab_size), path.c_str(), out_path.c_str());
  return 0;
}

}  // namespace dsv2
