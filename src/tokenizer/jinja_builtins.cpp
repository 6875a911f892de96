// jinja2's filters and tests, and the globals of transformers' chat-template environment.
#include "tokenizer/jinja_builtins.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>

#include "tokenizer/jinja_unicode.h"

namespace dsv2::jinja {

namespace {

using FilterFunction = Value (*)(const Value& input, const CallArguments& args);
using TestFunction = bool (*)(const Value& input, const CallArguments& args);

// jinja2's range() limit in the sandbox.
constexpr int64_t kMaxRange = 100000;

// `attribute` as jinja2's make_attrgetter reads it: "a.b.0" looks up a, then b, then item 0.
Value lookup_path(const Value& item, const Value& attribute) {
  if (!attribute.is_string()) return get_item(item, attribute);
  Value current = item;
  const std::string& path = attribute.as_string();
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    current = get_item(current, numeric ? Value(int64_t(std::stoll(part))) : Value(part));
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

// The key jinja2 sorts and compares by: lowercased for strings unless case-sensitive.
Value comparison_key(const Value& v, bool case_sensitive) {
  return (!case_sensitive && v.is_string()) ? Value(to_lower(v.as_string())) : v;
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Python's float(str): surrounding whitespace, underscores between digits, inf and nan allowed.
std::optional<double> parse_python_float(const std::string& text) {
  std::string s = python_strip(text, StripSide::Both, std::nullopt);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  const std::string lower = to_lower(s);
  if (lower.find("0x") != std::string::npos) return std::nullopt;  // strtod reads hex, Python doesn't
  return d;
}

std::optional<int64_t> parse_python_int(const std::string& text, int base) {
  std::string s = python_strip(text, StripSide::Both, std::nullopt);
  s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, base);
  if (end != s.c_str() + s.size() || errno == ERANGE) return std::nullopt;
  return int64_t(v);
}

Value add_numbers(const Value& a, const Value& b) {
  if (!a.is_number() || !b.is_number())
    throw RenderError("unsupported operand type(s) for +: '" + python_type_name(a) + "' and '" + python_type_name(b) + "'");
  if (a.is_integral() && b.is_integral()) return Value(checked_add(a.as_int(), b.as_int()));
  return Value(a.as_double() + b.as_double());
}

// Python's round(x, ndigits) for floats: correctly rounded, ties to even.
double python_round(double x, int64_t digits) {
  if (!std::isfinite(x)) return x;
  if (digits < 0) {
    const double scale = std::pow(10.0, double(-digits));
    return std::nearbyint(x / scale) * scale;
  }
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.*f", int(std::min<int64_t>(digits, 300)), x);
  return std::strtod(buf, nullptr);
}

CallArguments without_first(const CallArguments& args) {
  CallArguments rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keywords = args.keywords;
  return rest;
}

// jinja2's generator filters iterate their input only when the result is used: a non-iterable input
// gives a generator that fails when iterated.
std::optional<Value> deferred_failure(const Value& input) {
  if (const std::string* error = input.iteration_error()) return Value::failing_generator(*error);
  const Value::Kind k = input.kind();
  if (k == Value::Kind::List || k == Value::Kind::Dict || k == Value::Kind::String || k == Value::Kind::Undefined)
    return std::nullopt;
  return Value::failing_generator("'" + python_type_name(input) + "' object is not iterable");
}

// select/reject: `select()` keeps truthy items, `select('test', args...)` applies a test.
Value select_items(const Value& input, const CallArguments& args, bool keep, bool by_attribute) {
  const char* callee = by_attribute ? (keep ? "selectattr" : "rejectattr") : (keep ? "select" : "reject");
  CallArguments test_args = args;
  Value attribute;
  if (by_attribute) {
    if (args.positional.empty()) throw RenderError(std::string(callee) + " needs an attribute name");
    attribute = args.positional[0];
    test_args = without_first(args);
  }
  std::string test_name;
  if (!test_args.positional.empty()) {
    if (!test_args.positional[0].is_string()) throw RenderError(std::string(callee) + ": the test name must be a string");
    test_name = test_args.positional[0].as_string();
    if (!is_known_test(test_name)) throw RenderError("no test named '" + test_name + "'");
    test_args = without_first(test_args);
  }
  ValueList out;
  if (!is_truthy(input)) return Value::generator({});  // jinja2 does not iterate a false input
  if (auto failure = deferred_failure(input)) return *failure;
  for (const Value& item : iterate(input)) {
    const Value subject = by_attribute ? lookup_path(item, attribute) : item;
    const bool passed = test_name.empty() ? is_truthy(subject) : apply_test(test_name, subject, test_args);
    if (passed == keep) out.push_back(item);
  }
  return Value::generator(std::move(out));
}

Value min_or_max(const Value& input, const CallArguments& args, bool want_max) {
  BoundArguments a(args, want_max ? "max" : "min", {"case_sensitive", "attribute"});
  const bool case_sensitive = a.get_bool(0, false);
  const Value attribute = a.get_or(1, Value::none());
  const ValueList items = iterate(input);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto key = [&](const Value& v) { return comparison_key(attribute.is_none() ? v : lookup_path(v, attribute), case_sensitive); };
  const Value* best = &items[0];
  for (const Value& item : items) {
    const int c = compare_values(key(item), key(*best), "<");
    if (want_max ? c > 0 : c < 0) best = &item;
  }
  return *best;
}

// ---- filters -----------------------------------------------------------------------------------

Value filter_abs(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "abs", {});
  if (v.is_integral()) return Value(v.as_int() < 0 ? checked_mul(v.as_int(), -1) : v.as_int());
  if (v.kind() == Value::Kind::Float) return Value(std::fabs(v.as_double()));
  throw RenderError("bad operand type for abs(): '" + python_type_name(v) + "'");
}

// getattr(): methods and namespace attributes, but not dict keys (unlike `.name`).
Value filter_attr(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "attr", {"name"}, 1);
  const std::string name = a.get_string(0, "");
  if (v.kind() == Value::Kind::Dict && name != "items" && name != "keys" && name != "values" && name != "get")
    return Value::undefined("'dict object' has no attribute '" + name + "'");
  return get_attribute(v, name);
}

Value filter_capitalize(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "capitalize", {});
  return Value(python_capitalize(to_python_str(v)));
}

Value filter_center(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "center", {"width"});
  const std::string s = to_python_str(v);
  const int64_t width = a.get_int(0, 80), length = int64_t(count_code_points(s));
  if (width <= length) return Value(s);
  const int64_t margin = width - length, left = margin / 2 + (margin & width & 1);
  return Value(std::string(size_t(left), ' ') + s + std::string(size_t(margin - left), ' '));
}

Value filter_default(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "default", {"default_value", "boolean"});
  if (v.is_undefined() || (a.get_bool(1, false) && !is_truthy(v))) return a.get_or(0, Value(""));
  return v;
}

Value filter_dictsort(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "dictsort", {"case_sensitive", "by", "reverse"});
  if (v.kind() != Value::Kind::Dict) throw RenderError("dictsort needs a mapping, not " + python_type_name(v));
  const bool case_sensitive = a.get_bool(0, false), reverse = a.get_bool(2, false);
  const std::string by = a.get_string(1, "key");
  if (by != "key" && by != "value") throw RenderError("You can only sort by either 'key' or 'value'");
  const size_t position = by == "key" ? 0 : 1;
  ValueList pairs;
  for (const auto& [k, item] : v.as_dict().entries()) pairs.push_back(Value::tuple({k, item}));
  std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& x, const Value& y) {
    const int c = compare_values(comparison_key(x.as_list()[position], case_sensitive),
                                 comparison_key(y.as_list()[position], case_sensitive), "<");
    return reverse ? c > 0 : c < 0;
  });
  return Value::list(std::move(pairs));
}

Value filter_escape(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "escape", {});
  return Value(html_escape(to_python_str(v)));
}

Value filter_first(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "first", {});
  ValueList items = iterate(v);
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}

Value filter_last(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "last", {});
  if (v.is_generator()) throw RenderError("'generator' object is not reversible");
  ValueList items = iterate(v);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

Value filter_float(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "float", {"default"});
  if (v.is_number()) return Value(v.as_double());
  if (v.is_string())
    if (auto d = parse_python_float(v.as_string())) return Value(*d);
  return a.get_or(0, Value(0.0));
}

Value filter_int(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "int", {"default", "base"});
  if (v.is_integral()) return Value(v.as_int());
  if (v.kind() == Value::Kind::Float && std::isfinite(v.as_double()) && std::fabs(v.as_double()) < 9.2e18)
    return Value(int64_t(std::trunc(v.as_double())));
  if (v.is_string()) {
    if (auto i = parse_python_int(v.as_string(), int(a.get_int(1, 10)))) return Value(*i);
    if (auto d = parse_python_float(v.as_string()); d && std::isfinite(*d) && std::fabs(*d) < 9.2e18)
      return Value(int64_t(std::trunc(*d)));
  }
  return a.get_or(0, Value(0));
}

Value filter_format(const Value& v, const CallArguments& args) {
  if (!args.positional.empty() && !args.keywords.empty())
    throw RenderError("format can't handle positional and keyword arguments at the same time");
  if (!args.keywords.empty()) {
    ValueDict mapping;
    for (const auto& [k, item] : args.keywords) mapping.set(Value(k), item);
    return Value(percent_format(to_python_str(v), Value::dict(std::move(mapping))));
  }
  return Value(percent_format(to_python_str(v), Value::tuple(args.positional)));
}

Value filter_indent(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "indent", {"width", "first", "blank"});
  if (v.is_undefined()) throw RenderError(v.undefined_hint());
  if (!v.is_string()) throw RenderError("unsupported operand type(s) for +=: '" + python_type_name(v) + "' and 'str'");
  const Value width = a.get_or(0, Value(4));
  const std::string indentation = width.is_string() ? width.as_string() : std::string(size_t(std::max<int64_t>(a.get_int(0, 4), 0)), ' ');
  const std::vector<std::string> lines = python_splitlines(to_python_str(v) + "\n");
  std::string out;
  if (a.get_bool(2, false)) {
    for (size_t i = 0; i < lines.size(); ++i) out += (i ? "\n" + indentation : "") + lines[i];
  } else if (!lines.empty()) {
    out = lines[0];
    for (size_t i = 1; i < lines.size(); ++i) out += "\n" + (lines[i].empty() ? "" : indentation + lines[i]);
  }
  return Value(a.get_bool(1, false) ? indentation + out : out);
}

Value filter_items(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "items", {});
  if (v.is_undefined()) return Value::generator({});
  if (v.kind() != Value::Kind::Dict) return Value::failing_generator("Can only get item pairs from a mapping.");
  ValueList pairs;
  for (const auto& [k, item] : v.as_dict().entries()) pairs.push_back(Value::tuple({k, item}));
  return Value::generator(std::move(pairs));
}

Value filter_join(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "join", {"d", "attribute"});
  const std::string separator = to_python_str(a.get_or(0, Value("")));
  const Value attribute = a.get_or(1, Value::none());
  std::string out;
  bool first = true;
  for (const Value& item : iterate(v)) {
    out += (first ? "" : separator) + to_python_str(attribute.is_none() ? item : lookup_path(item, attribute));
    first = false;
  }
  return Value(out);
}

Value filter_length(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "length", {});
  return Value(python_len(v));
}

Value filter_list(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "list", {});
  return Value::list(iterate(v));
}

Value filter_lower(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "lower", {});
  return Value(to_lower(to_python_str(v)));
}

Value filter_upper(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "upper", {});
  return Value(to_upper(to_python_str(v)));
}

Value filter_map(const Value& v, const CallArguments& args) {
  ValueList out;
  if (!is_truthy(v)) return Value::generator({});  // jinja2 does not iterate a false input
  if (auto failure = deferred_failure(v)) return *failure;
  if (args.positional.empty()) {
    BoundArguments a(args, "map", {"attribute", "default"}, 1);
    const Value attribute = a.get_or(0, Value()), fallback = a.get_or(1, Value::none());
    for (const Value& item : iterate(v)) {
      Value found = lookup_path(item, attribute);
      out.push_back(found.is_undefined() && a.has(1) ? fallback : found);
    }
  } else {
    if (!args.positional[0].is_string()) throw RenderError("map: the filter name must be a string");
    const std::string name = args.positional[0].as_string();
    if (!is_known_filter(name)) throw RenderError("no filter named '" + name + "'");
    const CallArguments rest = without_first(args);
    for (const Value& item : iterate(v)) out.push_back(apply_filter(name, item, rest));
  }
  return Value::generator(std::move(out));
}

Value filter_max(const Value& v, const CallArguments& args) { return min_or_max(v, args, true); }
Value filter_min(const Value& v, const CallArguments& args) { return min_or_max(v, args, false); }
Value filter_select(const Value& v, const CallArguments& args) { return select_items(v, args, true, false); }
Value filter_reject(const Value& v, const CallArguments& args) { return select_items(v, args, false, false); }
Value filter_selectattr(const Value& v, const CallArguments& args) { return select_items(v, args, true, true); }
Value filter_rejectattr(const Value& v, const CallArguments& args) { return select_items(v, args, false, true); }

Value filter_replace(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "replace", {"old", "new", "count"}, 2);
  return Value(python_replace(to_python_str(v), to_python_str(a.get_or(0, Value())), to_python_str(a.get_or(1, Value())),
                              a.get_int(2, -1)));
}

Value filter_reverse(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "reverse", {});
  if (v.is_string()) {
    std::u32string cps = decode_utf8(v.as_string());
    std::reverse(cps.begin(), cps.end());
    return Value(encode_utf8(cps));
  }
  // reversed() of a list, tuple or dict; jinja2 falls back to a reversed list for other iterables.
  const bool reversible = v.is_list_or_tuple() || v.kind() == Value::Kind::Dict;
  ValueList items = iterate(v);
  std::reverse(items.begin(), items.end());
  return reversible ? Value::generator(std::move(items)) : Value::list(std::move(items));
}

Value filter_round(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "round", {"precision", "method"});
  const int64_t precision = a.get_int(0, 0);
  const std::string method = a.get_string(1, "common");
  if (method != "common" && method != "ceil" && method != "floor")
    throw RenderError("method must be common, ceil or floor");
  if (!v.is_number()) throw RenderError("type " + python_type_name(v) + " doesn't define __round__ method");
  if (method == "common") {
    if (v.is_integral() && precision >= 0) return Value(v.as_int());
    return Value(python_round(v.as_double(), precision));
  }
  const double scale = std::pow(10.0, double(precision));
  const double scaled = v.as_double() * scale;
  return Value((method == "ceil" ? std::ceil(scaled) : std::floor(scaled)) / scale);
}

Value filter_safe(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "safe", {});
  return Value(to_python_str(v));
}

Value filter_sort(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "sort", {"reverse", "case_sensitive", "attribute"});
  const bool reverse = a.get_bool(0, false), case_sensitive = a.get_bool(1, false);
  const Value attribute = a.get_or(2, Value::none());
  ValueList items = iterate(v);
  auto key = [&](const Value& item) { return comparison_key(attribute.is_none() ? item : lookup_path(item, attribute), case_sensitive); };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    const int c = compare_values(key(x), key(y), "<");
    return reverse ? c > 0 : c < 0;
  });
  return Value::list(std::move(items));
}

Value filter_string(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "string", {});
  return Value(to_python_str(v));
}

Value filter_sum(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "sum", {"attribute", "start"});
  const Value attribute = a.get_or(0, Value::none());
  Value total = a.get_or(1, Value(0));
  for (const Value& item : iterate(v)) total = add_numbers(total, attribute.is_none() ? item : lookup_path(item, attribute));
  return total;
}

// jinja2's title filter: words begin after '-', whitespace, '(', '{', '[' or '<'.
Value filter_title(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "title", {});
  std::string out;
  bool word_start = true;
  for (char32_t c : decode_utf8(to_python_str(v))) {
    const bool separator = is_python_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    append_utf8(out, separator ? c : (word_start ? to_upper(c) : to_lower(c)));
    word_start = separator;
  }
  return Value(out);
}

// transformers replaces jinja2's tojson by json.dumps(x, ensure_ascii, indent, separators, sort_keys).
Value filter_tojson(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "tojson", {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonStyle style;
  style.ensure_ascii = a.get_bool(0, false);
  style.sort_keys = a.get_bool(3, false);
  const Value indent = a.get_or(1, Value::none());
  if (indent.is_string()) {
    style.indent_text = indent.as_string();
    style.indent = 0;
  } else if (!indent.is_none()) {
    style.indent = int(std::max<int64_t>(a.get_int(1, 0), 0));
  }
  if (style.indent >= 0) style.item_separator = ",";
  const Value separators = a.get_or(2, Value::none());
  if (!separators.is_none()) {
    if (separators.kind() != Value::Kind::List || separators.as_list().size() != 2 || !separators.as_list()[0].is_string() ||
        !separators.as_list()[1].is_string())
      throw RenderError("tojson: separators must be a pair of strings");
    style.item_separator = separators.as_list()[0].as_string();
    style.key_separator = separators.as_list()[1].as_string();
  }
  return Value(to_json_text(v, style));
}

Value filter_trim(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "trim", {"chars"});
  const Value chars = a.get_or(0, Value::none());
  return Value(python_strip(to_python_str(v), StripSide::Both,
                            chars.is_none() ? std::nullopt : std::optional(to_python_str(chars))));
}

Value filter_unique(const Value& v, const CallArguments& args) {
  BoundArguments a(args, "unique", {"case_sensitive", "attribute"});
  const bool case_sensitive = a.get_bool(0, false);
  const Value attribute = a.get_or(1, Value::none());
  if (auto failure = deferred_failure(v)) return *failure;
  ValueList out, seen;
  for (const Value& item : iterate(v)) {
    Value key = comparison_key(attribute.is_none() ? item : lookup_path(item, attribute), case_sensitive);
    if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return values_equal(s, key); })) {
      seen.push_back(std::move(key));
      out.push_back(item);
    }
  }
  return Value::generator(std::move(out));
}

Value filter_unsupported(const Value&, const CallArguments&) {
  throw RenderError("this jinja2 filter is not supported by dsv2");
}

const std::map<std::string, FilterFunction, std::less<>>& filters() {
  static const std::map<std::string, FilterFunction, std::less<>> table = {
      {"abs", filter_abs},           {"attr", filter_attr},          {"capitalize", filter_capitalize},
      {"center", filter_center},     {"count", filter_length},       {"d", filter_default},
      {"default", filter_default},   {"dictsort", filter_dictsort},  {"e", filter_escape},
      {"escape", filter_escape},     {"first", filter_first},        {"float", filter_float},
      {"forceescape", filter_escape}, {"format", filter_format},     {"indent", filter_indent},
      {"int", filter_int},           {"items", filter_items},        {"join", filter_join},
      {"last", filter_last},         {"length", filter_length},      {"list", filter_list},
      {"lower", filter_lower},       {"map", filter_map},            {"max", filter_max},
      {"min", filter_min},           {"reject", filter_reject},      {"rejectattr", filter_rejectattr},
      {"replace", filter_replace},   {"reverse", filter_reverse},    {"round", filter_round},
      {"safe", filter_safe},         {"select", filter_select},      {"selectattr", filter_selectattr},
      {"sort", filter_sort},         {"string", filter_string},      {"sum", filter_sum},
      {"title", filter_title},       {"tojson", filter_tojson},      {"trim", filter_trim},
      {"unique", filter_unique},     {"upper", filter_upper},
      // Known to jinja2 (so templates mentioning them parse) but not implemented: an error when used.
      {"batch", filter_unsupported}, {"filesizeformat", filter_unsupported}, {"groupby", filter_unsupported},
      {"pprint", filter_unsupported}, {"random", filter_unsupported},      {"slice", filter_unsupported},
      {"striptags", filter_unsupported}, {"truncate", filter_unsupported}, {"urlencode", filter_unsupported},
      {"urlize", filter_unsupported}, {"wordcount", filter_unsupported},   {"wordwrap", filter_unsupported},
      {"xmlattr", filter_unsupported}};
  return table;
}

// ---- tests -------------------------------------------------------------------------------------

const Value& test_argument(const CallArguments& args, const char* test) {
  BoundArguments a(args, std::string("test '") + test + "'", {"other"}, 1);
  return args.positional.empty() ? args.keywords[0].second : args.positional[0];
}

bool no_arguments(const CallArguments& args, const char* test) {
  BoundArguments a(args, std::string("test '") + test + "'", {});
  return true;
}

const std::map<std::string, TestFunction, std::less<>>& tests() {
  using A = const CallArguments&;
  using V = const Value&;
  static const std::map<std::string, TestFunction, std::less<>> table = {
      {"defined", [](V v, A a) { return no_arguments(a, "defined") && !v.is_undefined(); }},
      {"undefined", [](V v, A a) { return no_arguments(a, "undefined") && v.is_undefined(); }},
      {"none", [](V v, A a) { return no_arguments(a, "none") && v.is_none(); }},
      {"boolean", [](V v, A a) { return no_arguments(a, "boolean") && v.kind() == Value::Kind::Bool; }},
      {"true", [](V v, A a) { return no_arguments(a, "true") && v.kind() == Value::Kind::Bool && v.as_bool(); }},
      {"false", [](V v, A a) { return no_arguments(a, "false") && v.kind() == Value::Kind::Bool && !v.as_bool(); }},
      {"integer", [](V v, A a) { return no_arguments(a, "integer") && v.kind() == Value::Kind::Int; }},
      {"float", [](V v, A a) { return no_arguments(a, "float") && v.kind() == Value::Kind::Float; }},
      {"number", [](V v, A a) { return no_arguments(a, "number") && v.is_number(); }},
      {"string", [](V v, A a) { return no_arguments(a, "string") && v.is_string(); }},
      {"mapping", [](V v, A a) { return no_arguments(a, "mapping") && v.kind() == Value::Kind::Dict; }},
      {"callable", [](V v, A a) { return no_arguments(a, "callable") && v.kind() == Value::Kind::Function; }},
      {"escaped", [](V, A a) { return !no_arguments(a, "escaped"); }},
      {"iterable", [](V v, A a) {
         return no_arguments(a, "iterable") && (v.is_undefined() || v.is_string() || v.kind() == Value::Kind::List ||
                                                v.kind() == Value::Kind::Dict);
       }},
      {"sequence", [](V v, A a) {
         return no_arguments(a, "sequence") && (v.is_undefined() || v.is_string() ||
                                                v.is_list_or_tuple() ||
                                                v.kind() == Value::Kind::Dict);
       }},
      {"lower", [](V v, A a) {
         const std::string s = to_python_str(v);
         return no_arguments(a, "lower") && to_lower(s) == s && to_upper(s) != s;
       }},
      {"upper", [](V v, A a) {
         const std::string s = to_python_str(v);
         return no_arguments(a, "upper") && to_upper(s) == s && to_lower(s) != s;
       }},
      {"odd", [](V v, A a) { return no_arguments(a, "odd") && values_equal(python_modulo(v, Value(2)), Value(1)); }},
      {"even", [](V v, A a) { return no_arguments(a, "even") && values_equal(python_modulo(v, Value(2)), Value(0)); }},
      {"divisibleby", [](V v, A a) { return values_equal(python_modulo(v, test_argument(a, "divisibleby")), Value(0)); }},
      {"sameas", [](V v, A a) {
         const Value& other = test_argument(a, "sameas");
         if (v.kind() != other.kind()) return false;
         return v.identity() ? v.identity() == other.identity() : values_equal(v, other);
       }},
      {"in", [](V v, A a) { return contains(test_argument(a, "in"), v); }},
      {"filter", [](V v, A a) { return no_arguments(a, "filter") && v.is_string() && is_known_filter(v.as_string()); }},
      {"test", [](V v, A a) { return no_arguments(a, "test") && v.is_string() && is_known_test(v.as_string()); }},
      {"eq", [](V v, A a) { return values_equal(v, test_argument(a, "eq")); }},
      {"ne", [](V v, A a) { return !values_equal(v, test_argument(a, "ne")); }},
      {"lt", [](V v, A a) { return compare_values(v, test_argument(a, "lt"), "<") < 0; }},
      {"le", [](V v, A a) { return compare_values(v, test_argument(a, "le"), "<=") <= 0; }},
      {"gt", [](V v, A a) { return compare_values(v, test_argument(a, "gt"), ">") > 0; }},
      {"ge", [](V v, A a) { return compare_values(v, test_argument(a, "ge"), ">=") >= 0; }},
  };
  return table;
}

// The aliases jinja2 registers for comparison tests.
std::string_view canonical_test_name(std::string_view name) {
  static const std::pair<std::string_view, std::string_view> kAliases[] = {
      {"==", "eq"}, {"equalto", "eq"}, {"!=", "ne"}, {"<", "lt"}, {"lessthan", "lt"}, {"<=", "le"},
      {">", "gt"},  {"greaterthan", "gt"}, {">=", "ge"}};
  for (const auto& [alias, canonical] : kAliases)
    if (alias == name) return canonical;
  return name;
}

// ---- globals -----------------------------------------------------------------------------------

Value global_range(const CallArguments& args) {
  if (!args.keywords.empty()) throw RenderError("range() takes no keyword arguments");
  BoundArguments a(args, "range", {"start", "stop", "step"}, 1);
  int64_t start = 0, stop = a.get_int(0, 0), step = 1;
  if (args.positional.size() >= 2) start = a.get_int(0, 0), stop = a.get_int(1, 0), step = a.get_int(2, 1);
  if (step == 0) throw RenderError("range() arg 3 must not be zero");
  const int64_t count = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                                 : (start > stop ? (start - stop - step - 1) / -step : 0);
  if (count > kMaxRange)
    throw RenderError("Range too big. The sandbox blocks ranges larger than MAX_RANGE (" + std::to_string(kMaxRange) + ").");
  ValueList items;
  for (int64_t i = 0; i < count; ++i) items.emplace_back(start + i * step);
  return Value::list(std::move(items));
}

// dict(mapping_or_pairs, **kwargs), as namespace() and dict() take their contents.
ValueDict dict_from_arguments(const CallArguments& args, const char* callee) {
  if (args.positional.size() > 1) throw RenderError(std::string(callee) + "() takes at most 1 positional argument");
  ValueDict out;
  if (!args.positional.empty()) {
    const Value& source = args.positional[0];
    if (source.kind() == Value::Kind::Dict) {
      out = source.as_dict();
    } else {
      for (const Value& pair : iterate(source)) {
        if (pair.kind() != Value::Kind::List || pair.as_list().size() != 2)
          throw RenderError(std::string(callee) + "(): each item must be a pair");
        out.set(pair.as_list()[0], pair.as_list()[1]);
      }
    }
  }
  for (const auto& [k, v] : args.keywords) out.set(Value(k), v);
  return out;
}

Value global_raise_exception(const CallArguments& args) {
  BoundArguments a(args, "raise_exception", {"message"}, 1);
  throw RenderError("the template raised an error: " + to_python_str(a.get_or(0, Value())));
}

Value global_strftime_now(const CallArguments& args) {
  BoundArguments a(args, "strftime_now", {"format"}, 1);
  const std::string format = a.get_string(0, "");
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::string out(256 + format.size() * 8, '\0');
  const size_t n = format.empty() ? 0 : std::strftime(out.data(), out.size(), format.c_str(), &local);
  out.resize(n);
  return Value(out);
}

}  // namespace

bool is_known_filter(std::string_view name) { return filters().count(name) > 0; }

bool is_known_test(std::string_view name) { return tests().count(canonical_test_name(name)) > 0; }

Value apply_filter(std::string_view name, const Value& input, const CallArguments& args) {
  const auto it = filters().find(name);
  if (it == filters().end()) throw RenderError("no filter named '" + std::string(name) + "'");
  if (it->second == filter_unsupported)
    throw RenderError("the jinja2 filter '" + std::string(name) + "' is not supported by dsv2");
  return it->second(input, args);
}

bool apply_test(std::string_view name, const Value& input, const CallArguments& args) {
  const auto it = tests().find(canonical_test_name(name));
  if (it == tests().end()) throw RenderError("no test named '" + std::string(name) + "'");
  return it->second(input, args);
}

ValueDict global_functions() {
  ValueDict globals;
  globals.set(Value("range"), Value::function("range", global_range));
  globals.set(Value("namespace"), Value::function("namespace", [](const CallArguments& args) {
                return Value::make_namespace(dict_from_arguments(args, "namespace"));
              }));
  globals.set(Value("dict"), Value::function("dict", [](const CallArguments& args) {
                return Value::dict(dict_from_arguments(args, "dict"));
              }));
  globals.set(Value("raise_exception"), Value::function("raise_exception", global_raise_exception));
  globals.set(Value("strftime_now"), Value::function("strftime_now", global_strftime_now));
  return globals;
}

}  // namespace dsv2::jinja
