#include "tokenizer/added_vocabulary.h"

#include <unicode/uchar.h>

#include "tokenizer/utf8.h"

namespace dsv2 {
namespace {

// Rust regex's \w, which tokenizers uses for single_word: Alphabetic, marks, decimal
// digits, connector punctuation, join controls.
bool is_word_character(uint32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  const auto mask = U_GET_GC_MASK(UChar32(c));
  return u_hasBinaryProperty(UChar32(c), UCHAR_ALPHABETIC) || (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) ||
         u_hasBinaryProperty(UChar32(c), UCHAR_JOIN_CONTROL);
}

bool is_white_space(uint32_t c) { return u_isUWhiteSpace(UChar32(c)); }

size_t previous_char_start(std::string_view s, size_t end) {
  size_t at = end - 1;
  while (at > 0 && (static_cast<unsigned char>(s[at]) & 0xC0) == 0x80) --at;
  return at;
}

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  size_t at = previous_char_start(s, s.size());
  return is_word_character(next_code_point(s, at));
}

bool starts_with_word(std::string_view s) {
  size_t at = 0;
  return !s.empty() && is_word_character(next_code_point(s, at));
}

// Start of the run of white space that ends `s`.
size_t trailing_space_start(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = previous_char_start(s, end), at = start;
    if (!is_white_space(next_code_point(s, at))) break;
    end = start;
  }
  return end;
}

// Length of the run of white space that starts `s`.
size_t leading_space_length(std::string_view s) {
  size_t at = 0;
  while (at < s.size()) {
    size_t next = at;
    if (!is_white_space(next_code_point(s, next))) break;
    at = next;
  }
  return at;
}

}  // namespace

int32_t LiteralSet::child(int32_t node, uint8_t byte) const {
  for (const auto& [b, index] : nodes_[size_t(node)].children) {
    if (b == byte) return index;
  }
  return -1;
}

void LiteralSet::add(std::string_view literal, int32_t value) {
  if (literal.empty()) return;
  int32_t node = 0;
  for (char c : literal) {
    const auto byte = static_cast<uint8_t>(c);
    int32_t next = child(node, byte);
    if (next < 0) {
      next = int32_t(nodes_.size());
      nodes_[size_t(node)].children.emplace_back(byte, next);
      nodes_.emplace_back();
    }
    node = next;
  }
  nodes_[size_t(node)].value = value;
  first_byte_[static_cast<uint8_t>(literal[0])] = true;
}

bool LiteralSet::find(std::string_view text, size_t from, size_t* begin, size_t* end, int32_t* value) const {
  for (size_t start = from; start < text.size(); ++start) {
    if (!first_byte_[static_cast<uint8_t>(text[start])]) continue;
    int32_t node = 0, found = -1;
    size_t found_end = 0;
    for (size_t at = start; at < text.size(); ++at) {
      node = child(node, static_cast<uint8_t>(text[at]));
      if (node < 0) break;
      if (nodes_[size_t(node)].value >= 0) found = nodes_[size_t(node)].value, found_end = at + 1;
    }
    if (found >= 0) {
      *begin = start, *end = found_end, *value = found;
      return true;
    }
  }
  return false;
}

void AddedVocabulary::add(AddedToken token) {
  if (token.id >= int32_t(index_by_id_.size())) index_by_id_.resize(size_t(token.id) + 1, -1);
  int32_t index = index_by_id_[size_t(token.id)];
  if (index < 0) {
    index = int32_t(tokens_.size());
    tokens_.push_back(std::move(token));
    index_by_id_[size_t(tokens_.back().id)] = index;
  } else {
    tokens_[size_t(index)] = std::move(token);
  }
  index_by_content_[tokens_[size_t(index)].content] = index;
}

void AddedVocabulary::build_matchers() {
  raw_set_ = LiteralSet();
  normalized_set_ = LiteralSet();
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    if (t.normalized) {
      normalized_set_.add(t.normalized_content, int32_t(i));
    } else {
      raw_set_.add(t.content, int32_t(i));
    }
  }
}

const AddedToken* AddedVocabulary::find_by_id(int32_t id) const {
  if (id < 0 || id >= int32_t(index_by_id_.size()) || index_by_id_[size_t(id)] < 0) return nullptr;
  return &tokens_[size_t(index_by_id_[size_t(id)])];
}

const AddedToken* AddedVocabulary::find_by_content(std::string_view content) const {
  auto it = index_by_content_.find(std::string(content));
  return it == index_by_content_.end() ? nullptr : &tokens_[size_t(it->second)];
}

void AddedVocabulary::split(PieceList& list, std::vector<Piece>& spare, bool normalized_tokens) const {
  const LiteralSet& set = normalized_tokens ? normalized_set_ : raw_set_;
  if (set.empty()) return;
  spare.clear();
  for (const Piece& piece : list.pieces) {
    if (piece.is_text()) {
      split_piece(list.text, piece, set, spare);
    } else {
      spare.push_back(piece);
    }
  }
  list.pieces.swap(spare);
}

void AddedVocabulary::split_piece(const std::string& text, const Piece& piece, const LiteralSet& set,
                                  std::vector<Piece>& out) const {
  const std::string_view sentence(text.data() + piece.begin, piece.end - piece.begin);
  size_t start_offset = 0, search_from = 0, begin = 0, end = 0;
  int32_t index = -1;
  auto emit_text = [&](size_t b, size_t e) {
    if (b < e) out.push_back(Piece{piece.begin + uint32_t(b), piece.begin + uint32_t(e), -1});
  };
  while (set.find(sentence, search_from, &begin, &end, &index)) {
    search_from = end;  // matches never overlap in the original text
    const AddedToken& token = tokens_[size_t(index)];
    if (token.single_word) {
      const bool space_before = begin == 0 || !ends_with_word(sentence.substr(0, begin));
      const bool space_after = end == sentence.size() || !starts_with_word(sentence.substr(end));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) begin = std::max(trailing_space_start(sentence.substr(0, begin)), start_offset);
    if (token.rstrip) end += leading_space_length(sentence.substr(end));
    emit_text(start_offset, begin);
    out.push_back(Piece{0, 0, token.id});
    start_offset = end;
  }
  emit_text(start_offset, sentence.size());
}

}  // namespace dsv2
