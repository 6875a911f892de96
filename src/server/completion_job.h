// One completion request in flight: its choices run as engine requests; the engine thread turns
// their tokens into text events (detokenized, stop strings held back) that the HTTP thread sends.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "server/metrics.h"
#include "server/stop_strings.h"
#include "tokenizer/tokenizer.h"

namespace dsv2 {

struct ChoiceEvent {
  int choice = 0;
  std::string text;                 // new text (may be empty)
  std::optional<TokenEvent> token;  // the token that produced it (for logprobs)
  bool finished = false;
  std::string finish_reason;        // "stop" or "length" when finished
};

class CompletionJob : public std::enable_shared_from_this<CompletionJob> {
 public:
  CompletionJob(const Tokenizer& tokenizer, const std::vector<std::string>& stop, int n_choices, ServerMetrics& metrics);

  // Callbacks for choice `choice` (called on the engine thread); they keep the job alive. The job
  // must be held by a shared_ptr.
  RequestCallbacks callbacks(int choice);
  // Waits up to `timeout` for events and takes them all.
  std::vector<ChoiceEvent> take_events(std::chrono::milliseconds timeout);
  bool all_finished() const;
  // The client is gone: every callback returns false from now on; the caller cancels the engine ids.
  void abandon() { abandoned_ = true; }
  int64_t completion_tokens() const;
  int64_t cached_prompt_tokens() const;

  std::vector<uint64_t> engine_ids;

 private:
  struct Choice {
    Choice(const Tokenizer& tokenizer, const std::vector<std::string>& stop)
        : detokenizer(tokenizer, SpecialTokenText::Skip), stops(stop) {}
    StreamingDetokenizer detokenizer;
    StopStringFilter stops;
    int64_t tokens = 0;
    std::chrono::steady_clock::time_point last_token;
  };
  void push(ChoiceEvent e);

  const Tokenizer& tokenizer_;
  ServerMetrics& metrics_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<Choice>> choices_;  // touched only on the engine thread
  std::atomic<bool> abandoned_ = false;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ChoiceEvent> events_;
  int n_finished_ = 0;
  int64_t completion_tokens_ = 0, cached_tokens_ = 0;
};

}  // namespace dsv2
