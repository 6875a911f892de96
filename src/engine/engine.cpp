#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "core/error.h"

namespace dsv2 {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Eos: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Stopped: return "stop";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "?";
}

namespace {
EngineOptions with_running_cap(EngineOptions o, int32_t max_batch) {
  o.scheduler.max_running = std::min(o.scheduler.max_running, max_batch);
  return o;
}
}  // namespace

Engine::Engine(BatchedModel& model, const EngineOptions& options)
    : model_(model),
      cfg_(model.config()),
      o_(with_running_cap(options, model.max_batch())),
      max_context_(options.max_context > 0 ? options.max_context
                                           : std::min<int64_t>(cfg_.max_position_embeddings,
                                                               int64_t(model.pool_shape().n_blocks) * model.pool_shape().block_size)),
      blocks_(model.pool_shape().n_blocks, model.pool_shape().block_size),
      scheduler_(blocks_, o_.scheduler) {
  const LatentPoolShape shape = model.pool_shape();
  const int64_t limit = std::min<int64_t>(cfg_.max_position_embeddings, int64_t(shape.n_blocks) * shape.block_size);
  check(max_context_ > 0 && max_context_ <= limit,
        "--context must be in [1, " + std::to_string(limit) + "] (the smaller of max_position_embeddings, " +
            std::to_string(cfg_.max_position_embeddings) + ", and the cache's blocks x block size) (seen " + std::to_string(max_context_) + ")");
  stats_.blocks_total = stats_.blocks_free = blocks_.total_blocks();
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (auto& [id, a] : active_)
    if (a->callbacks.on_finish) a->callbacks.on_finish(FinishReason::Cancelled, a->state->cached_prefix_tokens);
  for (auto& a : submitted_)
    if (a->callbacks.on_finish) a->callbacks.on_finish(FinishReason::Cancelled, 0);
}

uint64_t Engine::submit(GenerationRequest request, RequestCallbacks callbacks) {
  check(!request.prompt.empty(), "the prompt holds no tokens");
  for (int32_t id : request.prompt)
    check(id >= 0 && id < cfg_.vocab_size, "prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                               std::to_string(cfg_.vocab_size) + ")");
  check(int64_t(request.prompt.size()) < max_context_, "the prompt has " + std::to_string(request.prompt.size()) +
                                                           " tokens; the context holds " + std::to_string(max_context_));
  check(request.max_new_tokens >= 1, "max_tokens must be >= 1");
  check(request.top_logprobs <= 20, "top_logprobs must be <= 20");
  validate_sampling_options(request.sampling);
  Sampler sampler(request.sampling);
  auto a = std::make_unique<Active>(
      Active{std::make_shared<ScheduledSequenceState>(), std::move(request), std::move(callbacks), std::move(sampler), 0});
  a->state->tokens = a->request.prompt;
  a->state->prompt_length = int64_t(a->request.prompt.size());
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    a->state->id = id;
    submitted_.push_back(std::move(a));
  }
  wake_.notify_all();
  return id;
}

void Engine::cancel(uint64_t id) {
  {
    std::lock_guard lock(mu_);
    cancelled_.push_back(id);
  }
  wake_.notify_all();
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Engine::loop() {
  for (;;) {
    std::vector<std::unique_ptr<Active>> arrived;
    std::vector<uint64_t> cancelled;
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !submitted_.empty() || !cancelled_.empty() || !active_.empty(); });
      if (stopping_) return;
      arrived.swap(submitted_);
      cancelled.swap(cancelled_);
    }
    for (auto& a : arrived) {
      scheduler_.add(a->state);
      const uint64_t id = a->state->id;
      active_.emplace(id, std::move(a));
    }
    for (uint64_t id : cancelled)
      if (active_.count(id)) end(id, FinishReason::Cancelled);
    step();
  }
}

void Engine::step() {
  Schedule schedule = scheduler_.schedule();
  for (const SequencePtr& s : schedule.unservable) end(s->id, FinishReason::Length);
  if (!schedule.work.empty()) run_step(schedule.work);
  std::lock_guard lock(mu_);
  ++stats_.steps;
  publish_stats();
}

void Engine::run_step(const std::vector<StepWork>& work) {
  const size_t B = work.size();
  std::vector<std::vector<int32_t>> ids(B);
  std::vector<bool> decoding(B);
  std::vector<SequenceChunk> chunks;
  for (size_t b = 0; b < B; ++b) {
    const Active& a = *active_.at(work[b].sequence->id);
    const ScheduledSequenceState& s = *a.state;
    const int64_t n = work[b].n_tokens;
    ids[b].assign(s.tokens.begin() + s.n_computed, s.tokens.begin() + s.n_computed + n);
    // Decode (absorbed attention) for the one new token after a sample; the prompt, and any tokens
    // recomputed after a preemption, go through the prefill form.
    decoding[b] = a.generated > 0 && n == 1 && s.n_computed + 1 == int64_t(s.tokens.size());
    chunks.push_back({&s.blocks, s.n_computed, &ids[b], decoding[b]});
  }
  try {
    model_.forward(chunks, logits_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine: a step of %zu sequences failed: %s\n", B, e.what());
    for (const StepWork& w : work) end(w.sequence->id, FinishReason::Error);
    return;
  }
  // Commit every sequence's tokens; those that caught up sample (in parallel: each has its own
  // sampler and logits row), then report in order on this thread.
  std::vector<size_t> ready;
  for (size_t b = 0; b < B; ++b) {
    ScheduledSequenceState& s = *active_.at(work[b].sequence->id)->state;
    scheduler_.computed(s, work[b].n_tokens);
    if (!decoding[b]) {
      std::lock_guard lock(mu_);
      stats_.prompt_tokens_computed += work[b].n_tokens;
    }
    if (s.tokens_to_compute() == 0) ready.push_back(b);
  }
  std::vector<TokenEvent> events(ready.size());
  std::vector<std::string> errors(ready.size());
  auto sample = [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const size_t b = ready[size_t(i)];
      try {
        events[size_t(i)] = sample_token(*active_.at(work[b].sequence->id), &logits_[b * size_t(cfg_.vocab_size)]);
      } catch (const std::exception& e) {
        errors[size_t(i)] = e.what();
      }
    }
  };
  if (o_.sampling_threads && ready.size() > 1) {
    o_.sampling_threads->parallel_for(int64_t(ready.size()), 1, sample);
  } else {
    sample(0, int64_t(ready.size()));
  }
  for (size_t i = 0; i < ready.size(); ++i) {
    const uint64_t id = work[ready[i]].sequence->id;
    try {
      if (!errors[i].empty()) throw Error(errors[i]);
      report(*active_.at(id), events[i]);
    } catch (const std::exception& e) {
      // A failing request (a callback that threw) ends alone; the engine keeps serving.
      std::fprintf(stderr, "engine: request %llu failed: %s\n", (unsigned long long)id, e.what());
      end(id, FinishReason::Error);
    }
  }
}

void Engine::publish_stats() {
  stats_.waiting = int64_t(scheduler_.n_waiting());
  stats_.running = int64_t(scheduler_.n_running());
  stats_.blocks_used = blocks_.used_blocks();
  stats_.blocks_free = blocks_.free_blocks();
  stats_.prefix_hit_rate = blocks_.prefix_hit_rate();
  stats_.prefix_hit_tokens = blocks_.prefix_hit_tokens();
  stats_.prefix_lookup_tokens = blocks_.prefix_lookup_tokens();
  stats_.preemptions = scheduler_.preemptions();
}

TokenEvent Engine::sample_token(Active& a, float* logits) const {
  const ScheduledSequenceState& s = *a.state;
  std::vector<float> raw;
  if (a.request.top_logprobs >= 0) raw.assign(logits, logits + cfg_.vocab_size);
  const int32_t token = a.sampler.sample(logits, cfg_.vocab_size, s.tokens, s.prompt_length);
  return a.request.top_logprobs >= 0 ? token_event(raw.data(), token, a.request.top_logprobs) : TokenEvent{token, 0.0f, {}};
}

void Engine::report(Active& a, const TokenEvent& event) {
  ScheduledSequenceState& s = *a.state;
  const int32_t token = event.token;
  s.tokens.push_back(token);
  ++a.generated;
  {
    std::lock_guard lock(mu_);
    ++stats_.generated_tokens;
  }
  const bool go_on = a.callbacks.on_token ? a.callbacks.on_token(event) : true;
  const bool eos = a.request.stop_at_eos &&
                   std::find(cfg_.eos_token_ids.begin(), cfg_.eos_token_ids.end(), int64_t(token)) != cfg_.eos_token_ids.end();
  if (eos) {
    end(s.id, FinishReason::Eos);
  } else if (!go_on) {
    end(s.id, FinishReason::Stopped);
  } else if (a.generated >= a.request.max_new_tokens || int64_t(s.tokens.size()) >= max_context_) {
    end(s.id, FinishReason::Length);
  }
}

TokenEvent Engine::token_event(const float* logits, int32_t token, int32_t top_n) const {
  const int64_t V = cfg_.vocab_size;
  const float mx = *std::max_element(logits, logits + V);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[i] - mx));
  const float log_z = mx + float(std::log(sum));
  TokenEvent e{token, logits[token] - log_z, {}};
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  const int64_t n = std::min<int64_t>(top_n, V);
  std::partial_sort(order.begin(), order.begin() + n, order.end(),
                    [&](int32_t x, int32_t y) { return logits[x] > logits[y] || (logits[x] == logits[y] && x < y); });
  for (int64_t i = 0; i < n; ++i) e.top.emplace_back(order[size_t(i)], logits[order[size_t(i)]] - log_z);
  return e;
}

void Engine::end(uint64_t id, FinishReason reason) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  std::unique_ptr<Active> a = std::move(it->second);
  active_.erase(it);
  scheduler_.finish(a->state);
  {
    std::lock_guard lock(mu_);
    publish_stats();  // before on_finish, so that a finished request sees its blocks freed
  }
  if (a->callbacks.on_finish) a->callbacks.on_finish(reason, a->state->cached_prefix_tokens);
}

}  // namespace dsv2
