// GPT-2's byte-level alphabet: every byte value gets a printable code point (bytes that are
// printable Latin-1 map to themselves, the other 68 to U+0100..U+0143), so any byte string
// is a string of "byte characters". Byte-level BPE vocabularies are written in this alphabet.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv2 {

class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& get();

  // The UTF-8 encoding of each byte's character (1 or 2 bytes).
  std::string_view character(uint8_t byte) const { return {characters_[byte].data(), lengths_[byte]}; }

  // Appends the byte characters of `bytes` to `out`.
  void append_encoded(std::string& out, std::string_view bytes) const;
  // Maps a string of byte characters back to bytes; false (out unspecified) if some
  // character is not a byte character.
  bool decode(std::string_view characters, std::string& out) const;

 private:
  ByteLevelAlphabet();
  std::array<std::array<char, 2>, 256> characters_{};
  std::array<uint8_t, 256> lengths_{};
  std::array<int16_t, 324> byte_of_code_point_{};  // -1 where the code point is no byte character
};

}  // namespace dsv2
