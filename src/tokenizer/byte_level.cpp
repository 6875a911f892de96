#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace dsv2 {

ByteLevelAlphabet::ByteLevelAlphabet() {
  byte_of_code_point_.fill(-1);
  std::array<uint32_t, 256> code_points{};
  uint32_t next_extra = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    code_points[b] = printable ? uint32_t(b) : next_extra++;
  }
  for (int b = 0; b < 256; ++b) {
    std::string utf8;
    append_code_point(utf8, code_points[b]);
    lengths_[b] = uint8_t(utf8.size());
    for (size_t i = 0; i < utf8.size(); ++i) characters_[b][i] = utf8[i];
    byte_of_code_point_[code_points[b]] = int16_t(b);
  }
}

const ByteLevelAlphabet& ByteLevelAlphabet::get() {
  static const ByteLevelAlphabet alphabet;
  return alphabet;
}

void ByteLevelAlphabet::append_encoded(std::string& out, std::string_view bytes) const {
  for (unsigned char b : bytes) out.append(characters_[b].data(), lengths_[b]);
}

bool ByteLevelAlphabet::decode(std::string_view characters, std::string& out) const {
  size_t at = 0;
  while (at < characters.size()) {
    uint32_t cp = next_code_point(characters, at);
    if (cp >= byte_of_code_point_.size() || byte_of_code_point_[cp] < 0) return false;
    out.push_back(char(byte_of_code_point_[cp]));
  }
  return true;
}

}  // namespace dsv2
