// The BPE model of tokenizer.json ("model": {"type": "BPE"}): vocabulary, ranked merges (in
// the "a b" and the ["a", "b"] forms), ignore_merges, unk_token / fuse_unk, byte_fallback.
// Merging follows tokenizers' Word::merge_all exactly: a heap of (rank, position) pairs,
// lowest rank first, leftmost on ties.
//
// With a byte-level pre-tokenizer the words reaching the model are raw bytes: the vocabulary
// is re-keyed from byte characters to the bytes they stand for, and every byte is a symbol.
// Otherwise words are UTF-8 text and every character is a symbol.
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/flat_hash.h"

namespace dsv2 {

// Reusable working memory of one encoding thread.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours in the word, -1 at the ends
    bool alive;
  };
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

class BpeModel {
 public:
  BpeModel(const nlohmann::json& model, const std::string& where, bool byte_level_words);

  // Appends the ids of `word` to `ids`.
  void tokenize(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& ids) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The vocabulary string of `id` (as written in tokenizer.json); nullptr if none.
  const std::string* id_to_token(int32_t id) const;
  // One past the largest id of the vocabulary.
  int32_t id_limit() const { return int32_t(tokens_by_id_.size()); }
  int64_t vocabulary_size() const { return int64_t(vocab_.size()); }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  const StringMap& word_vocab() const { return byte_level_words_ ? word_vocab_ : vocab_; }
  void add_symbols(std::string_view word, BpeScratch& scratch) const;
  void add_unknown(std::string_view symbol_text, BpeScratch& scratch, bool& pending_unknown) const;
  void merge_all(BpeScratch& scratch) const;

  StringMap vocab_;                          // token (tokenizer.json spelling) -> id
  std::vector<std::string> tokens_by_id_;   // id -> token; empty where no token has the id
  std::vector<bool> has_id_;
  StringMap word_vocab_;                     // the vocabulary in the words' alphabet (bytes or text)
  std::array<int32_t, 256> byte_ids_{};      // byte-level: id of each single byte, -1 if none
  FlatHashMap merges_;                       // (left id, right id) -> (rank, merged id)
  bool byte_level_words_;
  bool ignore_merges_ = false, byte_fallback_ = false, fuse_unk_ = false;
  int32_t unk_id_ = -1;
};

}  // namespace dsv2
