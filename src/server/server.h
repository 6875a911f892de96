// The OpenAI-compatible HTTP/1.1 server (cpp-httplib): /v1/chat/completions, /v1/completions
// (plain and server-sent events), /v1/models, /health, /metrics, /tokenize, /detokenize. Completions
// run on the Engine; the server turns tokens into text (streaming detokenizer, stop strings),
// logprobs and usage. Every bad request is a 4xx with an OpenAI-style JSON error body.
#pragma once
#include <memory>
#include <string>

#include "engine/engine.h"
#include "model/config.h"
#include "server/metrics.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
class Server;
}

namespace dsv2 {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;          // 0: any free port
  std::string api_key;      // empty: no authentication
  std::string model_name;   // the id /v1/models lists and requests may name
  int http_threads = 32;    // connections served at once (a streaming request holds one)
};

class Server {
 public:
  // `chat_template` may be null (then /v1/chat/completions answers 400).
  Server(const ServerOptions& options, const ModelConfig& config, const Tokenizer& tokenizer,
         const ChatTemplate* chat_template, Engine& engine);
  ~Server();
  // Binds the listening socket; returns the port (the chosen one when options.port is 0).
  int bind();
  void run();   // serves until stop()
  void stop();  // thread-safe

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv2
