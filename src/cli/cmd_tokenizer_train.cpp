// dsv2 tokenizer train --vocab-size N --out tokenizer.json [--config-out tokenizer_config.json]
//                      [--threads N] FILES...
// Trains a byte-level BPE tokenizer (src/tokenizer/trainer.h) and writes its tokenizer.json.
#include <chrono>
#include <cstdio>
#include <fstream>

#include "cli/commands.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "tokenizer/trainer.h"

namespace dsv2 {
namespace {

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  check(bool(out), path + ": cannot create");
  out << text;
  check(bool(out.flush()), path + ": write error");
}

}  // namespace

int cmd_tokenizer(Args& args) {
  const int64_t vocab_size = args.integer("--vocab-size", 0);
  const auto out_path = args.value("--out");
  const auto config_path = args.value("--config-out");
  const int threads = threads_option(args);
  std::vector<std::string> words = args.positionals();
  args.finish();
  check(!words.empty() && words[0] == "train", "dsv2 tokenizer: expected the subcommand 'train' "
                                               "(dsv2 tokenizer train --vocab-size N --out tokenizer.json FILES...)");
  check(vocab_size > 0, "dsv2 tokenizer train: --vocab-size N is required");
  check(out_path.has_value(), "dsv2 tokenizer train: --out FILE is required");
  check(words.size() >= 2, "dsv2 tokenizer train: give at least one text file to train on");

  std::vector<std::string> texts;
  for (size_t i = 1; i < words.size(); ++i) texts.push_back(read_text_file(words[i]));
  const std::vector<std::string_view> views(texts.begin(), texts.end());
  BpeTrainerOptions options;
  options.vocab_size = vocab_size;
  ThreadPool pool(threads);
  const auto start = std::chrono::steady_clock::now();
  const TrainedTokenizer trained = train_byte_level_bpe(views, options, pool);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  write_file(*out_path, trained.tokenizer_json);
  if (config_path) write_file(*config_path, trained.tokenizer_config_json);
  std::fprintf(stderr, "trained %lld tokens on %lld words (%lld distinct) in %.2f s\n",
               static_cast<long long>(trained.vocab_size), static_cast<long long>(trained.words),
               static_cast<long long>(trained.distinct_words), seconds);
  if (trained.vocab_size < vocab_size) {
    std::fprintf(stderr, "note: the corpus has no pair left that occurs twice; vocabulary stopped at %lld\n",
                 static_cast<long long>(trained.vocab_size));
  }
  return 0;
}

}  // namespace dsv2
