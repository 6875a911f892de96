// Values of the Jinja interpreter with Python semantics, as jinja2 evaluates chat templates under
// transformers: undefined, none, bool, int, float, str, list, dict (insertion-ordered), namespace()
// objects and callables. Lists and dicts never change once built (transformers renders in jinja2's
// ImmutableSandboxedEnvironment); only namespace objects change, by `{% set ns.attr = ... %}`.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/error.h"

namespace dsv2::jinja {

// A template error at a known template line: "template line 7: <message>".
[[noreturn]] void throw_template_error(int line, const std::string& message);

// An error raised while evaluating, before the interpreter attaches the template line to it.
class RenderError : public Error {
 public:
  using Error::Error;
};

// Deepest nesting of lists/dicts that printing, comparing and JSON conversion follow.
inline constexpr int kMaxValueDepth = 512;

class Value;
class ValueDict;
using ValueList = std::vector<Value>;

// Arguments of a call: positional values, then keyword arguments in source order.
struct CallArguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
};

// Something a template can call: a global function, a macro, a bound method, `caller`.
struct Function {
  std::string name;
  std::function<Value(const CallArguments&)> call;
};

class Value {
 public:
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };

  Value() = default;  // undefined
  // An undefined value; `hint` is the message used when the template does something it can't do
  // with it ("'foo' is undefined", "'dict object' has no attribute 'x'").
  static Value undefined(std::string hint);
  static Value none();
  Value(bool b) : data_(b) {}
  Value(int i) : data_(int64_t(i)) {}
  Value(int64_t i) : data_(i) {}
  Value(double d) : data_(d) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(const char* s) : data_(std::string(s)) {}
  static Value list(ValueList items);
  static Value dict(ValueDict entries);
  static Value make_namespace(ValueDict attributes);
  static Value function(std::string name, std::function<Value(const CallArguments&)> call);

  // Sequences that are not plain lists (all of Kind::List). A tuple prints with parentheses: `(1, 2)`.
  // A generator is what jinja2's select, reject, map, selectattr, rejectattr, unique, items and reverse
  // return: always true, without len(), not indexable, not JSON. Dict views (keys(), values(),
  // items()) print as dict_keys([...]) and are not indexable or JSON either.
  enum class Sequence { List, Tuple, Generator, DictKeys, DictValues, DictItems };
  static Value sequence_of(Sequence sequence, ValueList items);
  static Value tuple(ValueList items) { return sequence_of(Sequence::Tuple, std::move(items)); }
  static Value generator(ValueList items) { return sequence_of(Sequence::Generator, std::move(items)); }
  // A generator that fails with `error` when iterated (jinja2's lazy filters on a non-iterable input).
  static Value failing_generator(std::string error);

  Kind kind() const { return Kind(data_.index()); }
  // The flavour of a List-kind value.
  Sequence sequence() const { return std::get<ListData>(data_).sequence; }
  bool is_tuple() const { return kind() == Kind::List && sequence() == Sequence::Tuple; }
  bool is_generator() const { return kind() == Kind::List && sequence() == Sequence::Generator; }
  // A list or tuple: indexable, sliceable, JSON-serialisable.
  bool is_list_or_tuple() const { return kind() == Kind::List && (sequence() == Sequence::List || is_tuple()); }
  // The error iterating a failing generator raises, or null.
  const std::string* iteration_error() const;
  bool is_undefined() const { return kind() == Kind::Undefined; }
  bool is_none() const { return kind() == Kind::None; }
  bool is_string() const { return kind() == Kind::String; }
  bool is_number() const { return kind() == Kind::Bool || kind() == Kind::Int || kind() == Kind::Float; }
  bool is_integral() const { return kind() == Kind::Bool || kind() == Kind::Int; }  // Python int (bool is one)

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const;  // int or bool
  double as_double() const;  // any number
  const std::string& as_string() const { return std::get<std::string>(data_); }
  const ValueList& as_list() const { return *std::get<ListData>(data_).items; }
  const ValueDict& as_dict() const { return *std::get<DictData>(data_).entries; }
  const ValueDict& namespace_attributes() const;
  // `{% set ns.name = value %}`: namespaces are the only values that change.
  void set_namespace_attribute(std::string name, Value value) const;
  const Function& as_function() const { return *std::get<FunctionPtr>(data_); }
  // Levels of lists, dicts and namespaces inside this value (0 for scalars). Building a value nested
  // deeper than kMaxValueDepth throws RenderError, so printing, comparing and freeing values stay
  // within the C++ stack.
  int nesting_depth() const;
  const std::string& undefined_hint() const { return std::get<UndefinedData>(data_).hint; }
  // Identity of a namespace or function (Python `is`), for equality of those kinds.
  const void* identity() const;

 private:
  struct UndefinedData {
    std::string hint;
  };
  struct NoneData {};
  struct ListData {
    std::shared_ptr<const ValueList> items;
    int depth;
    Sequence sequence;
    std::shared_ptr<const std::string> iteration_error;
  };
  struct DictData {
    std::shared_ptr<const ValueDict> entries;
    int depth;
  };
  struct NamespaceObject;
  using NamespacePtr = std::shared_ptr<NamespaceObject>;
  using FunctionPtr = std::shared_ptr<const Function>;
  // The order of the alternatives is the order of Kind.
  std::variant<UndefinedData, NoneData, bool, int64_t, double, std::string, ListData, DictData, NamespacePtr, FunctionPtr>
      data_;
};

// A dict in insertion order (as Python's); keys are hashable scalars: str, int, float, bool, none.
class ValueDict {
 public:
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);  // an existing key keeps its position
  // Appends a key the caller knows is absent (faster than set).
  void append_new(Value key, Value value) { entries_.emplace_back(std::move(key), std::move(value)); }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  const std::vector<std::pair<Value, Value>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<Value, Value>> entries_;
};

struct Value::NamespaceObject {
  ValueDict attributes;
  int depth;
};

// Python semantics.
bool is_truthy(const Value& v);
std::string python_type_name(const Value& v);                    // "str", "int", "list", "NoneType", ...
std::string to_python_str(const Value& v);                        // str(v); undefined gives ""
std::string to_python_repr(const Value& v);                       // repr(v)
std::string python_float_repr(double d);                          // repr(float): 1.0, 1e+16, 0.1
std::string python_string_repr(std::string_view s);               // 'text' with Python's escapes
bool values_equal(const Value& a, const Value& b);                // ==
// <0, 0, >0 for numbers, strings and lists; throws RenderError naming `op` for other pairs.
int compare_values(const Value& a, const Value& b, std::string_view op);
// Checked int64 arithmetic (Python ints are unbounded; beyond int64 is an error here).
int64_t checked_add(int64_t a, int64_t b);
int64_t checked_mul(int64_t a, int64_t b);

// JSON in and out. Objects keep their key order (parse with nlohmann::ordered_json).
Value value_from_json(const nlohmann::ordered_json& j);
struct JsonStyle {
  int indent = -1;                 // < 0: one line
  std::string indent_text;         // used instead of `indent` spaces when not empty (json.dumps(indent="\t"))
  std::string item_separator = ", ";  // json.dumps defaults: ", " one-line, "," when indenting
  std::string key_separator = ": ";
  bool ensure_ascii = false;
  bool sort_keys = false;
};
// json.dumps(v, ...) as Python writes it; throws RenderError for undefined, functions, namespaces.
std::string to_json_text(const Value& v, const JsonStyle& style);

}  // namespace dsv2::jinja
