// Shared by the tokenizer tests: the golden corpus (tests/tokenizer/corpus.json), the 1 MB
// input built from it, and where the tokenizers under test live.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dsv2::test {

struct TokenizerCase {
  std::string name;
  std::string bytes;  // the input as given to dsv2 (may be invalid UTF-8)
};

std::vector<TokenizerCase> tokenizer_corpus();
// Cases picked by a 64-bit LCG, each followed by a newline, until `size` bytes: the same bytes
// as make_big_input() in tools/make_tokenizer_goldens.py.
std::string tokenizer_big_input(const std::vector<TokenizerCase>& cases, size_t size = 1000000);
// FNV-1a 64 over the ids as little-endian uint32 (as fnv1a64() in the golden script).
uint64_t fnv1a64_ids(const std::vector<int32_t>& ids);

std::string v2_tokenizer_json();    // ../shared/data/deepseek-v2-tokenizer/tokenizer.json
std::string v3_tokenizer_dir();     // data/deepseek-v3-tokenizer (scripts/setup.sh fetches it)
std::string trained_tokenizer_dir();  // tests/tokenizer/trained
std::string tokenizer_test_dir();   // tests/tokenizer
// Fails the calling test (returns false) if `path` is missing, saying how to get it.
bool require_file(const std::string& path);

}  // namespace dsv2::test
