// Helpers shared by the tests: temporary directories, running the dsv2 program, golden fixtures,
// random inputs, serving prompts through an engine.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "engine/engine.h"
#include "model/weights.h"
#include "ops/cpu/ops_cpu.h"

namespace dsv2::test {

// A fresh empty directory under the system temp dir, removed at exit of the test process.
std::string temp_dir(const std::string& tag);

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};
// Runs the built dsv2 binary with `args` (shell words) and captures stdout and stderr.
RunResult run_dsv2(const std::string& args);
// The same with `input` on standard input.
RunResult run_dsv2_with_input(const std::string& args, const std::string& input);

std::vector<float> read_f32_file(const std::string& path);
void write_file(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

// ‖a − b‖₂ / ‖b‖₂ over n values.
double rel_l2(const float* a, const float* b, size_t n);

// How far Σ_i x_i·w_i over K values may move when each x_i is rounded to int8 steps of its block of 32
// (d = the block's largest |x| / 127): Σ_i |w_i| · d_i / 2, plus 1e-5 of Σ|x_i·w_i| for f32 sums.
double activation_rounding_bound(const float* x, const float* w, int64_t K);

// A fixture made by tools/make_golden_fixtures.py with transformers (float64 reference).
struct Golden {
  std::string dir;
  std::vector<int32_t> ids;
  int64_t n_ids = 0, vocab = 0;
  std::vector<float> logits;  // [n_ids, vocab]
  std::vector<int32_t> greedy_prompt, greedy_new_tokens;
  int64_t max_new_tokens = 0;
};
Golden load_golden(const std::string& name);
std::vector<std::string> golden_names();

std::string join_ids(const std::vector<int32_t>& ids);

// The message of the dsv2::Error that fn throws, or "(no error)".
std::string error_of(const std::function<void()>& fn);
// Expects `needle` in `text`, showing both when it is not.
void expect_contains(const std::string& text, const std::string& needle);

// n values drawn from N(0, scale²).
std::vector<float> randn(size_t n, std::mt19937& rng, float scale = 1.0f);

// A [rows, cols] matrix of N(0, 1) values stored as `dtype` (quantized for Q8_0/Q4_0); `deq` gets the
// values it holds as f32, `store` its bytes (`f32_store` the f32 values it was made from).
Matrix stored_matrix(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng, std::vector<float>& deq,
                     std::vector<uint8_t>& f32_store, std::vector<uint8_t>& store, ThreadPool& pool);

// Every cpu::CpuIsa level this CPU can run, Portable first.
std::vector<cpu::CpuIsa> supported_isas();

// Sets the CPU kernels' instruction set for one scope (cpu::set_cpu_isa) and puts the previous one back.
class IsaScope {
 public:
  explicit IsaScope(cpu::CpuIsa isa) : saved_(cpu::cpu_isa()) { cpu::set_cpu_isa(isa); }
  ~IsaScope() { cpu::set_cpu_isa(saved_); }
  IsaScope(const IsaScope&) = delete;
  IsaScope& operator=(const IsaScope&) = delete;

 private:
  cpu::CpuIsa saved_;
};

struct EngineOutcome {
  std::vector<int32_t> tokens;
  FinishReason reason = FinishReason::Cancelled;
};
// Submits every prompt at once (greedy, n new tokens) and waits for all their results.
std::vector<EngineOutcome> serve_all(Engine& engine, const std::vector<std::vector<int32_t>>& prompts, int64_t n,
                                     bool stop_at_eos = true);

}  // namespace dsv2::test
