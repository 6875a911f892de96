// UTF-8 and code-point helpers for the Jinja interpreter: Python strings are sequences of code points,
// ours are UTF-8 bytes, so length, indexing, slicing, case mapping and whitespace work on decoded
// code points. Invalid UTF-8 decodes to U+FFFD (inputs are validated at the boundary).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace dsv2::jinja {

std::u32string decode_utf8(std::string_view text);
// The code point starting at text[pos] (pos < text.size()); `length` gets its size in bytes.
char32_t decode_utf8_at(std::string_view text, size_t pos, size_t& length);
std::string encode_utf8(std::u32string_view code_points);
void append_utf8(std::string& out, char32_t code_point);
size_t count_code_points(std::string_view text);

// Offset of the first byte that is not part of a valid UTF-8 sequence, or npos when `text` is valid.
size_t find_invalid_utf8(std::string_view text);

// Python's str.isspace(): ASCII whitespace, U+001C..U+001F, U+0085, U+00A0 and the Unicode spaces.
bool is_python_space(char32_t c);
// Python's str.splitlines() separators (\n \r \v \f \x1c \x1d \x1e \x85 U+2028 U+2029).
bool is_line_boundary(char32_t c);
// Python's str.isprintable() for one code point, approximated: controls, format characters,
// non-space separators, surrogates and private use are not printable.
bool is_printable(char32_t c);

// Simple (one-to-one) Unicode case mapping, as the C library's UTF-8 locale knows it.
char32_t to_upper(char32_t c);
char32_t to_lower(char32_t c);
bool is_cased(char32_t c);      // has an upper- or lowercase form (Python's "cased")
bool is_upper(char32_t c);
bool is_lower(char32_t c);
bool is_alpha(char32_t c);
bool is_decimal_digit(char32_t c);

std::string to_upper(std::string_view text);
std::string to_lower(std::string_view text);

}  // namespace dsv2::jinja
