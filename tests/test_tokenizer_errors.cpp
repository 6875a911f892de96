// Bad tokenizer.json files and unsupported components give an Error that names the problem;
// nothing loads into silently wrong ids.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace dsv2 {
namespace {

using nlohmann::json;

json base() {
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}}}};
}

void expect_error_text(const std::string& text, const std::string& needle) {
  try {
    Tokenizer::from_json(text, nullptr, "bad.json");
    ADD_FAILURE() << "loaded without error; expected: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
}

void expect_error(const json& j, const std::string& needle) { expect_error_text(j.dump(), needle); }

TEST(TokenizerErrors, BadFiles) {
  expect_error_text("{ not json", "invalid JSON");
  expect_error_text("[1, 2]", "expected a JSON object");
  json j = base();
  j["model"]["type"] = "WordPiece";
  expect_error(j, "unsupported model type 'WordPiece'");
  j = base();
  j.erase("model");
  expect_error(j, "missing field 'model'");
  j = base();
  j["model"]["merges"] = {"a c"};
  expect_error(j, "token 'c' is not in the vocabulary");
  j = base();
  j["model"]["merges"] = {"b a"};
  expect_error(j, "merged token 'ba' is not in the vocabulary");
  j = base();
  j["model"]["merges"] = {"a b c"};
  expect_error(j, "is not two tokens separated by one space");
  j = base();
  j["model"]["merges"] = {json::array({"a"})};
  expect_error(j, "merges[0] must be");
  j = base();
  j["model"]["vocab"]["c"] = "three";
  expect_error(j, "vocab['c'] must be an id");
  j = base();
  j["model"]["unk_token"] = "<unk>";
  expect_error(j, "unk_token '<unk>' is not in the vocabulary");
  j = base();
  j["version"] = "2.0";
  expect_error(j, "unknown tokenizer.json version");
}

TEST(TokenizerErrors, UnsupportedComponentsAreNamed) {
  json j = base();
  j["normalizer"] = {{"type", "BertNormalizer"}};
  expect_error(j, "unsupported normalizer type 'BertNormalizer'");
  j = base();
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Metaspace"}}}}};
  expect_error(j, "unsupported pre-tokenizer type 'Metaspace'");
  j = base();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, "unsupported decoder type 'WordPiece'");
  j = base();
  j["post_processor"] = {{"type", "Frobnicate"}};
  expect_error(j, "unsupported post-processor type 'Frobnicate'");
  j = base();
  j["model"]["dropout"] = 0.1;
  expect_error(j, "dropout is not supported");
  j = base();
  j["model"]["continuing_subword_prefix"] = "##";
  expect_error(j, "continuing_subword_prefix is not supported");
  j = base();
  j["truncation"] = {{"max_length", 8}};
  expect_error(j, "truncation is not supported");
  j = base();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_error(j, "invalid regex '(unclosed'");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}};
  expect_error(j, "unknown split behavior 'Sideways'");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Glob", "a"}}}, {"behavior", "Isolated"}};
  expect_error(j, "unknown pattern kind 'Glob'");
}

TEST(TokenizerErrors, ConfigAndIds) {
  const std::string config = R"({"add_bos_token": true, "bos_token": "<s>"})";
  try {
    Tokenizer::from_json(base().dump(), &config, "cfg.json");
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bos_token '<s>' is not in the vocabulary"), std::string::npos) << e.what();
  }
  const Tokenizer t = Tokenizer::from_json(base().dump(), nullptr, "ok.json");
  EXPECT_THROW(t.decode(std::vector<int32_t>{0, 7}, SpecialTokenText::Keep), Error);
  EXPECT_THROW(Tokenizer::load("/nonexistent/tokenizer.json"), Error);
  // Invalid UTF-8 is repaired, never a crash: "a", U+FFFD (not in this vocabulary: dropped, as
  // tokenizers does without an unk_token), "b"; then "a b" merges.
  EXPECT_EQ(t.encode("a\xFF" "b", SpecialTokens::Omit), (std::vector<int32_t>{2}));
}

}  // namespace
}  // namespace dsv2
