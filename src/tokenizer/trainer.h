// A byte-level BPE trainer that writes a tokenizer.json which Hugging Face tokenizers loads
// and encodes exactly as dsv2 does. Pre-tokenizer: GPT-2's ByteLevel regex (no prefix
// space); vocabulary: the special tokens (ids 0, 1, ...), the 256 byte characters, then one
// token per merge; post-processor: BOS before every sequence; decoder: ByteLevel.
//
// Training counts the words of the corpus once, then repeatedly merges the most frequent
// adjacent pair (ties: the smaller (left id, right id)), updating pair counts only in the
// words that contain the merged pair.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dsv2 {

class ThreadPool;

struct BpeTrainerOptions {
  int64_t vocab_size = 0;  // special tokens + 256 bytes + merges
  int64_t min_pair_count = 2;  // stop when the best pair is rarer than this
  std::vector<std::string> special_tokens = {"<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
                                             "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"};
};

struct TrainedTokenizer {
  std::string tokenizer_json;         // tokenizer.json text
  std::string tokenizer_config_json;  // tokenizer_config.json text (add_bos_token, bos/eos tokens)
  int64_t vocab_size = 0;             // reached (smaller than asked if the corpus ran out of pairs)
  int64_t words = 0, distinct_words = 0;
};

// Trains on the concatenation of `texts` (any bytes; invalid UTF-8 is repaired first).
TrainedTokenizer train_byte_level_bpe(const std::vector<std::string_view>& texts, const BpeTrainerOptions& options,
                                      ThreadPool& pool);

}  // namespace dsv2
