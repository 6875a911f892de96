// Chat templates of Hugging Face model directories: the Jinja chat_template rendered over OpenAI-style
// messages, as transformers' apply_chat_template(messages, tokenize=False, add_generation_prompt)
// renders it. The text starts with the BOS string when the template writes it; tokenizing it must
// not add a second BOS (transformers tokenizes it with add_special_tokens=False).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "tokenizer/jinja.h"

namespace dsv2 {

class ChatTemplate {
 public:
  // The template of a model directory: DIR/chat_template.jinja when present, else the chat_template
  // of DIR/tokenizer_config.json (a string, or a list of {name, template} of which "default" is
  // used). A non-empty `template_file` replaces it (--chat-template). Special tokens (bos_token,
  // eos_token, unk_token, pad_token, ... and additional_special_tokens) come from tokenizer_config.json,
  // as strings or {"content": ...} objects. Throws Error naming the file and field.
  static ChatTemplate from_model_dir(const std::string& model_dir, const std::string& template_file = "");

  // `origin` names where the template came from in error messages.
  ChatTemplate(const std::string& source, jinja::ValueDict special_tokens, std::string origin);

  // Renders `messages`, a JSON list of objects with a string "role" and a "content" that is a string,
  // null, or a list of {"type": "text", "text": ...} parts (joined into one string); other fields
  // (tool_calls, name, ...) pass through. The template sees messages, add_generation_prompt,
  // tools = none, documents = none and the special tokens. Throws Error on a bad message (naming its
  // index and field) or a template error ("chat template (ORIGIN): template line N: ...").
  std::string render(const nlohmann::ordered_json& messages, bool add_generation_prompt) const;

 private:
  jinja::Template template_;
  jinja::ValueDict special_tokens_;
  std::string origin_;
};

// Reads a messages file (JSON); throws Error naming the file when it is unreadable or not JSON.
nlohmann::ordered_json read_messages_file(const std::string& path);

}  // namespace dsv2
