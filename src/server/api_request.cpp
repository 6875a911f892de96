#include "server/api_request.h"

#include <cmath>

namespace dsv2 {

namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

std::string type_name(const json& v) { return v.type_name(); }

// The field if present and not null.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number_in(const json& body, const char* name, double lo, double hi, double fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) bad(name, std::string("'") + name + "' must be a number, not " + type_name(*v));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(name, std::string("'") + name + "' must be in [" + json(lo).dump() + ", " + json(hi).dump() + "], got " + v->dump());
  return x;
}

int64_t integer_in(const json& body, const char* name, int64_t lo, int64_t hi, int64_t fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number_integer()) bad(name, std::string("'") + name + "' must be an integer, not " + v->dump());
  // A uint64 above INT64_MAX reads as negative through get<int64_t>: compare as unsigned first.
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(hi))
    bad(name, std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v->dump());
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    bad(name, std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v->dump());
  return x;
}

bool boolean(const json& body, const char* name, bool fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_boolean()) bad(name, std::string("'") + name + "' must be a boolean, not " + type_name(*v));
  return v->get<bool>();
}

std::vector<int32_t> token_ids(const json& list, const char* param) {
  std::vector<int32_t> ids;
  for (const json& t : list) {
    if (!t.is_number_integer() || (t.is_number_unsigned() && t.get<uint64_t>() > uint64_t(INT32_MAX)) || t.get<int64_t>() < 0 ||
        t.get<int64_t>() > INT32_MAX)
      bad(param, std::string("'") + param + "' token ids must be non-negative integers, got " + t.dump());
    ids.push_back(int32_t(t.get<int64_t>()));
  }
  return ids;
}

std::vector<PromptInput> parse_prompts(const json& body) {
  const json* p = field(body, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  auto text = [](const json& s) { return PromptInput{s.get<std::string>(), {}, false}; };
  auto ids = [](const json& list) { return PromptInput{{}, token_ids(list, "prompt"), true}; };
  std::vector<PromptInput> out;
  if (p->is_string()) {
    out.push_back(text(*p));
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    out.push_back(ids(*p));
  } else if (p->is_array() && !p->empty()) {
    for (const json& item : *p) {
      if (item.is_string()) {
        out.push_back(text(item));
      } else if (item.is_array() && !item.empty()) {
        out.push_back(ids(item));
      } else {
        bad("prompt", "'prompt' must be a string, a list of strings, a list of token ids or a list of lists of token ids");
      }
    }
  } else {
    bad("prompt", "'prompt' must be a non-empty string, list of strings, list of token ids or list of lists of token ids");
  }
  for (const PromptInput& in : out)
    if (!in.is_ids && in.text.empty()) bad("prompt", "'prompt' must not be empty");
  return out;
}

}  // namespace

nlohmann::json parse_body(const std::string& body) {
  if (body.size() > kMaxBodyBytes)
    throw ApiError(413, "the request body has " + std::to_string(body.size()) + " bytes; the limit is " + std::to_string(kMaxBodyBytes));
  // Nesting depth outside strings.
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) bad("", "the JSON body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  try {
    json j = json::parse(body);
    if (!j.is_object()) bad("", "the body must be a JSON object, not " + type_name(j));
    return j;
  } catch (const json::parse_error& e) {
    bad("", std::string("the body is not valid JSON (UTF-8): ") + e.what());
  }
}

CompletionRequest parse_completion_request(const json& body, Endpoint endpoint) {
  CompletionRequest r;
  r.endpoint = endpoint;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) bad("model", "'model' must be a string");
    r.model = m->get<std::string>();
  }
  if (endpoint == Endpoint::Chat) {
    const json* m = field(body, "messages");
    if (!m || !m->is_array() || m->empty()) bad("messages", "'messages' must be a non-empty list of messages");
    for (size_t i = 0; i < m->size(); ++i) {
      const json& msg = (*m)[i];
      const std::string at = "messages[" + std::to_string(i) + "]";
      if (!msg.is_object()) bad(at, "'" + at + "' must be an object");
      if (!msg.contains("role") || !msg["role"].is_string()) bad(at + ".role", "'" + at + ".role' must be a string");
      const std::string role = msg["role"].get<std::string>();
      if (role != "system" && role != "user" && role != "assistant" && role != "tool" && role != "developer")
        bad(at + ".role", "'" + at + ".role' must be system, developer, user, assistant or tool, got '" + role + "'");
    }
    r.messages = nlohmann::ordered_json::parse(m->dump());
    if (field(body, "tools") || field(body, "functions") || field(body, "tool_choice"))
      bad("tools", "tools and function calling are not supported");
  } else {
    r.prompts = parse_prompts(body);
    if (boolean(body, "echo", false)) bad("echo", "'echo' is not supported");
    if (field(body, "suffix")) bad("suffix", "'suffix' is not supported");
    if (integer_in(body, "best_of", 1, 1, 1) != 1) bad("best_of", "'best_of' must be 1");
  }
  if (const json* lb = field(body, "logit_bias"); lb && !lb->empty()) bad("logit_bias", "'logit_bias' is not supported");

  const int64_t max_tokens = integer_in(body, "max_tokens", 1, INT32_MAX, -1);
  r.max_tokens = integer_in(body, "max_completion_tokens", 1, INT32_MAX, max_tokens);
  r.sampling.temperature = float(number_in(body, "temperature", 0, 2, 1.0));
  r.sampling.top_p = float(number_in(body, "top_p", 0, 1, 1.0));
  if (r.sampling.top_p == 0.0f) bad("top_p", "'top_p' must be > 0");
  const int64_t top_k = integer_in(body, "top_k", -1, INT32_MAX, 0);
  r.sampling.top_k = top_k < 0 ? 0 : top_k;
  r.sampling.min_p = float(number_in(body, "min_p", 0, 1, 0));
  r.sampling.presence_penalty = float(number_in(body, "presence_penalty", -2, 2, 0));
  r.sampling.frequency_penalty = float(number_in(body, "frequency_penalty", -2, 2, 0));
  r.sampling.repetition_penalty = float(number_in(body, "repetition_penalty", 1e-3, 100, 1.0));
  if (const json* s = field(body, "seed")) {
    if (!s->is_number_integer()) bad("seed", "'seed' must be an integer");
    r.sampling.seed = s->is_number_unsigned() ? s->get<uint64_t>() : uint64_t(s->get<int64_t>());
    r.seed_given = true;
  }
  r.n = int32_t(integer_in(body, "n", 1, 16, 1));
  if (const json* s = field(body, "stop")) {
    if (s->is_string()) {
      r.stop.push_back(s->get<std::string>());
    } else if (s->is_array()) {
      if (s->size() > 4) bad("stop", "'stop' holds at most 4 strings, got " + std::to_string(s->size()));
      for (const json& x : *s) {
        if (!x.is_string()) bad("stop", "'stop' must be a string or a list of strings");
        r.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or a list of strings");
    }
    for (const std::string& x : r.stop)
      if (x.empty()) bad("stop", "'stop' strings must not be empty");
  }
  if (endpoint == Endpoint::Chat) {
    const bool logprobs = boolean(body, "logprobs", false);
    const int64_t top = integer_in(body, "top_logprobs", 0, 20, -1);
    if (top >= 0 && !logprobs) bad("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    r.top_logprobs = logprobs ? int32_t(std::max<int64_t>(top, 0)) : -1;
  } else {
    r.top_logprobs = int32_t(integer_in(body, "logprobs", 0, 5, -1));
  }
  r.ignore_eos = boolean(body, "ignore_eos", false);
  r.stream = boolean(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!r.stream) bad("stream_options", "'stream_options' is only allowed with 'stream': true");
    r.include_usage = boolean(*so, "include_usage", false);
  }
  return r;
}

}  // namespace dsv2
