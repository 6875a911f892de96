// Added tokens ("added_tokens" of tokenizer.json): special and normal tokens matched in the
// raw text before pre-tokenization, as tokenizers' AddedVocabulary does: tokens with
// normalized=false are found in the text as given, the others in the normalized text; the
// leftmost-longest match wins; single_word, lstrip and rstrip are honoured.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/pieces.h"

namespace dsv2 {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  std::string normalized_content;  // the content after the normalizer (normalized tokens)
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// A set of strings found by leftmost-longest search (a byte trie).
class LiteralSet {
 public:
  void add(std::string_view literal, int32_t value);
  bool empty() const { return nodes_.size() <= 1; }
  // The leftmost-longest occurrence of a literal at or after `from`; false if none.
  bool find(std::string_view text, size_t from, size_t* begin, size_t* end, int32_t* value) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // (byte, node index)
    int32_t value = -1;
  };
  int32_t child(int32_t node, uint8_t byte) const;
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_byte_{};
};

class AddedVocabulary {
 public:
  // Registers `token` (its id already resolved); a token with the same id is replaced.
  // Call build_matchers() after the last one.
  void add(AddedToken token);
  void build_matchers();
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* find_by_id(int32_t id) const;
  const AddedToken* find_by_content(std::string_view content) const;

  // Cuts the added tokens of one kind (normalized or not) out of the text pieces of `list`.
  void split(PieceList& list, std::vector<Piece>& spare, bool normalized_tokens) const;

 private:
  void split_piece(const std::string& text, const Piece& piece, const LiteralSet& set, std::vector<Piece>& out) const;
  std::vector<AddedToken> tokens_;
  std::vector<int32_t> index_by_id_;  // id -> index into tokens_, -1 if none
  std::unordered_map<std::string, int32_t> index_by_content_;
  LiteralSet raw_set_, normalized_set_;  // values: index into tokens_
};

}  // namespace dsv2
