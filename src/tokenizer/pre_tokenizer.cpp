#include "tokenizer/pre_tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/json_fields.h"

namespace dsv2 {
namespace {

// GPT-2's pattern, as tokenizers' ByteLevel pre-tokenizer uses it (Oniguruma).
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Character predicates of tokenizers as one-character patterns (a predicate split matches
// each such character on its own, which is what these patterns do).
constexpr const char* kNumericChar = R"(\p{N})";                          // char::is_numeric
constexpr const char* kPunctuationChar = R"([!-/:-@\[-`{-~\p{P}])";      // ASCII punctuation or \p{P}
constexpr const char* kWhitespaceChar = R"(\p{White_Space})";            // char::is_whitespace

SplitBehavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  throw Error(where + ": unknown split behavior '" + name + "'");
}

// Cuts every text piece at the matches of a pattern (tokenizers' Split and the predicate
// splits built on NormalizedString::split).
class RegexSplitStep final : public PreTokenizerStep {
 public:
  RegexSplitStep(Regex pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

  void apply(PieceList& list, PieceList& spare, RegexScratch& scratch) const override {
    spare.pieces.clear();
    SegmentSplitter splitter(spare.pieces, behavior_);
    for (const Piece& piece : list.pieces) {
      if (!piece.is_text()) {
        spare.pieces.push_back(piece);
        continue;
      }
      const std::string_view subject(list.text.data() + piece.begin, piece.end - piece.begin);
      splitter.begin_piece();
      uint32_t previous_end = 0;
      pattern_.for_each_match(subject, scratch, [&](size_t begin, size_t end) {
        if (begin != previous_end) splitter.add(piece.begin + previous_end, piece.begin + uint32_t(begin), invert_);
        splitter.add(piece.begin + uint32_t(begin), piece.begin + uint32_t(end), !invert_);
        previous_end = uint32_t(end);
      });
      if (previous_end != subject.size()) splitter.add(piece.begin + previous_end, piece.end, invert_);
      splitter.end_piece();
    }
    list.pieces.swap(spare.pieces);
  }

 private:
  Regex pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// ByteLevel's add_prefix_space: a space before every piece that does not start with one.
class PrefixSpaceStep final : public PreTokenizerStep {
 public:
  void apply(PieceList& list, PieceList& spare, RegexScratch&) const override {
    rewrite_text_pieces(list, spare, [](std::string_view bytes, std::string& out) {
      if (bytes.empty() || bytes[0] != ' ') out.push_back(' ');
      out.append(bytes);
    });
  }
};

// Maps pieces into (or back out of) the byte alphabet, for steps that follow a ByteLevel
// step and so see its characters.
class ByteAlphabetStep final : public PreTokenizerStep {
 public:
  explicit ByteAlphabetStep(bool to_alphabet) : to_alphabet_(to_alphabet) {}
  void apply(PieceList& list, PieceList& spare, RegexScratch&) const override {
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
    rewrite_text_pieces(list, spare, [&](std::string_view bytes, std::string& out) {
      if (to_alphabet_) {
        alphabet.append_encoded(out, bytes);
      } else {
        check(alphabet.decode(bytes, out), "internal: a byte-level piece left the byte alphabet");
      }
    });
  }

 private:
  bool to_alphabet_;
};

void add_steps(PreTokenizer& pre, const nlohmann::json& j, const std::string& where, bool& byte_level_seen,
               size_t& byte_level_steps_end) {
  const std::string type = json_type_of(j, where);
  const std::string here = where + " (" + type + ")";
  auto split = [&](const char* pattern, SplitBehavior behavior, bool invert, RegexDialect dialect) {
    pre.steps.push_back(std::make_unique<RegexSplitStep>(Regex(pattern, dialect, here), behavior, invert));
  };
  check(!byte_level_seen || type != "ByteLevel", here + ": more than one ByteLevel pre-tokenizer is not supported");
  if (type == "Sequence") {
    const auto& list = json_array(j, "pretokenizers", here);
    for (size_t i = 0; i < list.size(); ++i) {
      add_steps(pre, list[i], where + ".pretokenizers[" + std::to_string(i) + "]", byte_level_seen,
                byte_level_steps_end);
    }
  } else if (type == "Split") {
    const SplitBehavior behavior = parse_behavior(json_string(j, "behavior", here), here);
    pre.steps.push_back(std::make_unique<RegexSplitStep>(json_pattern(j, here), behavior,
                                                         json_bool(j, "invert", here, false)));
  } else if (type == "ByteLevel") {
    if (json_bool(j, "add_prefix_space", here, true)) pre.steps.push_back(std::make_unique<PrefixSpaceStep>());
    if (json_bool(j, "use_regex", here, true)) split(kGpt2Pattern, SplitBehavior::Isolated, false, RegexDialect::Oniguruma);
    byte_level_seen = true;
    byte_level_steps_end = pre.steps.size();
  } else if (type == "Digits") {
    const bool individual = json_bool(j, "individual_digits", here, false);
    split(kNumericChar, individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous, false, RegexDialect::RustRegex);
  } else if (type == "Punctuation") {
    auto it = j.find("behavior");
    const SplitBehavior behavior = it == j.end() ? SplitBehavior::Isolated : parse_behavior(json_string(j, "behavior", here), here);
    split(kPunctuationChar, behavior, false, RegexDialect::RustRegex);
  } else if (type == "Whitespace") {  // keeps the matches of \w+|[^\w\s]+ (Rust regex)
    split(R"(\w+|[^\w\s]+)", SplitBehavior::Removed, true, RegexDialect::RustRegex);
  } else if (type == "WhitespaceSplit") {
    split(kWhitespaceChar, SplitBehavior::Removed, false, RegexDialect::RustRegex);
  } else if (type == "BertPreTokenizer") {
    split(kWhitespaceChar, SplitBehavior::Removed, false, RegexDialect::RustRegex);
    split(kPunctuationChar, SplitBehavior::Isolated, false, RegexDialect::RustRegex);
  } else if (type == "CharDelimiterSplit") {
    const std::string delimiter = json_string(j, "delimiter", here);
    pre.steps.push_back(std::make_unique<RegexSplitStep>(
        Regex(Regex::escape(delimiter), RegexDialect::RustRegex, here), SplitBehavior::Removed, false));
  } else {
    throw Error(where + ": unsupported pre-tokenizer type '" + type + "'");
  }
}

}  // namespace

void PreTokenizer::apply(PieceList& list, PieceList& spare, RegexScratch& scratch) const {
  for (const auto& step : steps) step->apply(list, spare, scratch);
}

PreTokenizer PreTokenizer::from_json(const nlohmann::json& j, const std::string& where) {
  PreTokenizer pre;
  if (j.is_null()) return pre;
  bool byte_level_seen = false;
  size_t byte_level_steps_end = 0;
  add_steps(pre, j, where, byte_level_seen, byte_level_steps_end);
  pre.byte_level = byte_level_seen;
  if (byte_level_seen && byte_level_steps_end < pre.steps.size()) {
    // Steps after ByteLevel see byte characters: map there, and back to bytes at the end.
    pre.steps.insert(pre.steps.begin() + std::ptrdiff_t(byte_level_steps_end), std::make_unique<ByteAlphabetStep>(true));
    pre.steps.push_back(std::make_unique<ByteAlphabetStep>(false));
  }
  return pre;
}

}  // namespace dsv2
