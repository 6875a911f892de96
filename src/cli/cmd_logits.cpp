// dsv2 logits: the logits of every position, as float32 little-endian [n_ids, vocab_size].
#include <cstdio>
#include <cstring>

#include "cli/backend.h"
#include "cli/commands.h"
#include "core/error.h"

namespace dsv2 {

int cmd_logits(Args& args) {
  const std::string dir = args.required("--model");
  const std::vector<int32_t> ids = parse_id_list(args.required("--ids"), "--ids");
  const std::string out_path = args.required("--out");
  const std::string path = args.value("--path").value_or("prefill");
  check(path == "prefill" || path == "decode", "--path must be prefill or decode (seen '" + path + "')");
  const Device device = device_option(args);
  const int threads = threads_option(args);
  const WeightFormat weights = weights_option(args);
  const ActivationFormat activations = activations_option(args);
  const FileResidency pages = weight_pages_option(args, device);
  const DType cache_dtype = cache_dtype_option(args, DType::F32);
  args.finish();

  Backend backend(dir, device, threads, cache_dtype, int64_t(ids.size()), weights, activations, pages);
  const int64_t vocab = backend.config().vocab_size;
  for (int32_t id : ids)
    check(id < vocab, "--ids: token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
  std::unique_ptr<SequenceModel> seq = backend.new_sequence();
  std::vector<float> logits;
  if (path == "prefill") {
    seq->append(ids, AttentionPath::Decompressed, LogitsRows::All, logits);
  } else {
    std::vector<float> row;
    for (int32_t id : ids) {
      seq->append({id}, AttentionPath::Absorbed, LogitsRows::Last, row);
      logits.insert(logits.end(), row.begin(), row.end());
    }
  }
  static_assert(sizeof(float) == 4, "float32 output");
  std::FILE* f = std::fopen(out_path.c_str(), "wb");
  check(f != nullptr, out_path + ": cannot create: " + std::strerror(errno));
  size_t written = std::fwrite(logits.data(), sizeof(float), logits.size(), f);  // x86-64: little-endian
  bool ok = std::fclose(f) == 0 && written == logits.size();
  check(ok, out_path + ": write failed");
  std::fprintf(stderr, "wrote %zu x %lld float32 logits (%s path) to %s\n", ids.size(), static_cast<long long>(vocab),
               path.c_str(), out_path.c_str());
  return 0;
}

}  // namespace dsv2
