// Typed access to tokenizer.json fields; every failure is an Error naming where the field is.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

#include "tokenizer/regex.h"

namespace dsv2 {

// The "type" of a component object.
std::string json_type_of(const nlohmann::json& j, const std::string& where);
const nlohmann::json& json_array(const nlohmann::json& j, const std::string& key, const std::string& where);
std::string json_string(const nlohmann::json& j, const std::string& key, const std::string& where);
// A field that may be missing or null (then `fallback`).
bool json_bool(const nlohmann::json& j, const std::string& key, const std::string& where, bool fallback);
int64_t json_integer(const nlohmann::json& j, const std::string& key, const std::string& where);
// The "pattern" field of Split / Replace: {"String": literal} or {"Regex": oniguruma pattern}.
Regex json_pattern(const nlohmann::json& j, const std::string& where);

}  // namespace dsv2
