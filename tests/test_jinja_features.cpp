// Every case of tests/data/jinja/features.json (made by tools/make_chat_template_goldens.mjs) renders
// exactly as jinja2 renders it under transformers' settings, and every error case fails with a
// dsv2::Error whose message says what went wrong.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <optional>

#include "test_util.h"
#include "tokenizer/jinja.h"

namespace dsv2 {
namespace {

struct FeatureCase {
  std::string name;
  std::string source;
  nlohmann::ordered_json context;
  std::optional<std::string> expected;        // jinja2's output
  std::optional<std::string> error_contains;  // set for cases jinja2 refuses
};

std::vector<FeatureCase> load_cases() {
  std::vector<FeatureCase> cases;
  try {
    const auto fixture = nlohmann::ordered_json::parse(test::read_file(std::string(DSV2_TEST_DATA_DIR) + "/jinja/features.json"));
    for (const auto& c : fixture["cases"]) {
      FeatureCase fc{c["name"], c["template"], c["context"], std::nullopt, std::nullopt};
      if (c.contains("expected")) fc.expected = c["expected"].get<std::string>();
      if (c.contains("error_contains")) fc.error_contains = c["error_contains"].get<std::string>();
      cases.push_back(std::move(fc));
    }
  } catch (const std::exception&) {
    cases.clear();  // FeatureFixture.HasCases reports it
  }
  return cases;
}

const std::vector<FeatureCase>& cases() {
  static const std::vector<FeatureCase> loaded = load_cases();
  return loaded;
}

std::string render(const FeatureCase& c) {
  return jinja::Template(c.source).render(jinja::value_from_json(c.context).as_dict());
}

TEST(FeatureFixture, HasCases) { EXPECT_GE(cases().size(), 100u) << "tests/data/jinja/features.json missing or broken"; }

class JinjaFeature : public testing::TestWithParam<size_t> {};

TEST_P(JinjaFeature, RendersAsJinja2) {
  const FeatureCase& c = cases()[GetParam()];
  if (c.expected) {
    std::string got;
    ASSERT_NO_THROW(got = render(c)) << c.source;
    EXPECT_EQ(got, *c.expected) << c.source;
  } else {
    ASSERT_TRUE(c.error_contains.has_value()) << c.name << ": a case needs an expected output or an error";
    try {
      const std::string got = render(c);
      ADD_FAILURE() << "rendered without an error: " << got;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(*c.error_contains), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("template line ", 0), 0u) << e.what();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixture, JinjaFeature, testing::Range<size_t>(0, cases().size()),
                         [](const testing::TestParamInfo<size_t>& info) { return cases()[info.param].name; });

}  // namespace
}  // namespace dsv2
