// Text in, text out with the default model (trained on the Brown corpus): generate --prompt against
// the greedy continuations transformers produced from the same checkpoint, streaming = decoding,
// the chat template's BOS counted once, and the interactive chat driven through its standard input.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace dsv2 {
namespace {

const std::string kModel = std::string(DSV2_SOURCE_DIR) + "/models/default";

std::string last_line(const std::string& out) {
  std::string s = out.substr(0, out.find_last_not_of('\n') + 1);
  const size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }  // prompts here hold no quote

TEST(TextCommands, GreedyTextMatchesTransformers) {
  const auto report = nlohmann::json::parse(test::read_file(kModel + "/training_report.json"));
  const Tokenizer tok = Tokenizer::load(kModel);
  ASSERT_FALSE(report["greedy_samples"].empty());
  for (const auto& [prompt, sample] : report["greedy_samples"].items()) {
    const std::vector<int32_t> all = sample["ids"].get<std::vector<int32_t>>();  // [BOS, prompt, continuation]
    const std::vector<int32_t> prompt_ids = tok.encode(prompt, SpecialTokens::Add);
    ASSERT_TRUE(std::equal(prompt_ids.begin(), prompt_ids.end(), all.begin())) << prompt;
    const std::vector<int32_t> continuation(all.begin() + long(prompt_ids.size()), all.end());

    test::RunResult ids = test::run_dsv2("generate --model " + kModel + " --prompt " + quoted(prompt) +
                                         " --max-new-tokens 40 --print-ids");
    ASSERT_EQ(ids.exit_code, 0) << ids.err;
    EXPECT_EQ(last_line(ids.out), test::join_ids(continuation)) << prompt;

    test::RunResult text = test::run_dsv2("generate --model " + kModel + " --prompt " + quoted(prompt) + " --max-new-tokens 40");
    ASSERT_EQ(text.exit_code, 0) << text.err;
    EXPECT_EQ(text.out, tok.decode(continuation, SpecialTokenText::Skip) + "\n") << prompt;
    EXPECT_NE(text.err.find("tokens/s"), std::string::npos);
  }
}

TEST(TextCommands, RenderedChatCarriesOneBos) {
  const Tokenizer tok = Tokenizer::load(kModel);
  const ChatTemplate chat = ChatTemplate::from_model_dir(kModel);
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  messages.push_back({{"role", "system"}, {"content", "Be brief."}});
  messages.push_back({{"role", "user"}, {"content", "Hello"}});
  const std::string text = chat.render(messages, true);
  EXPECT_EQ(text, "<｜begin▁of▁sentence｜>Be brief.\n\nUser: Hello\n\nAssistant:");
  const std::vector<int32_t> ids = tok.encode(text, SpecialTokens::Omit);
  const int32_t bos = *tok.token_to_id("<｜begin▁of▁sentence｜>");
  EXPECT_EQ(ids.front(), bos);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), bos), 1);
  // generate --chat prompts with exactly these ids.
  test::RunResult r = test::run_dsv2("generate --model " + kModel + " --chat --system 'Be brief.' --prompt Hello --max-new-tokens 3 --print-ids");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("prompt " + std::to_string(ids.size()) + " tokens"), std::string::npos) << r.err;
}

TEST(TextCommands, InteractiveChatKeepsHistoryAndResets) {
  test::RunResult r = test::run_dsv2_with_input("chat --model " + kModel + " --max-new-tokens 8 --temperature 0",
                                                "Hello there\nAnd then?\n/reset\n\nWhat now?\n/exit\nnot read\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(conversation reset)"), std::string::npos) << r.out;
  // Three answers, each followed by its statistics; the blank line and the line after /exit get none.
  size_t stats = 0;
  for (size_t at = r.err.find("tokens/s]"); at != std::string::npos; at = r.err.find("tokens/s]", at + 1)) ++stats;
  EXPECT_EQ(stats, 3u) << r.err;
  // The same first question after /reset gets the same greedy answer as at the start.
  test::RunResult again = test::run_dsv2_with_input("chat --model " + kModel + " --max-new-tokens 8 --temperature 0",
                                                    "What now?\n");
  const std::string first_answer = again.out.substr(2, again.out.find('\n') - 2);  // after "> "
  ASSERT_FALSE(first_answer.empty()) << again.out;
  EXPECT_NE(r.out.find(first_answer), std::string::npos) << r.out << "\nvs\n" << again.out;
}

TEST(TextCommands, CtrlCStopsTheAnswerAndTheChatGoesOn) {
  // An answer that runs to the end of the context (no EOS stop, a huge token limit: ~1,000 tokens, at
  // least half a second) gets SIGINT as soon as its first characters are out; the chat prints
  // "[stopped]", reads the next line (/exit, sent at 4 s) and leaves with status 0.
  const std::string dir = test::temp_dir("sigint");
  test::write_file(dir + "/run.sh",
                   "exec 3< <(printf 'Tell me a story\\n'; sleep 4; printf '/exit\\n')\n" + std::string(DSV2_BINARY) +
                       " chat --model " + kModel + " --no-eos-stop --max-new-tokens 1000000 <&3 >" + dir + "/out 2>" + dir +
                       "/err &\npid=$!\n"
                       "for i in $(seq 1000); do [ \"$(stat -c %s " + dir + "/out 2>/dev/null)\" -ge 24 ] 2>/dev/null && break; sleep 0.005; done\n"
                       "kill -INT $pid\nwait $pid\necho $? >" + dir + "/rc\n");
  ASSERT_EQ(std::system(("bash " + dir + "/run.sh").c_str()), 0);
  EXPECT_EQ(test::read_file(dir + "/rc"), "0\n") << test::read_file(dir + "/err");
  const std::string out = test::read_file(dir + "/out");
  EXPECT_NE(out.find(" [stopped]\n> "), std::string::npos) << out.substr(out.size() > 300 ? out.size() - 300 : 0) << test::read_file(dir + "/err");
}

TEST(TextCommands, BadCombinationsAreErrors) {
  auto fails = [](const std::string& args, const std::string& needle) {
    test::RunResult r = test::run_dsv2(args);
    EXPECT_EQ(r.exit_code, 1) << args;
    EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\n" << r.err;
  };
  fails("generate --model " + kModel + " --prompt hi --prompt-ids 1,2", "exactly one of --prompt TEXT and --prompt-ids IDS");
  fails("generate --model " + kModel + " --chat --prompt-ids 1,2", "--chat needs a text --prompt");
  fails("generate --model " + kModel + " --prompt hi --system x", "--system and --chat-template go with --chat");
  const std::string golden = std::string(DSV2_GOLDEN_DIR) + "/lite_like";  // a model directory without a tokenizer
  fails("generate --model " + golden + " --prompt hi", "tokenizer.json");
  fails("chat --model " + golden, "tokenizer.json");
  fails("chat --model " + kModel + " --context 2", "--context must be >= 16");
}

}  // namespace
}  // namespace dsv2
