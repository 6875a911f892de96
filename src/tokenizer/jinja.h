// dsv2's Jinja engine: renders Hugging Face chat templates as transformers' apply_chat_template does,
// which is jinja2 in an ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the
// loopcontrols extension (break/continue), transformers' {% generation %} tag, json.dumps as `tojson`,
// and the globals raise_exception(message) and strftime_now(format).
//
// Undefined variables behave as jinja2's default Undefined: they print as "", are false, iterate as
// empty, and fail (a clear error) when an attribute, item, call or arithmetic is applied to them.
// Every error is a dsv2::Error whose message starts with "template line N:"; nesting and recursion
// are bounded so no template or input can overflow the stack.
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_value.h"

namespace dsv2::jinja {

// Deepest nesting of statements, expressions and macro calls while rendering.
inline constexpr int kMaxRenderDepth = 1000;

class Template {
 public:
  // Parses `source` (UTF-8); throws Error on invalid UTF-8 or a syntax error.
  explicit Template(std::string_view source);

  // Renders with `variables` (messages, add_generation_prompt, bos_token, ...) on top of the globals.
  std::string render(const ValueDict& variables) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace dsv2::jinja
