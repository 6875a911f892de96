#include "server/completion_job.h"

namespace dsv2 {

CompletionJob::CompletionJob(const Tokenizer& tokenizer, const std::vector<std::string>& stop, int n_choices, ServerMetrics& metrics)
    : tokenizer_(tokenizer), metrics_(metrics) {
  for (int i = 0; i < n_choices; ++i)
    choices_.push_back(std::make_unique<Choice>(tokenizer, stop));
}

RequestCallbacks CompletionJob::callbacks(int choice) {
  RequestCallbacks cb;
  cb.on_token = [this, self = shared_from_this(), choice](const TokenEvent& e) {
    Choice& c = *choices_[size_t(choice)];
    const auto now = std::chrono::steady_clock::now();
    if (c.tokens == 0) {
      metrics_.time_to_first_token(std::chrono::duration<double>(now - start_).count());
    } else {
      metrics_.inter_token_latency(std::chrono::duration<double>(now - c.last_token).count());
    }
    c.last_token = now;
    ++c.tokens;
    {
      std::lock_guard lock(mu_);
      ++completion_tokens_;
    }
    // An id past the tokenizer's (a padded model vocabulary) has no text.
    const std::string text = e.token < tokenizer_.id_limit() ? c.detokenizer.push(e.token) : std::string();
    push({choice, c.stops.push(text), e, false, ""});
    return !c.stops.stopped() && !abandoned_;
  };
  cb.on_finish = [this, self = shared_from_this(), choice](FinishReason reason, int64_t cached) {
    Choice& c = *choices_[size_t(choice)];
    std::string tail;
    if (!c.stops.stopped()) {
      tail = c.stops.push(c.detokenizer.finish());
      tail += c.stops.flush();
    }
    {
      std::lock_guard lock(mu_);
      cached_tokens_ += cached;
    }
    push({choice, tail, std::nullopt, true, reason == FinishReason::Length ? "length" : reason == FinishReason::Error ? "error" : "stop"});
  };
  return cb;
}

void CompletionJob::push(ChoiceEvent e) {
  {
    std::lock_guard lock(mu_);
    if (e.finished) ++n_finished_;
    events_.push_back(std::move(e));
  }
  cv_.notify_all();
}

std::vector<ChoiceEvent> CompletionJob::take_events(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
  std::vector<ChoiceEvent> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

bool CompletionJob::all_finished() const {
  std::lock_guard lock(mu_);
  return n_finished_ == int(choices_.size()) && events_.empty();
}

int64_t CompletionJob::completion_tokens() const {
  std::lock_guard lock(mu_);
  return completion_tokens_;
}

int64_t CompletionJob::cached_prompt_tokens() const {
  std::lock_guard lock(mu_);
  return cached_tokens_;
}

}  // namespace dsv2
