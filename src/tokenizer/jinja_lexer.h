// The Jinja lexer: splits a template into text and the tokens of its tags, applying whitespace control
// exactly as jinja2 does with transformers' settings (trim_blocks=True, lstrip_blocks=True,
// keep_trailing_newline=False): `{%-`/`-%}` strip all whitespace on that side, `{%+`/`+%}` turn the
// block rules off for that tag, "\r\n" and "\r" become "\n", and one final newline is dropped.
// Comments disappear; `{% raw %}...{% endraw %}` becomes text.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace dsv2::jinja {

enum class TokenKind {
  Text,           // template data, after whitespace control
  VariableBegin,  // {{
  VariableEnd,    // }}
  BlockBegin,     // {%
  BlockEnd,       // %}
  Name,
  String,         // text: the value with escapes resolved
  Integer,        // text: the digits, underscores removed
  Float,          // text: the literal, underscores removed
  Operator,       // text: + - * / // % ** ~ == != < <= > >= = . , : | ( ) [ ] { } ;
  End,            // end of the template
};

struct Token {
  TokenKind kind;
  std::string text;
  int line;  // 1-based line of the token's first character in the template
};

// Throws Error("template line N: ...") on an unclosed tag, comment or string, or a stray character.
std::vector<Token> tokenize_template(std::string_view source);

}  // namespace dsv2::jinja
