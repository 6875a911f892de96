// OpenAI-style request bodies of /v1/chat/completions and /v1/completions, validated into what the
// engine needs. Every problem throws ApiError with the HTTP status and the offending parameter.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sampler.h"

namespace dsv2 {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string type = "invalid_request_error")
      : std::runtime_error(std::move(message)), status(status), param(std::move(param)), type(std::move(type)) {}
  int status;
  std::string param, type;
};

enum class Endpoint { Chat, Completions };

// Where a prompt comes from: text (to tokenize, or a rendered chat) or token ids.
struct PromptInput {
  std::string text;
  std::vector<int32_t> ids;
  bool is_ids = false;
};

struct CompletionRequest {
  Endpoint endpoint = Endpoint::Chat;
  std::string model;
  nlohmann::ordered_json messages;   // Chat: the conversation
  std::vector<PromptInput> prompts;  // Completions: one or more prompts (a choice set each)
  int64_t max_tokens = -1;           // -1: up to the context
  SamplingOptions sampling;
  bool seed_given = false;
  std::vector<std::string> stop;     // at most 4, non-empty
  int32_t n = 1;
  int32_t top_logprobs = -1;         // -1: no logprobs
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;           // an extension (as vLLM's): generate past EOS up to max_tokens
};

// Largest accepted body and nesting depth (checked before parsing, so no input can exhaust the stack).
inline constexpr size_t kMaxBodyBytes = 4u << 20;
inline constexpr int kMaxJsonDepth = 64;

// Parses the body as JSON (ApiError 400 on malformed, too deep, or invalid UTF-8 input).
nlohmann::json parse_body(const std::string& body);
CompletionRequest parse_completion_request(const nlohmann::json& body, Endpoint endpoint);

}  // namespace dsv2
