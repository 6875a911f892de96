// The interpreter: executes a parsed template over scopes of variables, with jinja2's scoping rules
// (each for-loop iteration, macro call and block gets a child scope; `if` does not), and Python's
// operator semantics.
#include <cmath>
#include <unordered_map>

#include "tokenizer/jinja.h"
#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_parser.h"
#include "tokenizer/jinja_unicode.h"

namespace dsv2::jinja {

namespace {

// Largest string or list a `*` repetition may build.
constexpr int64_t kMaxRepetitionBytes = int64_t(256) << 20;

struct Scope;
using ScopePtr = std::shared_ptr<Scope>;

struct Scope {
  explicit Scope(ScopePtr parent) : parent(std::move(parent)) {}
  ScopePtr parent;
  std::unordered_map<std::string, Value> variables;

  const Value* lookup(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get()) {
      auto it = s->variables.find(name);
      if (it != s->variables.end()) return &it->second;
    }
    return nullptr;
  }
};

enum class Flow { Normal, Break, Continue };

[[noreturn]] void fail_undefined(const Value& v) { throw RenderError(v.undefined_hint()); }

[[noreturn]] void unsupported_operands(const char* op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if ((a.is_string() || a.kind() == Value::Kind::List) && std::string_view(op) == "+")
    throw RenderError("can only concatenate " + python_type_name(a) + " (not \"" + python_type_name(b) + "\") to " +
                      python_type_name(a));
  throw RenderError(std::string("unsupported operand type(s) for ") + op + ": '" + python_type_name(a) + "' and '" +
                    python_type_name(b) + "'");
}

Value repeat(const Value& sequence, int64_t times) {
  times = std::max<int64_t>(times, 0);
  if (sequence.is_string()) {
    const std::string& s = sequence.as_string();
    if (!s.empty() && times > kMaxRepetitionBytes / int64_t(s.size())) throw RenderError("repeated string too large");
    std::string out;
    out.reserve(s.size() * size_t(times));
    for (int64_t i = 0; i < times; ++i) out += s;
    return Value(std::move(out));
  }
  const ValueList& items = sequence.as_list();
  if (!items.empty() && times > kMaxRepetitionBytes / int64_t(16 * items.size())) throw RenderError("repeated list too large");
  ValueList out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
  return sequence.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
}

int64_t floor_divide(int64_t a, int64_t b) {
  if (b == 0) throw RenderError("integer division or modulo by zero");
  if (a == INT64_MIN && b == -1) throw RenderError("integer overflow (beyond 64 bits)");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value binary_operation(BinaryOp op, const Value& a, const Value& b) {
  const bool numbers = a.is_number() && b.is_number();
  const bool integers = a.is_integral() && b.is_integral();
  switch (op) {
    case BinaryOp::Add:
      if (integers) return Value(checked_add(a.as_int(), b.as_int()));
      if (numbers) return Value(a.as_double() + b.as_double());
      if (a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
      if (a.is_list_or_tuple() && b.is_list_or_tuple() && a.sequence() == b.sequence()) {
        ValueList items = a.as_list();
        items.insert(items.end(), b.as_list().begin(), b.as_list().end());
        return a.is_tuple() ? Value::tuple(std::move(items)) : Value::list(std::move(items));
      }
      unsupported_operands("+", a, b);
    case BinaryOp::Subtract:
      if (integers) return Value(checked_add(a.as_int(), checked_mul(b.as_int(), -1)));
      if (numbers) return Value(a.as_double() - b.as_double());
      unsupported_operands("-", a, b);
    case BinaryOp::Multiply:
      if (integers) return Value(checked_mul(a.as_int(), b.as_int()));
      if (numbers) return Value(a.as_double() * b.as_double());
      if ((a.is_string() || a.is_list_or_tuple()) && b.is_integral()) return repeat(a, b.as_int());
      if ((b.is_string() || b.is_list_or_tuple()) && a.is_integral()) return repeat(b, a.as_int());
      unsupported_operands("*", a, b);
    case BinaryOp::Divide:
      if (!numbers) unsupported_operands("/", a, b);
      if (b.as_double() == 0.0) throw RenderError("division by zero");
      return Value(a.as_double() / b.as_double());
    case BinaryOp::FloorDivide:
      if (integers) return Value(floor_divide(a.as_int(), b.as_int()));
      if (!numbers) unsupported_operands("//", a, b);
      if (b.as_double() == 0.0) throw RenderError("float floor division by zero");
      return Value(std::floor(a.as_double() / b.as_double()));
    case BinaryOp::Modulo: return python_modulo(a, b);
    case BinaryOp::Power:
      if (integers && b.as_int() >= 0) {
        int64_t result = 1, base = a.as_int();
        for (int64_t e = b.as_int(); e > 0; e >>= 1) {
          if (e & 1) result = checked_mul(result, base);
          if (e > 1) base = checked_mul(base, base);
        }
        return Value(result);
      }
      if (!numbers) unsupported_operands("**", a, b);
      if (a.as_double() == 0.0 && b.as_double() < 0) throw RenderError("0.0 cannot be raised to a negative power");
      return Value(std::pow(a.as_double(), b.as_double()));
    case BinaryOp::Concat: return Value(to_python_str(a) + to_python_str(b));
    case BinaryOp::And:
    case BinaryOp::Or: break;  // short-circuit, handled by the caller
  }
  throw RenderError("unknown binary operator");
}

bool compare(CompareOp op, const Value& a, const Value& b) {
  switch (op) {
    case CompareOp::Equal: return values_equal(a, b);
    case CompareOp::NotEqual: return !values_equal(a, b);
    case CompareOp::Less: return compare_values(a, b, "<") < 0;
    case CompareOp::LessEqual: return compare_values(a, b, "<=") <= 0;
    case CompareOp::Greater: return compare_values(a, b, ">") > 0;
    case CompareOp::GreaterEqual: return compare_values(a, b, ">=") >= 0;
    case CompareOp::In: return contains(b, a);
    case CompareOp::NotIn: return !contains(b, a);
  }
  return false;
}

Value call_value(const Value& callee, const CallArguments& args) {
  if (callee.is_undefined()) fail_undefined(callee);
  if (callee.kind() != Value::Kind::Function) throw RenderError("'" + python_type_name(callee) + "' object is not callable");
  return callee.as_function().call(args);
}

class Interpreter {
 public:
  // Macros and `caller` hold their defining scope, which holds them: clearing those scopes when
  // rendering ends breaks the reference cycles.
  ~Interpreter() {
    for (const ScopePtr& scope : captured_scopes_) scope->variables.clear();
  }

  std::string render(const Body& body, const ValueDict& variables) {
    auto globals = std::make_shared<Scope>(nullptr);
    const ValueDict functions = global_functions();
    for (const auto& [name, value] : functions.entries()) globals->variables[name.as_string()] = value;
    auto root = std::make_shared<Scope>(globals);
    for (const auto& [name, value] : variables.entries()) root->variables[to_python_str(name)] = value;
    std::string out;
    out_ = &out;
    execute(body, root);
    return out;
  }

 private:
  std::string* out_ = nullptr;
  int depth_ = 0;
  std::vector<ScopePtr> captured_scopes_;

  class Depth {
   public:
    explicit Depth(Interpreter& in) : in_(in) {
      if (in_.depth_ >= kMaxRenderDepth)
        throw RenderError("recursion deeper than " + std::to_string(kMaxRenderDepth) + " levels");
      ++in_.depth_;
    }
    ~Depth() { --in_.depth_; }

   private:
    Interpreter& in_;
  };

  const ScopePtr& capture_scope(const ScopePtr& scope) {
    captured_scopes_.push_back(scope);
    return scope;
  }

  std::string capture(const Body& body, const ScopePtr& scope) {
    std::string buffer;
    std::string* saved = out_;
    out_ = &buffer;
    try {
      execute(body, scope);
    } catch (...) {
      out_ = saved;
      throw;
    }
    out_ = saved;
    return buffer;
  }

  Flow execute(const Body& body, const ScopePtr& scope) {
    for (const StmtPtr& s : body) {
      const Flow flow = execute(*s, scope);
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

  Flow execute(const Stmt& s, const ScopePtr& scope) {
    try {
      Depth depth(*this);
      return execute_statement(s, scope);
    } catch (const RenderError& e) {
      throw_template_error(s.line, e.what());
    }
  }

  Flow execute_statement(const Stmt& s, const ScopePtr& scope) {
    switch (s.kind) {
      case StmtKind::Text: *out_ += s.text; return Flow::Normal;
      case StmtKind::Output: *out_ += to_python_str(evaluate(*s.expr, scope)); return Flow::Normal;
      case StmtKind::If:
        for (const auto& [condition, body] : s.branches)
          if (is_truthy(evaluate(*condition, scope))) return execute(body, scope);
        return execute(s.else_body, scope);
      case StmtKind::For: return execute_for(s, scope);
      case StmtKind::Set: {
        Value value = evaluate(*s.expr, scope);
        if (!s.attribute.empty()) {
          const Value* target = scope->lookup(s.targets[0]);
          if (!target || target->kind() != Value::Kind::Namespace)
            throw RenderError("cannot assign attribute on non-namespace object '" + s.targets[0] + "'");
          target->set_namespace_attribute(s.attribute, std::move(value));
        } else {
          assign_targets(s.targets, value, *scope);
        }
        return Flow::Normal;
      }
      case StmtKind::SetBlock: {
        Value text(capture(s.body, std::make_shared<Scope>(scope)));
        scope->variables[s.targets[0]] = s.expr ? apply_filter_chain(*s.expr, text, scope) : text;
        return Flow::Normal;
      }
      case StmtKind::Macro: scope->variables[s.name] = make_macro(s, scope); return Flow::Normal;
      case StmtKind::CallBlock: *out_ += to_python_str(call_with_caller(s, scope)); return Flow::Normal;
      case StmtKind::FilterBlock: {
        Value text(capture(s.body, std::make_shared<Scope>(scope)));
        *out_ += to_python_str(apply_filter_chain(*s.expr, text, scope));
        return Flow::Normal;
      }
      case StmtKind::With: {
        auto inner = std::make_shared<Scope>(scope);
        for (const auto& [name, expr] : s.assignments) inner->variables[name] = evaluate(*expr, scope);
        return execute(s.body, inner);
      }
      case StmtKind::Generation: return execute(s.body, std::make_shared<Scope>(scope));
      case StmtKind::Break: return Flow::Break;
      case StmtKind::Continue: return Flow::Continue;
    }
    return Flow::Normal;
  }

  // Binds one name, or unpacks `value` into several (`for k, v in ...`, `set a, b = ...`).
  static void assign_targets(const std::vector<std::string>& targets, const Value& value, Scope& scope) {
    if (targets.size() == 1) {
      scope.variables[targets[0]] = value;
      return;
    }
    const ValueList items = iterate(value);
    if (items.size() != targets.size())
      throw RenderError(std::string(items.size() < targets.size() ? "not enough" : "too many") +
                        " values to unpack (expected " + std::to_string(targets.size()) + ", got " +
                        std::to_string(items.size()) + ")");
    for (size_t i = 0; i < targets.size(); ++i) scope.variables[targets[i]] = items[i];
  }

  Flow execute_for(const Stmt& s, const ScopePtr& scope) {
    ValueList items = iterate(evaluate(*s.expr, scope));
    if (s.condition) {
      ValueList kept;
      for (Value& item : items) {
        auto test = std::make_shared<Scope>(scope);
        assign_targets(s.targets, item, *test);
        if (is_truthy(evaluate(*s.condition, test))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    const int64_t n = int64_t(items.size());
    for (int64_t i = 0; i < n; ++i) {
      auto iteration = std::make_shared<Scope>(scope);
      assign_targets(s.targets, items[size_t(i)], *iteration);
      iteration->variables["loop"] = loop_object(items, i);
      if (execute(s.body, iteration) == Flow::Break) break;
    }
    if (n == 0 && !s.else_body.empty()) return execute(s.else_body, std::make_shared<Scope>(scope));
    return Flow::Normal;
  }

  static Value loop_object(const ValueList& items, int64_t i) {
    const int64_t n = int64_t(items.size());
    ValueDict loop;
    loop.append_new(Value("index"), Value(i + 1));
    loop.append_new(Value("index0"), Value(i));
    loop.append_new(Value("revindex"), Value(n - i));
    loop.append_new(Value("revindex0"), Value(n - i - 1));
    loop.append_new(Value("first"), Value(i == 0));
    loop.append_new(Value("last"), Value(i == n - 1));
    loop.append_new(Value("length"), Value(n));
    loop.append_new(Value("depth"), Value(1));
    loop.append_new(Value("depth0"), Value(0));
    loop.append_new(Value("previtem"), i > 0 ? items[size_t(i - 1)] : Value::undefined("there is no previous item"));
    loop.append_new(Value("nextitem"), i + 1 < n ? items[size_t(i + 1)] : Value::undefined("there is no next item"));
    loop.append_new(Value("cycle"), Value::function("loop.cycle", [i](const CallArguments& args) {
                      if (args.positional.empty()) throw RenderError("no items for cycling given");
                      return args.positional[size_t(i) % args.positional.size()];
                    }));
    return Value::dict(std::move(loop));
  }

  Value make_macro(const Stmt& macro, const ScopePtr& scope) {
    return Value::function(macro.name, [this, &macro, defining = capture_scope(scope)](const CallArguments& args) {
      auto local = std::make_shared<Scope>(defining);
      bind_parameters("macro '" + macro.name + "'", macro.parameters, args, local, true);
      return Value(capture(macro.body, local));
    });
  }

  // Binds call arguments to macro (or caller) parameters; missing ones take their defaults,
  // evaluated in the callee's scope, or become undefined.
  void bind_parameters(const std::string& callee, const std::vector<Parameter>& parameters, const CallArguments& args,
                       const ScopePtr& local, bool accepts_caller) {
    if (args.positional.size() > parameters.size())
      throw RenderError(callee + " takes not more than " + std::to_string(parameters.size()) + " argument(s)");
    std::vector<bool> bound(parameters.size(), false);
    for (size_t i = 0; i < args.positional.size(); ++i) {
      local->variables[parameters[i].name] = args.positional[i];
      bound[i] = true;
    }
    for (const auto& [name, value] : args.keywords) {
      if (accepts_caller && name == "caller") {
        local->variables["caller"] = value;
        continue;
      }
      size_t i = 0;
      while (i < parameters.size() && parameters[i].name != name) ++i;
      if (i == parameters.size()) throw RenderError(callee + " got an unexpected keyword argument '" + name + "'");
      if (bound[i]) throw RenderError(callee + " got multiple values for argument '" + name + "'");
      local->variables[name] = value;
      bound[i] = true;
    }
    for (size_t i = 0; i < parameters.size(); ++i) {
      if (bound[i]) continue;
      local->variables[parameters[i].name] = parameters[i].default_value
                                                ? evaluate(*parameters[i].default_value, local)
                                                : Value::undefined("parameter '" + parameters[i].name + "' was not provided");
    }
  }

  Value call_with_caller(const Stmt& s, const ScopePtr& scope) {
    const Expr& call = *s.expr;
    Value caller = Value::function("caller", [this, &s, call_site = capture_scope(scope)](const CallArguments& args) {
      auto local = std::make_shared<Scope>(call_site);
      bind_parameters("caller()", s.parameters, args, local, false);
      return Value(capture(s.body, local));
    });
    CallArguments args = evaluate_arguments(call, 1, scope);
    args.keywords.emplace_back("caller", std::move(caller));
    return call_value(evaluate(*call.operands[0], scope), args);
  }

  // The arguments of a call, filter or test node: operands from `first` on, then keywords.
  CallArguments evaluate_arguments(const Expr& e, size_t first, const ScopePtr& scope) {
    CallArguments args;
    for (size_t i = first; i < e.operands.size(); ++i) args.positional.push_back(evaluate(*e.operands[i], scope));
    for (const auto& [name, expr] : e.keywords) args.keywords.emplace_back(name, evaluate(*expr, scope));
    return args;
  }

  // A filter chain of a filter or set block: Filter nodes whose innermost input is null.
  Value apply_filter_chain(const Expr& filter, const Value& input, const ScopePtr& scope) {
    const Value inner = filter.operands[0] ? apply_filter_chain(*filter.operands[0], input, scope) : input;
    try {
      return apply_filter(filter.name, inner, evaluate_arguments(filter, 1, scope));
    } catch (const RenderError& e) {
      throw_template_error(filter.line, e.what());
    }
  }

  Value evaluate(const Expr& e, const ScopePtr& scope) {
    try {
      Depth depth(*this);
      return evaluate_node(e, scope);
    } catch (const RenderError& error) {
      throw_template_error(e.line, error.what());
    }
  }

  Value evaluate_node(const Expr& e, const ScopePtr& scope) {
    switch (e.kind) {
      case ExprKind::Literal: return e.value;
      case ExprKind::ListLiteral:
      case ExprKind::TupleLiteral: {
        ValueList items;
        for (const ExprPtr& item : e.operands) items.push_back(evaluate(*item, scope));
        return e.kind == ExprKind::TupleLiteral ? Value::tuple(std::move(items)) : Value::list(std::move(items));
      }
      case ExprKind::DictLiteral: {
        ValueDict dict;
        for (size_t i = 0; i + 1 < e.operands.size(); i += 2) {
          Value key = evaluate(*e.operands[i], scope);
          const Value::Kind k = key.kind();
          if (k == Value::Kind::List || k == Value::Kind::Dict || k == Value::Kind::Namespace || k == Value::Kind::Undefined)
            throw RenderError("unhashable type: '" + python_type_name(key) + "'");
          dict.set(std::move(key), evaluate(*e.operands[i + 1], scope));
        }
        return Value::dict(std::move(dict));
      }
      case ExprKind::Name: {
        const Value* v = scope->lookup(e.name);
        return v ? *v : Value::undefined("'" + e.name + "' is undefined");
      }
      case ExprKind::Attribute: return get_attribute(evaluate(*e.operands[0], scope), e.name);
      case ExprKind::Subscript: {
        Value object = evaluate(*e.operands[0], scope);
        return get_item(object, evaluate(*e.operands[1], scope));
      }
      case ExprKind::Slice: {
        Value object = evaluate(*e.operands[0], scope);
        auto part = [&](size_t i) { return e.operands[i] ? evaluate(*e.operands[i], scope) : Value(); };
        return get_slice(object, part(1), part(2), part(3));
      }
      case ExprKind::Call: {
        Value callee = evaluate(*e.operands[0], scope);
        return call_value(callee, evaluate_arguments(e, 1, scope));
      }
      case ExprKind::Filter: {
        Value input = evaluate(*e.operands[0], scope);
        return apply_filter(e.name, input, evaluate_arguments(e, 1, scope));
      }
      case ExprKind::Test: {
        Value input = evaluate(*e.operands[0], scope);
        return Value(apply_test(e.name, input, evaluate_arguments(e, 1, scope)) != e.negated);
      }
      case ExprKind::Not: return Value(!is_truthy(evaluate(*e.operands[0], scope)));
      case ExprKind::Negate:
      case ExprKind::Plus: {
        Value v = evaluate(*e.operands[0], scope);
        if (v.is_undefined()) fail_undefined(v);
        const bool negate = e.kind == ExprKind::Negate;
        if (v.is_integral()) return Value(negate ? checked_mul(v.as_int(), -1) : v.as_int());
        if (v.kind() == Value::Kind::Float) return Value(negate ? -v.as_double() : v.as_double());
        throw RenderError(std::string("bad operand type for unary ") + (negate ? "-" : "+") + ": '" + python_type_name(v) + "'");
      }
      case ExprKind::Binary: {
        Value left = evaluate(*e.operands[0], scope);
        if (e.binary_op == BinaryOp::And) return is_truthy(left) ? evaluate(*e.operands[1], scope) : left;
        if (e.binary_op == BinaryOp::Or) return is_truthy(left) ? left : evaluate(*e.operands[1], scope);
        return binary_operation(e.binary_op, left, evaluate(*e.operands[1], scope));
      }
      case ExprKind::Compare: {
        Value left = evaluate(*e.operands[0], scope);
        for (size_t i = 0; i < e.compare_ops.size(); ++i) {
          Value right = evaluate(*e.operands[i + 1], scope);
          if (!compare(e.compare_ops[i], left, right)) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case ExprKind::Conditional:
        if (is_truthy(evaluate(*e.operands[0], scope))) return evaluate(*e.operands[1], scope);
        if (e.operands[2]) return evaluate(*e.operands[2], scope);
        return Value::undefined("the inline if-expression on line " + std::to_string(e.line) +
                                " evaluated to false and no else section was defined");
    }
    throw RenderError("unknown expression");
  }
};

}  // namespace

Template::Template(std::string_view source) {
  const size_t bad = find_invalid_utf8(source);
  if (bad != std::string_view::npos)
    throw Error("template is not valid UTF-8 (byte offset " + std::to_string(bad) + ")");
  body_ = std::make_shared<const Body>(parse_template(source));
}

std::string Template::render(const ValueDict& variables) const { return Interpreter().render(*body_, variables); }

}  // namespace dsv2::jinja
