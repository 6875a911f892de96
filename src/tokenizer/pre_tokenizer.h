// Pre-tokenizers of tokenizer.json ("pre_tokenizer"): Split (every behavior, invert),
// ByteLevel (add_prefix_space, use_regex), Digits, Whitespace, WhitespaceSplit, Punctuation
// and Sequence. A Sequence is flattened into steps; each step cuts every text piece again.
#pragma once
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "tokenizer/pieces.h"
#include "tokenizer/regex.h"

namespace dsv2 {

class PreTokenizerStep {
 public:
  virtual ~PreTokenizerStep() = default;
  // Replaces the text pieces of `list` by their parts (added-token pieces pass unchanged);
  // `spare` is scratch space of the caller's.
  virtual void apply(PieceList& list, PieceList& spare, RegexScratch& scratch) const = 0;
};

struct PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizerStep>> steps;
  // A ByteLevel step is present: the pieces reaching the model are raw bytes, and its
  // vocabulary is looked up in the byte alphabet (see BpeModel).
  bool byte_level = false;

  void apply(PieceList& list, PieceList& spare, RegexScratch& scratch) const;

  // Builds the steps described by `j` (null: no pre-tokenization). Throws Error naming
  // `where` and the type for anything unsupported.
  static PreTokenizer from_json(const nlohmann::json& j, const std::string& where);
};

}  // namespace dsv2
