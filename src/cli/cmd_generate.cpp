// dsv2 generate: continue a prompt given as text (--prompt, optionally through the chat template
// with --chat) or as token ids (--prompt-ids). Text streams to the terminal as it is produced.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace dsv2 {

int cmd_generate(Args& args) {
  const std::string dir = args.required("--model");
  const auto prompt_text = args.value("--prompt");
  const auto prompt_ids_text = args.value("--prompt-ids");
  check(prompt_text.has_value() != prompt_ids_text.has_value(), "dsv2 generate: give exactly one of --prompt TEXT and --prompt-ids IDS");
  const bool chat = args.flag("--chat");
  const auto system = args.value("--system");
  const std::string template_file = args.value("--chat-template").value_or("");
  check(!chat || prompt_text, "dsv2 generate: --chat needs a text --prompt");
  check(chat || (!system && template_file.empty()), "dsv2 generate: --system and --chat-template go with --chat");
  GenerationOptions defaults;
  defaults.max_new_tokens = 32;
  const GenerationOptions opt = generation_options(args, defaults);
  const bool print_ids = args.flag("--print-ids");
  const Device device = device_option(args);
  const DType cache_dtype = cache_dtype_option(args, DType::F32);
  const int threads = threads_option(args);
  const WeightFormat weights = weights_option(args);
  const ActivationFormat activations = activations_option(args);
  const FileResidency pages = weight_pages_option(args, device);
  args.finish();

  std::vector<int32_t> prompt;
  std::unique_ptr<Tokenizer> tokenizer;
  if (prompt_ids_text) {
    prompt = parse_id_list(*prompt_ids_text, "--prompt-ids");
  } else {
    tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(dir));
    if (chat) {
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      if (system) messages.push_back({{"role", "system"}, {"content", *system}});
      messages.push_back({{"role", "user"}, {"content", *prompt_text}});
      const std::string text = ChatTemplate::from_model_dir(dir, template_file).render(messages, true);
      prompt = tokenizer->encode(text, SpecialTokens::Omit);  // the template wrote the BOS string itself
    } else {
      prompt = tokenizer->encode(*prompt_text, SpecialTokens::Add);
    }
  }

  const int64_t wanted = int64_t(prompt.size()) + std::max<int64_t>(opt.max_new_tokens, 1);
  Backend backend(dir, device, threads, cache_dtype, wanted, weights, activations, pages);
  std::unique_ptr<SequenceModel> seq = backend.new_sequence();
  std::unique_ptr<StreamingDetokenizer> stream;
  if (tokenizer && !print_ids) stream = std::make_unique<StreamingDetokenizer>(*tokenizer, SpecialTokenText::Skip);
  GenerationResult r = generate(*seq, prompt, opt, [&](int32_t id) {
    if (stream) {
      const std::string piece = stream->push(id);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
    return true;
  });
  if (stream) {
    const std::string rest = stream->finish();
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
  }
  std::fprintf(stderr, "prompt %zu tokens in %.3f s; generated %zu tokens, %lld decode steps in %.3f s (%.2f tokens/s); stop: %s\n",
               prompt.size(), r.prefill_seconds, r.tokens.size(), static_cast<long long>(r.decode_steps), r.decode_seconds,
               r.decode_seconds > 0 ? double(r.decode_steps) / r.decode_seconds : 0.0, stop_reason_name(r.stop));
  if (!stream) std::printf("%s\n", format_id_list(r.tokens).c_str());
  return 0;
}

}  // namespace dsv2
