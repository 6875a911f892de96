#include "tokenizer/decoder.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/json_fields.h"

namespace dsv2 {
namespace {

std::string replace_all(std::string_view text, const Regex& pattern, const std::string& content, RegexScratch& scratch) {
  std::string out;
  size_t last = 0;
  pattern.for_each_match(text, scratch, [&](size_t begin, size_t end) {
    out.append(text.substr(last, begin - last));
    out.append(content);
    last = end;
  });
  out.append(text.substr(last));
  return out;
}

// tokenizers' Strip decoder: removes up to `start` leading and `stop` trailing `content`
// characters of a string.
std::string strip_characters(std::string_view text, std::string_view content, size_t start, size_t stop) {
  size_t begin = 0, end = text.size();
  for (size_t i = 0; i < start && text.substr(begin, content.size()) == content && begin < end; ++i) begin += content.size();
  for (size_t i = 0; i < stop && end - begin >= content.size() && text.substr(end - content.size(), content.size()) == content; ++i) {
    end -= content.size();
  }
  return std::string(text.substr(begin, end - begin));
}

class TokenReplace final : public TokenStage {
 public:
  TokenReplace(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void apply(std::string& token, RegexScratch& scratch) const override { token = replace_all(token, pattern_, content_, scratch); }

 private:
  Regex pattern_;
  std::string content_;
};

class TokenStrip final : public TokenStage {
 public:
  TokenStrip(std::string content, size_t start, size_t stop) : content_(std::move(content)), start_(start), stop_(stop) {}
  void apply(std::string& token, RegexScratch&) const override { token = strip_characters(token, content_, start_, stop_); }

 private:
  std::string content_;
  size_t start_, stop_;
};

// Replace on the joined text. A literal pattern streams: only a tail shorter than the
// pattern can still become part of a match. A regex pattern holds all text until the end.
class TextReplace final : public TextStage {
 public:
  TextReplace(std::shared_ptr<const Regex> pattern, std::string content, size_t literal_length)
      : pattern_(std::move(pattern)), content_(std::move(content)), literal_length_(literal_length) {}
  std::unique_ptr<TextStage> fresh() const override {
    return std::make_unique<TextReplace>(pattern_, content_, literal_length_);
  }
  std::string push(std::string_view text, RegexScratch& scratch) override {
    pending_.append(text);
    if (literal_length_ == 0) return {};
    std::string out;
    size_t last = 0;
    // Matches found left to right starting before `safe` are complete and final.
    const size_t safe = pending_.size() >= literal_length_ ? pending_.size() - literal_length_ + 1 : 0;
    pattern_->for_each_match(pending_, scratch, [&](size_t begin, size_t end) {
      if (begin >= safe || begin < last) return;
      out.append(pending_, last, begin - last);
      out.append(content_);
      last = end;
    });
    size_t cut = std::max(last, safe);
    while (cut > last && cut < pending_.size() && (static_cast<unsigned char>(pending_[cut]) & 0xC0) == 0x80) --cut;
    out.append(pending_, last, cut - last);
    pending_.erase(0, cut);
    return out;
  }
  std::string finish(RegexScratch& scratch) override {
    std::string out = replace_all(pending_, *pattern_, content_, scratch);
    pending_.clear();
    return out;
  }

 private:
  std::shared_ptr<const Regex> pattern_;
  std::string content_;
  size_t literal_length_;  // 0: a regex
  std::string pending_;
};

// Strip on the joined text: leading characters are dropped as they arrive; a trailing run
// of `content` is held back, since only the end of the text loses it.
class TextStrip final : public TextStage {
 public:
  TextStrip(std::string content, size_t start, size_t stop) : content_(std::move(content)), start_(start), stop_(stop) {}
  std::unique_ptr<TextStage> fresh() const override { return std::make_unique<TextStrip>(content_, start_, stop_); }
  std::string push(std::string_view text, RegexScratch&) override {
    pending_.append(text);
    while (stripped_ < start_ && !leading_done_ && pending_.size() >= content_.size()) {
      if (pending_.compare(0, content_.size(), content_) != 0) {
        leading_done_ = true;
        break;
      }
      pending_.erase(0, content_.size());
      ++stripped_;
    }
    if (stripped_ < start_ && !leading_done_) return {};  // still undecided
    leading_done_ = true;
    size_t keep = pending_.size();  // hold back up to `stop_` trailing content characters
    for (size_t i = 0; i < stop_ && keep >= content_.size() &&
                       pending_.compare(keep - content_.size(), content_.size(), content_) == 0; ++i) {
      keep -= content_.size();
    }
    std::string out = pending_.substr(0, keep);
    pending_.erase(0, keep);
    return out;
  }
  std::string finish(RegexScratch&) override {
    std::string out = strip_characters(pending_, content_, leading_done_ ? 0 : start_ - stripped_, stop_);
    pending_.clear();
    return out;
  }

 private:
  std::string content_;
  size_t start_, stop_;
  std::string pending_;
  size_t stripped_ = 0;
  bool leading_done_ = false;
};

// ByteLevel after a join sees the whole text as one token: held until the end.
class TextByteLevel final : public TextStage {
 public:
  std::unique_ptr<TextStage> fresh() const override { return std::make_unique<TextByteLevel>(); }
  std::string push(std::string_view text, RegexScratch&) override {
    pending_.append(text);
    return {};
  }
  std::string finish(RegexScratch&) override {
    std::string bytes;
    if (!ByteLevelAlphabet::get().decode(pending_, bytes)) bytes = pending_;
    pending_.clear();
    return utf8_lossy(bytes);
  }

 private:
  std::string pending_;
};

struct DecoderBuilder {
  std::vector<std::shared_ptr<const TokenStage>> token_stages;
  std::vector<std::shared_ptr<const TextStage>> text_stages;
  bool joined = false;
  Decoder::Join join = Decoder::Join::Concatenate;

  void add(const nlohmann::json& j, const std::string& where) {
    const std::string type = json_type_of(j, where);
    const std::string here = where + " (" + type + ")";
    if (type == "Sequence") {
      const auto& list = json_array(j, "decoders", here);
      for (size_t i = 0; i < list.size(); ++i) add(list[i], where + ".decoders[" + std::to_string(i) + "]");
    } else if (type == "ByteLevel") {
      if (joined) {
        text_stages.push_back(std::make_shared<TextByteLevel>());
      } else {
        joined = true;
        join = Decoder::Join::ByteLevel;
      }
    } else if (type == "Fuse") {
      joined = true;
    } else if (type == "Replace") {
      const std::string content = json_string(j, "content", here);
      if (!joined) {
        token_stages.push_back(std::make_shared<TokenReplace>(json_pattern(j, here), content));
      } else {
        const auto& pattern = j.at("pattern");
        const bool literal = pattern.contains("String") && pattern["String"].is_string();
        const size_t length = literal ? pattern["String"].get<std::string>().size() : 0;
        text_stages.push_back(std::make_shared<TextReplace>(std::make_shared<const Regex>(json_pattern(j, here)), content,
                                                            length));
      }
    } else if (type == "Strip") {
      const std::string content = json_string(j, "content", here);
      const int64_t start = json_integer(j, "start", here), stop = json_integer(j, "stop", here);
      check(start >= 0 && stop >= 0, here + ": start and stop must be >= 0");
      if (!joined) {
        token_stages.push_back(std::make_shared<TokenStrip>(content, size_t(start), size_t(stop)));
      } else {
        text_stages.push_back(std::make_shared<TextStrip>(content, size_t(start), size_t(stop)));
      }
    } else {
      throw Error(where + ": unsupported decoder type '" + type + "'");
    }
  }
};

}  // namespace

Decoder Decoder::from_json(const nlohmann::json& j, const std::string& where) {
  Decoder decoder;
  if (j.is_null()) return decoder;
  DecoderBuilder builder;
  builder.add(j, where);
  decoder.token_stages_ = std::move(builder.token_stages);
  decoder.text_stages_ = std::move(builder.text_stages);
  decoder.join_ = builder.join;
  return decoder;
}

Decoder::Stream::Stream(const Decoder& decoder) : decoder_(decoder) {
  for (const auto& stage : decoder.text_stages_) text_stages_.push_back(stage->fresh());
}

std::string Decoder::Stream::through_text_stages(std::string text, RegexScratch& scratch) {
  for (auto& stage : text_stages_) text = stage->push(text, scratch);
  return text;
}

std::string Decoder::Stream::push(std::string_view token, RegexScratch& scratch) {
  std::string piece(token);
  for (const auto& stage : decoder_.token_stages_) stage->apply(piece, scratch);
  std::string text;
  switch (decoder_.join_) {
    case Join::Spaces:
      if (!first_token_) text.push_back(' ');
      text += piece;
      break;
    case Join::Concatenate:
      text = std::move(piece);
      break;
    case Join::ByteLevel: {
      std::string bytes;
      if (!ByteLevelAlphabet::get().decode(piece, bytes)) bytes = piece;  // tokens outside the alphabet stay as they are
      text = repair_.push(bytes);
      break;
    }
  }
  first_token_ = false;
  return through_text_stages(std::move(text), scratch);
}

std::string Decoder::Stream::finish(RegexScratch& scratch) {
  std::string text = decoder_.join_ == Join::ByteLevel ? repair_.finish() : std::string();
  for (auto& stage : text_stages_) {
    text = stage->push(text, scratch);
    text += stage->finish(scratch);
  }
  return text;
}

}  // namespace dsv2
