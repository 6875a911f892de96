// Access rules, iteration, string formatting and the str/dict/list methods (jinja_builtins.h).
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_unicode.h"

namespace dsv2::jinja {

namespace {

// How jinja2 names an object in "has no attribute" messages.
std::string object_description(const Value& v) {
  return v.is_none() ? "None" : python_type_name(v) + " object";
}

Value missing_attribute(const Value& object, std::string_view name) {
  return Value::undefined("'" + object_description(object) + "' has no attribute '" + std::string(name) + "'");
}

Value missing_element(const Value& object, const Value& key) {
  return Value::undefined(object_description(object) + " has no element " + to_python_repr(key));
}

// A mutating method: like jinja2's sandbox, an undefined value that fails when used.
Value unsafe_attribute(const Value& object, std::string_view name) {
  return Value::undefined("access to attribute '" + std::string(name) + "' of '" + python_type_name(object) +
                    "' object is unsafe (templates render in an immutable sandbox, as in transformers)");
}

const std::string& require_string(const Value& v, const std::string& what) {
  if (!v.is_string()) throw RenderError(what + " must be a string, not " + python_type_name(v));
  return v.as_string();
}

// Python's index normalisation for one index: negative counts from the end.
bool normalize_index(int64_t& index, int64_t size) {
  if (index < 0) index += size;
  return index >= 0 && index < size;
}

std::vector<std::string> split_on_whitespace(const std::string& s, int64_t max_split, bool from_right) {
  std::u32string cps = decode_utf8(s);
  std::vector<std::u32string> parts;
  if (!from_right) {
    size_t i = 0;
    while (true) {
      while (i < cps.size() && is_python_space(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (max_split >= 0 && int64_t(parts.size()) == max_split) {
        parts.push_back(cps.substr(i));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !is_python_space(cps[j])) ++j;
      parts.push_back(cps.substr(i, j - i));
      i = j;
    }
  } else {
    size_t end = cps.size();
    while (true) {
      while (end > 0 && is_python_space(cps[end - 1])) --end;
      if (end == 0) break;
      if (max_split >= 0 && int64_t(parts.size()) == max_split) {
        parts.push_back(cps.substr(0, end));
        break;
      }
      size_t start = end;
      while (start > 0 && !is_python_space(cps[start - 1])) --start;
      parts.push_back(cps.substr(start, end - start));
      end = start;
    }
    std::reverse(parts.begin(), parts.end());
  }
  std::vector<std::string> out;
  for (const auto& p : parts) out.push_back(encode_utf8(p));
  return out;
}

std::vector<std::string> split_on_separator(const std::string& s, const std::string& sep, int64_t max_split,
                                            bool from_right) {
  if (sep.empty()) throw RenderError("empty separator");
  std::vector<std::string> parts;
  if (!from_right) {
    size_t start = 0;
    for (size_t hit = s.find(sep); hit != std::string::npos && (max_split < 0 || int64_t(parts.size()) < max_split);
         hit = s.find(sep, start)) {
      parts.push_back(s.substr(start, hit - start));
      start = hit + sep.size();
    }
    parts.push_back(s.substr(start));
  } else {
    size_t end = s.size();
    while (max_split < 0 || int64_t(parts.size()) < max_split) {
      if (end < sep.size()) break;
      const size_t hit = s.rfind(sep, end - sep.size());
      if (hit == std::string::npos) break;
      parts.push_back(s.substr(hit + sep.size(), end - hit - sep.size()));
      end = hit;
    }
    parts.push_back(s.substr(0, end));
    std::reverse(parts.begin(), parts.end());
  }
  return parts;
}

Value string_list(const std::vector<std::string>& items) {
  ValueList out;
  for (const auto& s : items) out.emplace_back(s);
  return Value::list(std::move(out));
}

std::string python_title(const std::string& s) {
  std::string out;
  bool previous_cased = false;
  for (char32_t c : decode_utf8(s)) {
    const bool cased = is_cased(c);
    append_utf8(out, cased ? (previous_cased ? to_lower(c) : to_upper(c)) : c);
    previous_cased = cased;
  }
  return out;
}

// str.find / str.rfind in code points; -1 when absent.
int64_t python_find(const std::string& s, const std::string& sub, bool from_right) {
  const size_t hit = from_right ? s.rfind(sub) : s.find(sub);
  return hit == std::string::npos ? -1 : int64_t(count_code_points(std::string_view(s).substr(0, hit)));
}

bool matches_affix(const std::string& s, const Value& affixes, bool prefix) {
  auto test = [&](const Value& a) {
    const std::string& t = require_string(a, prefix ? "startswith() argument" : "endswith() argument");
    return t.size() <= s.size() && (prefix ? s.compare(0, t.size(), t) == 0 : s.compare(s.size() - t.size(), t.size(), t) == 0);
  };
  if (affixes.is_tuple()) return std::any_of(affixes.as_list().begin(), affixes.as_list().end(), test);
  return test(affixes);
}

std::string python_str_format(const std::string& format, const CallArguments& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < format.size(); ++i) {
    const char c = format[i];
    if (c == '}') {
      if (i + 1 < format.size() && format[i + 1] == '}') ++i;
      else throw RenderError("single '}' encountered in format string");
      out += '}';
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < format.size() && format[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const size_t close = format.find('}', i);
    if (close == std::string::npos) throw RenderError("single '{' encountered in format string");
    std::string field = format.substr(i + 1, close - i - 1);
    i = close;
    bool use_repr = false;
    if (field.size() >= 2 && field[field.size() - 2] == '!') {
      use_repr = field.back() == 'r';
      field.resize(field.size() - 2);
    }
    if (field.find(':') != std::string::npos) throw RenderError("format specs in str.format() are not supported");
    const Value* value = nullptr;
    if (field.empty() || std::all_of(field.begin(), field.end(), ::isdigit)) {
      const size_t index = field.empty() ? auto_index++ : size_t(std::stoul(field));
      if (index >= args.positional.size()) throw RenderError("Replacement index " + std::to_string(index) + " out of range");
      value = &args.positional[index];
    } else {
      for (const auto& [name, v] : args.keywords)
        if (name == field) value = &v;
      if (!value) throw RenderError("format() has no argument named '" + field + "'");
    }
    out += use_repr ? to_python_repr(*value) : to_python_str(*value);
  }
  return out;
}

Value string_method(const std::string& s, std::string_view name, const CallArguments& args) {
  const std::string callee = "str." + std::string(name) + "()";
  auto strip = [&](StripSide side) {
    BoundArguments a(args, callee, {"chars"});
    const Value chars = a.get_or(0, Value::none());
    return Value(python_strip(s, side, chars.is_none() ? std::nullopt : std::optional(require_string(chars, "chars"))));
  };
  auto split = [&](bool from_right) {
    BoundArguments a(args, callee, {"sep", "maxsplit"});
    const Value sep = a.get_or(0, Value::none());
    const int64_t max_split = a.get_int(1, -1);
    return string_list(sep.is_none() ? split_on_whitespace(s, max_split, from_right)
                                     : split_on_separator(s, require_string(sep, "sep"), max_split, from_right));
  };
  auto predicate = [&](auto test) {
    BoundArguments a(args, callee, {});
    std::u32string cps = decode_utf8(s);
    return Value(!cps.empty() && std::all_of(cps.begin(), cps.end(), test));
  };
  if (name == "strip") return strip(StripSide::Both);
  if (name == "lstrip") return strip(StripSide::Left);
  if (name == "rstrip") return strip(StripSide::Right);
  if (name == "split") return split(false);
  if (name == "rsplit") return split(true);
  if (name == "startswith" || name == "endswith") {
    BoundArguments a(args, callee, {"prefix"}, 1);
    return Value(matches_affix(s, a.get_or(0, Value()), name == "startswith"));
  }
  if (name == "replace") {
    BoundArguments a(args, callee, {"old", "new", "count"}, 2);
    return Value(python_replace(s, a.get_string(0, ""), a.get_string(1, ""), a.get_int(2, -1)));
  }
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex") {
    BoundArguments a(args, callee, {"sub"}, 1);
    const int64_t at = python_find(s, a.get_string(0, ""), name[0] == 'r');
    if (at < 0 && (name == "index" || name == "rindex")) throw RenderError("substring not found");
    return Value(at);
  }
  if (name == "count") {
    BoundArguments a(args, callee, {"sub"}, 1);
    const std::string sub = a.get_string(0, "");
    if (sub.empty()) return Value(int64_t(count_code_points(s) + 1));
    int64_t n = 0;
    for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
    return Value(n);
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    BoundArguments a(args, callee, {});
    if (name == "upper") return Value(to_upper(s));
    if (name == "lower") return Value(to_lower(s));
    return Value(name == "title" ? python_title(s) : python_capitalize(s));
  }
  if (name == "join") {
    BoundArguments a(args, callee, {"iterable"}, 1);
    std::string out;
    const ValueList items = iterate(a.get_or(0, Value()));
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string())
        throw RenderError("sequence item " + std::to_string(i) + ": expected str instance, " +
                          python_type_name(items[i]) + " found");
      out += (i ? s : "") + items[i].as_string();
    }
    return Value(out);
  }
  if (name == "splitlines") {
    BoundArguments a(args, callee, {});
    return string_list(python_splitlines(s));
  }
  if (name == "format") return Value(python_str_format(s, args));
  if (name == "isdigit" || name == "isdecimal" || name == "isnumeric") return predicate(is_decimal_digit);
  if (name == "isalpha") return predicate(static_cast<bool (*)(char32_t)>(is_alpha));
  if (name == "isalnum") return predicate([](char32_t c) { return is_alpha(c) || is_decimal_digit(c); });
  if (name == "isspace") return predicate(is_python_space);
  if (name == "isupper" || name == "islower") {
    BoundArguments a(args, callee, {});
    std::u32string cps = decode_utf8(s);
    const bool upper = name == "isupper";
    bool any_cased = false;
    for (char32_t c : cps) {
      if (!is_cased(c)) continue;
      any_cased = true;
      if (upper ? is_lower(c) && !is_upper(c) : is_upper(c) && !is_lower(c)) return Value(false);
    }
    return Value(any_cased);
  }
  throw RenderError("str has no method '" + std::string(name) + "'");
}

bool is_string_method(std::string_view name) {
  static const char* const kNames[] = {"strip",  "lstrip",  "rstrip",  "split",      "rsplit",  "startswith",
                                       "endswith", "replace", "find",   "rfind",      "index",   "rindex",
                                       "count",  "upper",   "lower",   "title",      "capitalize", "join",
                                       "splitlines", "format", "isdigit", "isdecimal", "isnumeric", "isalpha",
                                       "isalnum", "isspace", "isupper", "islower"};
  return std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

Value dict_method(const Value& dict, std::string_view name, const CallArguments& args) {
  const std::string callee = "dict." + std::string(name) + "()";
  if (name == "get") {
    BoundArguments a(args, callee, {"key", "default"}, 1);
    const Value* found = dict.as_dict().find(a.get_or(0, Value()));
    return found ? *found : a.get_or(1, Value::none());
  }
  BoundArguments a(args, callee, {});
  ValueList out;
  for (const auto& [k, v] : dict.as_dict().entries()) {
    if (name == "items") out.push_back(Value::tuple({k, v}));
    else out.push_back(name == "keys" ? k : v);
  }
  const Value::Sequence view = name == "items"  ? Value::Sequence::DictItems
                               : name == "keys" ? Value::Sequence::DictKeys
                                                : Value::Sequence::DictValues;
  return Value::sequence_of(view, std::move(out));
}

Value list_method(const Value& list, std::string_view name, const CallArguments& args) {
  BoundArguments a(args, "list." + std::string(name) + "()", {"value"}, 1);
  const Value item = a.get_or(0, Value());
  const ValueList& items = list.as_list();
  if (name == "count") return Value(int64_t(std::count_if(items.begin(), items.end(), [&](const Value& v) { return values_equal(v, item); })));
  for (size_t i = 0; i < items.size(); ++i)
    if (values_equal(items[i], item)) return Value(int64_t(i));
  throw RenderError(to_python_repr(item) + " is not in list");
}

// The method `name` of `object` bound to it, or nullopt when it has none.
std::optional<Value> bound_method(const Value& object, std::string_view name) {
  static const char* const kUnsafeList[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"};
  static const char* const kUnsafeDict[] = {"update", "pop", "popitem", "setdefault", "clear"};
  const std::string method(name);
  switch (object.kind()) {
    case Value::Kind::String:
      if (!is_string_method(name)) return std::nullopt;
      return Value::function("str." + method, [object, method](const CallArguments& a) {
        return string_method(object.as_string(), method, a);
      });
    case Value::Kind::Dict:
      if (std::find(std::begin(kUnsafeDict), std::end(kUnsafeDict), name) != std::end(kUnsafeDict))
        return unsafe_attribute(object, name);
      if (name != "items" && name != "keys" && name != "values" && name != "get") return std::nullopt;
      return Value::function("dict." + method, [object, method](const CallArguments& a) { return dict_method(object, method, a); });
    case Value::Kind::List:
      if (object.sequence() == Value::Sequence::List &&
          std::find(std::begin(kUnsafeList), std::end(kUnsafeList), name) != std::end(kUnsafeList))
        return unsafe_attribute(object, name);
      if (!object.is_list_or_tuple() || (name != "count" && name != "index")) return std::nullopt;
      return Value::function("list." + method, [object, method](const CallArguments& a) { return list_method(object, method, a); });
    default: return std::nullopt;
  }
}

std::string format_one(char conversion, const std::string& flags, int width, int precision, const Value& v) {
  std::string body;
  if (conversion == 's' || conversion == 'r') {
    body = conversion == 's' ? to_python_str(v) : to_python_repr(v);
    if (precision >= 0) body = encode_utf8(decode_utf8(body).substr(0, size_t(precision)));
  } else {
    if (!v.is_number()) throw RenderError(std::string("%") + conversion + " format: a real number is required, not " + python_type_name(v));
    std::string spec = "%" + flags;
    if (precision >= 0) spec += "." + std::to_string(precision);
    char buf[512];
    if (conversion == 'd' || conversion == 'i' || conversion == 'x' || conversion == 'X' || conversion == 'o') {
      const double d = v.as_double();
      const long long n = v.is_integral() ? (long long)v.as_int() : (long long)std::trunc(d);
      std::snprintf(buf, sizeof buf, (spec + "ll" + (conversion == 'i' ? 'd' : conversion)).c_str(), n);
    } else {
      std::snprintf(buf, sizeof buf, (spec + conversion).c_str(), v.as_double());
    }
    body = buf;
  }
  const int pad = width - int(count_code_points(body));
  if (pad > 0) {
    if (flags.find('-') != std::string::npos) body += std::string(size_t(pad), ' ');
    else if (flags.find('0') != std::string::npos && conversion != 's' && conversion != 'r') {
      const size_t sign = (!body.empty() && (body[0] == '-' || body[0] == '+' || body[0] == ' ')) ? 1 : 0;
      body.insert(sign, std::string(size_t(pad), '0'));
    } else body.insert(0, std::string(size_t(pad), ' '));
  }
  return body;
}

}  // namespace

// ---- BoundArguments ----------------------------------------------------------------------------

BoundArguments::BoundArguments(const CallArguments& args, std::string callee, std::vector<std::string_view> parameters,
                               size_t required)
    : callee_(std::move(callee)), names_(std::move(parameters)), values_(names_.size()) {
  if (args.positional.size() > names_.size())
    throw RenderError(callee_ + " takes at most " + std::to_string(names_.size()) + " argument(s) (" +
                      std::to_string(args.positional.size()) + " given)");
  for (size_t i = 0; i < args.positional.size(); ++i) values_[i] = args.positional[i];
  for (const auto& [name, value] : args.keywords) {
    const auto it = std::find(names_.begin(), names_.end(), name);
    if (it == names_.end()) throw RenderError(callee_ + " got an unexpected keyword argument '" + name + "'");
    auto& slot = values_[size_t(it - names_.begin())];
    if (slot) throw RenderError(callee_ + " got multiple values for argument '" + name + "'");
    slot = value;
  }
  for (size_t i = 0; i < required; ++i)
    if (!values_[i]) throw RenderError(callee_ + " missing required argument '" + std::string(names_[i]) + "'");
}

std::string BoundArguments::get_string(size_t i, std::string fallback) const {
  if (!values_[i]) return fallback;
  if (!values_[i]->is_string())
    throw RenderError(callee_ + ": argument '" + std::string(names_[i]) + "' must be a string, not " + python_type_name(*values_[i]));
  return values_[i]->as_string();
}

int64_t BoundArguments::get_int(size_t i, int64_t fallback) const {
  if (!values_[i] || values_[i]->is_none()) return fallback;
  if (!values_[i]->is_integral())
    throw RenderError(callee_ + ": argument '" + std::string(names_[i]) + "' must be an integer, not " + python_type_name(*values_[i]));
  return values_[i]->as_int();
}

bool BoundArguments::get_bool(size_t i, bool fallback) const { return values_[i] ? is_truthy(*values_[i]) : fallback; }

// ---- access ------------------------------------------------------------------------------------

Value get_attribute(const Value& object, std::string_view name) {
  if (object.is_undefined()) throw RenderError(object.undefined_hint());
  if (auto method = bound_method(object, name)) return *method;
  if (object.kind() == Value::Kind::Dict) {
    if (const Value* v = object.as_dict().find(name)) return *v;
  } else if (object.kind() == Value::Kind::Namespace) {
    if (const Value* v = object.namespace_attributes().find(name)) return *v;
  }
  return missing_attribute(object, name);
}

Value get_item(const Value& object, const Value& key) {
  if (object.is_undefined()) throw RenderError(object.undefined_hint());
  if (object.kind() == Value::Kind::Dict) {
    if (const Value* v = object.as_dict().find(key)) return *v;
  } else if ((object.is_list_or_tuple() || object.is_string()) && key.is_integral()) {
    int64_t index = key.as_int();
    if (object.is_string()) {
      std::u32string cps = decode_utf8(object.as_string());
      if (normalize_index(index, int64_t(cps.size()))) return Value(encode_utf8(cps.substr(size_t(index), 1)));
    } else if (normalize_index(index, int64_t(object.as_list().size()))) {
      return object.as_list()[size_t(index)];
    }
    return missing_element(object, key);
  }
  if (key.is_string()) return get_attribute(object, key.as_string());
  return missing_element(object, key);
}

Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step) {
  if (object.is_undefined()) throw RenderError(object.undefined_hint());
  auto as_bound = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_undefined() || v.is_none()) return std::nullopt;
    if (!v.is_integral()) throw RenderError(std::string("slice ") + what + " must be an integer or None");
    return v.as_int();
  };
  const int64_t s = as_bound(step, "step").value_or(1);
  if (s == 0) throw RenderError("slice step cannot be zero");
  const bool is_string = object.is_string();
  // jinja2 slices with Python's obj[a:b:c] directly (not through getitem): anything else is an error.
  if (object.kind() == Value::Kind::Dict) throw RenderError("unhashable type: 'slice'");
  if (!is_string && !object.is_list_or_tuple())
    throw RenderError("'" + python_type_name(object) + "' object is not subscriptable");
  std::u32string cps;
  if (is_string) cps = decode_utf8(object.as_string());
  const int64_t n = is_string ? int64_t(cps.size()) : int64_t(object.as_list().size());
  // Python's PySlice_AdjustIndices.
  auto adjust = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v) return fallback;
    int64_t i = *v;
    if (i < 0) i = std::max<int64_t>(i + n, s < 0 ? -1 : 0);
    else i = std::min<int64_t>(i, s < 0 ? n - 1 : n);
    return i;
  };
  const int64_t begin = adjust(as_bound(start, "start"), s < 0 ? n - 1 : 0);
  const int64_t end = adjust(as_bound(stop, "stop"), s < 0 ? -1 : n);
  ValueList items;
  std::u32string chars;
  for (int64_t i = begin; s > 0 ? i < end : i > end; i += s) {
    if (is_string) chars.push_back(cps[size_t(i)]);
    else items.push_back(object.as_list()[size_t(i)]);
  }
  if (is_string) return Value(encode_utf8(chars));
  return object.is_tuple() ? Value::tuple(std::move(items)) : Value::list(std::move(items));
}

ValueList iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::List:
      if (const std::string* error = v.iteration_error()) throw RenderError(*error);
      return v.as_list();
    case Value::Kind::Dict: {
      ValueList keys;
      for (const auto& entry : v.as_dict().entries()) keys.push_back(entry.first);
      return keys;
    }
    case Value::Kind::String: {
      ValueList chars;
      for (char32_t c : decode_utf8(v.as_string())) {
        std::string s;
        append_utf8(s, c);
        chars.emplace_back(std::move(s));
      }
      return chars;
    }
    default: throw RenderError("'" + python_type_name(v) + "' object is not iterable");
  }
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::Undefined: return false;
    case Value::Kind::String:
      if (!item.is_string()) throw RenderError("'in <string>' requires string as left operand, not " + python_type_name(item));
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Value::Kind::List: {
      const ValueList items = iterate(container);
      return std::any_of(items.begin(), items.end(), [&](const Value& v) { return values_equal(v, item); });
    }
    case Value::Kind::Dict:
      if (item.kind() == Value::Kind::List && item.sequence() == Value::Sequence::List)
        throw RenderError("unhashable type: 'list'");
      if (item.kind() == Value::Kind::Dict) throw RenderError("unhashable type: 'dict'");
      return container.as_dict().find(item) != nullptr;
    default: throw RenderError("argument of type '" + python_type_name(container) + "' is not iterable");
  }
}

int64_t python_len(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::Undefined: return 0;
    case Value::Kind::String: return int64_t(count_code_points(v.as_string()));
    case Value::Kind::List:
      if (v.is_generator()) break;
      return int64_t(v.as_list().size());
    case Value::Kind::Dict: return int64_t(v.as_dict().size());
    default: break;
  }
  throw RenderError("object of type '" + python_type_name(v) + "' has no len()");
}

Value python_modulo(const Value& a, const Value& b) {
  if (a.is_undefined()) throw RenderError(a.undefined_hint());
  if (a.is_string()) return Value(percent_format(a.as_string(), b));
  if (b.is_undefined()) throw RenderError(b.undefined_hint());
  if (a.is_integral() && b.is_integral()) {
    const int64_t x = a.as_int(), y = b.as_int();
    if (y == 0) throw RenderError("integer division or modulo by zero");
    if (y == -1) return Value(int64_t(0));
    int64_t r = x % y;
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return Value(r);
  }
  if (!a.is_number() || !b.is_number())
    throw RenderError("unsupported operand type(s) for %: '" + python_type_name(a) + "' and '" + python_type_name(b) + "'");
  if (b.as_double() == 0.0) throw RenderError("float modulo");
  double r = std::fmod(a.as_double(), b.as_double());
  if (r != 0.0 && ((r < 0) != (b.as_double() < 0))) r += b.as_double();
  return Value(r);
}

std::string percent_format(const std::string& format, const Value& args) {
  const bool mapping = args.kind() == Value::Kind::Dict;
  ValueList positional = args.is_tuple() ? args.as_list() : ValueList{args};
  // Python treats any non-tuple with __getitem__ (a list too) as a mapping: no "not all converted" check.
  const bool mapping_like = mapping || (args.is_list_or_tuple() && !args.is_tuple());
  size_t next = 0;
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '%') {
      out += format[i];
      continue;
    }
    if (++i >= format.size()) throw RenderError("incomplete format");
    const Value* value = nullptr;
    if (format[i] == '(') {
      const size_t close = format.find(')', i);
      if (!mapping || close == std::string::npos) throw RenderError("format requires a mapping");
      value = args.as_dict().find(std::string_view(format).substr(i + 1, close - i - 1));
      if (!value) throw RenderError("format key '" + format.substr(i + 1, close - i - 1) + "' not found");
      i = close + 1;
    }
    std::string flags;
    while (i < format.size() && std::string_view("-+ 0#").find(format[i]) != std::string_view::npos) flags += format[i++];
    int width = 0, precision = -1;
    while (i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) width = width * 10 + (format[i++] - '0');
    if (i < format.size() && format[i] == '.') {
      precision = 0;
      while (++i < format.size() && std::isdigit(static_cast<unsigned char>(format[i]))) precision = precision * 10 + (format[i] - '0');
    }
    if (i >= format.size()) throw RenderError("incomplete format");
    const char conversion = format[i];
    if (conversion == '%') {
      out += '%';
      continue;
    }
    if (std::string_view("srdixXofFeEgG").find(conversion) == std::string_view::npos)
      throw RenderError(std::string("unsupported format character '") + conversion + "'");
    if (!value) {
      if (next >= positional.size()) throw RenderError("not enough arguments for format string");
      value = &positional[next++];
    }
    out += format_one(conversion, flags, width, precision, *value);
  }
  if (!mapping_like && next < positional.size()) throw RenderError("not all arguments converted during string formatting");
  return out;
}

// ---- Python string operations ------------------------------------------------------------------

std::string python_strip(const std::string& s, StripSide side, const std::optional<std::string>& chars) {
  const std::u32string cps = decode_utf8(s);
  const std::u32string set = chars ? decode_utf8(*chars) : std::u32string();
  auto strippable = [&](char32_t c) { return chars ? set.find(c) != std::u32string::npos : is_python_space(c); };
  size_t begin = 0, end = cps.size();
  if (side != StripSide::Right)
    while (begin < end && strippable(cps[begin])) ++begin;
  if (side != StripSide::Left)
    while (end > begin && strippable(cps[end - 1])) --end;
  return encode_utf8(std::u32string_view(cps).substr(begin, end - begin));
}

std::string python_replace(const std::string& s, const std::string& old, const std::string& replacement, int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts the replacement around every character
    const std::u32string cps = decode_utf8(s);
    int64_t done = 0;
    for (char32_t c : cps) {
      if (count < 0 || done < count) out += replacement, ++done;
      append_utf8(out, c);
    }
    if (count < 0 || done < count) out += replacement;
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  for (size_t hit = s.find(old); hit != std::string::npos && (count < 0 || done < count); hit = s.find(old, start)) {
    out.append(s, start, hit - start);
    out += replacement;
    start = hit + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::string python_capitalize(const std::string& s) {
  std::string out;
  bool first = true;
  for (char32_t c : decode_utf8(s)) {
    append_utf8(out, first ? to_upper(c) : to_lower(c));
    first = false;
  }
  return out;
}

std::vector<std::string> python_splitlines(const std::string& s) {
  const std::u32string cps = decode_utf8(s);
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    if (!is_line_boundary(cps[i])) continue;
    lines.push_back(encode_utf8(std::u32string_view(cps).substr(start, i - start)));
    if (cps[i] == '\r' && i + 1 < cps.size() && cps[i + 1] == '\n') ++i;
    start = i + 1;
  }
  if (start < cps.size()) lines.push_back(encode_utf8(std::u32string_view(cps).substr(start)));
  return lines;
}

}  // namespace dsv2::jinja
