// The tokenizers under test against Hugging Face tokenizers' ids (tools/make_tokenizer_goldens.py):
// DeepSeek-V2 (../shared), DeepSeek-V3 (npm, data/), and the one dsv2 trained on the Brown
// corpus (tests/tokenizer/trained). Exact ids on every corpus case and on the 1 MB input; decoding
// and streaming decoding give HF's text; llama.cpp's 46 cases for the V2 vocabulary.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/thread_pool.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_cases.h"

namespace dsv2 {
namespace {

using nlohmann::json;

struct Source {
  const char* name;
  std::string json_path;   // tokenizer.json alone
  std::string config_dir;  // a directory with tokenizer_config.json, or empty
};

Source source(const std::string& name) {
  if (name == "v2") return {"v2", test::v2_tokenizer_json(), ""};
  if (name == "v3") return {"v3", test::v3_tokenizer_dir() + "/tokenizer.json", test::v3_tokenizer_dir()};
  return {"trained", test::trained_tokenizer_dir() + "/tokenizer.json", test::trained_tokenizer_dir()};
}

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

std::vector<int32_t> framed(const std::vector<int32_t>& prefix, const std::vector<int32_t>& ids,
                            const std::vector<int32_t>& suffix) {
  std::vector<int32_t> all(prefix);
  all.insert(all.end(), ids.begin(), ids.end());
  all.insert(all.end(), suffix.begin(), suffix.end());
  return all;
}

// Decodes one id at a time; every chunk must be whole UTF-8.
std::string stream_decode(const Tokenizer& t, const std::vector<int32_t>& ids, SpecialTokenText special) {
  StreamingDetokenizer stream(t, special);
  std::string text;
  for (int32_t id : ids) {
    std::string chunk = stream.push(id);
    EXPECT_TRUE(is_valid_utf8(chunk)) << "a streamed chunk splits a character";
    text += chunk;
  }
  return text + stream.finish();
}

class TokenizerGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerGolden, MatchesHuggingFaceOnEveryCase) {
  const Source src = source(GetParam());
  const std::string golden_path = test::tokenizer_test_dir() + "/goldens_" + src.name + ".json";
  if (!test::require_file(src.json_path) || !test::require_file(golden_path)) return;
  const json golden = json::parse(test::read_file(golden_path));
  const Tokenizer t = Tokenizer::load(src.json_path);
  const std::vector<test::TokenizerCase> cases = test::tokenizer_corpus();
  ASSERT_EQ(cases.size(), golden["cases"].size());
  const auto prefix = ids_of(golden["special_prefix"]), suffix = ids_of(golden["special_suffix"]);
  std::vector<std::string_view> texts;
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& g = golden["cases"][i];
    ASSERT_EQ(g["name"], cases[i].name);
    const auto expected = ids_of(g["ids"]);
    EXPECT_EQ(t.encode(cases[i].bytes, SpecialTokens::Omit), expected) << src.name << " case " << cases[i].name;
    EXPECT_EQ(t.encode(cases[i].bytes, SpecialTokens::Add), framed(prefix, expected, suffix)) << cases[i].name;
    const std::string decoded = g["decoded"].get<std::string>();
    EXPECT_EQ(t.decode(expected, SpecialTokenText::Keep), decoded) << cases[i].name;
    EXPECT_EQ(t.decode(expected, SpecialTokenText::Skip), g["decoded_skip_special"].get<std::string>()) << cases[i].name;
    EXPECT_EQ(stream_decode(t, expected, SpecialTokenText::Keep), decoded) << cases[i].name;
    texts.push_back(cases[i].bytes);
  }
  // Batch encoding over threads gives the same ids.
  ThreadPool pool(2);
  const auto batch = t.encode_batch(texts, SpecialTokens::Omit, pool);
  for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(batch[i], ids_of(golden["cases"][i]["ids"])) << cases[i].name;
}

TEST_P(TokenizerGolden, MatchesHuggingFaceOnOneMegabyte) {
  const Source src = source(GetParam());
  const std::string golden_path = test::tokenizer_test_dir() + "/goldens_" + src.name + ".json";
  if (!test::require_file(src.json_path) || !test::require_file(golden_path)) return;
  const json golden = json::parse(test::read_file(golden_path));
  const Tokenizer t = Tokenizer::load(src.json_path);
  const std::string big = test::tokenizer_big_input(test::tokenizer_corpus());
  ASSERT_EQ(big.size(), golden["big"]["bytes"].get<size_t>());
  const std::vector<int32_t> ids = t.encode(big, SpecialTokens::Omit);
  EXPECT_EQ(ids.size(), golden["big"]["n_ids"].get<size_t>());
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(test::fnv1a64_ids(ids)));
  EXPECT_EQ(hash, golden["big"]["fnv1a64"].get<std::string>());
  // Streaming the 1 MB of ids gives the text of decoding them at once.
  EXPECT_EQ(stream_decode(t, ids, SpecialTokenText::Keep), t.decode(ids, SpecialTokenText::Keep));
}

// A model directory's tokenizer_config.json (add_bos_token / add_eos_token) decides the special
// tokens, as transformers' LlamaTokenizerFast does. For the trained tokenizer the reference is
// transformers 5.17's AutoTokenizer. For V3 it is the file itself (add_bos_token: true, BOS id 0):
// transformers 5.17 rebuilds that tokenizer's pipeline and its ids differ from tokenizers' on most
// cases (goldens_v3.json lists them under config_special_mismatch), so it is no reference there.
class TokenizerConfigGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerConfigGolden, ModelDirectoryAddsSpecialTokensFromTokenizerConfig) {
  const Source src = source(GetParam());
  const std::string golden_path = test::tokenizer_test_dir() + "/goldens_" + src.name + ".json";
  if (!test::require_file(src.config_dir + "/tokenizer_config.json") || !test::require_file(golden_path)) return;
  const json golden = json::parse(test::read_file(golden_path));
  std::vector<int32_t> prefix = {0}, suffix;
  if (!golden.contains("config_special_mismatch")) {
    ASSERT_TRUE(golden.contains("config_special_prefix")) << golden.value("transformers_error", "");
    prefix = ids_of(golden["config_special_prefix"]);
    suffix = ids_of(golden["config_special_suffix"]);
  }
  const Tokenizer t = Tokenizer::load(src.config_dir);
  const auto cases = test::tokenizer_corpus();
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(t.encode(cases[i].bytes, SpecialTokens::Add), framed(prefix, ids_of(golden["cases"][i]["ids"]), suffix))
        << cases[i].name;
    EXPECT_EQ(t.encode(cases[i].bytes, SpecialTokens::Omit), ids_of(golden["cases"][i]["ids"])) << cases[i].name;
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, TokenizerGolden, ::testing::Values("v2", "v3", "trained"),
                         [](const auto& info) { return info.param; });
// V2's folder in ../shared has no tokenizer_config.json.
INSTANTIATE_TEST_SUITE_P(Tokenizers, TokenizerConfigGolden, ::testing::Values("v3", "trained"),
                         [](const auto& info) { return info.param; });

// llama.cpp's test for this vocabulary: inputs separated by "\n__ggml_vocab_test__\n", one line of
// expected ids (no BOS) per input.
TEST(TokenizerLlamaCpp, DeepSeekV2Cases) {
  const std::string dir = std::string(DSV2_SOURCE_DIR) + "/../shared/data/deepseek-v2-tokenizer";
  if (!test::require_file(dir + "/llamacpp-cases.inp")) return;
  const std::string inputs = test::read_file(dir + "/llamacpp-cases.inp");
  const std::string outputs = test::read_file(dir + "/llamacpp-cases.out");
  const Tokenizer t = Tokenizer::load(dir + "/tokenizer.json");
  const std::string separator = "\n__ggml_vocab_test__\n";
  size_t in_at = 0, out_at = 0, n = 0;
  while (in_at < inputs.size()) {
    const size_t in_end = inputs.find(separator, in_at);
    ASSERT_NE(in_end, std::string::npos);
    const size_t out_end = outputs.find('\n', out_at);
    ASSERT_NE(out_end, std::string::npos);
    std::vector<int32_t> expected;
    std::istringstream line(outputs.substr(out_at, out_end - out_at));
    for (int32_t id; line >> id;) expected.push_back(id);
    const std::string text = inputs.substr(in_at, in_end - in_at);
    EXPECT_EQ(t.encode(text, SpecialTokens::Omit), expected) << "case " << n << ": '" << text << "'";
    EXPECT_EQ(t.encode(text, SpecialTokens::Add).front(), 100000) << "BOS";
    in_at = in_end + separator.size();
    out_at = out_end + 1;
    ++n;
  }
  EXPECT_EQ(n, 46u);
}

}  // namespace
}  // namespace dsv2
