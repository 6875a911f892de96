#include "server/metrics.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

namespace dsv2 {

namespace {
std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// The server process's resident memory (Linux /proc/self/statm: sizes in pages); 0 if unreadable.
double resident_memory_bytes() {
  std::ifstream statm("/proc/self/statm");
  double total_pages = 0, resident_pages = 0;
  if (!(statm >> total_pages >> resident_pages)) return 0;
  return resident_pages * double(sysconf(_SC_PAGESIZE));
}
}  // namespace

void Histogram::observe(double v) {
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (v <= bounds_[i]) {
      ++counts_[i];
      break;
    }
  ++count_;
  sum_ += v;
}

void Histogram::write(std::string& out, const std::string& name, const std::string& help) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
}

ServerMetrics::ServerMetrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

void ServerMetrics::request_done(const std::string& endpoint, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{endpoint, status}];
}

void ServerMetrics::tokens(int64_t prompt, int64_t completion) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += prompt;
  completion_tokens_ += completion;
}

void ServerMetrics::time_to_first_token(double seconds) {
  std::lock_guard lock(mu_);
  ttft_.observe(seconds);
}

void ServerMetrics::inter_token_latency(double seconds) {
  std::lock_guard lock(mu_);
  itl_.observe(seconds);
}

std::string ServerMetrics::render(const EngineStats& e) const {
  std::lock_guard lock(mu_);
  std::string out;
  auto gauge = [&out](const std::string& name, const std::string& type, const std::string& help, double v) {
    out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + number(v) + "\n";
  };
  out += "# HELP dsv2_requests_total HTTP requests answered, by endpoint and status.\n# TYPE dsv2_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out += "dsv2_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n) + "\n";
  gauge("dsv2_prompt_tokens_total", "counter", "Prompt tokens of finished completion requests.", double(prompt_tokens_));
  gauge("dsv2_generation_tokens_total", "counter", "Completion tokens of finished completion requests.", double(completion_tokens_));
  gauge("dsv2_queue_depth", "gauge", "Sequences waiting to run.", double(e.waiting));
  gauge("dsv2_running_sequences", "gauge", "Sequences in the running batch.", double(e.running));
  gauge("dsv2_cache_blocks_used", "gauge", "Latent-cache blocks referenced by sequences.", double(e.blocks_used));
  gauge("dsv2_cache_blocks_free", "gauge", "Latent-cache blocks free (empty or cached and evictable).", double(e.blocks_free));
  gauge("dsv2_cache_blocks_total", "gauge", "Latent-cache blocks in the pool.", double(e.blocks_total));
  gauge("dsv2_prefix_cache_hit_rate", "gauge", "Prompt tokens (full blocks) found in the prefix cache / looked up.", e.prefix_hit_rate);
  gauge("dsv2_prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from the prefix cache.", double(e.prefix_hit_tokens));
  gauge("dsv2_preemptions_total", "counter", "Sequences preempted (blocks freed, recomputed later).", double(e.preemptions));
  gauge("dsv2_engine_steps_total", "counter", "Engine scheduler steps.", double(e.steps));
  gauge("dsv2_engine_prefill_tokens_total", "counter", "Prompt (and recomputed) tokens the engine ran through the model.",
        double(e.prompt_tokens_computed));
  gauge("dsv2_engine_generated_tokens_total", "counter", "Tokens the engine sampled (cancelled requests included).",
        double(e.generated_tokens));
  gauge("process_resident_memory_bytes", "gauge", "Resident memory of the server process.", resident_memory_bytes());
  ttft_.write(out, "dsv2_time_to_first_token_seconds", "Time from request arrival to its first generated token.");
  itl_.write(out, "dsv2_inter_token_latency_seconds", "Time between consecutive generated tokens of a request.");
  return out;
}

}  // namespace dsv2
