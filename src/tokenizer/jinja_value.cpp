#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "tokenizer/jinja_unicode.h"

namespace dsv2::jinja {

void throw_template_error(int line, const std::string& message) {
  throw Error("template line " + std::to_string(line) + ": " + message);
}

namespace {

void check_depth(int depth) {
  if (depth > kMaxValueDepth)
    throw RenderError("value nested more than " + std::to_string(kMaxValueDepth) + " levels deep");
}

}  // namespace

// ---- Value -------------------------------------------------------------------------------------

Value Value::undefined(std::string hint) {
  Value v;
  v.data_ = UndefinedData{std::move(hint)};
  return v;
}

Value Value::none() {
  Value v;
  v.data_ = NoneData{};
  return v;
}

namespace {

int depth_around(int inner_depth) {
  check_depth(inner_depth + 1);
  return inner_depth + 1;
}

int dict_depth(const ValueDict& d) {
  int inner = 0;
  for (const auto& [k, v] : d.entries()) inner = std::max(inner, v.nesting_depth());
  return depth_around(inner);
}

}  // namespace

Value Value::list(ValueList items) {
  int inner = 0;
  for (const Value& item : items) inner = std::max(inner, item.nesting_depth());
  Value v;
  v.data_ = ListData{std::make_shared<const ValueList>(std::move(items)), depth_around(inner), Sequence::List, nullptr};
  return v;
}

Value Value::sequence_of(Sequence sequence, ValueList items) {
  Value v = list(std::move(items));
  std::get<ListData>(v.data_).sequence = sequence;
  return v;
}

Value Value::failing_generator(std::string error) {
  Value v = generator({});
  std::get<ListData>(v.data_).iteration_error = std::make_shared<const std::string>(std::move(error));
  return v;
}

const std::string* Value::iteration_error() const {
  if (kind() != Kind::List) return nullptr;
  return std::get<ListData>(data_).iteration_error.get();
}

Value Value::dict(ValueDict entries) {
  const int depth = dict_depth(entries);
  Value v;
  v.data_ = DictData{std::make_shared<const ValueDict>(std::move(entries)), depth};
  return v;
}

Value Value::make_namespace(ValueDict attributes) {
  const int depth = dict_depth(attributes);
  Value v;
  v.data_ = std::make_shared<NamespaceObject>(NamespaceObject{std::move(attributes), depth});
  return v;
}

const ValueDict& Value::namespace_attributes() const { return std::get<NamespacePtr>(data_)->attributes; }

void Value::set_namespace_attribute(std::string name, Value value) const {
  NamespaceObject& ns = *std::get<NamespacePtr>(data_);
  ns.depth = std::max(ns.depth, depth_around(value.nesting_depth()));
  ns.attributes.set(Value(std::move(name)), std::move(value));
}

int Value::nesting_depth() const {
  switch (kind()) {
    case Kind::List: return std::get<ListData>(data_).depth;
    case Kind::Dict: return std::get<DictData>(data_).depth;
    case Kind::Namespace: return std::get<NamespacePtr>(data_)->depth;
    default: return 0;
  }
}

Value Value::function(std::string name, std::function<Value(const CallArguments&)> call) {
  Value v;
  v.data_ = std::make_shared<const Function>(Function{std::move(name), std::move(call)});
  return v;
}

int64_t Value::as_int() const { return kind() == Kind::Bool ? int64_t(as_bool()) : std::get<int64_t>(data_); }

double Value::as_double() const { return kind() == Kind::Float ? std::get<double>(data_) : double(as_int()); }

const void* Value::identity() const {
  if (kind() == Kind::Namespace) return std::get<NamespacePtr>(data_).get();
  if (kind() == Kind::Function) return std::get<FunctionPtr>(data_).get();
  if (kind() == Kind::List) return std::get<ListData>(data_).items.get();
  if (kind() == Kind::Dict) return std::get<DictData>(data_).entries.get();
  return nullptr;
}

// ---- ValueDict ---------------------------------------------------------------------------------

const Value* ValueDict::find(std::string_view key) const {
  for (const auto& [k, v] : entries_)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

const Value* ValueDict::find(const Value& key) const {
  if (key.is_string()) return find(std::string_view(key.as_string()));
  for (const auto& [k, v] : entries_)
    if (values_equal(k, key)) return &v;
  return nullptr;
}

void ValueDict::set(Value key, Value value) {
  for (auto& [k, v] : entries_) {
    if (values_equal(k, key)) {
      v = std::move(value);
      return;
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
}

// ---- Python semantics --------------------------------------------------------------------------

bool is_truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return false;
    case Value::Kind::Bool: return v.as_bool();
    case Value::Kind::Int: return v.as_int() != 0;
    case Value::Kind::Float: return v.as_double() != 0.0;
    case Value::Kind::String: return !v.as_string().empty();
    case Value::Kind::List: return v.is_generator() || !v.as_list().empty();  // generators are always true
    case Value::Kind::Dict: return !v.as_dict().empty();
    case Value::Kind::Namespace:
    case Value::Kind::Function: return true;
  }
  return false;
}

std::string python_type_name(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::None: return "NoneType";
    case Value::Kind::Bool: return "bool";
    case Value::Kind::Int: return "int";
    case Value::Kind::Float: return "float";
    case Value::Kind::String: return "str";
    case Value::Kind::List:
      switch (v.sequence()) {
        case Value::Sequence::List: return "list";
        case Value::Sequence::Tuple: return "tuple";
        case Value::Sequence::Generator: return "generator";
        case Value::Sequence::DictKeys: return "dict_keys";
        case Value::Sequence::DictValues: return "dict_values";
        case Value::Sequence::DictItems: return "dict_items";
      }
      return "list";
    case Value::Kind::Dict: return "dict";
    case Value::Kind::Namespace: return "Namespace";
    case Value::Kind::Function: return "function";
  }
  return "object";
}

std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0.0) return std::signbit(d) ? "-0.0" : "0.0";
  // Shortest round-trip digits, then Python's layout: fixed notation for 1e-4 <= |d| < 1e16.
  char buf[64];
  auto result = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, result.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, 1) + (e > 1 ? sci.substr(2, e - 2) : "");
  const int exponent = std::stoi(sci.substr(e + 1));
  const int decimal_point = exponent + 1;  // digits d1d2d3... mean 0.d1d2d3 x 10^decimal_point
  const int n = int(digits.size());
  if (decimal_point > -4 && decimal_point <= 16) {
    if (decimal_point <= 0) return sign + "0." + std::string(size_t(-decimal_point), '0') + digits;
    if (decimal_point >= n) return sign + digits + std::string(size_t(decimal_point - n), '0') + ".0";
    return sign + digits.substr(0, size_t(decimal_point)) + "." + digits.substr(size_t(decimal_point));
  }
  std::string mantissa = digits.substr(0, 1) + (n > 1 ? "." + digits.substr(1) : "");
  char exp_text[16];
  std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return sign + mantissa + exp_text;
}

std::string python_string_repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t c : decode_utf8(s)) {
    if (c == char32_t(quote) || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (!is_printable(c)) {
      char buf[16];
      if (c < 0x100) std::snprintf(buf, sizeof buf, "\\x%02x", unsigned(c));
      else if (c < 0x10000) std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
      else std::snprintf(buf, sizeof buf, "\\U%08x", unsigned(c));
      out += buf;
    } else {
      append_utf8(out, c);
    }
  }
  out += quote;
  return out;
}

namespace {

std::string repr_at_depth(const Value& v, int depth);

std::string str_at_depth(const Value& v, int depth) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return "";
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return v.as_bool() ? "True" : "False";
    case Value::Kind::Int: return std::to_string(v.as_int());
    case Value::Kind::Float: return python_float_repr(v.as_double());
    case Value::Kind::String: return v.as_string();
    case Value::Kind::Namespace: {
      std::string out = "<Namespace {";
      bool first = true;
      for (const auto& [k, item] : v.namespace_attributes().entries()) {
        out += (first ? "" : ", ") + repr_at_depth(k, depth + 1) + ": " + repr_at_depth(item, depth + 1);
        first = false;
      }
      return out + "}>";
    }
    case Value::Kind::Function: return "<function " + v.as_function().name + ">";
    case Value::Kind::List:
    case Value::Kind::Dict: return repr_at_depth(v, depth);
  }
  return "";
}

std::string repr_at_depth(const Value& v, int depth) {
  check_depth(depth);
  switch (v.kind()) {
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::String: return python_string_repr(v.as_string());
    case Value::Kind::List: {
      if (v.is_generator()) return "<generator object>";
      std::string out = v.is_tuple() ? "(" : "[";
      bool first = true;
      for (const Value& item : v.as_list()) {
        out += (first ? "" : ", ") + repr_at_depth(item, depth + 1);
        first = false;
      }
      if (v.is_tuple() && v.as_list().size() == 1) out += ",";
      out += v.is_tuple() ? ")" : "]";
      return v.is_list_or_tuple() ? out : python_type_name(v) + "(" + out + ")";  // dict_keys([...])
    }
    case Value::Kind::Dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, item] : v.as_dict().entries()) {
        out += (first ? "" : ", ") + repr_at_depth(k, depth + 1) + ": " + repr_at_depth(item, depth + 1);
        first = false;
      }
      return out + "}";
    }
    default: return str_at_depth(v, depth);
  }
}

bool equal_at_depth(const Value& a, const Value& b, int depth) {
  check_depth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::Undefined:
    case Value::Kind::None: return true;
    case Value::Kind::String: return a.as_string() == b.as_string();
    case Value::Kind::List: {
      const ValueList &x = a.as_list(), &y = b.as_list();
      if (!a.is_list_or_tuple() || !b.is_list_or_tuple()) return a.identity() == b.identity();
      if (x.size() != y.size() || a.sequence() != b.sequence()) return false;
      for (size_t i = 0; i < x.size(); ++i)
        if (!equal_at_depth(x[i], y[i], depth + 1)) return false;
      return true;
    }
    case Value::Kind::Dict: {
      const ValueDict &x = a.as_dict(), &y = b.as_dict();
      if (x.size() != y.size()) return false;
      for (const auto& [k, item] : x.entries()) {
        const Value* other = y.find(k);
        if (!other || !equal_at_depth(item, *other, depth + 1)) return false;
      }
      return true;
    }
    default: return a.identity() == b.identity();
  }
}

[[noreturn]] void throw_unorderable(const Value& a, const Value& b, std::string_view op) {
  if (a.is_undefined()) throw RenderError(a.undefined_hint());
  if (b.is_undefined()) throw RenderError(b.undefined_hint());
  throw RenderError("'" + std::string(op) + "' not supported between instances of '" + python_type_name(a) +
                    "' and '" + python_type_name(b) + "'");
}

int compare_at_depth(const Value& a, const Value& b, std::string_view op, int depth) {
  check_depth(depth);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int();
    const double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : x > y;
  }
  if (a.is_string() && b.is_string()) return a.as_string().compare(b.as_string()) < 0 ? -1 : a.as_string() != b.as_string();
  if (a.is_list_or_tuple() && b.is_list_or_tuple() && a.sequence() == b.sequence()) {
    const ValueList &x = a.as_list(), &y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (!equal_at_depth(x[i], y[i], depth + 1)) return compare_at_depth(x[i], y[i], op, depth + 1);
    return x.size() < y.size() ? -1 : x.size() > y.size();
  }
  throw_unorderable(a, b, op);
}

void append_json_string(std::string& out, std::string_view s, bool ensure_ascii) {
  out += '"';
  for (char32_t c : decode_utf8(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default: {
        char buf[16];
        if (c < 0x20 || (ensure_ascii && c >= 0x7F && c < 0x10000)) {
          std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(c));
          out += buf;
        } else if (ensure_ascii && c >= 0x10000) {
          const char32_t v = c - 0x10000;
          std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", unsigned(0xD800 + (v >> 10)), unsigned(0xDC00 + (v & 0x3FF)));
          out += buf;
        } else {
          append_utf8(out, c);
        }
      }
    }
  }
  out += '"';
}

std::string json_float(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  return python_float_repr(d);
}

// The text json.dumps writes for a dict key (keys become strings).
std::string json_key_text(const Value& key) {
  switch (key.kind()) {
    case Value::Kind::String: return key.as_string();
    case Value::Kind::Bool: return key.as_bool() ? "true" : "false";
    case Value::Kind::None: return "null";
    case Value::Kind::Int: return std::to_string(key.as_int());
    case Value::Kind::Float: return json_float(key.as_double());
    default: throw RenderError("keys must be str, int, float, bool or None, not " + python_type_name(key));
  }
}

void append_json(std::string& out, const Value& v, const JsonStyle& style, int depth) {
  check_depth(depth);
  const bool indenting = style.indent >= 0 || !style.indent_text.empty();
  const std::string unit = style.indent_text.empty() ? std::string(size_t(std::max(style.indent, 0)), ' ') : style.indent_text;
  auto newline = [&](int level) {
    if (!indenting) return;
    out += '\n';
    for (int i = 0; i < level; ++i) out += unit;
  };
  switch (v.kind()) {
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.as_int()); return;
    case Value::Kind::Float: out += json_float(v.as_double()); return;
    case Value::Kind::String: append_json_string(out, v.as_string(), style.ensure_ascii); return;
    case Value::Kind::List: {
      if (!v.is_list_or_tuple()) break;
      const ValueList& items = v.as_list();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += style.item_separator;
        newline(depth + 1);
        append_json(out, items[i], style, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::Dict: {
      const ValueDict& dict = v.as_dict();
      if (dict.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Value, Value>*> entries;
      for (const auto& entry : dict.entries()) entries.push_back(&entry);
      if (style.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](auto* x, auto* y) { return compare_values(x->first, y->first, "<") < 0; });
      out += '{';
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out += style.item_separator;
        newline(depth + 1);
        append_json_string(out, json_key_text(entries[i]->first), style.ensure_ascii);
        out += style.key_separator;
        append_json(out, entries[i]->second, style, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default: break;
  }
  throw RenderError("Object of type " + python_type_name(v) + " is not JSON serializable");
}

Value from_json_at_depth(const nlohmann::ordered_json& j, int depth) {
  if (depth > kMaxValueDepth)
    throw Error("JSON nested more than " + std::to_string(kMaxValueDepth) + " levels deep");
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      return u <= uint64_t(INT64_MAX) ? Value(int64_t(u)) : Value(double(u));
    }
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList items;
      items.reserve(j.size());
      for (const auto& item : j) items.push_back(from_json_at_depth(item, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict dict;
      for (const auto& [k, item] : j.items()) dict.set(Value(k), from_json_at_depth(item, depth + 1));
      return Value::dict(std::move(dict));
    }
    default: throw Error("unsupported JSON value (binary or discarded)");
  }
}

}  // namespace

std::string to_python_str(const Value& v) { return str_at_depth(v, 0); }
std::string to_python_repr(const Value& v) { return repr_at_depth(v, 0); }
bool values_equal(const Value& a, const Value& b) { return equal_at_depth(a, b, 0); }
int compare_values(const Value& a, const Value& b, std::string_view op) { return compare_at_depth(a, b, op, 0); }

int64_t checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) throw RenderError("integer overflow (beyond 64 bits)");
  return r;
}

int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw RenderError("integer overflow (beyond 64 bits)");
  return r;
}

Value value_from_json(const nlohmann::ordered_json& j) { return from_json_at_depth(j, 0); }

std::string to_json_text(const Value& v, const JsonStyle& style) {
  std::string out;
  append_json(out, v, style, 0);
  return out;
}

}  // namespace dsv2::jinja
