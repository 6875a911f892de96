#include "tokenizer/jinja_lexer.h"

#include <cctype>

#include "tokenizer/jinja_unicode.h"
#include "tokenizer/jinja_value.h"

namespace dsv2::jinja {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// "\r\n" and "\r" become "\n"; one trailing newline is dropped (keep_trailing_newline=False).
std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out += source[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string rstrip_python_space(const std::string& text) {
  std::u32string cps = decode_utf8(text);
  size_t end = cps.size();
  while (end > 0 && is_python_space(cps[end - 1])) --end;
  return end == cps.size() ? text : encode_utf8(std::u32string_view(cps).substr(0, end));
}

bool all_python_space(std::string_view text) {
  for (char32_t c : decode_utf8(text))
    if (!is_python_space(c)) return false;
  return true;
}

// Resolves the escapes of a string literal as Python's "unicode-escape" codec does (what jinja2 uses).
std::string unescape_string_literal(std::string_view body, int line) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 >= body.size()) {
      out += body[i];
      continue;
    }
    const char e = body[++i];
    auto hex_escape = [&](size_t digits) {
      if (i + digits >= body.size())
        throw_template_error(line, "truncated \\" + std::string(1, e) + " escape in string literal");
      char32_t c = 0;
      for (size_t k = 1; k <= digits; ++k) {
        const char h = body[i + k];
        if (!std::isxdigit(static_cast<unsigned char>(h)))
          throw_template_error(line, "truncated \\" + std::string(1, e) + " escape in string literal");
        c = c * 16 + char32_t(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
      }
      if (c > 0x10FFFF) throw_template_error(line, "invalid \\U escape in string literal (beyond U+10FFFF)");
      i += digits;
      append_utf8(out, c);
    };
    switch (e) {
      case '\n': break;  // line continuation
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x': hex_escape(2); break;
      case 'u': hex_escape(4); break;
      case 'U': hex_escape(8); break;
      case 'N': throw_template_error(line, "\\N{...} escapes are not supported in string literals");
      default:
        if (e >= '0' && e <= '7') {
          char32_t c = char32_t(e - '0');
          for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
            c = c * 8 + char32_t(body[++i] - '0');
          append_utf8(out, c);
        } else {
          out += '\\';
          out += e;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(normalize_newlines(source)) {}

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      const size_t open = find_tag_open(pos_);
      if (open == std::string::npos) {
        emit(TokenKind::Text, src_.substr(pos_), line_);
        advance_to(src_.size());
        break;
      }
      const char kind = src_[open + 1];
      size_t after = open + 2;
      const char sign = (after < src_.size() && (src_[after] == '-' || src_[after] == '+')) ? src_[after] : 0;
      if (sign) ++after;
      size_t raw_body = 0;
      const bool raw = kind == '%' && is_raw_begin(after, raw_body);
      const int text_line = line_;
      emit(TokenKind::Text, strip_before_tag(src_.substr(pos_, open - pos_), sign, kind != '{'), text_line);
      advance_to(open);
      const int tag_line = line_;
      advance_to(after);
      if (kind == '#') {
        lex_comment(tag_line);
      } else if (raw) {
        advance_to(raw_body);
        lex_raw(tag_line);
      } else {
        lex_tag(kind == '{', tag_line);
      }
    }
    tokens_.push_back({TokenKind::End, "", line_});
    return std::move(tokens_);
  }

 private:
  std::string src_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;  // the previous tag (or the template start) ended at a line start
  std::vector<Token> tokens_;

  // The end of the whitespace (Python's \s: Unicode whitespace) starting at `p`.
  size_t skip_space(size_t p) const {
    size_t length = 0;
    while (p < src_.size() && is_python_space(decode_utf8_at(src_, p, length))) p += length;
    return p;
  }

  void emit(TokenKind kind, std::string text, int line) {
    if (kind == TokenKind::Text && text.empty()) return;
    tokens_.push_back({kind, std::move(text), line});
  }

  void advance_to(size_t new_pos) {
    for (size_t i = pos_; i < new_pos; ++i) line_ += src_[i] == '\n';
    pos_ = new_pos;
  }

  size_t find_tag_open(size_t from) const {
    for (size_t p = src_.find('{', from); p != std::string::npos && p + 1 < src_.size(); p = src_.find('{', p + 1)) {
      const char c = src_[p + 1];
      if (c == '{' || c == '%' || c == '#') return p;
    }
    return std::string::npos;
  }

  // The data before a tag: `-` strips all whitespace; otherwise, before a block or comment tag,
  // lstrip_blocks removes spaces and tabs between the line start and the tag.
  std::string strip_before_tag(std::string text, char sign, bool block_like) const {
    if (sign == '-') return rstrip_python_space(text);
    if (sign == '+' || !block_like) return text;
    const size_t newline = text.rfind('\n');
    const size_t line_start = newline == std::string::npos ? 0 : newline + 1;
    if ((line_start > 0 || line_starting_) && line_start < text.size() &&
        all_python_space(std::string_view(text).substr(line_start)))
      text.resize(line_start);
    return text;
  }

  // After a tag's closing delimiter at `after`: `-` eats all whitespace, `+` nothing, and a block or
  // comment end eats one newline (trim_blocks).
  void finish_tag(size_t after, char sign, bool block_like) {
    size_t end = after;
    if (sign == '-') {
      end = skip_space(end);
    } else if (sign != '+' && block_like && end < src_.size() && src_[end] == '\n') {
      ++end;
    }
    line_starting_ = end > after && src_[end - 1] == '\n';
    advance_to(end);
  }

  void lex_comment(int tag_line) {
    const size_t close = src_.find("#}", pos_);
    if (close == std::string::npos) throw_template_error(tag_line, "missing end of comment tag '#}'");
    const char sign = (close > pos_ && (src_[close - 1] == '-' || src_[close - 1] == '+')) ? src_[close - 1] : 0;
    advance_to(close);
    finish_tag(close + 2, sign, true);
  }

  // `{% raw %}` (or `{%- raw -%}`) at `p` (after the opener); sets `body` to where the raw text starts.
  bool is_raw_begin(size_t p, size_t& body) const {
    p = skip_space(p);
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    p = skip_space(p);
    if (src_.compare(p, 3, "-%}") == 0) {
      p += 3;
      p = skip_space(p);
    } else if (src_.compare(p, 2, "%}") == 0) {
      p += 2;
    } else {
      return false;
    }
    body = p;
    return true;
  }

  void lex_raw(int tag_line) {
    for (size_t open = src_.find("{%", pos_); open != std::string::npos; open = src_.find("{%", open + 1)) {
      size_t p = open + 2;
      const char sign = (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ? src_[p] : 0;
      if (sign) ++p;
      p = skip_space(p);
      if (src_.compare(p, 6, "endraw") != 0) continue;
      p += 6;
      p = skip_space(p);
      char end_sign = 0;
      if (src_.compare(p, 3, "+%}") == 0 || src_.compare(p, 3, "-%}") == 0) end_sign = src_[p++];
      if (src_.compare(p, 2, "%}") != 0) continue;
      const int text_line = line_;
      emit(TokenKind::Text, strip_before_tag(src_.substr(pos_, open - pos_), sign, true), text_line);
      advance_to(p);
      finish_tag(p + 2, end_sign, true);
      return;
    }
    throw_template_error(tag_line, "missing end of raw block ('{% endraw %}')");
  }

  void lex_tag(bool variable, int tag_line) {
    emit(variable ? TokenKind::VariableBegin : TokenKind::BlockBegin, "", tag_line);
    std::string open_brackets;  // expected closers, innermost last
    while (true) {
      advance_to(skip_space(pos_));
      if (pos_ >= src_.size())
        throw_template_error(tag_line, std::string("unexpected end of template: '") + (variable ? "{{" : "{%") +
                                           "' opened here is never closed");
      if (open_brackets.empty()) {
        const std::string_view rest = std::string_view(src_).substr(pos_);
        const std::string_view close = variable ? "}}" : "%}";
        for (char sign : {'-', '+', '\0'}) {
          if (sign == '+' && variable) continue;
          const size_t skip = sign ? 1 : 0;
          if ((sign == 0 || (!rest.empty() && rest[0] == sign)) && rest.substr(skip).substr(0, 2) == close) {
            emit(variable ? TokenKind::VariableEnd : TokenKind::BlockEnd, "", line_);
            advance_to(pos_ + skip);
            finish_tag(pos_ + 2, sign, !variable);
            return;
          }
        }
      }
      lex_expression_token(open_brackets);
    }
  }

  void lex_expression_token(std::string& open_brackets) {
    const char c = src_[pos_];
    const int line = line_;
    if (is_name_start(c)) {
      size_t end = pos_;
      while (end < src_.size() && is_name_char(src_[end])) ++end;
      emit(TokenKind::Name, src_.substr(pos_, end - pos_), line);
      advance_to(end);
      return;
    }
    if (c == '\'' || c == '"') {
      size_t end = pos_ + 1;
      while (end < src_.size() && src_[end] != c) end += src_[end] == '\\' ? 2 : 1;
      if (end >= src_.size()) throw_template_error(line, "unterminated string literal");
      emit(TokenKind::String, unescape_string_literal(std::string_view(src_).substr(pos_ + 1, end - pos_ - 1), line),
           line);
      advance_to(end + 1);
      return;
    }
    if (is_digit(c)) {
      lex_number();
      return;
    }
    static const char* const kTwoCharOperators[] = {"//", "**", "==", "!=", ">=", "<="};
    for (const char* op : kTwoCharOperators) {
      if (src_.compare(pos_, 2, op) == 0) {
        emit(TokenKind::Operator, op, line);
        advance_to(pos_ + 2);
        return;
      }
    }
    if (std::string_view("+-*/%~<>=.,:|()[]{};").find(c) == std::string_view::npos) {
      size_t length = 0;
      std::string shown;
      append_utf8(shown, decode_utf8_at(src_, pos_, length));
      throw_template_error(line, "unexpected character '" + shown + "' in tag");
    }
    if (c == '(' || c == '[' || c == '{') {
      open_brackets += c == '(' ? ')' : c == '[' ? ']' : '}';
    } else if (c == ')' || c == ']' || c == '}') {
      if (open_brackets.empty() || open_brackets.back() != c)
        throw_template_error(line, std::string("unexpected '") + c + "'" +
                                       (open_brackets.empty() ? "" : ", expected '" + open_brackets.substr(open_brackets.size() - 1) + "'"));
      open_brackets.pop_back();
    }
    emit(TokenKind::Operator, std::string(1, c), line);
    advance_to(pos_ + 1);
  }

  // Digits with single underscores between them ("1_000"); returns the end, or `p` when none.
  size_t scan_digits(size_t p) const {
    size_t end = p;
    while (end < src_.size() && is_digit(src_[end])) {
      ++end;
      if (end + 1 < src_.size() && src_[end] == '_' && is_digit(src_[end + 1])) ++end;
    }
    return end;
  }

  void lex_number() {
    const int line = line_;
    size_t end = scan_digits(pos_);
    bool is_float = false;
    if (pos_ == 0 || src_[pos_ - 1] != '.') {  // jinja2: no float right after a '.' (x.0.1)
      if (end + 1 < src_.size() && src_[end] == '.' && is_digit(src_[end + 1])) {
        end = scan_digits(end + 1);
        is_float = true;
      }
      if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
        size_t p = end + 1;
        if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
        if (p < src_.size() && is_digit(src_[p])) {
          end = scan_digits(p);
          is_float = true;
        }
      }
    }
    std::string text;
    for (size_t i = pos_; i < end; ++i)
      if (src_[i] != '_') text += src_[i];
    emit(is_float ? TokenKind::Float : TokenKind::Integer, text, line);
    advance_to(end);
  }
};

}  // namespace

std::vector<Token> tokenize_template(std::string_view source) { return Lexer(source).run(); }

}  // namespace dsv2::jinja
