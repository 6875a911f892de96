#include "tokenizer/jinja_parser.h"

#include <cerrno>
#include <cstdlib>
#include <initializer_list>

#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_lexer.h"

namespace dsv2::jinja {

namespace {

ExprPtr make_expr(ExprKind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

StmtPtr make_stmt(StmtKind kind, int line) {
  auto s = std::make_unique<Stmt>();
  s->kind = kind;
  s->line = line;
  return s;
}

std::string describe(const Token& t) {
  switch (t.kind) {
    case TokenKind::Text: return "template text";
    case TokenKind::VariableBegin: return "'{{'";
    case TokenKind::VariableEnd: return "'}}'";
    case TokenKind::BlockBegin: return "'{%'";
    case TokenKind::BlockEnd: return "'%}'";
    case TokenKind::String: return "string literal";
    case TokenKind::End: return "end of template";
    default: return "'" + t.text + "'";
  }
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  Body parse_template() { return parse_body({}, nullptr, 0); }

 private:
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;  // enclosing for-loops (in the current macro), for break/continue

  // Counts nesting; guards the C++ stack against deeply nested templates.
  class Nesting {
   public:
    Nesting(Parser& p, int line) : p_(p) {
      if (p_.depth_ >= kMaxNesting) p_.fail(line, "nested more than " + std::to_string(kMaxNesting) + " levels deep");
      ++p_.depth_;
    }
    ~Nesting() { --p_.depth_; }

   private:
    Parser& p_;
  };

  [[noreturn]] void fail(int line, const std::string& message) const {
    throw_template_error(line, "syntax error: " + message);
  }

  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  const Token& next() {
    const Token& t = peek();
    if (pos_ < tokens_.size() - 1) ++pos_;
    return t;
  }
  bool at_operator(std::string_view op, size_t ahead = 0) const {
    return peek(ahead).kind == TokenKind::Operator && peek(ahead).text == op;
  }
  bool at_name(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).kind == TokenKind::Name && peek(ahead).text == name;
  }
  bool skip_operator(std::string_view op) {
    if (!at_operator(op)) return false;
    next();
    return true;
  }
  void expect_operator(std::string_view op) {
    if (!skip_operator(op)) fail(peek().line, "expected '" + std::string(op) + "', got " + describe(peek()));
  }
  std::string expect_name(std::string_view what) {
    if (peek().kind != TokenKind::Name) fail(peek().line, "expected " + std::string(what) + ", got " + describe(peek()));
    return next().text;
  }
  void expect_name_keyword(std::string_view keyword) {
    if (!at_name(keyword)) fail(peek().line, "expected '" + std::string(keyword) + "', got " + describe(peek()));
    next();
  }
  void expect_block_end() {
    if (peek().kind != TokenKind::BlockEnd) fail(peek().line, "expected end of statement '%}', got " + describe(peek()));
    next();
  }

  // ---- statements ------------------------------------------------------------------------------

  // Parses until one of `end_tags` opens a block; consumes "{% tag" and stores the tag in `found`.
  Body parse_body(std::initializer_list<std::string_view> end_tags, std::string* found, int open_line) {
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.kind == TokenKind::End) {
        if (end_tags.size() == 0) return body;
        std::string wanted;
        for (std::string_view tag : end_tags) wanted += (wanted.empty() ? "'" : " or '") + std::string(tag) + "'";
        fail(open_line, "unexpected end of template: the block opened on this line needs " + wanted);
      }
      if (t.kind == TokenKind::Text) {
        auto s = make_stmt(StmtKind::Text, t.line);
        s->text = next().text;
        body.push_back(std::move(s));
      } else if (t.kind == TokenKind::VariableBegin) {
        auto s = make_stmt(StmtKind::Output, next().line);
        s->expr = parse_tuple(true, false);
        if (peek().kind != TokenKind::VariableEnd) fail(peek().line, "expected '}}', got " + describe(peek()));
        next();
        body.push_back(std::move(s));
      } else if (t.kind == TokenKind::BlockBegin) {
        const Token& name = peek(1);
        if (name.kind != TokenKind::Name) fail(name.line, "expected a statement name after '{%', got " + describe(name));
        for (std::string_view tag : end_tags) {
          if (name.text == tag) {
            next();
            next();
            *found = std::string(tag);
            return body;
          }
        }
        next();
        body.push_back(parse_statement());
      } else {
        fail(t.line, "unexpected " + describe(t));
      }
    }
  }

  StmtPtr parse_statement() {
    const Token& name_token = next();
    Nesting nesting(*this, name_token.line);
    const std::string& name = name_token.text;
    const int line = name_token.line;
    if (name == "if") return parse_if(line);
    if (name == "for") return parse_for(line);
    if (name == "set") return parse_set(line);
    if (name == "macro") return parse_macro(line);
    if (name == "call") return parse_call_block(line);
    if (name == "filter") return parse_filter_block(line);
    if (name == "with") return parse_with(line);
    if (name == "generation") return parse_simple_block(StmtKind::Generation, "endgeneration", line);
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail(line, "'" + name + "' outside of a loop");
      expect_block_end();
      return make_stmt(name == "break" ? StmtKind::Break : StmtKind::Continue, line);
    }
    static const char* const kUnsupported[] = {"include", "import", "from", "extends", "block", "autoescape", "do"};
    for (const char* tag : kUnsupported)
      if (name == tag) fail(line, "'{% " + name + " %}' is not supported in chat templates");
    if (name.rfind("end", 0) == 0 || name == "else" || name == "elif")
      fail(line, "unexpected '{% " + name + " %}' (no open block it closes)");
    fail(line, "unknown tag '" + name + "'");
  }

  StmtPtr parse_if(int line) {
    auto s = make_stmt(StmtKind::If, line);
    std::string tag = "elif";
    while (tag == "elif") {
      ExprPtr condition = parse_tuple(false, false);
      expect_block_end();
      Body body = parse_body({"elif", "else", "endif"}, &tag, line);
      s->branches.emplace_back(std::move(condition), std::move(body));
    }
    if (tag == "else") {
      expect_block_end();
      s->else_body = parse_body({"endif"}, &tag, line);
    }
    expect_block_end();
    return s;
  }

  // A name, or names separated by commas (optionally in parentheses), as for-loop or set targets.
  std::vector<std::string> parse_target_names() {
    std::vector<std::string> names;
    const bool parenthesized = skip_operator("(");
    do {
      names.push_back(expect_name("a variable name"));
    } while (skip_operator(","));
    if (parenthesized) expect_operator(")");
    return names;
  }

  StmtPtr parse_for(int line) {
    auto s = make_stmt(StmtKind::For, line);
    s->targets = parse_target_names();
    expect_name_keyword("in");
    s->expr = parse_tuple(false, false);
    if (at_name("if")) {
      next();
      s->condition = parse_expression(true);
    }
    if (at_name("recursive")) fail(peek().line, "recursive loops are not supported");
    expect_block_end();
    std::string tag;
    ++loop_depth_;
    s->body = parse_body({"endfor", "else"}, &tag, line);
    --loop_depth_;
    if (tag == "else") {
      expect_block_end();
      s->else_body = parse_body({"endfor"}, &tag, line);
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_set(int line) {
    std::vector<std::string> names = parse_target_names();
    std::string attribute;
    if (names.size() == 1 && skip_operator(".")) attribute = expect_name("an attribute name");
    if (skip_operator("=")) {
      auto s = make_stmt(StmtKind::Set, line);
      s->targets = std::move(names);
      s->attribute = std::move(attribute);
      s->expr = parse_tuple(true, false);
      expect_block_end();
      return s;
    }
    if (names.size() != 1 || !attribute.empty()) fail(line, "a block set assigns one plain variable");
    auto s = make_stmt(StmtKind::SetBlock, line);
    s->targets = std::move(names);
    if (at_operator("|")) s->expr = parse_filter_chain(nullptr, false);
    expect_block_end();
    std::string tag;
    s->body = parse_body({"endset"}, &tag, line);
    expect_block_end();
    return s;
  }

  std::vector<Parameter> parse_parameters() {
    std::vector<Parameter> parameters;
    expect_operator("(");
    while (!skip_operator(")")) {
      if (!parameters.empty()) expect_operator(",");
      if (skip_operator(")")) break;
      Parameter p;
      p.name = expect_name("a parameter name");
      if (skip_operator("=")) p.default_value = parse_expression(true);
      else if (!parameters.empty() && parameters.back().default_value)
        fail(peek().line, "parameter '" + p.name + "' without a default follows one with a default");
      parameters.push_back(std::move(p));
    }
    return parameters;
  }

  StmtPtr parse_macro(int line) {
    auto s = make_stmt(StmtKind::Macro, line);
    s->name = expect_name("a macro name");
    s->parameters = parse_parameters();
    expect_block_end();
    const int outer_loops = loop_depth_;
    loop_depth_ = 0;
    std::string tag;
    s->body = parse_body({"endmacro"}, &tag, line);
    loop_depth_ = outer_loops;
    if (peek().kind == TokenKind::Name && peek().text == s->name) next();  // {% endmacro name %}
    expect_block_end();
    return s;
  }

  StmtPtr parse_call_block(int line) {
    auto s = make_stmt(StmtKind::CallBlock, line);
    if (at_operator("(")) s->parameters = parse_parameters();
    s->expr = parse_expression(true);
    if (s->expr->kind != ExprKind::Call) fail(line, "'{% call %}' needs a macro call");
    expect_block_end();
    const int outer_loops = loop_depth_;
    loop_depth_ = 0;
    std::string tag;
    s->body = parse_body({"endcall"}, &tag, line);
    loop_depth_ = outer_loops;
    expect_block_end();
    return s;
  }

  StmtPtr parse_filter_block(int line) {
    auto s = make_stmt(StmtKind::FilterBlock, line);
    s->expr = parse_filter_chain(nullptr, true);
    expect_block_end();
    std::string tag;
    s->body = parse_body({"endfilter"}, &tag, line);
    expect_block_end();
    return s;
  }

  StmtPtr parse_with(int line) {
    auto s = make_stmt(StmtKind::With, line);
    while (peek().kind != TokenKind::BlockEnd) {
      if (!s->assignments.empty()) expect_operator(",");
      std::string name = expect_name("a variable name");
      expect_operator("=");
      s->assignments.emplace_back(std::move(name), parse_expression(true));
    }
    expect_block_end();
    std::string tag;
    s->body = parse_body({"endwith"}, &tag, line);
    expect_block_end();
    return s;
  }

  StmtPtr parse_simple_block(StmtKind kind, std::string_view end_tag, int line) {
    auto s = make_stmt(kind, line);
    expect_block_end();
    std::string tag;
    s->body = parse_body({end_tag}, &tag, line);
    expect_block_end();
    return s;
  }

  // ---- expressions -----------------------------------------------------------------------------

  // Expressions separated by commas make a tuple: `{{ a, b }}`, `set x = 1, 2`, `(1,)`.
  ExprPtr parse_tuple(bool with_conditional, bool in_parentheses) {
    const int line = peek().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) {
        if (!skip_operator(",")) break;
        is_tuple = true;
      }
      const Token& t = peek();
      if (t.kind == TokenKind::VariableEnd || t.kind == TokenKind::BlockEnd || at_operator(")")) break;
      items.push_back(with_conditional ? parse_expression(true) : parse_or());
    }
    if (!is_tuple && items.size() == 1) return std::move(items[0]);
    if (items.empty() && !in_parentheses) fail(line, "expected an expression, got " + describe(peek()));
    auto tuple = make_expr(ExprKind::TupleLiteral, line);
    tuple->operands = std::move(items);
    return tuple;
  }

  ExprPtr parse_expression(bool with_conditional) {
    Nesting nesting(*this, peek().line);
    if (!with_conditional) return parse_or();
    ExprPtr expr = parse_or();
    while (at_name("if")) {
      const int line = next().line;
      auto conditional = make_expr(ExprKind::Conditional, line);
      conditional->operands.push_back(parse_or());
      conditional->operands.push_back(std::move(expr));
      if (at_name("else")) {
        next();
        conditional->operands.push_back(parse_expression(true));
      } else {
        conditional->operands.push_back(nullptr);
      }
      expr = std::move(conditional);
    }
    return expr;
  }

  ExprPtr binary(BinaryOp op, ExprPtr left, ExprPtr right, int line) {
    auto e = make_expr(ExprKind::Binary, line);
    e->binary_op = op;
    e->operands.push_back(std::move(left));
    e->operands.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (at_name("or")) {
      const int line = next().line;
      left = binary(BinaryOp::Or, std::move(left), parse_and(), line);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (at_name("and")) {
      const int line = next().line;
      left = binary(BinaryOp::And, std::move(left), parse_not(), line);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (!at_name("not")) return parse_compare();
    const int line = next().line;
    Nesting nesting(*this, line);
    auto e = make_expr(ExprKind::Not, line);
    e->operands.push_back(parse_not());
    return e;
  }

  ExprPtr parse_compare() {
    const int line = peek().line;
    ExprPtr first = parse_math1();
    std::vector<CompareOp> ops;
    std::vector<ExprPtr> operands;
    while (true) {
      static const std::pair<const char*, CompareOp> kOperators[] = {
          {"==", CompareOp::Equal}, {"!=", CompareOp::NotEqual},    {"<", CompareOp::Less},
          {"<=", CompareOp::LessEqual}, {">", CompareOp::Greater}, {">=", CompareOp::GreaterEqual}};
      bool matched = false;
      for (const auto& [text, op] : kOperators) {
        if (at_operator(text)) {
          next();
          ops.push_back(op);
          matched = true;
          break;
        }
      }
      if (!matched && at_name("in")) {
        next();
        ops.push_back(CompareOp::In);
        matched = true;
      } else if (!matched && at_name("not") && at_name("in", 1)) {
        next();
        next();
        ops.push_back(CompareOp::NotIn);
        matched = true;
      }
      if (!matched) break;
      operands.push_back(parse_math1());
    }
    if (ops.empty()) return first;
    auto e = make_expr(ExprKind::Compare, line);
    e->operands.push_back(std::move(first));
    for (auto& operand : operands) e->operands.push_back(std::move(operand));
    e->compare_ops = std::move(ops);
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (at_operator("+") || at_operator("-")) {
      const Token& op = next();
      left = binary(op.text == "+" ? BinaryOp::Add : BinaryOp::Subtract, std::move(left), parse_concat(), op.line);
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (at_operator("~")) {
      const int line = next().line;
      left = binary(BinaryOp::Concat, std::move(left), parse_math2(), line);
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (at_operator("*") || at_operator("/") || at_operator("//") || at_operator("%")) {
      const Token& op = next();
      const BinaryOp kind = op.text == "*"    ? BinaryOp::Multiply
                            : op.text == "/"  ? BinaryOp::Divide
                            : op.text == "//" ? BinaryOp::FloorDivide
                                              : BinaryOp::Modulo;
      left = binary(kind, std::move(left), parse_pow(), op.line);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (at_operator("**")) {
      const int line = next().line;
      left = binary(BinaryOp::Power, std::move(left), parse_unary(true), line);
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    const int line = peek().line;
    Nesting nesting(*this, line);
    ExprPtr node;
    if (at_operator("-") || at_operator("+")) {
      node = make_expr(next().text == "-" ? ExprKind::Negate : ExprKind::Plus, line);
      node->operands.push_back(parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    return with_filter ? parse_filter_expr(std::move(node)) : std::move(node);
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    const int line = t.line;
    if (t.kind == TokenKind::Name) {
      const std::string name = next().text;
      auto literal = make_expr(ExprKind::Literal, line);
      if (name == "true" || name == "True") literal->value = Value(true);
      else if (name == "false" || name == "False") literal->value = Value(false);
      else if (name == "none" || name == "None") literal->value = Value::none();
      else {
        auto e = make_expr(ExprKind::Name, line);
        e->name = name;
        return e;
      }
      return literal;
    }
    if (t.kind == TokenKind::String) {
      std::string text;
      while (peek().kind == TokenKind::String) text += next().text;  // adjacent literals concatenate
      auto e = make_expr(ExprKind::Literal, line);
      e->value = Value(std::move(text));
      return e;
    }
    if (t.kind == TokenKind::Integer || t.kind == TokenKind::Float) {
      const std::string text = next().text;
      auto e = make_expr(ExprKind::Literal, line);
      errno = 0;
      if (t.kind == TokenKind::Integer) {
        const long long v = std::strtoll(text.c_str(), nullptr, 10);
        if (errno == ERANGE) fail(line, "integer literal " + text + " does not fit in 64 bits");
        e->value = Value(int64_t(v));
      } else {
        e->value = Value(std::strtod(text.c_str(), nullptr));
      }
      return e;
    }
    if (skip_operator("(")) {
      ExprPtr inner = parse_tuple(true, true);
      expect_operator(")");
      return inner;
    }
    if (skip_operator("[")) {
      auto e = make_expr(ExprKind::ListLiteral, line);
      while (!skip_operator("]")) {
        if (!e->operands.empty()) expect_operator(",");
        if (skip_operator("]")) break;
        e->operands.push_back(parse_expression(true));
      }
      return e;
    }
    if (skip_operator("{")) {
      auto e = make_expr(ExprKind::DictLiteral, line);
      while (!skip_operator("}")) {
        if (!e->operands.empty()) expect_operator(",");
        if (skip_operator("}")) break;
        e->operands.push_back(parse_expression(true));
        expect_operator(":");
        e->operands.push_back(parse_expression(true));
      }
      return e;
    }
    fail(line, "expected an expression, got " + describe(t));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      const int line = peek().line;
      if (skip_operator(".")) {
        if (peek().kind == TokenKind::Integer) {  // x.0 is x[0]
          auto index = make_expr(ExprKind::Literal, line);
          index->value = Value(int64_t(std::strtoll(next().text.c_str(), nullptr, 10)));
          auto e = make_expr(ExprKind::Subscript, line);
          e->operands.push_back(std::move(node));
          e->operands.push_back(std::move(index));
          node = std::move(e);
        } else {
          auto e = make_expr(ExprKind::Attribute, line);
          e->name = expect_name("an attribute name");
          e->operands.push_back(std::move(node));
          node = std::move(e);
        }
      } else if (skip_operator("[")) {
        node = parse_subscript(std::move(node), line);
      } else if (at_operator("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr object, int line) {
    ExprPtr parts[3];
    if (!at_operator(":")) {
      parts[0] = parse_expression(true);
      if (skip_operator("]")) {
        auto e = make_expr(ExprKind::Subscript, line);
        e->operands.push_back(std::move(object));
        e->operands.push_back(std::move(parts[0]));
        return e;
      }
    }
    expect_operator(":");
    if (!at_operator("]") && !at_operator(":")) parts[1] = parse_expression(true);
    if (skip_operator(":") && !at_operator("]")) parts[2] = parse_expression(true);
    expect_operator("]");
    auto e = make_expr(ExprKind::Slice, line);
    e->operands.push_back(std::move(object));
    for (auto& part : parts) e->operands.push_back(std::move(part));
    return e;
  }

  // `(args)` after a callee, filter or test: positional arguments, then keyword arguments.
  void parse_call_arguments(Expr& target) {
    expect_operator("(");
    bool first = true;
    while (!skip_operator(")")) {
      if (!first) expect_operator(",");
      first = false;
      if (skip_operator(")")) break;
      if (at_operator("*") || at_operator("**")) fail(peek().line, "*args and **kwargs in calls are not supported");
      if (peek().kind == TokenKind::Name && at_operator("=", 1)) {
        std::string name = next().text;
        next();
        target.keywords.emplace_back(std::move(name), parse_expression(true));
      } else {
        if (!target.keywords.empty()) fail(peek().line, "positional argument follows keyword argument");
        target.operands.push_back(parse_expression(true));
      }
    }
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto e = make_expr(ExprKind::Call, peek().line);
    e->operands.push_back(std::move(callee));
    parse_call_arguments(*e);
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (at_operator("|")) node = parse_filter_chain(std::move(node), false);
      else if (at_name("is")) node = parse_test(std::move(node));
      else if (at_operator("(")) node = parse_call(std::move(node));
      else return node;
    }
  }

  // `| name(args) | name2 ...`; with `inline_first`, the first filter has no leading '|'.
  ExprPtr parse_filter_chain(ExprPtr node, bool inline_first) {
    while (at_operator("|") || inline_first) {
      if (!inline_first) next();
      inline_first = false;
      const int line = peek().line;
      std::string name = expect_name("a filter name");
      while (skip_operator(".")) {
        name += '.';
        name += expect_name("a filter name");
      }
      if (!is_known_filter(name)) throw_template_error(line, "no filter named '" + name + "'");
      auto e = make_expr(ExprKind::Filter, line);
      e->name = std::move(name);
      e->operands.push_back(std::move(node));
      if (at_operator("(")) parse_call_arguments(*e);
      node = std::move(e);
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    const int line = next().line;  // 'is'
    auto e = make_expr(ExprKind::Test, line);
    if (at_name("not")) {
      next();
      e->negated = true;
    }
    e->name = expect_name("a test name");
    while (skip_operator(".")) {
      e->name += '.';
      e->name += expect_name("a test name");
    }
    if (!is_known_test(e->name)) throw_template_error(line, "no test named '" + e->name + "'");
    e->operands.push_back(std::move(node));
    const Token& t = peek();
    if (at_operator("(")) {
      parse_call_arguments(*e);
    } else if ((t.kind == TokenKind::Name || t.kind == TokenKind::String || t.kind == TokenKind::Integer ||
                t.kind == TokenKind::Float || at_operator("[") || at_operator("{")) &&
               !at_name("else") && !at_name("or") && !at_name("and")) {
      if (at_name("is")) fail(t.line, "tests cannot be chained with 'is'");
      e->operands.push_back(parse_postfix(parse_primary()));  // `is divisibleby 3`, `is equalto 'x'`
    }
    return e;
  }
};

}  // namespace

Body parse_template(std::string_view source) { return Parser(tokenize_template(source)).parse_template(); }

}  // namespace dsv2::jinja
