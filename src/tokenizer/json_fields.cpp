#include "tokenizer/json_fields.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace dsv2 {

std::string json_type_of(const nlohmann::json& j, const std::string& where) {
  check(j.is_object(), where + ": expected an object, got " + std::string(j.type_name()));
  auto it = j.find("type");
  check(it != j.end() && it->is_string(), where + ": missing string field 'type'");
  return it->get<std::string>();
}

const nlohmann::json& json_array(const nlohmann::json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  check(it != j.end() && it->is_array(), where + ": field '" + key + "' must be an array");
  return *it;
}

std::string json_string(const nlohmann::json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  check(it != j.end() && it->is_string(), where + ": field '" + key + "' must be a string");
  return it->get<std::string>();
}

bool json_bool(const nlohmann::json& j, const std::string& key, const std::string& where, bool fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  check(it->is_boolean(), where + ": field '" + key + "' must be true or false");
  return it->get<bool>();
}

int64_t json_integer(const nlohmann::json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  check(it != j.end() && it->is_number_integer(), where + ": field '" + key + "' must be an integer");
  return it->get<int64_t>();
}

Regex json_pattern(const nlohmann::json& j, const std::string& where) {
  auto it = j.find("pattern");
  check(it != j.end() && it->is_object() && it->size() == 1,
        where + ": field 'pattern' must be {\"String\": ...} or {\"Regex\": ...}");
  const std::string kind = it->begin().key();
  const nlohmann::json& value = it->begin().value();
  check(value.is_string(), where + ": pattern." + kind + " must be a string");
  const std::string text = value.get<std::string>();
  if (kind == "String") return Regex(Regex::escape(text), RegexDialect::Oniguruma, where + " pattern");
  if (kind == "Regex") return Regex(text, RegexDialect::Oniguruma, where + " pattern");
  throw Error(where + ": unknown pattern kind '" + kind + "' (expected String or Regex)");
}

}  // namespace dsv2
