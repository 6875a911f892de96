// The Jinja parser: tokens to a syntax tree, with jinja2's grammar and operator precedence
// (filters and `is` tests bind tighter than arithmetic; `**` is left-associative; comparisons chain).
// Statements: if/elif/else, for (with `if` filter and `else`), set (plain, namespace attribute, tuple
// unpacking, block), macro, call, filter, with, break, continue, generation.
#pragma once
#include <string_view>

#include "tokenizer/jinja_ast.h"

namespace dsv2::jinja {

// Deepest nesting of statements or expressions the parser accepts (a guard for the C++ stack).
inline constexpr int kMaxNesting = 200;

// Throws Error("template line N: syntax error: ...") on a syntax error, an unknown filter or test, or
// nesting deeper than kMaxNesting.
Body parse_template(std::string_view source);

}  // namespace dsv2::jinja
