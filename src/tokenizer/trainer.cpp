#include "tokenizer/trainer.h"

#include <algorithm>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "core/thread_pool.h"
#include "tokenizer/added_vocabulary.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"

namespace dsv2 {
namespace {

using ordered_json = nlohmann::ordered_json;

const ordered_json& pre_tokenizer_json() {
  static const ordered_json j = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  return j;
}

uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

// Pieces of about `target` bytes, cut after a newline.
std::vector<std::string_view> chunks_of(const std::vector<std::string_view>& texts, size_t target) {
  std::vector<std::string_view> chunks;
  for (std::string_view text : texts) {
    while (!text.empty()) {
      const size_t newline = text.size() <= target ? std::string_view::npos : text.find('\n', target);
      const size_t cut = newline == std::string_view::npos ? text.size() : newline + 1;
      chunks.push_back(text.substr(0, cut));
      text.remove_prefix(cut);
    }
  }
  return chunks;
}

// Word (raw bytes of a pre-tokenized piece) -> number of occurrences in the texts.
std::unordered_map<std::string, int64_t> count_words(const std::vector<std::string_view>& texts,
                                                     const std::vector<std::string>& special_tokens, ThreadPool& pool) {
  const PreTokenizer pre = PreTokenizer::from_json(pre_tokenizer_json(), "trainer pre_tokenizer");
  AddedVocabulary specials;
  for (size_t i = 0; i < special_tokens.size(); ++i) {
    specials.add(AddedToken{int32_t(i), special_tokens[i], special_tokens[i], false, false, false, false, true});
  }
  specials.build_matchers();
  const std::vector<std::string_view> chunks = chunks_of(texts, size_t(1) << 18);
  std::unordered_map<std::string, int64_t> total;
  std::mutex total_mutex;
  pool.parallel_for(int64_t(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    std::unordered_map<std::string, int64_t> counts;
    RegexScratch scratch;
    PieceList list, spare;
    for (int64_t c = begin; c < end; ++c) {
      list.text = utf8_lossy(chunks[size_t(c)]);
      list.pieces.assign(1, Piece{0, uint32_t(list.text.size()), -1});
      if (list.text.empty()) continue;
      specials.split(list, spare.pieces, false);
      pre.apply(list, spare, scratch);
      for (const Piece& p : list.pieces) {
        if (p.is_text()) ++counts[list.text.substr(p.begin, p.end - p.begin)];
      }
    }
    std::lock_guard<std::mutex> lock(total_mutex);
    for (auto& [word, n] : counts) total[word] += n;
  });
  return total;
}

class PairCounter {
 public:
  struct Word {
    std::vector<int32_t> symbols;
    int64_t count;
  };

  explicit PairCounter(std::vector<Word> words) : words_(std::move(words)) {
    for (size_t w = 0; w < words_.size(); ++w) add_pairs(int32_t(w), +1);
    for (const auto& [pair, count] : counts_) queue_.push({count, pair});
  }

  // The most frequent pair and its count; count 0 when none is left.
  std::pair<uint64_t, int64_t> best() {
    while (!queue_.empty()) {
      auto [count, pair] = queue_.top();
      auto it = counts_.find(pair);
      const int64_t current = it == counts_.end() ? 0 : it->second;
      if (current == count) return {pair, count};
      queue_.pop();
      if (current > 0 && current < count) queue_.push({current, pair});
    }
    return {0, 0};
  }

  // Replaces every (left, right) in the words containing it by `merged`.
  void merge(uint64_t pair, int32_t merged) {
    const auto left = int32_t(pair >> 32), right = int32_t(uint32_t(pair));
    std::vector<int32_t> word_ids = std::move(where_[pair]);
    where_.erase(pair);
    std::sort(word_ids.begin(), word_ids.end());
    word_ids.erase(std::unique(word_ids.begin(), word_ids.end()), word_ids.end());
    for (int32_t w : word_ids) {
      std::vector<int32_t>& symbols = words_[size_t(w)].symbols;
      bool found = false;
      for (size_t i = 0; i + 1 < symbols.size() && !found; ++i) found = symbols[i] == left && symbols[i + 1] == right;
      if (!found) continue;
      add_pairs(w, -1);
      std::vector<int32_t> merged_symbols;
      merged_symbols.reserve(symbols.size());
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          merged_symbols.push_back(merged);
          ++i;
        } else {
          merged_symbols.push_back(symbols[i]);
        }
      }
      symbols = std::move(merged_symbols);
      add_pairs(w, +1);
    }
    for (uint64_t p : raised_) queue_.push({counts_[p], p});
    raised_.clear();
  }

 private:
  void add_pairs(int32_t w, int sign) {
    const Word& word = words_[size_t(w)];
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const uint64_t p = pair_key(word.symbols[i], word.symbols[i + 1]);
      int64_t& c = counts_[p];
      c += sign * word.count;
      if (sign > 0) {
        where_[p].push_back(w);
        raised_.push_back(p);
      } else if (c == 0) {
        counts_.erase(p);
      }
    }
  }

  struct Entry {
    int64_t count;
    uint64_t pair;
    bool operator<(const Entry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
  };
  std::vector<Word> words_;
  std::unordered_map<uint64_t, int64_t> counts_;
  std::unordered_map<uint64_t, std::vector<int32_t>> where_;  // pair -> words that had it (may be stale)
  std::priority_queue<Entry> queue_;                          // lazily updated: stale entries are skipped
  std::vector<uint64_t> raised_;
};

std::string byte_chars(std::string_view bytes) {
  std::string out;
  ByteLevelAlphabet::get().append_encoded(out, bytes);
  return out;
}

std::string write_tokenizer_json(const std::vector<std::string>& special_tokens,
                                 const std::vector<std::string>& token_bytes,
                                 const std::vector<std::pair<int32_t, int32_t>>& merges) {
  const std::string& bos = special_tokens.at(0);
  ordered_json added = ordered_json::array();
  ordered_json vocab = ordered_json::object();
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    const bool special = id < special_tokens.size();
    vocab[special ? token_bytes[id] : byte_chars(token_bytes[id])] = id;
    if (special) {
      added.push_back({{"id", id}, {"content", token_bytes[id]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", true}});
    }
  }
  ordered_json merge_list = ordered_json::array();
  for (auto [l, r] : merges) merge_list.push_back({byte_chars(token_bytes[size_t(l)]), byte_chars(token_bytes[size_t(r)])});
  auto special_item = [&](int type_id) { return ordered_json{{"SpecialToken", {{"id", bos}, {"type_id", type_id}}}}; };
  auto sequence_item = [](const char* id, int type_id) { return ordered_json{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
  ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = pre_tokenizer_json();
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {special_item(0), sequence_item("A", 0)}},
                         {"pair", {special_item(0), sequence_item("A", 0), special_item(1), sequence_item("B", 1)}},
                         {"special_tokens", {{bos, {{"id", bos}, {"ids", {0}}, {"tokens", {bos}}}}}}};
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"},          {"dropout", nullptr},   {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},      {"byte_fallback", false}, {"ignore_merges", false},
                {"vocab", vocab},         {"merges", merge_list}};
  return j.dump(1) + "\n";
}

std::string write_tokenizer_config(const std::vector<std::string>& special_tokens) {
  ordered_json j;
  j["add_bos_token"] = true;
  j["add_eos_token"] = false;
  j["bos_token"] = special_tokens.at(0);
  j["eos_token"] = special_tokens.size() > 1 ? special_tokens[1] : special_tokens[0];
  j["pad_token"] = j["eos_token"];
  j["clean_up_tokenization_spaces"] = false;
  j["tokenizer_class"] = "PreTrainedTokenizerFast";
  return j.dump(2) + "\n";
}

}  // namespace

TrainedTokenizer train_byte_level_bpe(const std::vector<std::string_view>& texts, const BpeTrainerOptions& options,
                                      ThreadPool& pool) {
  const auto n_special = int64_t(options.special_tokens.size());
  check(n_special >= 1, "tokenizer train: at least one special token (BOS) is needed");
  check(options.vocab_size >= n_special + 256 && options.vocab_size <= (int64_t(1) << 24),
        "tokenizer train: --vocab-size must be between " + std::to_string(n_special + 256) +
            " (special tokens + 256 bytes) and 16777216 (seen " + std::to_string(options.vocab_size) + ")");
  for (const std::string& s : options.special_tokens) check(is_valid_utf8(s) && !s.empty(), "tokenizer train: bad special token");

  std::unordered_map<std::string, int64_t> counts = count_words(texts, options.special_tokens, pool);
  TrainedTokenizer result;
  std::vector<std::pair<std::string, int64_t>> sorted(counts.begin(), counts.end());
  std::sort(sorted.begin(), sorted.end());
  result.distinct_words = int64_t(sorted.size());

  std::vector<std::string> token_bytes(options.special_tokens);
  std::unordered_map<std::string, int32_t> id_of_bytes;
  for (int b = 0; b < 256; ++b) {
    id_of_bytes[std::string(1, char(b))] = int32_t(token_bytes.size());
    token_bytes.emplace_back(1, char(b));
  }
  std::vector<PairCounter::Word> words;
  words.reserve(sorted.size());
  for (const auto& [word, n] : sorted) {
    PairCounter::Word w{{}, n};
    for (unsigned char c : word) w.symbols.push_back(int32_t(n_special) + c);
    words.push_back(std::move(w));
    result.words += n;
  }
  PairCounter counter(std::move(words));
  std::vector<std::pair<int32_t, int32_t>> merges;
  while (int64_t(token_bytes.size()) < options.vocab_size) {
    auto [pair, count] = counter.best();
    if (count < options.min_pair_count || count == 0) break;
    const auto left = int32_t(pair >> 32), right = int32_t(uint32_t(pair));
    const std::string bytes = token_bytes[size_t(left)] + token_bytes[size_t(right)];
    auto [it, is_new] = id_of_bytes.emplace(bytes, int32_t(token_bytes.size()));
    if (is_new) token_bytes.push_back(bytes);
    merges.emplace_back(left, right);
    counter.merge(pair, it->second);
  }
  result.vocab_size = int64_t(token_bytes.size());
  result.tokenizer_json = write_tokenizer_json(options.special_tokens, token_bytes, merges);
  result.tokenizer_config_json = write_tokenizer_config(options.special_tokens);
  return result;
}

}  // namespace dsv2
