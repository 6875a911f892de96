// UTF-8 helpers for the tokenizer: validation, the lossy repair that Python's
// bytes.decode('utf-8', errors='replace') and Rust's String::from_utf8_lossy both perform
// (each maximal ill-formed subpart becomes one U+FFFD), and its incremental form.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv2 {

inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// True if `bytes` is well-formed UTF-8 (no surrogates, no overlongs, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view bytes);

// Appends `bytes` to `out` with every maximal ill-formed subpart replaced by U+FFFD
// (Unicode §3.9 "substitution of maximal subparts").
void append_utf8_lossy(std::string& out, std::string_view bytes);
std::string utf8_lossy(std::string_view bytes);

// Number of bytes of the code point starting at p[0]; `p` must point into valid UTF-8.
inline int utf8_length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// Decodes the code point at text[at] (valid UTF-8) and advances `at` past it.
uint32_t next_code_point(std::string_view text, size_t& at);
void append_code_point(std::string& out, uint32_t code_point);

// The lossy repair applied to a byte stream that arrives in pieces: push() returns the text
// that is final so far, holding back only a trailing sequence that later bytes could still
// complete; finish() flushes it. The concatenated output equals utf8_lossy(all bytes).
class Utf8StreamRepair {
 public:
  std::string push(std::string_view bytes);
  std::string finish();

 private:
  std::string pending_;  // bytes not yet emitted: at most an incomplete sequence (< 4 bytes)
};

}  // namespace dsv2
