// Regular expressions of tokenizer.json files, run by PCRE2 (JIT, UTF + UCP mode).
// Hugging Face tokenizers compiles Split / Replace / ByteLevel patterns with Oniguruma and its
// own fixed patterns (Whitespace, added-token word checks) with Rust's regex crate; the
// shorthand classes of those engines differ from PCRE2's, so patterns are first rewritten:
//   \s \S  -> \p{White_Space} (PCRE2's \s also matches U+180E)
//   \w \W  -> Oniguruma: [\p{L}\p{M}\p{N}\p{Pc}];  Rust: [\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]
//   \h \H  -> Oniguruma's hexadecimal digit (PCRE2's \h is horizontal space)
//   \b \B  -> word boundaries over that \w
// and Oniguruma's ^ and $ are line anchors (PCRE2_MULTILINE).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

struct pcre2_real_code_8;
struct pcre2_real_match_data_8;
struct pcre2_real_match_context_8;
struct pcre2_real_jit_stack_8;

namespace dsv2 {

enum class RegexDialect { Oniguruma, RustRegex };

// Per-thread matching state (PCRE2 match data and JIT stack); one per encoding thread.
class RegexScratch {
 public:
  RegexScratch();
  ~RegexScratch();
  RegexScratch(const RegexScratch&) = delete;
  RegexScratch& operator=(const RegexScratch&) = delete;

 private:
  friend class Regex;
  pcre2_real_match_data_8* match_data_ = nullptr;
  pcre2_real_match_context_8* match_context_ = nullptr;
  pcre2_real_jit_stack_8* jit_stack_ = nullptr;
};

class Regex {
 public:
  // Compiles `pattern`; throws Error naming `what`, the pattern and PCRE2's message.
  Regex(std::string_view pattern, RegexDialect dialect, const std::string& what);
  ~Regex();
  Regex(Regex&& other) noexcept;
  Regex& operator=(Regex&&) = delete;
  Regex(const Regex&) = delete;

  // A pattern matching `literal` exactly.
  static std::string escape(std::string_view literal);
  // The pattern PCRE2 compiles for `pattern` (the rewrite described above).
  static std::string translate(std::string_view pattern, RegexDialect dialect, const std::string& what);

  // Calls emit(begin, end) for each match in `subject` (valid UTF-8) from left to right, the
  // way Oniguruma's find_iter does: each search starts where the last match ended, and an
  // empty match at the end of the previous match is skipped by one character.
  template <class Emit>
  void for_each_match(std::string_view subject, RegexScratch& scratch, Emit&& emit) const {
    size_t search_from = 0, begin = 0, end = 0;
    size_t last_match_end = std::string_view::npos;
    while (search_from <= subject.size() && find(subject, search_from, scratch, &begin, &end)) {
      if (begin == end && end == last_match_end) {
        search_from += search_from < subject.size() ? char_length_at(subject, search_from) : 1;
        continue;
      }
      search_from = last_match_end = end;
      emit(begin, end);
    }
  }

  // First match in subject at or after `start`; false if none.
  bool find(std::string_view subject, size_t start, RegexScratch& scratch, size_t* begin, size_t* end) const;

 private:
  static size_t char_length_at(std::string_view s, size_t at);
  pcre2_real_code_8* code_ = nullptr;
  bool jit_ = false;
  std::string what_;
};

}  // namespace dsv2
