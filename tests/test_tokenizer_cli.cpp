// dsv2 tokenize / detokenize / tokenizer train / bench-tokenizer as users and outside checks call them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "tokenizer_cases.h"

namespace dsv2 {
namespace {

using test::run_dsv2;
using test::run_dsv2_with_input;

void expect_fails(const std::string& args, const std::string& input, const std::string& needle) {
  test::RunResult r = run_dsv2_with_input(args, input);
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\nstderr: " << r.err;
}

TEST(TokenizerCli, TokenizeAndDetokenize) {
  const std::string v2 = test::v2_tokenizer_json();
  if (!test::require_file(v2)) return;
  test::RunResult r = run_dsv2_with_input("tokenize --tokenizer " + v2, "Hello world");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "100000 17464 1843\n");
  r = run_dsv2_with_input("tokenize --tokenizer " + v2 + " --no-special", "Hello world");
  EXPECT_EQ(r.out, "17464 1843\n");
  // Special-token strings in the text are recognised with --no-special too; empty input.
  r = run_dsv2_with_input("tokenize --tokenizer " + v2 + " --no-special", "<｜end▁of▁sentence｜>");
  EXPECT_EQ(r.out, "100001\n");
  r = run_dsv2_with_input("tokenize --tokenizer " + v2 + " --no-special", "");
  EXPECT_EQ(r.out, "\n");
  r = run_dsv2_with_input("tokenize --tokenizer " + v2 + " --jsonl", "\"Hello world\"\n\"\"\n\"a\\nb\"\n");
  EXPECT_EQ(r.out, "100000 17464 1843\n100000\n100000 64 185 65\n");
  r = run_dsv2("detokenize --tokenizer " + v2 + " --ids 100000,17464,1843");
  EXPECT_EQ(r.out, "<｜begin▁of▁sentence｜>Hello world");
  r = run_dsv2("detokenize --tokenizer " + v2 + " --ids 100000,17464,1843 --skip-special");
  EXPECT_EQ(r.out, "Hello world");
}

TEST(TokenizerCli, ModelDirectoryReadsTokenizerConfig) {
  const std::string dir = test::trained_tokenizer_dir();
  test::RunResult r = run_dsv2_with_input("tokenize --tokenizer " + dir, "The jury said");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, 2), "0 ");  // BOS (add_bos_token) is id 0
  r = run_dsv2_with_input("tokenize --tokenizer " + dir + " --no-special", "The jury said");
  const std::string ids = r.out.substr(0, r.out.size() - 1);
  std::string comma_ids = ids;
  for (char& c : comma_ids) c = c == ' ' ? ',' : c;
  r = run_dsv2("detokenize --tokenizer " + dir + " --ids " + comma_ids);
  EXPECT_EQ(r.out, "The jury said");
}

TEST(TokenizerCli, BadInputGetsAClearError) {
  const std::string dir = test::trained_tokenizer_dir();
  expect_fails("tokenize", "x", "--tokenizer is required");
  expect_fails("tokenize --tokenizer /nonexistent/dir", "x", "/nonexistent/dir");
  expect_fails("tokenize --tokenizer " + dir + " --jsonl", "\"ok\"\n42\n", "stdin line 2: expected a JSON string");
  expect_fails("tokenize --tokenizer " + dir + " --jsonl", "\"ok\"\n{bad\n", "stdin line 2: invalid JSON");
  expect_fails("detokenize --tokenizer " + dir + " --ids 1,99999", "", "id 99999 names no token");
  expect_fails("detokenize --tokenizer " + dir + " --ids 1,x", "", "'x' is not an integer");
  expect_fails("tokenizer train --out x.json", "", "--vocab-size N is required");
  expect_fails("tokenizer fit --vocab-size 300 --out x.json a.txt", "", "expected the subcommand 'train'");
  expect_fails("tokenizer train --vocab-size 100 --out x.json " + dir + "/tokenizer.json", "", "--vocab-size must be between 258");
  expect_fails("bench-tokenizer --tokenizer " + dir, "", "give exactly one text FILE");
}

TEST(TokenizerCli, TrainWritesADeterministicLoadableTokenizer) {
  const std::string dir = test::temp_dir("train");
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the cat sat on the mat; the dog sat on the log " + std::to_string(i % 7) + "\n";
  test::write_file(dir + "/a.txt", text);
  const std::string args = "tokenizer train --vocab-size 300 --threads 2 " + dir + "/a.txt --out ";
  test::RunResult r = run_dsv2(args + dir + "/t1.json --config-out " + dir + "/tokenizer_config.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(run_dsv2(args + dir + "/tokenizer.json").exit_code, 0);
  EXPECT_EQ(test::read_file(dir + "/t1.json"), test::read_file(dir + "/tokenizer.json"));
  const auto j = nlohmann::json::parse(test::read_file(dir + "/tokenizer.json"));
  EXPECT_LE(j["model"]["vocab"].size(), 300u);
  EXPECT_EQ(j["model"]["vocab"]["<｜begin▁of▁sentence｜>"], 0);
  EXPECT_EQ(j["model"]["vocab"]["<｜end▁of▁sentence｜>"], 1);
  r = run_dsv2_with_input("tokenize --tokenizer " + dir + " --no-special", "the cat sat");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LE(std::count(r.out.begin(), r.out.end(), ' '), 2);  // whole words became tokens
}

TEST(TokenizerCli, TrainingOnBrownReproducesTheCommittedTokenizer) {
  const std::string brown = std::string(DSV2_SOURCE_DIR) + "/data/brown.txt";
  if (!test::require_file(brown)) return;
  const std::string out = test::temp_dir("brown") + "/tokenizer.json";
  test::RunResult r = run_dsv2("tokenizer train --vocab-size 4000 --out " + out + " " + brown);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(test::read_file(out), test::read_file(test::trained_tokenizer_dir() + "/tokenizer.json"));
}

TEST(TokenizerCli, BenchPrintsThroughput) {
  const std::string file = test::temp_dir("bench") + "/text.txt";
  std::string text;
  for (int i = 0; i < 300; ++i) text += "Line " + std::to_string(i) + " of some English text, and code: x += 1;\n";
  test::write_file(file, text);
  test::RunResult r = run_dsv2("bench-tokenizer --tokenizer " + test::trained_tokenizer_dir() + " " + file +
                               " --threads 2 --repeat 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["single_thread_MBps"].get<double>(), 0);
  EXPECT_GT(j["batch_MBps"].get<double>(), 0);
  EXPECT_EQ(j["bytes"].get<size_t>(), text.size());
}

}  // namespace
}  // namespace dsv2
