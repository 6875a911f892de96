// A Hugging Face tokenizer.json of the byte-level BPE kind, loaded and run in C++ with the
// same ids as the tokenizers library (0.23):
//   text -> lossy UTF-8 repair (invalid bytes become U+FFFD, as Python's
//           bytes.decode('utf-8', errors='replace') before tokenizers sees a str)
//        -> added tokens (not normalized) -> normalizer -> added tokens (normalized)
//        -> pre-tokenizer -> BPE (with a word cache) -> special tokens around the ids.
// Decoding maps ids to token strings and runs the decoder; StreamingDetokenizer does the
// same one id at a time and never emits part of a character.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv2 {

class ThreadPool;

enum class SpecialTokens { Add, Omit };             // BOS/EOS (the post-processor) when encoding
enum class SpecialTokenText { Keep, Skip };         // special added tokens when decoding

class Tokenizer {
 public:
  // `path` is a model directory (tokenizer.json, and tokenizer_config.json if present) or a
  // tokenizer.json file. Throws Error naming the file and the field on any bad input.
  static Tokenizer load(const std::string& path);
  // `config_json` is the text of tokenizer_config.json, or null; `name` names the source in errors.
  static Tokenizer from_json(std::string_view tokenizer_json, const std::string* config_json, const std::string& name);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // The ids of `text` (any bytes). Thread-safe.
  std::vector<int32_t> encode(std::string_view text, SpecialTokens special) const;
  // encode() of every text, spread over the pool's threads.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string_view>& texts, SpecialTokens special,
                                                 ThreadPool& pool) const;
  // The text of `ids`; throws Error on an id that names no token.
  std::string decode(std::span<const int32_t> ids, SpecialTokenText special) const;

  // The pieces the model receives for `text` (raw bytes with a byte-level pre-tokenizer);
  // an added token appears as its content. For tests and inspection.
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // One past the largest id of a token (model vocabulary or added token).
  int32_t id_limit() const;
  const std::string& name() const;

 private:
  friend class StreamingDetokenizer;
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Decodes ids one at a time: push() returns the text that is final so far (whole
// characters only); after finish() the concatenated output equals Tokenizer::decode(ids).
class StreamingDetokenizer {
 public:
  StreamingDetokenizer(const Tokenizer& tokenizer, SpecialTokenText special);
  ~StreamingDetokenizer();
  std::string push(int32_t id);
  std::string finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace dsv2
