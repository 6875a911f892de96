#include "test_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "core/error.h"
#include "core/quant.h"
#include "model/quantize.h"

namespace dsv2::test {

namespace fs = std::filesystem;

namespace {
struct TempRoot {
  std::string path;
  TempRoot() {
    path = (fs::temp_directory_path() / ("dsv2_tests_" + std::to_string(::getpid()))).string();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempRoot() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
TempRoot& temp_root() {
  static TempRoot root;
  return root;
}
}  // namespace

std::string temp_dir(const std::string& tag) {
  static int counter = 0;
  std::string p = temp_root().path + "/" + tag + "_" + std::to_string(counter++);
  fs::create_directories(p);
  return p;
}

RunResult run_dsv2(const std::string& args) { return run_dsv2_with_input(args, ""); }

RunResult run_dsv2_with_input(const std::string& args, const std::string& input) {
  const std::string dir = temp_dir("run");
  const std::string err_path = dir + "/err.txt", in_path = dir + "/in.txt";
  write_file(in_path, input);
  const std::string cmd = std::string(DSV2_BINARY) + " " + args + " 2>" + err_path + " <" + in_path;
  RunResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + cmd);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.err = read_file(err_path);
  return r;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::vector<float> read_f32_file(const std::string& path) {
  std::string bytes = read_file(path);
  if (bytes.size() % 4) throw std::runtime_error(path + ": size is not a multiple of 4");
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

double activation_rounding_bound(const float* x, const float* w, int64_t K) {
  double bound = 0, magnitude = 0;
  for (int64_t b = 0; b < K; b += kQuantBlock) {
    float amax = 0;
    for (int64_t i = b; i < std::min(K, b + kQuantBlock); ++i) amax = std::max(amax, std::fabs(x[i]));
    for (int64_t i = b; i < std::min(K, b + kQuantBlock); ++i) {
      bound += std::fabs(w[i]) * amax / 127.0 / 2;
      magnitude += std::fabs(w[i] * x[i]);
    }
  }
  return bound * 1.0001 + 1e-5 * magnitude;
}

double rel_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

std::vector<std::string> golden_names() { return {"lite_like", "v2_like", "no_rope_scaling", "dense2_vdiff"}; }

Golden load_golden(const std::string& name) {
  Golden g;
  const char* moved = std::getenv("DSV2_GOLDEN_DIR");  // a checkout in another place (e.g. on a GPU machine)
  g.dir = std::string(moved ? moved : DSV2_GOLDEN_DIR) + "/" + name;
  auto j = nlohmann::json::parse(read_file(g.dir + "/reference.json"));
  g.ids = j["ids"].get<std::vector<int32_t>>();
  g.n_ids = j["logits_shape"][0].get<int64_t>();
  g.vocab = j["logits_shape"][1].get<int64_t>();
  g.logits = read_f32_file(g.dir + "/" + j["logits_file"].get<std::string>());
  g.greedy_prompt = j["greedy_prompt"].get<std::vector<int32_t>>();
  g.greedy_new_tokens = j["greedy_new_tokens"].get<std::vector<int32_t>>();
  g.max_new_tokens = j["max_new_tokens"].get<int64_t>();
  if (int64_t(g.logits.size()) != g.n_ids * g.vocab) throw std::runtime_error(name + ": logits file has the wrong size");
  return g;
}

std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

std::vector<cpu::CpuIsa> supported_isas() {
  std::vector<cpu::CpuIsa> isas;
  for (cpu::CpuIsa isa : {cpu::CpuIsa::Portable, cpu::CpuIsa::Avx2, cpu::CpuIsa::Avx512, cpu::CpuIsa::Amx})
    if (cpu::cpu_supports(isa)) isas.push_back(isa);
  return isas;
}

Matrix stored_matrix(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng, std::vector<float>& deq,
                     std::vector<uint8_t>& f32_store, std::vector<uint8_t>& store, ThreadPool& pool) {
  const std::vector<float> v = randn(size_t(rows * cols), rng);
  f32_store.resize(v.size() * 4);
  std::memcpy(f32_store.data(), v.data(), f32_store.size());
  Matrix W{DType::F32, f32_store.data(), rows, cols};
  if (is_quantized(dtype)) {
    quantize_matrix(W, dtype, store, pool);
  } else if (dtype != DType::F32) {
    store.resize(v.size() * dtype_size(dtype));
    convert_from_f32(dtype, v.data(), store.data(), v.size());
    W = Matrix{dtype, store.data(), rows, cols};
  }
  deq.resize(v.size());
  matrix_rows_to_f32(W, 0, rows, deq.data());
  return W;
}

std::vector<float> randn(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<EngineOutcome> serve_all(Engine& engine, const std::vector<std::vector<int32_t>>& prompts, int64_t n,
                                     bool stop_at_eos) {
  std::vector<std::promise<EngineOutcome>> done(prompts.size());
  std::vector<EngineOutcome> partial(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest r;
    r.prompt = prompts[i];
    r.max_new_tokens = n;
    r.stop_at_eos = stop_at_eos;
    engine.submit(r, {[&partial, i](const TokenEvent& e) {
                        partial[i].tokens.push_back(e.token);
                        return true;
                      },
                      [&partial, &done, i](FinishReason why, int64_t) {
                        partial[i].reason = why;
                        done[i].set_value(partial[i]);
                      }});
  }
  std::vector<EngineOutcome> out;
  for (auto& d : done) out.push_back(d.get_future().get());
  return out;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void expect_contains(const std::string& text, const std::string& needle) {
  EXPECT_NE(text.find(needle), std::string::npos) << "'" << needle << "' not in: " << text;
}

}  // namespace dsv2::test
