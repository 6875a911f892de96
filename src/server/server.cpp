#include "server/server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <random>

#include "core/error.h"
#include "server/api_request.h"
#include "server/completion_job.h"

namespace dsv2 {

namespace {

using json = nlohmann::json;

json error_body(const std::string& message, const std::string& type, const std::string& param, int status) {
  return {{"error", {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)}, {"code", status}}}};
}

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const ApiError& e) {
  send_json(res, e.status, error_body(e.what(), e.type, e.param, e.status));
}

const char* status_error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "invalid_request_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

int64_t unix_time() { return int64_t(std::time(nullptr)); }

// The text of one token; empty for an id the tokenizer does not know (a model's vocabulary may be
// padded past the tokenizer's).
std::string token_text(const Tokenizer& tok, int32_t id) {
  if (id < 0 || id >= tok.id_limit()) return {};
  try {
    return tok.decode(std::span<const int32_t>(&id, 1), SpecialTokenText::Keep);
  } catch (const Error&) {
    return {};
  }
}

// The logprobs entry of one token, in the chat format ({token, logprob, bytes, top_logprobs}).
json chat_logprob(const Tokenizer& tok, const TokenEvent& e) {
  auto entry = [&](int32_t id, float lp) {
    const std::string text = token_text(tok, id);
    std::vector<int> bytes;
    for (char ch : text) bytes.push_back(int(uint8_t(ch)));
    return json{{"token", text}, {"logprob", lp}, {"bytes", bytes}};
  };
  json j = entry(e.token, e.logprob);
  j["top_logprobs"] = json::array();
  for (auto [id, lp] : e.top) j["top_logprobs"].push_back(entry(id, lp));
  return j;
}

}  // namespace

struct Server::Impl {
  ServerOptions o;
  const ModelConfig& cfg;
  const Tokenizer& tok;
  const ChatTemplate* chat_template;
  Engine& engine;
  ServerMetrics metrics;
  httplib::Server http;
  std::atomic<uint64_t> next_id{1};

  Impl(const ServerOptions& options, const ModelConfig& config, const Tokenizer& tokenizer, const ChatTemplate* tmpl, Engine& e)
      : o(options), cfg(config), tok(tokenizer), chat_template(tmpl), engine(e) {}

  void routes();
  void check_model(const std::string& model) const {
    if (!model.empty() && model != o.model_name)
      throw ApiError(404, "the model '" + model + "' does not exist; this server serves '" + o.model_name + "'", "model",
                     "not_found_error");
  }
  std::vector<int32_t> prompt_ids(const CompletionRequest& r, const PromptInput* in) const;
  void completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  // Runs a handler body, turning ApiError / Error into 4xx JSON.
  template <typename F>
  void guarded(httplib::Response& res, F&& body) {
    try {
      body();
    } catch (const ApiError& e) {
      send_error(res, e);
    } catch (const Error& e) {
      send_error(res, ApiError(400, e.what()));
    } catch (const json::exception& e) {
      send_error(res, ApiError(400, std::string("bad JSON value: ") + e.what()));
    }
  }
};

std::vector<int32_t> Server::Impl::prompt_ids(const CompletionRequest& r, const PromptInput* in) const {
  std::vector<int32_t> ids;
  if (r.endpoint == Endpoint::Chat) {
    if (!chat_template) throw ApiError(400, "the model has no chat template; use /v1/completions", "messages");
    ids = tok.encode(chat_template->render(r.messages, true), SpecialTokens::Omit);
  } else if (in->is_ids) {
    ids = in->ids;
    for (int32_t id : ids)
      if (id >= cfg.vocab_size)
        throw ApiError(400, "prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")",
                       "prompt");
  } else {
    ids = tok.encode(in->text, SpecialTokens::Add);
  }
  if (ids.empty()) throw ApiError(400, "the prompt holds no tokens", r.endpoint == Endpoint::Chat ? "messages" : "prompt");
  const int64_t ctx = engine.max_context();
  if (int64_t(ids.size()) >= ctx)
    throw ApiError(400, "the prompt has " + std::to_string(ids.size()) + " tokens; this model's context is " + std::to_string(ctx) +
                            " tokens and at least one must be left to generate", "messages", "context_length_exceeded");
  if (r.max_tokens > 0 && int64_t(ids.size()) + r.max_tokens > ctx)
    throw ApiError(400, "the prompt (" + std::to_string(ids.size()) + " tokens) plus max_tokens (" + std::to_string(r.max_tokens) +
                            ") exceed this model's context of " + std::to_string(ctx) + " tokens", "max_tokens", "context_length_exceeded");
  return ids;
}

void Server::Impl::completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  const CompletionRequest r = parse_completion_request(parse_body(req.body), endpoint);
  check_model(r.model);
  std::vector<std::vector<int32_t>> prompts;
  if (endpoint == Endpoint::Chat) {
    prompts.push_back(prompt_ids(r, nullptr));
  } else {
    for (const PromptInput& in : r.prompts) prompts.push_back(prompt_ids(r, &in));
  }
  const int n_choices = int(prompts.size()) * r.n;
  if (n_choices > 64) throw ApiError(400, "prompts x n may ask for at most 64 choices, got " + std::to_string(n_choices), "n");
  int64_t prompt_tokens = 0;
  for (const auto& p : prompts) prompt_tokens += int64_t(p.size());

  auto job = std::make_shared<CompletionJob>(tok, r.stop, n_choices, metrics);
  const uint64_t seed = r.seed_given ? r.sampling.seed : std::random_device{}();
  try {
    for (int c = 0; c < n_choices; ++c) {
      GenerationRequest g;
      g.prompt = prompts[size_t(c / r.n)];
      g.max_new_tokens = r.max_tokens > 0 ? r.max_tokens : engine.max_context() - int64_t(g.prompt.size());
      g.sampling = r.sampling;
      g.sampling.seed = seed + uint64_t(c);
      g.top_logprobs = r.top_logprobs;
      g.stop_at_eos = !r.ignore_eos;
      job->engine_ids.push_back(engine.submit(std::move(g), job->callbacks(c)));
    }
  } catch (...) {
    job->abandon();
    for (uint64_t id : job->engine_ids) engine.cancel(id);
    throw;
  }

  const bool chat = endpoint == Endpoint::Chat;
  const std::string id = (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++);
  const int64_t created = unix_time();
  auto usage = [job, prompt_tokens] {
    const int64_t completion = job->completion_tokens();
    return json{{"prompt_tokens", prompt_tokens},
                {"completion_tokens", completion},
                {"total_tokens", prompt_tokens + completion},
                {"prompt_tokens_details", {{"cached_tokens", job->cached_prompt_tokens()}}}};
  };
  auto record_tokens = [this, job, prompt_tokens] { metrics.tokens(prompt_tokens, job->completion_tokens()); };
  const Tokenizer* tokenizer = &tok;
  // Completions logprobs: the legacy format of lists per field.
  auto completion_logprobs = [tokenizer](json& lp, const TokenEvent& e, size_t text_offset) {
    const int32_t tid = e.token;
    lp["tokens"].push_back(token_text(*tokenizer, tid));
    lp["token_logprobs"].push_back(e.logprob);
    json top = json::object();
    for (auto [t, v] : e.top) top[token_text(*tokenizer, t)] = v;
    lp["top_logprobs"].push_back(top);
    lp["text_offset"].push_back(text_offset);
  };

  Engine* eng = &engine;
  auto cancel_all = [job, eng] {
    job->abandon();
    for (uint64_t eid : job->engine_ids) eng->cancel(eid);
  };
  const std::string model = o.model_name;
  const int32_t top_logprobs = r.top_logprobs;

  if (!r.stream) {
    // One JSON body once every choice has finished. Until then a space goes out every 150 ms
    // (JSON allows leading whitespace): writing to a client that has gone fails, and its sequences
    // and blocks are freed at once instead of running to the end. cpp-httplib gzip/brotli-compresses
    // a body typed exactly "application/json" for clients that accept it, and its compressor would
    // hold the spaces back; with the charset parameter they go out as written.
    struct WholeState {
      std::vector<std::string> text, reason;
      std::vector<json> logprobs;
      bool done = false;
    };
    auto state = std::make_shared<WholeState>();
    state->text.resize(size_t(n_choices));
    state->reason.resize(size_t(n_choices));
    state->logprobs.assign(size_t(n_choices), r.top_logprobs >= 0 ? (chat ? json{{"content", json::array()}}
                                                                           : json{{"tokens", json::array()},
                                                                                  {"token_logprobs", json::array()},
                                                                                  {"top_logprobs", json::array()},
                                                                                  {"text_offset", json::array()}})
                                                                  : json(nullptr));
    res.set_chunked_content_provider(
        "application/json; charset=utf-8",
        [=](size_t, httplib::DataSink& sink) {
          if (state->done) return false;
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(150);
          while (!job->all_finished() && std::chrono::steady_clock::now() < deadline) {
            const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            for (ChoiceEvent& e : job->take_events(std::max(wait, std::chrono::milliseconds(1)))) {
              const auto c = size_t(e.choice);
              if (e.token && top_logprobs >= 0) {
                if (chat) state->logprobs[c]["content"].push_back(chat_logprob(*tokenizer, *e.token));
                else completion_logprobs(state->logprobs[c], *e.token, state->text[c].size());
              }
              state->text[c] += e.text;
              if (e.finished) state->reason[c] = e.finish_reason;
            }
          }
          if (!job->all_finished()) {
            if (sink.write(" ", 1)) return true;
            cancel_all();  // the client is gone
            return false;
          }
          json choices = json::array();
          for (size_t c = 0; c < size_t(n_choices); ++c) {
            json choice = {{"index", c}, {"logprobs", state->logprobs[c]}, {"finish_reason", state->reason[c]}};
            if (chat) choice["message"] = {{"role", "assistant"}, {"content", state->text[c]}};
            else choice["text"] = state->text[c];
            choices.push_back(choice);
          }
          const std::string body = json{{"id", id}, {"object", chat ? "chat.completion" : "text_completion"}, {"created", created},
                                        {"model", model}, {"choices", choices}, {"usage", usage()}}
                                       .dump(-1, ' ', false, json::error_handler_t::replace);
          state->done = true;
          record_tokens();
          if (!sink.write(body.data(), body.size())) return false;
          sink.done();
          return true;
        },
        [=](bool success) {
          if (!success || !job->all_finished()) cancel_all();
        });
    return;
  }

  // Streaming: one chunk per event, a last chunk with usage if asked, then [DONE].
  struct StreamState {
    std::vector<bool> role_sent;
    std::vector<size_t> text_offset;
    bool done = false;
  };
  auto state = std::make_shared<StreamState>();
  state->role_sent.assign(size_t(n_choices), false);
  state->text_offset.assign(size_t(n_choices), 0);
  const bool include_usage = r.include_usage;
  auto chunk = [id, created, model, chat, include_usage](json choices) {
    json j = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created}, {"model", model},
              {"choices", std::move(choices)}};
    if (include_usage) j["usage"] = nullptr;
    return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
  };
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=, this](size_t, httplib::DataSink& sink) {
        if (state->done) return false;
        std::string out;
        for (ChoiceEvent& e : job->take_events(std::chrono::milliseconds(100))) {
          const auto c = size_t(e.choice);
          if (chat && !state->role_sent[c]) {
            out += chunk(json::array({{{"index", c}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}}));
            state->role_sent[c] = true;
          }
          json lp = nullptr;
          if (e.token && top_logprobs >= 0) {
            if (chat) {
              lp = {{"content", json::array({chat_logprob(*tokenizer, *e.token)})}};
            } else {
              lp = {{"tokens", json::array()}, {"token_logprobs", json::array()}, {"top_logprobs", json::array()}, {"text_offset", json::array()}};
              completion_logprobs(lp, *e.token, state->text_offset[c]);
            }
          }
          state->text_offset[c] += e.text.size();
          if (!e.text.empty() || !lp.is_null()) {
            json choice = {{"index", c}, {"logprobs", lp}, {"finish_reason", nullptr}};
            if (chat) choice["delta"] = {{"content", e.text}};
            else choice["text"] = e.text;
            out += chunk(json::array({choice}));
          }
          if (e.finished) {
            json choice = {{"index", c}, {"logprobs", nullptr}, {"finish_reason", e.finish_reason}};
            if (chat) choice["delta"] = json::object();
            else choice["text"] = "";
            out += chunk(json::array({choice}));
          }
        }
        const bool finished = job->all_finished();
        if (finished) {
          if (include_usage) {
            json j = {{"id", id}, {"object", chat ? "chat.completion.chunk" : "text_completion"}, {"created", created}, {"model", model},
                      {"choices", json::array()}, {"usage", usage()}};
            out += "data: " + j.dump() + "\n\n";
          }
          out += "data: [DONE]\n\n";
        }
        if (!out.empty() && !sink.write(out.data(), out.size())) {
          cancel_all();  // the client is gone: free its sequences and blocks now
          return false;
        }
        if (finished) {
          state->done = true;
          record_tokens();
          sink.done();
        }
        return true;
      },
      [=](bool success) {
        if (!success || !job->all_finished()) cancel_all();
      });
}

void Server::Impl::routes() {
  http.set_payload_max_length(kMaxBodyBytes);
  http.set_tcp_nodelay(true);  // streamed tokens leave at once (no Nagle delay against delayed ACKs)
  const int threads = o.http_threads;
  http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (o.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + o.api_key) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "a valid API key is required: send 'Authorization: Bearer KEY'", "", "authentication_error"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = res.status == 404   ? "no route for " + req.method + " " + req.path
                          : res.status == 413 ? "the request body is larger than " + std::to_string(kMaxBodyBytes) + " bytes"
                                              : "the request failed with HTTP status " + std::to_string(res.status);
    send_json(res, res.status, error_body(message, status_error_type(res.status), "", res.status));
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_json(res, 500, error_body(what, "server_error", "", 500));
  });
  http.set_logger([this](const httplib::Request& req, const httplib::Response& res) { metrics.request_done(req.path, res.status); });

  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] { completion(req, res, Endpoint::Chat); });
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] { completion(req, res, Endpoint::Completions); });
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              {{"object", "list"},
               {"data", json::array({{{"id", o.model_name}, {"object", "model"}, {"created", unix_time()}, {"owned_by", "dsv2"},
                                      {"max_model_len", engine.max_context()}}})}});
  });
  http.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, {{"status", "ok"}}); });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(engine.stats()), "text/plain; version=0.0.4");
  });
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      const json body = parse_body(req.body);
      check_model(body.value("model", std::string()));
      std::vector<int32_t> ids;
      if (body.contains("messages")) {
        CompletionRequest r = parse_completion_request(body, Endpoint::Chat);
        if (!chat_template) throw ApiError(400, "the model has no chat template", "messages");
        ids = tok.encode(chat_template->render(r.messages, body.value("add_generation_prompt", true)), SpecialTokens::Omit);
      } else {
        if (!body.contains("prompt") || !body["prompt"].is_string()) throw ApiError(400, "'prompt' must be a string", "prompt");
        const json& add = body.contains("add_special_tokens") ? body["add_special_tokens"] : json(true);
        if (!add.is_boolean()) throw ApiError(400, "'add_special_tokens' must be a boolean", "add_special_tokens");
        ids = tok.encode(body["prompt"].get<std::string>(), add.get<bool>() ? SpecialTokens::Add : SpecialTokens::Omit);
      }
      send_json(res, 200, {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", engine.max_context()}});
    });
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] {
      const json body = parse_body(req.body);
      if (!body.contains("tokens") || !body["tokens"].is_array()) throw ApiError(400, "'tokens' must be a list of token ids", "tokens");
      std::vector<int32_t> ids;
      for (const json& t : body["tokens"]) {
        if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= tok.id_limit())
          throw ApiError(400, "'tokens' holds " + t.dump() + ", not a token id in [0, " + std::to_string(tok.id_limit()) + ")", "tokens");
        ids.push_back(int32_t(t.get<int64_t>()));
      }
      send_json(res, 200, {{"prompt", tok.decode(ids, SpecialTokenText::Keep)}});
    });
  });
}

Server::Server(const ServerOptions& options, const ModelConfig& config, const Tokenizer& tokenizer, const ChatTemplate* chat_template,
               Engine& engine)
    : impl_(std::make_unique<Impl>(options, config, tokenizer, chat_template, engine)) {
  impl_->routes();
}

Server::~Server() = default;

int Server::bind() {
  const ServerOptions& o = impl_->o;
  if (o.port == 0) {
    const int port = impl_->http.bind_to_any_port(o.host);
    check(port > 0, "serve: cannot listen on " + o.host + " (any port)");
    return port;
  }
  check(impl_->http.bind_to_port(o.host, o.port), "serve: cannot listen on " + o.host + ":" + std::to_string(o.port));
  return o.port;
}

void Server::run() { impl_->http.listen_after_bind(); }

void Server::stop() { impl_->http.stop(); }

}  // namespace dsv2
