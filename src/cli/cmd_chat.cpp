// dsv2 chat: an interactive multi-turn conversation in the terminal through the model's chat
// template. /reset starts over, /exit (or end of input) leaves, Ctrl-C stops the current answer.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/backend.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/mapped_file.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace dsv2 {

namespace {

volatile std::sig_atomic_t g_interrupted = 0;
void on_interrupt(int) { g_interrupted = 1; }

// Sampling defaults from the model's generation_config.json when it has one (do_sample,
// temperature, top_p, top_k), else temperature 0.7 and top-p 0.95.
GenerationOptions chat_defaults(const std::string& dir) {
  GenerationOptions o;
  o.max_new_tokens = 512;
  o.sampling.temperature = 0.7f;
  o.sampling.top_p = 0.95f;
  std::string text;
  try {
    text = read_text_file(dir + "/generation_config.json");
  } catch (const Error&) {
    return o;  // the file is optional
  }
  const auto j = nlohmann::json::parse(text, nullptr, false);
  check(j.is_object(), dir + "/generation_config.json: invalid JSON");
  if (j.contains("temperature") && j["temperature"].is_number()) o.sampling.temperature = j["temperature"].get<float>();
  if (j.contains("top_p") && j["top_p"].is_number()) o.sampling.top_p = j["top_p"].get<float>();
  if (j.contains("top_k") && j["top_k"].is_number_integer()) o.sampling.top_k = j["top_k"].get<int64_t>();
  if (j.contains("do_sample") && j["do_sample"].is_boolean() && !j["do_sample"].get<bool>()) o.sampling.temperature = 0.0f;
  return o;
}

}  // namespace

int cmd_chat(Args& args) {
  const std::string dir = args.required("--model");
  const auto system = args.value("--system");
  const std::string template_file = args.value("--chat-template").value_or("");
  GenerationOptions opt = generation_options(args, chat_defaults(dir));
  const int64_t context = args.integer("--context", 4096);
  check(context >= 16, "--context must be >= 16 tokens");
  const Device device = device_option(args);
  const DType cache_dtype = cache_dtype_option(args, DType::F32);
  const int threads = threads_option(args);
  const WeightFormat weights = weights_option(args);
  const ActivationFormat activations = activations_option(args);
  const FileResidency pages = weight_pages_option(args, device);
  args.finish();

  const Tokenizer tokenizer = Tokenizer::load(dir);
  const ChatTemplate chat = ChatTemplate::from_model_dir(dir, template_file);
  Backend backend(dir, device, threads, cache_dtype, context, weights, activations, pages);

  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);  // no SA_RESTART: Ctrl-C at the prompt interrupts the read

  nlohmann::ordered_json history = nlohmann::ordered_json::array();
  if (system) history.push_back({{"role", "system"}, {"content", *system}});
  std::fprintf(stderr, "dsv2 chat: /reset starts over, /exit leaves, Ctrl-C stops an answer\n");
  for (;;) {
    std::fputs("> ", stdout);
    std::fflush(stdout);
    std::string line;
    g_interrupted = 0;
    if (!std::getline(std::cin, line)) {
      if (g_interrupted && !std::cin.eof()) {  // Ctrl-C at the prompt: a fresh prompt
        std::cin.clear();
        std::fputs("\n", stdout);
        continue;
      }
      std::fputs("\n", stdout);
      break;
    }
    if (line == "/exit") break;
    if (line == "/reset") {
      history = nlohmann::ordered_json::array();
      if (system) history.push_back({{"role", "system"}, {"content", *system}});
      std::fputs("(conversation reset)\n", stdout);
      continue;
    }
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    history.push_back({{"role", "user"}, {"content", line}});
    const std::vector<int32_t> prompt = tokenizer.encode(chat.render(history, true), SpecialTokens::Omit);
    if (int64_t(prompt.size()) >= context) {
      std::fprintf(stdout, "(the conversation has %zu tokens, more than the context of %lld: /reset to start over)\n",
                   prompt.size(), static_cast<long long>(context));
      history.erase(history.end() - 1);
      continue;
    }
    std::unique_ptr<SequenceModel> seq = backend.new_sequence();
    StreamingDetokenizer stream(tokenizer, SpecialTokenText::Skip);
    std::string reply;
    g_interrupted = 0;
    GenerationResult r = generate(*seq, prompt, opt, [&](int32_t id) {
      const std::string piece = stream.push(id);
      reply += piece;
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return !g_interrupted;
    });
    const std::string rest = stream.finish();
    reply += rest;
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputs(r.stop == StopReason::Cancelled ? " [stopped]\n" : "\n", stdout);
    std::fprintf(stderr, "[%zu tokens, %.1f tokens/s]\n", r.tokens.size(),
                 r.decode_seconds > 0 ? double(r.decode_steps) / r.decode_seconds : 0.0);
    history.push_back({{"role", "assistant"}, {"content", reply}});
  }
  return 0;
}

}  // namespace dsv2
