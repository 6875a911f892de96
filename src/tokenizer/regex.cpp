#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace dsv2 {
namespace {

constexpr std::string_view kSpace = "\\p{White_Space}";
constexpr std::string_view kNonSpace = "\\P{White_Space}";
constexpr std::string_view kOnigWord = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
constexpr std::string_view kRustWord = "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}";
constexpr std::string_view kHexDigit = "0-9A-Fa-f";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

// Copies the escape starting at pattern[at] ('\\'), with its braced argument for \x{..},
// \o{..}, \p{..}, \P{..}, \N{..}; returns the index after it.
size_t copy_escape(std::string_view pattern, size_t at, std::string& out) {
  const char e = pattern[at + 1];
  size_t end = at + 1 + size_t(utf8_length(static_cast<unsigned char>(e)));
  if (std::string_view("xopPN").find(e) != std::string_view::npos && at + 2 < pattern.size() && pattern[at + 2] == '{') {
    size_t close = pattern.find('}', at + 3);
    end = close == std::string_view::npos ? pattern.size() : close + 1;
  }
  end = std::min(end, pattern.size());
  out.append(pattern.substr(at, end - at));
  return end;
}

// "[inner]" or "[^inner]".
std::string bracketed(std::string_view inner, bool negated) {
  std::string out(negated ? "[^" : "[");
  out.append(inner);
  out.push_back(']');
  return out;
}

}  // namespace

std::string Regex::translate(std::string_view pattern, RegexDialect dialect, const std::string& what) {
  const std::string_view word = dialect == RegexDialect::Oniguruma ? kOnigWord : kRustWord;
  const std::string word_class = bracketed(word, false);
  const std::string non_word_class = bracketed(word, true);
  std::string out;
  out.reserve(pattern.size() + 16);
  bool in_class = false;
  size_t class_start = 0;  // index just after '[' or '[^' of the open class
  size_t at = 0;
  while (at < pattern.size()) {
    const char c = pattern[at];
    if (c == '\\' && at + 1 < pattern.size()) {
      const char e = pattern[at + 1];
      const bool onig = dialect == RegexDialect::Oniguruma;
      if (e == 'Q') {  // \Q...\E: literal text
        size_t close = pattern.find("\\E", at + 2);
        size_t end = close == std::string_view::npos ? pattern.size() : close + 2;
        out.append(pattern.substr(at, end - at));
        at = end;
        continue;
      }
      if (e == 's') {
        out.append(kSpace);
      } else if (e == 'S') {
        out.append(kNonSpace);
      } else if (e == 'w') {
        out.append(in_class ? std::string(word) : word_class);
      } else if (e == 'W' && !in_class) {
        out.append(non_word_class);
      } else if (e == 'W') {
        throw Error(what + ": \\W inside a character class is not supported (pattern " + std::string(pattern) + ")");
      } else if (e == 'h' && onig) {
        out.append(in_class ? std::string(kHexDigit) : bracketed(kHexDigit, false));
      } else if (e == 'H' && onig && !in_class) {
        out.append(bracketed(kHexDigit, true));
      } else if (e == 'H' && onig) {
        throw Error(what + ": \\H inside a character class is not supported (pattern " + std::string(pattern) + ")");
      } else if (e == 'b' && !in_class) {
        out.append("(?:(?<=" + word_class + ")(?!" + word_class + ")|(?<!" + word_class + ")(?=" + word_class + "))");
      } else if (e == 'B' && !in_class) {
        out.append("(?:(?<=" + word_class + ")(?=" + word_class + ")|(?<!" + word_class + ")(?!" + word_class + "))");
      } else {
        at = copy_escape(pattern, at, out);
        continue;
      }
      at += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      ++at;
      if (at < pattern.size() && pattern[at] == '^') out.push_back(pattern[at++]);
      class_start = at;
      continue;
    }
    if (in_class && c == '[' && at + 1 < pattern.size() && pattern[at + 1] == ':') {  // [:alpha:]
      size_t close = pattern.find(":]", at + 2);
      size_t end = close == std::string_view::npos ? at + 1 : close + 2;
      out.append(pattern.substr(at, end - at));
      at = end;
      continue;
    }
    if (in_class && c == ']' && at != class_start) in_class = false;
    out.push_back(c);
    ++at;
  }
  return out;
}

std::string Regex::escape(std::string_view literal) {
  // A backslash before any ASCII character other than a letter or digit makes it literal.
  std::string out;
  for (char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u)) out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

Regex::Regex(std::string_view pattern, RegexDialect dialect, const std::string& what) : what_(what) {
  const std::string translated = translate(pattern, dialect, what);
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
  options |= dialect == RegexDialect::Oniguruma ? PCRE2_MULTILINE : PCRE2_DOLLAR_ENDONLY;
  pcre2_compile_context* context = pcre2_compile_context_create(nullptr);
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(), options, &error,
                        &offset, context);
  pcre2_compile_context_free(context);
  check(code_ != nullptr, what + ": invalid regex '" + std::string(pattern) + "': " + pcre2_message(error) +
                              " (at offset " + std::to_string(offset) + " of '" + translated + "')");
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
  if (code_) pcre2_code_free(code_);
}

Regex::Regex(Regex&& other) noexcept : code_(other.code_), jit_(other.jit_), what_(std::move(other.what_)) {
  other.code_ = nullptr;
}

size_t Regex::char_length_at(std::string_view s, size_t at) {
  return size_t(utf8_length(static_cast<unsigned char>(s[at])));
}

bool Regex::find(std::string_view subject, size_t start, RegexScratch& scratch, size_t* begin, size_t* end) const {
  const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc = jit_ ? pcre2_jit_match(code_, text, subject.size(), start, 0, scratch.match_data_, scratch.match_context_)
                : pcre2_match(code_, text, subject.size(), start, PCRE2_NO_UTF_CHECK, scratch.match_data_,
                              scratch.match_context_);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {  // deep backtracking: the interpreter keeps its frames on the heap
    rc = pcre2_match(code_, text, subject.size(), start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, scratch.match_data_,
                     scratch.match_context_);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  check(rc >= 0, what_ + ": regex match failed: " + pcre2_message(rc));
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.match_data_);
  *begin = ovector[0];
  *end = ovector[1];
  return true;
}

RegexScratch::RegexScratch() {
  match_data_ = pcre2_match_data_create(1, nullptr);
  match_context_ = pcre2_match_context_create(nullptr);
  jit_stack_ = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
  check(match_data_ && match_context_ && jit_stack_, "out of memory creating regex match state");
  pcre2_jit_stack_assign(match_context_, nullptr, jit_stack_);
}

RegexScratch::~RegexScratch() {
  pcre2_jit_stack_free(jit_stack_);
  pcre2_match_context_free(match_context_);
  pcre2_match_data_free(match_data_);
}

}  // namespace dsv2
