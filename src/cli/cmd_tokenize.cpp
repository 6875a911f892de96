// dsv2 tokenize / detokenize: text to ids and back with a Hugging Face tokenizer.json.
//   tokenize   --tokenizer PATH [--no-special] [--jsonl] [--threads N] < text
//   detokenize --tokenizer PATH --ids 1,2,3 [--skip-special]
#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "tokenizer/tokenizer.h"

namespace dsv2 {
namespace {

std::string read_all_stdin() {
  std::string data;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, stdin)) > 0) data.append(buffer, n);
  check(!std::ferror(stdin), "cannot read standard input");
  return data;
}

void append_ids_line(std::string& out, const std::vector<int32_t>& ids) {
  char number[16];
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out.push_back(' ');
    auto [end, ec] = std::to_chars(number, number + sizeof number, ids[i]);
    out.append(number, end);
  }
  out.push_back('\n');
}

void write_stdout(const std::string& bytes) {
  check(std::fwrite(bytes.data(), 1, bytes.size(), stdout) == bytes.size() && std::fflush(stdout) == 0,
        "cannot write standard output");
}

}  // namespace

int cmd_tokenize(Args& args) {
  const std::string path = args.required("--tokenizer");
  const SpecialTokens special = args.flag("--no-special") ? SpecialTokens::Omit : SpecialTokens::Add;
  const bool jsonl = args.flag("--jsonl");
  const int threads = threads_option(args);
  args.finish();
  const Tokenizer tokenizer = Tokenizer::load(path);
  const std::string input = read_all_stdin();
  std::string out;
  if (!jsonl) {
    append_ids_line(out, tokenizer.encode(input, special));
    write_stdout(out);
    return 0;
  }
  // One JSON string per line; a final newline ends the last line.
  std::vector<std::string> texts;
  size_t start = 0, line_number = 1;
  while (start < input.size()) {
    size_t end = input.find('\n', start);
    if (end == std::string::npos) end = input.size();
    const std::string_view line(input.data() + start, end - start);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error("dsv2 tokenize --jsonl: stdin line " + std::to_string(line_number) + ": invalid JSON: " + e.what());
    }
    check(j.is_string(), "dsv2 tokenize --jsonl: stdin line " + std::to_string(line_number) +
                             ": expected a JSON string, got " + j.type_name());
    texts.push_back(j.get<std::string>());
    start = end + 1;
    ++line_number;
  }
  ThreadPool pool(threads);
  const std::vector<std::string_view> views(texts.begin(), texts.end());
  for (const auto& ids : tokenizer.encode_batch(views, special, pool)) append_ids_line(out, ids);
  write_stdout(out);
  return 0;
}

int cmd_detokenize(Args& args) {
  const std::string path = args.required("--tokenizer");
  const std::vector<int32_t> ids = parse_id_list(args.required("--ids"), "dsv2 detokenize: --ids");
  const SpecialTokenText special = args.flag("--skip-special") ? SpecialTokenText::Skip : SpecialTokenText::Keep;
  args.finish();
  const Tokenizer tokenizer = Tokenizer::load(path);
  write_stdout(tokenizer.decode(ids, special));  // exactly the text: no newline added
  return 0;
}

}  // namespace dsv2
