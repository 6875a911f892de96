// The dsv2 program as users and outside checks call it: exact command forms, outputs, and a
// clear error with exit code 1 (never a crash) on every bad input.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace dsv2 {
namespace {

using test::run_dsv2;

void expect_fails(const std::string& args, const std::string& needle) {
  test::RunResult r = run_dsv2(args);
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\nstderr: " << r.err;
}

TEST(Cli, InfoOnThePresets) {
  test::RunResult r = run_dsv2("info --preset v2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["params_total"].get<int64_t>(), 235741434880);
  EXPECT_EQ(j["kv_cache_bytes_per_token"].get<int64_t>(), 69120);
  EXPECT_EQ(j["kv_cache_width_per_layer"].get<int64_t>(), 576);
  r = run_dsv2("info --preset v2-lite");
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["params_total"].get<int64_t>(), 15706484224);
  EXPECT_EQ(j["kv_cache_bytes_per_token"].get<int64_t>(), 31104);
  EXPECT_EQ(j["params_active_per_token"].get<int64_t>(), 2451435008);  // paper: 2.4B
  r = run_dsv2("info --preset v2-lite --cache-dtype f32");
  EXPECT_EQ(nlohmann::json::parse(r.out)["kv_cache_bytes_per_token"].get<int64_t>(), 62208);
}

// DSV2_CPU_ISA picks the matmul kernels' instruction set (read by the program at start): a known level
// runs, anything else is a clear error before any work.
TEST(Cli, CpuIsaEnvironmentVariableIsCheckedAtStart) {
  ::setenv("DSV2_CPU_ISA", "avx3", 1);
  test::RunResult r = run_dsv2("info --preset v2-lite");
  EXPECT_EQ(r.exit_code, 1);
  test::expect_contains(r.err, "DSV2_CPU_ISA must be portable, avx2, avx512 or amx (seen 'avx3')");
  ::setenv("DSV2_CPU_ISA", "portable", 1);
  r = run_dsv2("info --preset v2-lite");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ::unsetenv("DSV2_CPU_ISA");
}

TEST(Cli, LogitsWritesEveryPositionOfBothPaths) {
  test::Golden g = test::load_golden("v2_like");
  const std::string dir = test::temp_dir("cli");
  for (const char* path : {"prefill", "decode"}) {
    const std::string out = dir + "/" + path + ".f32";
    test::RunResult r = run_dsv2("logits --model " + g.dir + " --ids " + test::join_ids(g.ids) + " --out " + out +
                                 " --path " + path);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::vector<float> got = test::read_f32_file(out);
    ASSERT_EQ(got.size(), g.logits.size());
    for (int64_t p = 0; p < g.n_ids; ++p)
      EXPECT_LE(test::rel_l2(&got[size_t(p * g.vocab)], &g.logits[size_t(p * g.vocab)], size_t(g.vocab)), 1e-4);
  }
}

// `dsv2 logits` of fixture g's ids with `options` added (asserting that it ran), through a file in a
// fresh directory.
std::vector<float> logits_with(const test::Golden& g, const std::string& options) {
  const std::string out = test::temp_dir("cli") + "/logits.f32";
  test::RunResult r = run_dsv2("logits --model " + g.dir + " --ids " + test::join_ids(g.ids) + " --out " + out + " " + options);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return test::read_f32_file(out);
}

// --activations bf16 reaches the kernels: the BF16 fixture's logits move (measured mean relative L2 9e-3
// against f32 activations, test_bf16_activations.cpp), and bench reports the mode.
TEST(Cli, ActivationsOptionRoundsTheMatmulInputs) {
  test::Golden g = test::load_golden("v2_like");
  const std::vector<float> logits[2] = {logits_with(g, "--activations f32"), logits_with(g, "--activations bf16")};
  for (const std::vector<float>& l : logits) ASSERT_EQ(l.size(), g.logits.size());
  const double diff = test::rel_l2(logits[1].data(), logits[0].data(), logits[0].size());
  EXPECT_GT(diff, 1e-4);
  EXPECT_LT(diff, 5e-2);
  test::RunResult r = run_dsv2("bench --model " + g.dir + " --prompt-tokens 4 --gen-tokens 2 --json --activations bf16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["activations"], "bf16");
}

// bench times a prefill after a first one of the same prompt and reports both; the timed prefill starts
// from the context again, so decoding starts after the prompt once.
TEST(Cli, BenchTimesThePrefillAfterAFirstOne) {
  test::Golden g = test::load_golden("v2_like");
  test::RunResult r = run_dsv2("bench --model " + g.dir + " --prompt-tokens 5 --gen-tokens 2 --context 3 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["first_prefill_tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(j["prefill_tokens_per_s"].get<double>(), 0.0);
  EXPECT_EQ(j["decode_context_tokens"], 8);
  test::RunResult text = run_dsv2("bench --model " + g.dir + " --prompt-tokens 5 --gen-tokens 2");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  test::expect_contains(text.out, "tokens/s (the first after loading: ");
}

// --weight-pages: the logits are bit-identical with the files in huge pages or mapped, bench names the
// mode (huge by default), and anything else is an error.
TEST(Cli, WeightPagesKeepTheLogits) {
  test::Golden g = test::load_golden("v2_like");
  const std::vector<float> huge = logits_with(g, "--weight-pages huge"), mapped = logits_with(g, "--weight-pages mapped");
  ASSERT_EQ(huge.size(), g.logits.size());
  EXPECT_EQ(huge, mapped);
  for (const char* mode : {"", " --weight-pages mapped"}) {
    test::RunResult r = run_dsv2("bench --model " + g.dir + " --prompt-tokens 4 --gen-tokens 2 --json" + mode);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["weight_pages"], *mode ? "mapped" : "huge");
  }
  test::RunResult bad =
      run_dsv2("logits --model " + g.dir + " --ids 1,2 --out " + test::temp_dir("cli") + "/x.f32 --weight-pages 4k");
  EXPECT_NE(bad.exit_code, 0);
  test::expect_contains(bad.err, "--weight-pages must be huge or mapped (seen '4k')");
}

TEST(Cli, GenerateGreedyPrintsIdsOnTheLastLine) {
  test::Golden g = test::load_golden("lite_like");
  test::RunResult r = run_dsv2("generate --model " + g.dir + " --prompt-ids " + test::join_ids(g.greedy_prompt) +
                               " --max-new-tokens " + std::to_string(g.max_new_tokens) + " --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string last = r.out.substr(0, r.out.size() - 1);
  last = last.substr(last.rfind('\n') == std::string::npos ? 0 : last.rfind('\n') + 1);
  EXPECT_EQ(last, test::join_ids(g.greedy_new_tokens));
}

TEST(Cli, SamplingIsReproducibleWithASeed) {
  test::Golden g = test::load_golden("lite_like");
  const std::string args = "generate --model " + g.dir + " --prompt-ids 0,5,9 --max-new-tokens 12 --temperature 0.9 --top-p 0.9 --top-k 40 --min-p 0.01 --repetition-penalty 1.1 --print-ids --seed ";
  test::RunResult a = run_dsv2(args + "7"), b = run_dsv2(args + "7"), c = run_dsv2(args + "8");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST(Cli, InitWritesALoadableRandomModel) {
  const std::string dir = test::temp_dir("cli") + "/tiny";
  test::RunResult r = run_dsv2("init --preset tiny --layers 2 --random --out " + dir + " --dtype f32 --seed 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_dsv2("info --model " + dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["num_hidden_layers"].get<int64_t>(), 2);
  r = run_dsv2("generate --model " + dir + " --prompt-ids 0,1,2 --max-new-tokens 4 --no-eos-stop --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), ','), 3);
  // The same seed writes the same bytes.
  const std::string again = test::temp_dir("cli") + "/tiny";
  ASSERT_EQ(run_dsv2("init --preset tiny --layers 2 --random --out " + again + " --dtype f32 --seed 3").exit_code, 0);
  EXPECT_EQ(test::read_file(dir + "/model.safetensors"), test::read_file(again + "/model.safetensors"));
  expect_fails("init --preset tiny --random --out " + dir, "not an empty directory");
}

TEST(Cli, BadInputGetsAClearError) {
  test::Golden g = test::load_golden("lite_like");
  const std::string out = test::temp_dir("cli") + "/x.f32";
  expect_fails("logits --ids 1,2 --out " + out, "--model is required");
  expect_fails("logits --model " + g.dir + " --ids 1,x --out " + out, "'x' is not an integer");
  expect_fails("logits --model " + g.dir + " --ids 1,300 --out " + out, "token id 300 is outside the vocabulary [0, 300)");
  expect_fails("logits --model " + g.dir + " --ids 1,2 --out " + out + " --path sideways", "--path must be prefill or decode");
  expect_fails("logits --model " + g.dir + " --ids 1,2 --out /nonexistent/dir/x.f32", "cannot create");
  expect_fails("logits --model /nonexistent --ids 1 --out " + out, "/nonexistent");
  expect_fails("generate --model " + g.dir + " --prompt-ids 1 --temperature -2", "--temperature must be >= 0");
  expect_fails("generate --model " + g.dir + " --prompt-ids 1 --bogus 3", "unknown option --bogus");
  expect_fails("generate --model " + g.dir + " --prompt-ids 1 --max-new-tokens", "needs a value");
  expect_fails("info --preset v3", "unknown preset 'v3'");
  expect_fails("info", "exactly one of --model DIR and --preset NAME");
  expect_fails("init --preset tiny --out " + out, "--random is required");
  expect_fails("init --preset tiny --random --out " + out + "d --layers 0", "--layers must be between 1 and 4");
  expect_fails("info --preset tiny --cache-dtype int3", "unknown dtype 'int3'");
  expect_fails("serve --model " + g.dir + " --fast-batching", "--fast-batching applies to --device cuda");
  expect_fails("serve --model " + g.dir + " --cache-blocks 0", "--cache-blocks must be >= 1");
  expect_fails("serve --model " + g.dir + " --block-size 4096", "--block-size must be in [1, 1024]");
  expect_fails("bench --model " + g.dir + " --context -1", "--context must be >= 0");
  expect_fails("bench-attention --device gpu", "--device must be cpu or cuda (seen 'gpu')");
  expect_fails("bench-attention --context 0", "--context, --heads, --kv-lora-rank, --rope-dim, --layers and --repeats must be >= 1");
  expect_fails("bench-attention --activations bf16", "--activations bf16 (scores as bf16 dot products) needs --cache-dtype bf16");
  expect_fails("logits --model " + g.dir + " --ids 1,2 --out " + out + " --activations fp8",
               "--activations must be f32 or bf16 (seen 'fp8')");
  expect_fails("logits --model " + g.dir + " --ids 1,2 --out " + out + " --activations bf16",  // an F32 model
               "--activations bf16 needs BF16 weights; this model's Linear matrices are f32");
  expect_fails("perplexity --model " + g.dir + " --text " + out + " --activations f16", "--activations must be f32 or bf16");

  const std::string bad = test::temp_dir("cli");
  test::write_file(bad + "/config.json", "{\"architectures\": [\"MistralForCausalLM\"]}");
  expect_fails("info --model " + bad, "names no supported architecture");
  test::write_file(bad + "/config.json", "{ not json");
  expect_fails("info --model " + bad, "invalid JSON");

  test::RunResult r = run_dsv2("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos);
}

// bench-matmul on a shape far smaller than the caches: a bounded number of copies (not 512 MB of them,
// millions of calls a repeat), the figures in its JSON, and its options checked.
TEST(Cli, BenchMatmulRunsASmallShapeAndChecksItsOptions) {
  for (const char* weights : {"bf16", "int8", "q4"}) {
    test::RunResult r = run_dsv2(std::string("bench-matmul --rows 7 --cols 64 --tokens 3 --repeats 2 --json --weights ") + weights);
    ASSERT_EQ(r.exit_code, 0) << weights << "\n" << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["weights"].get<std::string>(), weights);
    EXPECT_EQ(j["rows"].get<int64_t>(), 7);
    EXPECT_EQ(j["cols"].get<int64_t>(), 64);
    EXPECT_EQ(j["tokens"].get<int64_t>(), 3);
    EXPECT_EQ(j["matrices"].get<int64_t>(), 1024);
    EXPECT_GT(j["gflop_per_s"].get<double>(), 0.0);
    EXPECT_GT(j["read_bandwidth_gb_per_s"].get<double>(), 0.0);
  }
  expect_fails("bench-matmul --rows 0", "--rows, --cols, --tokens and --repeats must be >= 1");
  expect_fails("bench-matmul --weights int9", "--weights must be bf16, int8 or q4 (seen 'int9')");
  expect_fails("bench-matmul --weights int8 --activations bf16", "--activations bf16 needs --weights bf16");
}

TEST(Cli, TruncatedWeightsAreAnErrorNotACrash) {
  test::Golden g = test::load_golden("lite_like");
  const std::string dir = test::temp_dir("cli") + "/trunc";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(g.dir + "/config.json", dir + "/config.json");
  std::string bytes = test::read_file(g.dir + "/model.safetensors");
  test::write_file(dir + "/model.safetensors", bytes.substr(0, bytes.size() / 2));
  expect_fails("logits --model " + dir + " --ids 1,2 --out " + dir + "/x.f32", "out of range");
}

}  // namespace
}  // namespace dsv2
