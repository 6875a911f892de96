// Server pieces without sockets: stop strings over streamed text, request validation, metrics text.
#include <gtest/gtest.h>

#include "server/api_request.h"
#include "server/metrics.h"
#include "server/stop_strings.h"
#include "test_util.h"

namespace dsv2 {
namespace {

// Feeds `pieces` one at a time; returns what was emitted, piece by piece.
std::vector<std::string> feed(StopStringFilter& f, const std::vector<std::string>& pieces) {
  std::vector<std::string> out;
  for (const std::string& p : pieces) out.push_back(f.push(p));
  return out;
}

TEST(StopStrings, HoldsBackAPossibleStartAndNeverEmitsTheStop) {
  StopStringFilter f({"END"});
  auto out = feed(f, {"abc E", "N", "D tail"});
  EXPECT_EQ(out[0], "abc ");  // "E" might start "END"
  EXPECT_EQ(out[1], "");
  EXPECT_EQ(out[2], "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.flush(), "");
}

TEST(StopStrings, ReleasesHeldTextWhenTheStopDoesNotFollow) {
  StopStringFilter f({"END", "xy"});
  auto out = feed(f, {"aE", "Nx", "z"});
  EXPECT_EQ(out[0], "a");
  EXPECT_EQ(out[1], "EN");  // "ENx": "EN" can no longer be "END"; "x" may start "xy"
  EXPECT_EQ(out[2], "xz");
  EXPECT_FALSE(f.stopped());
  StopStringFilter g({"END"});
  g.push("bE");
  EXPECT_EQ(g.flush(), "E");
}

TEST(StopStrings, EarliestStopWins) {
  StopStringFilter f({"cd", "b"});
  EXPECT_EQ(f.push("abcd"), "a");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.push("more"), "");
}

TEST(ApiRequest, ParsesSamplingFieldsAndRejectsBadOnes) {
  auto body = parse_body(R"({"prompt": ["a", [1, 2]], "max_tokens": 5, "temperature": 0.5, "top_k": -1, "stop": "x",
                             "presence_penalty": 1, "n": 2, "logprobs": 3, "seed": 9})");
  CompletionRequest r = parse_completion_request(body, Endpoint::Completions);
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[0].text, "a");
  EXPECT_EQ(r.prompts[1].ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(r.max_tokens, 5);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_EQ(r.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_TRUE(r.seed_given);
  for (const char* bad : {R"({"prompt": "x", "max_tokens": 1.5})", R"({"prompt": "x", "max_tokens": 18446744073709551615})",
                          R"({"prompt": [1, "a"]})", R"({"prompt": "x", "stop": [""]})", R"({"prompt": "x", "echo": true})",
                          R"({"prompt": "x", "logit_bias": {"5": 1}})"}) {
    EXPECT_THROW(parse_completion_request(parse_body(bad), Endpoint::Completions), ApiError) << bad;
  }
  EXPECT_THROW(parse_body(std::string(100, '[')), ApiError);
  EXPECT_THROW(parse_body("{\"a\": \"\xff\"}"), ApiError);
  try {
    parse_body(std::string(kMaxBodyBytes + 1, ' '));
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, 413);
  }
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  Histogram h({0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  std::string out;
  h.write(out, "x", "help");
  EXPECT_NE(out.find("x_bucket{le=\"0.1\"} 1\n"), std::string::npos);
  EXPECT_NE(out.find("x_bucket{le=\"1\"} 2\n"), std::string::npos);
  EXPECT_NE(out.find("x_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(out.find("x_count 3\n"), std::string::npos);
}

TEST(ServeCommand, BadOptionsAreErrorsBeforeListening) {
  const std::string model = std::string(DSV2_SOURCE_DIR) + "/models/default";
  for (const std::string& args : {std::string("serve"), "serve --model " + model + " --port 70000", "serve --model " + model + " --max-running 0",
                                  "serve --model " + model + " --prefill-chunk 512 --step-tokens 256",
                                  "serve --model " + model + " --cache-blocks 0", "serve --model " + model + " --context 5000",
                                  "serve --model " + model + " --cache-blocks 2 --block-size 4 --context 9",
                                  std::string("serve --model /nonexistent"), "serve --model " + model + " --bogus 1"}) {
    test::RunResult r = test::run_dsv2(args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
    EXPECT_FALSE(r.err.empty()) << args;
  }
}

}  // namespace
}  // namespace dsv2
