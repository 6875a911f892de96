// Decoders of tokenizer.json ("decoder"): ByteLevel, Replace, Strip, Fuse and Sequence, as
// a pipeline that works token by token, so that decoding all ids at once and decoding them
// one at a time (streaming) run the same code and give the same text.
//
// tokenizers applies decoders to the list of token strings. Steps before the first joining
// step (ByteLevel, Fuse) act on each token; ByteLevel turns all tokens into bytes and then
// into one string with the lossy UTF-8 repair; steps after a join act on that one string,
// here as stream stages that hold back only what later text could still change.
#pragma once
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace dsv2 {

// A step applied to each token string before the join.
class TokenStage {
 public:
  virtual ~TokenStage() = default;
  virtual void apply(std::string& token, RegexScratch& scratch) const = 0;
};

// A step applied to the joined text as it streams; one object per stream (it has state).
class TextStage {
 public:
  virtual ~TextStage() = default;
  virtual std::unique_ptr<TextStage> fresh() const = 0;
  // Returns the output that is final given all input so far.
  virtual std::string push(std::string_view text, RegexScratch& scratch) = 0;
  virtual std::string finish(RegexScratch& scratch) = 0;
};

class Decoder {
 public:
  enum class Join {
    Spaces,       // no decoder: tokens joined by " "
    Concatenate,  // Fuse, or the end of the chain
    ByteLevel,    // byte characters -> bytes -> lossy UTF-8
  };

  // null: no decoder. Throws Error naming `where` and the type for anything unsupported.
  static Decoder from_json(const nlohmann::json& j, const std::string& where);

  class Stream {
   public:
    explicit Stream(const Decoder& decoder);
    std::string push(std::string_view token, RegexScratch& scratch);
    std::string finish(RegexScratch& scratch);

   private:
    std::string through_text_stages(std::string text, RegexScratch& scratch);
    const Decoder& decoder_;
    std::vector<std::unique_ptr<TextStage>> text_stages_;
    Utf8StreamRepair repair_;
    bool first_token_ = true;
  };

 private:
  std::vector<std::shared_ptr<const TokenStage>> token_stages_;
  Join join_ = Join::Spaces;
  std::vector<std::shared_ptr<const TextStage>> text_stages_;
};

}  // namespace dsv2
