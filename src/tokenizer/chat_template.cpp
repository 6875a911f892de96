#include "tokenizer/chat_template.h"

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/error.h"

namespace dsv2 {

namespace {

using json = nlohmann::ordered_json;
namespace fs = std::filesystem;

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(bool(in), path + ": cannot read (" + (fs::exists(path) ? "permission or I/O error" : "no such file") + ")");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json_file(const std::string& path) {
  const std::string text = read_text_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
}

// A special token as tokenizer_config.json writes it: "text" or {"content": "text", ...}.
std::optional<std::string> token_text(const json& value, const std::string& where) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  throw Error(where + " must be a string or an object with a string \"content\"");
}

jinja::ValueDict special_tokens_of(const json& config, const std::string& path) {
  jinja::ValueDict tokens;
  for (const char* name : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
    if (!config.contains(name)) continue;
    if (auto text = token_text(config[name], path + ": \"" + name + "\"")) tokens.set(jinja::Value(name), jinja::Value(*text));
  }
  if (config.contains("additional_special_tokens") && !config["additional_special_tokens"].is_null()) {
    const json& extra = config["additional_special_tokens"];
    check(extra.is_array(), path + ": \"additional_special_tokens\" must be a list");
    jinja::ValueList list;
    for (size_t i = 0; i < extra.size(); ++i)
      if (auto text = token_text(extra[i], path + ": \"additional_special_tokens\"[" + std::to_string(i) + "]"))
        list.emplace_back(*text);
    tokens.set(jinja::Value("additional_special_tokens"), jinja::Value::list(std::move(list)));
  }
  return tokens;
}

// tokenizer_config.json's chat_template: a string, or a list of {name, template} ("default" is used).
std::string template_of(const json& config, const std::string& path) {
  check(config.contains("chat_template") && !config["chat_template"].is_null(),
        path + " has no \"chat_template\" (give one with --chat-template FILE)");
  const json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  check(t.is_array(), path + ": \"chat_template\" must be a string or a list of {name, template} objects");
  std::string names;
  for (const json& entry : t) {
    check(entry.is_object() && entry.contains("name") && entry["name"].is_string() && entry.contains("template") &&
              entry["template"].is_string(),
          path + ": each entry of \"chat_template\" must be an object with string \"name\" and \"template\"");
    if (entry["name"] == "default") return entry["template"].get<std::string>();
    names += (names.empty() ? "" : ", ") + entry["name"].get<std::string>();
  }
  throw Error(path + ": \"chat_template\" has no template named \"default\" (it has: " + names + ")");
}

// The message as the template sees it: content parts joined into one string.
jinja::Value template_message(const json& message, size_t index) {
  const std::string where = "message " + std::to_string(index);
  check(message.is_object(), where + " is not an object (each message is {\"role\": ..., \"content\": ...})");
  check(message.contains("role"), where + " has no \"role\"");
  check(message["role"].is_string(), where + ": \"role\" must be a string");
  if (!message.contains("content") || message["content"].is_string() || message["content"].is_null())
    return jinja::value_from_json(message);
  const json& content = message["content"];
  check(content.is_array(), where + ": \"content\" must be a string, a list of text parts, or null");
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string part_where = where + ": content part " + std::to_string(i);
    check(part.is_object() && part.contains("type") && part["type"].is_string(),
          part_where + " must be an object with a string \"type\"");
    check(part["type"] == "text", part_where + " has type \"" + part["type"].get<std::string>() +
                                      "\"; only text parts are supported");
    check(part.contains("text") && part["text"].is_string(), part_where + " has no string \"text\"");
    text += part["text"].get<std::string>();
  }
  json normalized = message;
  normalized["content"] = text;
  return jinja::value_from_json(normalized);
}

}  // namespace

ChatTemplate::ChatTemplate(const std::string& source, jinja::ValueDict special_tokens, std::string origin)
    : template_([&] {
        try {
          return jinja::Template(source);
        } catch (const Error& e) {
          throw Error("chat template (" + origin + "): " + e.what());
        }
      }()),
      special_tokens_(std::move(special_tokens)),
      origin_(std::move(origin)) {}

ChatTemplate ChatTemplate::from_model_dir(const std::string& model_dir, const std::string& template_file) {
  const std::string config_path = (fs::path(model_dir) / "tokenizer_config.json").string();
  const std::string jinja_path = (fs::path(model_dir) / "chat_template.jinja").string();
  const bool have_config = fs::exists(config_path);
  check(have_config || !template_file.empty() || fs::exists(jinja_path),
        config_path + ": cannot read (no such file); a model directory needs its tokenizer_config.json");
  const json config = have_config ? parse_json_file(config_path) : json::object();
  check(config.is_object(), config_path + " must hold a JSON object");
  jinja::ValueDict tokens = special_tokens_of(config, config_path);
  if (!template_file.empty()) return ChatTemplate(read_text_file(template_file), std::move(tokens), template_file);
  if (fs::exists(jinja_path)) return ChatTemplate(read_text_file(jinja_path), std::move(tokens), jinja_path);
  return ChatTemplate(template_of(config, config_path), std::move(tokens), config_path);
}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages, bool add_generation_prompt) const {
  check(messages.is_array(), std::string("messages must be a JSON list of {\"role\", \"content\"} objects, not ") +
                                 messages.type_name());
  jinja::ValueList list;
  list.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) list.push_back(template_message(messages[i], i));
  jinja::ValueDict variables = special_tokens_;
  variables.set(jinja::Value("messages"), jinja::Value::list(std::move(list)));
  variables.set(jinja::Value("add_generation_prompt"), jinja::Value(add_generation_prompt));
  variables.set(jinja::Value("tools"), jinja::Value::none());
  variables.set(jinja::Value("documents"), jinja::Value::none());
  try {
    return template_.render(variables);
  } catch (const Error& e) {
    throw Error("chat template (" + origin_ + "): " + e.what());
  }
}

nlohmann::ordered_json read_messages_file(const std::string& path) { return parse_json_file(path); }

}  // namespace dsv2
