// dsv2 template: the text a model's chat template makes of a conversation, printed exactly (no newline
// added), as transformers' apply_chat_template(messages, tokenize=False) returns it.
#include <cstdio>

#include "cli/commands.h"
#include "tokenizer/chat_template.h"

namespace dsv2 {

int cmd_template(Args& args) {
  const std::string model_dir = args.required("--model");
  const std::string messages_path = args.required("--messages");
  const bool add_generation_prompt = args.flag("--add-generation-prompt");
  const std::string template_file = args.value("--chat-template").value_or("");
  args.finish();

  const ChatTemplate chat = ChatTemplate::from_model_dir(model_dir, template_file);
  const std::string text = chat.render(read_messages_file(messages_path), add_generation_prompt);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace dsv2
