// Tokenizer components on small hand-written tokenizer.json files, with the results Hugging Face
// tokenizers gives for them (its documentation and tests): split behaviors, pre-tokenizers,
// normalizers, added-token options, BPE unknown handling, decoders and streaming, UTF-8 repair.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace dsv2 {
namespace {

using nlohmann::json;
using Pieces = std::vector<std::string>;

// A tokenizer.json around `model` (default: a BPE over a few letters, no merges).
Tokenizer make(json pre_tokenizer, json normalizer = nullptr, json added = json::array(), json decoder = nullptr,
               json model = nullptr) {
  if (model.is_null()) {
    model = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}};
  }
  json j = {{"version", "1.0"}, {"added_tokens", added}, {"normalizer", normalizer}, {"pre_tokenizer", pre_tokenizer},
            {"post_processor", nullptr}, {"decoder", decoder}, {"model", model}};
  return Tokenizer::from_json(j.dump(), nullptr, "test tokenizer");
}

json split(const std::string& pattern, const std::string& behavior, bool invert = false, bool regex = false) {
  return {{"type", "Split"}, {"pattern", {{regex ? "Regex" : "String", pattern}}}, {"behavior", behavior}, {"invert", invert}};
}

TEST(TokenizerSplit, EveryBehavior) {
  const std::string text = "the-final--countdown";
  EXPECT_EQ(make(split("-", "Removed")).pre_tokenize(text), (Pieces{"the", "final", "countdown"}));
  EXPECT_EQ(make(split("-", "Isolated")).pre_tokenize(text), (Pieces{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(make(split("-", "MergedWithPrevious")).pre_tokenize(text), (Pieces{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(make(split("-", "MergedWithNext")).pre_tokenize(text), (Pieces{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(make(split("-", "Contiguous")).pre_tokenize(text), (Pieces{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(make(split("[a-z]+", "Removed", true, true)).pre_tokenize(text), (Pieces{"the", "final", "countdown"}));
  EXPECT_EQ(make(split("-", "Isolated", true)).pre_tokenize(text), (Pieces{"the", "-", "final", "-", "-", "countdown"}));
}

TEST(TokenizerSplit, OnigurumaWhitespaceIsUnicodeWhiteSpace) {
  // PCRE2's own \s would also match U+180E (MONGOLIAN VOWEL SEPARATOR), Oniguruma's does not.
  EXPECT_EQ(make(split("\\s+", "Removed", false, true)).pre_tokenize("a\u180Eb c\u3000d"), (Pieces{"a\u180Eb", "c", "d"}));
}

TEST(TokenizerPreTokenizers, ByteLevelDigitsWhitespacePunctuationSequence) {
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_EQ(make(byte_level).pre_tokenize("Hello world's"), (Pieces{" Hello", " world", "'s"}));
  byte_level["add_prefix_space"] = false;
  EXPECT_EQ(make(byte_level).pre_tokenize("Hello  world"), (Pieces{"Hello", " ", " world"}));
  EXPECT_EQ(make({{"type", "Digits"}, {"individual_digits", true}}).pre_tokenize("abc123 45"),
            (Pieces{"abc", "1", "2", "3", " ", "4", "5"}));
  EXPECT_EQ(make({{"type", "Digits"}, {"individual_digits", false}}).pre_tokenize("abc123 45"),
            (Pieces{"abc", "123", " ", "45"}));
  EXPECT_EQ(make({{"type", "Whitespace"}}).pre_tokenize("Hey friend!     How are you?!?"),
            (Pieces{"Hey", "friend", "!", "How", "are", "you", "?!?"}));
  EXPECT_EQ(make({{"type", "WhitespaceSplit"}}).pre_tokenize("Hey friend!     How"), (Pieces{"Hey", "friend!", "How"}));
  EXPECT_EQ(make({{"type", "Punctuation"}}).pre_tokenize("Hey friend!     How are you?!?"),
            (Pieces{"Hey friend", "!", "     How are you", "?", "!", "?"}));
  json sequence = {{"type", "Sequence"},
                   {"pretokenizers", {{{"type", "WhitespaceSplit"}}, {{"type", "Digits"}, {"individual_digits", true}}}}};
  EXPECT_EQ(make(sequence).pre_tokenize("ab12 c3"), (Pieces{"ab", "1", "2", "c", "3"}));
  // A step after ByteLevel sees its byte characters ('Ġ' for the space).
  json after = {{"type", "Sequence"},
                {"pretokenizers", {{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}},
                                   split("\u0120", "MergedWithNext")}}};
  EXPECT_EQ(make(after).pre_tokenize("a b c"), (Pieces{"a", " b", " c"}));
}

TEST(TokenizerNormalizers, UnicodeFormsCaseReplacePrependStrip) {
  auto normalized = [](json normalizer, const std::string& text) {
    Pieces p = make(nullptr, normalizer).pre_tokenize(text);
    return p.empty() ? std::string() : p[0];
  };
  EXPECT_EQ(normalized({{"type", "NFC"}}, "e\u0301"), "\u00E9");
  EXPECT_EQ(normalized({{"type", "NFD"}}, "\u00E9"), "e\u0301");
  EXPECT_EQ(normalized({{"type", "NFKC"}}, "\uFB01\u2460\uFF21"), "fi1A");
  EXPECT_EQ(normalized({{"type", "Lowercase"}}, "\u00C0B \u0130 \u03A3"), "\u00E0b i\u0307 \u03C3");
  EXPECT_EQ(normalized({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}, "a b"), "a\u2581b");
  EXPECT_EQ(normalized({{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", " "}}, "a \t\n b"), "a b");
  EXPECT_EQ(normalized({{"type", "Prepend"}, {"prepend", "\u2581"}}, "x"), "\u2581x");
  EXPECT_EQ(normalized({{"type", "Strip"}, {"strip_left", true}, {"strip_right", false}}, " \u3000x "), "x ");
  json sequence = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}, {{"type", "Lowercase"}}}}};
  EXPECT_EQ(normalized(sequence, "\uFF21B"), "ab");
}

TEST(TokenizerAddedTokens, StripSingleWordAndNormalized) {
  auto token = [](const std::string& content, json options) {
    json t = {{"id", 10}, {"content", content}, {"single_word", false}, {"lstrip", false},
              {"rstrip", false}, {"normalized", false}, {"special", true}};
    if (!options.is_null()) t.update(options);
    return json::array({t});
  };
  EXPECT_EQ(make(nullptr, nullptr, token("<m>", {})).pre_tokenize("a <m> b"), (Pieces{"a ", "<m>", " b"}));
  EXPECT_EQ(make(nullptr, nullptr, token("<m>", {{"lstrip", true}})).pre_tokenize("a  <m> b"), (Pieces{"a", "<m>", " b"}));
  EXPECT_EQ(make(nullptr, nullptr, token("<m>", {{"rstrip", true}})).pre_tokenize("a <m>  b"), (Pieces{"a ", "<m>", "b"}));
  EXPECT_EQ(make(nullptr, nullptr, token("<m>", {{"single_word", true}})).pre_tokenize("a<m> b"), (Pieces{"a<m> b"}));
  EXPECT_EQ(make(nullptr, nullptr, token("<m>", {{"single_word", true}})).pre_tokenize("a <m> b"), (Pieces{"a ", "<m>", " b"}));
  // Leftmost-longest among overlapping tokens.
  json two = token("<m>", {});
  two.push_back({{"id", 11}, {"content", "<m><m>"}, {"normalized", false}, {"special", true}});
  EXPECT_EQ(make(nullptr, nullptr, two).pre_tokenize("x<m><m><m>"), (Pieces{"x", "<m><m>", "<m>"}));
  // A normalized token is matched in the normalized text.
  json lower = {{"type", "Lowercase"}};
  EXPECT_EQ(make(nullptr, lower, token("hello", {{"normalized", true}, {"special", false}})).pre_tokenize("Say HELLO"),
            (Pieces{"say ", "hello"}));
  EXPECT_EQ(make(nullptr, lower, token("HELLO", {{"normalized", false}})).pre_tokenize("Say hello HELLO"),
            (Pieces{"say hello ", "HELLO"}));
}

TEST(TokenizerBpe, UnknownByteFallbackAndIgnoreMerges) {
  json model = {{"type", "BPE"},
                {"unk_token", "<unk>"},
                {"byte_fallback", true},
                {"vocab", {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"ab", 3}, {"<0x63>", 4}, {"abab", 5}}},
                {"merges", json::array({json::array({"a", "b"}), json::array({"ab", "ab"})})}};
  EXPECT_EQ(make(nullptr, nullptr, json::array(), nullptr, model).encode("abcd", SpecialTokens::Omit),
            (std::vector<int32_t>{3, 4, 0}));
  EXPECT_EQ(make(nullptr, nullptr, json::array(), nullptr, model).encode("ddab", SpecialTokens::Omit),
            (std::vector<int32_t>{0, 0, 3}));
  model["fuse_unk"] = true;
  EXPECT_EQ(make(nullptr, nullptr, json::array(), nullptr, model).encode("ddab", SpecialTokens::Omit),
            (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(make(nullptr, nullptr, json::array(), nullptr, model).encode("ababab", SpecialTokens::Omit),
            (std::vector<int32_t>{5, 3}));
  model["vocab"]["abc"] = 6;
  model["ignore_merges"] = true;
  EXPECT_EQ(make(nullptr, nullptr, json::array(), nullptr, model).encode("abc", SpecialTokens::Omit),
            (std::vector<int32_t>{6}));
}

std::string stream(const Tokenizer& t, const std::vector<int32_t>& ids) {
  StreamingDetokenizer s(t, SpecialTokenText::Keep);
  std::string out;
  for (int32_t id : ids) {
    std::string chunk = s.push(id);
    EXPECT_TRUE(is_valid_utf8(chunk));
    out += chunk;
  }
  return out + s.finish();
}

TEST(TokenizerDecoders, SentencePieceStyleChainStreamsLikeFullDecode) {
  json model = {{"type", "BPE"}, {"vocab", {{"\u2581Hello", 0}, {"\u2581world", 1}, {"!", 2}, {"\u2581", 3}}}, {"merges", json::array()}};
  json decoder = {{"type", "Sequence"},
                  {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                {{"type", "Fuse"}},
                                {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}}}}};
  const Tokenizer t = make(nullptr, nullptr, json::array(), decoder, model);
  for (const auto& ids : std::vector<std::vector<int32_t>>{{0, 1, 2}, {3, 3, 0, 3}, {3}, {}, {2, 3, 3}}) {
    EXPECT_EQ(stream(t, ids), t.decode(ids, SpecialTokenText::Keep));
  }
  EXPECT_EQ(t.decode(std::vector<int32_t>{0, 1, 2}, SpecialTokenText::Keep), "Hello world!");
  EXPECT_EQ(t.decode(std::vector<int32_t>{0, 1, 3}, SpecialTokenText::Keep), "Hello world");
  // Replace after the join, with a two-character pattern that may straddle tokens.
  json after = {{"type", "Sequence"},
                {"decoders", {{{"type", "Fuse"}}, {{"type", "Replace"}, {"pattern", {{"String", "\u2581\u2581"}}}, {"content", "_"}}}}};
  const Tokenizer u = make(nullptr, nullptr, json::array(), after, model);
  for (const auto& ids : std::vector<std::vector<int32_t>>{{3, 3, 3}, {0, 3, 3, 1}, {3, 0, 3}}) {
    EXPECT_EQ(stream(u, ids), u.decode(ids, SpecialTokenText::Keep));
  }
  EXPECT_EQ(u.decode(std::vector<int32_t>{3, 3, 3}, SpecialTokenText::Keep), "_\u2581");
  // No decoder: tokens joined by spaces.
  const Tokenizer v = make(nullptr, nullptr, json::array(), nullptr, model);
  EXPECT_EQ(v.decode(std::vector<int32_t>{0, 2}, SpecialTokenText::Keep), "\u2581Hello !");
}

TEST(TokenizerUtf8, LossyRepairLikePython) {
  // bytes.decode('utf-8', errors='replace') in Python 3.
  const std::string R = "\uFFFD";
  EXPECT_EQ(utf8_lossy("\xC3("), R + "(");
  EXPECT_EQ(utf8_lossy("\xE2\x82"), R);
  EXPECT_EQ(utf8_lossy("\xF0\x9F\xA6x"), R + "x");
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), R + R + R);
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), R + R);
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"), R + R + R + R);
  EXPECT_EQ(utf8_lossy("\xE0\x80\xAF"), R + R + R);
  EXPECT_EQ(utf8_lossy("a\xFF\xFE" "b\xE4\xBD\xA0"), "a" + R + R + "b\u4F60");
  // Fed one byte at a time, the repair emits the same text, never part of a character.
  const std::string mixed = "x\xE4\xBD\xA0\xE4\xBD\xF0\x9F\xA6\x99\xF0\x9F\xA6\xC3(\xED\xA0\x80\xF4";
  Utf8StreamRepair repair;
  std::string streamed;
  for (char c : mixed) {
    std::string chunk = repair.push(std::string_view(&c, 1));
    EXPECT_TRUE(is_valid_utf8(chunk));
    streamed += chunk;
  }
  EXPECT_EQ(streamed + repair.finish(), utf8_lossy(mixed));
}

}  // namespace
}  // namespace dsv2
