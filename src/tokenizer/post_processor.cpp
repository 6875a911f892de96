#include "tokenizer/post_processor.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/json_fields.h"

namespace dsv2 {
namespace {

int32_t id_of_pair(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  check(it != j.end() && it->is_array() && it->size() == 2 && (*it)[1].is_number_integer(),
        where + ": field '" + key + "' must be [token, id]");
  return (*it)[1].get<int32_t>();
}

// TemplateProcessing's "single" template.
SpecialTokenFrame from_template(const nlohmann::json& j, const std::string& where) {
  SpecialTokenFrame frame;
  auto special = j.find("special_tokens");
  const auto& single = json_array(j, "single", where);
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const auto& item = single[i];
    const std::string here = where + ".single[" + std::to_string(i) + "]";
    if (item.contains("Sequence")) {
      const std::string id = json_string(item["Sequence"], "id", here);
      check(id == "A", here + ": a single-sequence template can only hold sequence A (got " + id + ")");
      check(!seen_sequence, here + ": sequence A appears twice");
      seen_sequence = true;
    } else if (item.contains("SpecialToken")) {
      const std::string name = json_string(item["SpecialToken"], "id", here);
      check(special != j.end() && special->is_object() && special->contains(name),
            here + ": special token '" + name + "' is not in special_tokens");
      const auto& ids = json_array((*special)[name], "ids", where + ".special_tokens['" + name + "']");
      auto& target = seen_sequence ? frame.suffix : frame.prefix;
      for (const auto& id : ids) {
        check(id.is_number_integer(), where + ".special_tokens['" + name + "']: ids must be integers");
        target.push_back(id.get<int32_t>());
      }
    } else {
      throw Error(here + ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
  }
  check(seen_sequence, where + ": the single template has no sequence A");
  return frame;
}

std::optional<std::string> token_content(const nlohmann::json& config, const char* key, const std::string& where) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  check(it->is_object(), where + ": " + key + " must be a string or an object with 'content'");
  return json_string(*it, "content", where + ": " + key);
}

}  // namespace

SpecialTokenFrame SpecialTokenFrame::from_post_processor(const nlohmann::json& j, const std::string& where) {
  if (j.is_null()) return {};
  const std::string type = json_type_of(j, where);
  const std::string here = where + " (" + type + ")";
  if (type == "TemplateProcessing") return from_template(j, here);
  if (type == "ByteLevel") return {};  // only adjusts offsets
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    return SpecialTokenFrame{{id_of_pair(j, "cls", here)}, {id_of_pair(j, "sep", here)}};
  }
  if (type == "Sequence") {  // each processor wraps the result of the previous one
    SpecialTokenFrame frame;
    const auto& list = json_array(j, "processors", here);
    for (size_t i = 0; i < list.size(); ++i) {
      SpecialTokenFrame inner = from_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]");
      frame.prefix.insert(frame.prefix.begin(), inner.prefix.begin(), inner.prefix.end());
      frame.suffix.insert(frame.suffix.end(), inner.suffix.begin(), inner.suffix.end());
    }
    return frame;
  }
  throw Error(where + ": unsupported post-processor type '" + type + "'");
}

std::optional<SpecialTokenFrame> SpecialTokenFrame::from_tokenizer_config(const nlohmann::json& config,
                                                                          const std::string& where,
                                                                          const IdLookup& lookup) {
  if (!config.contains("add_bos_token") && !config.contains("add_eos_token")) return std::nullopt;
  SpecialTokenFrame frame;
  auto add = [&](const char* flag, const char* token_key, std::vector<int32_t>& target) {
    if (!json_bool(config, flag, where, false)) return;
    auto content = token_content(config, token_key, where);
    check(content.has_value(), where + ": " + flag + " is true but " + token_key + " is not set");
    auto id = lookup(*content);
    check(id.has_value(), where + ": " + token_key + " '" + *content + "' is not in the vocabulary");
    target.push_back(*id);
  };
  add("add_bos_token", "bos_token", frame.prefix);
  add("add_eos_token", "eos_token", frame.suffix);
  return frame;
}

}  // namespace dsv2
