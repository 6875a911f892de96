// What a chat template can call: jinja2's filters and tests, the str/dict/list methods the sandbox
// allows, attribute and item access with jinja2's rules, and the globals of transformers'
// environment (range, namespace, dict, raise_exception, strftime_now). Errors are RenderError; the
// interpreter adds the template line.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace dsv2::jinja {

// ---- jinja_builtins.cpp: filters, tests, globals ----
bool is_known_filter(std::string_view name);
bool is_known_test(std::string_view name);
Value apply_filter(std::string_view name, const Value& input, const CallArguments& args);
bool apply_test(std::string_view name, const Value& input, const CallArguments& args);
ValueDict global_functions();

// ---- jinja_methods.cpp: access, iteration, methods, string operations ----

// `object.name`: a method of str/dict/list, else a dict key or namespace attribute, else undefined.
// Throws RenderError on an undefined object.
Value get_attribute(const Value& object, std::string_view name);
// `object[key]`: a dict key, list or string index (negative from the end), else as get_attribute for
// string keys, else undefined. Throws RenderError on an undefined object.
Value get_item(const Value& object, const Value& key);
// `object[start:stop:step]` of a list or string (anything else is an error); absent parts are undefined.
Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step);
// The items Python iterates: list items, dict keys, string characters; undefined is empty.
ValueList iterate(const Value& v);
// `item in container`.
bool contains(const Value& container, const Value& item);
// len(v) for str (code points), list, dict; undefined is 0.
int64_t python_len(const Value& v);
// Python's `a % b`: modulo with the sign of the divisor for numbers, printf-style formatting for str.
Value python_modulo(const Value& a, const Value& b);
// `format % args` (printf-style) as Python formats strings.
std::string percent_format(const std::string& format, const Value& args);

// Python str methods used by filters too.
enum class StripSide { Both, Left, Right };
std::string python_strip(const std::string& s, StripSide side, const std::optional<std::string>& chars);
std::string python_replace(const std::string& s, const std::string& old, const std::string& replacement,
                           int64_t count);
std::string python_capitalize(const std::string& s);
std::vector<std::string> python_splitlines(const std::string& s);

// Binds call arguments to named parameters as Python does; `callee` names the function in errors.
class BoundArguments {
 public:
  BoundArguments(const CallArguments& args, std::string callee, std::vector<std::string_view> parameters,
                 size_t required = 0);
  bool has(size_t i) const { return values_[i].has_value(); }
  Value get_or(size_t i, Value fallback) const { return values_[i] ? *values_[i] : std::move(fallback); }
  // The argument as a string, int or bool; throws RenderError naming the parameter otherwise.
  std::string get_string(size_t i, std::string fallback) const;
  int64_t get_int(size_t i, int64_t fallback) const;
  bool get_bool(size_t i, bool fallback) const;

 private:
  std::string callee_;
  std::vector<std::string_view> names_;
  std::vector<std::optional<Value>> values_;
};

}  // namespace dsv2::jinja
