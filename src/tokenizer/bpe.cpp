#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace dsv2 {
namespace {

uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

// Heap order: lowest rank on top, then leftmost position.
bool lower_priority(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

void check_unset(const nlohmann::json& model, const char* key, const std::string& where) {
  auto it = model.find(key);
  check(it == model.end() || it->is_null() || (it->is_string() && it->get<std::string>().empty()),
        where + ": " + key + " is not supported (byte-level BPE uses none)");
}

}  // namespace

BpeModel::BpeModel(const nlohmann::json& model, const std::string& where, bool byte_level_words)
    : byte_level_words_(byte_level_words) {
  check(json_type_of(model, where) == "BPE", where + ": expected a BPE model");
  auto dropout = model.find("dropout");
  check(dropout == model.end() || dropout->is_null() || (dropout->is_number() && dropout->get<double>() == 0.0),
        where + ": BPE dropout is not supported (it makes encoding random)");
  check_unset(model, "continuing_subword_prefix", where);
  check_unset(model, "end_of_word_suffix", where);
  ignore_merges_ = json_bool(model, "ignore_merges", where, false);
  byte_fallback_ = json_bool(model, "byte_fallback", where, false);
  fuse_unk_ = json_bool(model, "fuse_unk", where, false);

  auto vocab = model.find("vocab");
  check(vocab != model.end() && vocab->is_object(), where + ": field 'vocab' must be an object of token -> id");
  vocab_.reserve(vocab->size());
  for (const auto& [token, id_json] : vocab->items()) {
    check(id_json.is_number_integer() && id_json.get<int64_t>() >= 0 && id_json.get<int64_t>() < (int64_t(1) << 30),
          where + ": vocab['" + token + "'] must be an id in [0, 2^30)");
    const auto id = id_json.get<int32_t>();
    vocab_[token] = id;
    if (size_t(id) >= tokens_by_id_.size()) {
      tokens_by_id_.resize(size_t(id) + 1);
      has_id_.resize(size_t(id) + 1, false);
    }
    tokens_by_id_[size_t(id)] = token;
    has_id_[size_t(id)] = true;
  }

  if (byte_level_words_) {
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
    word_vocab_.reserve(vocab_.size());
    std::string bytes;
    for (const auto& [token, id] : vocab_) {
      bytes.clear();
      if (alphabet.decode(token, bytes)) word_vocab_[bytes] = id;
    }
    for (int b = 0; b < 256; ++b) {
      auto it = word_vocab_.find(std::string(1, char(b)));
      byte_ids_[size_t(b)] = it == word_vocab_.end() ? -1 : it->second;
    }
  }

  auto unk = model.find("unk_token");
  if (unk != model.end() && !unk->is_null()) {
    check(unk->is_string(), where + ": unk_token must be a string or null");
    auto it = vocab_.find(unk->get<std::string>());
    check(it != vocab_.end(), where + ": unk_token '" + unk->get<std::string>() + "' is not in the vocabulary");
    unk_id_ = it->second;
  }

  const auto& merges = json_array(model, "merges", where);
  merges_.reserve(merges.size());
  uint32_t rank = 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& m = merges[i];
    const std::string here = where + ": merges[" + std::to_string(i) + "]";
    std::string left, right;
    if (m.is_string()) {
      const std::string line = m.get<std::string>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t space = line.find(' ');
      check(space != std::string::npos && line.find(' ', space + 1) == std::string::npos,
            here + " '" + line + "' is not two tokens separated by one space");
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else {
      check(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
            here + " must be \"a b\" or [\"a\", \"b\"]");
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    }
    auto l = vocab_.find(left), r = vocab_.find(right), merged = vocab_.find(left + right);
    check(l != vocab_.end(), here + ": token '" + left + "' is not in the vocabulary");
    check(r != vocab_.end(), here + ": token '" + right + "' is not in the vocabulary");
    check(merged != vocab_.end(), here + ": merged token '" + left + right + "' is not in the vocabulary");
    merges_.put(pair_key(l->second, r->second), {rank++, merged->second});
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_limit() || !has_id_[size_t(id)]) return nullptr;
  return &tokens_by_id_[size_t(id)];
}

void BpeModel::add_unknown(std::string_view symbol_text, BpeScratch& scratch, bool& pending_unknown) const {
  auto push = [&](int32_t id) { scratch.symbols.push_back({id, -1, -1, true}); };
  if (byte_fallback_) {  // <0xXX> tokens, only if every byte has one
    char name[8];
    int32_t ids[4];
    bool all = true;
    for (size_t i = 0; i < symbol_text.size() && all; ++i) {
      std::snprintf(name, sizeof name, "<0x%02X>", static_cast<unsigned char>(symbol_text[i]));
      auto it = vocab_.find(std::string_view(name));
      all = it != vocab_.end();
      if (all) ids[i] = it->second;
    }
    if (all) {
      for (size_t i = 0; i < symbol_text.size(); ++i) push(ids[i]);
      return;
    }
  }
  if (unk_id_ < 0) return;  // tokenizers drops characters it cannot represent
  // tokenizers adds an unknown symbol lazily (before the next known one, or at the end); with
  // fuse_unk a run of unknown characters shares one.
  if (pending_unknown && !fuse_unk_) push(unk_id_);
  pending_unknown = true;
}

void BpeModel::add_symbols(std::string_view word, BpeScratch& scratch) const {
  scratch.symbols.clear();
  bool pending_unknown = false;
  auto push_known = [&](int32_t id) {
    if (pending_unknown) scratch.symbols.push_back({unk_id_, -1, -1, true});
    pending_unknown = false;
    scratch.symbols.push_back({id, -1, -1, true});
  };
  if (byte_level_words_) {
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
    for (unsigned char b : word) {
      if (byte_ids_[b] >= 0) {
        push_known(byte_ids_[b]);
      } else {
        add_unknown(alphabet.character(b), scratch, pending_unknown);
      }
    }
  } else {
    size_t at = 0;
    while (at < word.size()) {
      const size_t length = size_t(utf8_length(static_cast<unsigned char>(word[at])));
      const std::string_view character = word.substr(at, length);
      auto it = word_vocab().find(character);
      if (it != word_vocab().end()) {
        push_known(it->second);
      } else {
        add_unknown(character, scratch, pending_unknown);
      }
      at += length;
    }
  }
  if (pending_unknown) scratch.symbols.push_back({unk_id_, -1, -1, true});
  const auto n = int32_t(scratch.symbols.size());
  for (int32_t i = 0; i < n; ++i) {
    scratch.symbols[size_t(i)].prev = i - 1;
    scratch.symbols[size_t(i)].next = i + 1 < n ? i + 1 : -1;
  }
}

void BpeModel::merge_all(BpeScratch& scratch) const {
  auto& symbols = scratch.symbols;
  auto& heap = scratch.heap;
  heap.clear();
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const auto* m = merges_.find(pair_key(symbols[i].id, symbols[i + 1].id))) {
      heap.push_back({m->first, int32_t(i), m->second});
    }
  }
  std::make_heap(heap.begin(), heap.end(), lower_priority);
  auto push = [&](int32_t pos, int32_t left, int32_t right) {
    if (const auto* m = merges_.find(pair_key(left, right))) {
      heap.push_back({m->first, pos, m->second});
      std::push_heap(heap.begin(), heap.end(), lower_priority);
    }
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), lower_priority);
    const BpeScratch::Candidate top = heap.back();
    heap.pop_back();
    BpeScratch::Symbol& current = symbols[size_t(top.pos)];
    if (!current.alive || current.next < 0) continue;
    const int32_t right_pos = current.next;
    const BpeScratch::Symbol right = symbols[size_t(right_pos)];
    // Still the pair this candidate was made for? (tokenizers compares the merged id.)
    const auto* m = merges_.find(pair_key(current.id, right.id));
    if (!m || m->second != top.new_id) continue;
    current.id = top.new_id;
    current.next = right.next;
    symbols[size_t(right_pos)].alive = false;
    if (right.next >= 0) symbols[size_t(right.next)].prev = top.pos;
    if (current.prev >= 0) push(current.prev, symbols[size_t(current.prev)].id, current.id);
    if (current.next >= 0) push(top.pos, current.id, symbols[size_t(current.next)].id);
  }
}

void BpeModel::tokenize(std::string_view word, BpeScratch& scratch, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = word_vocab().find(word);
    if (it != word_vocab().end()) {
      ids.push_back(it->second);
      return;
    }
  }
  add_symbols(word, scratch);
  merge_all(scratch);
  for (int32_t i = scratch.symbols.empty() ? -1 : 0; i >= 0; i = scratch.symbols[size_t(i)].next) {
    ids.push_back(scratch.symbols[size_t(i)].id);
  }
}

}  // namespace dsv2
