#include "tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace dsv2 {
namespace {

enum class UnicodeForm { NFC, NFKC, NFD, NFKD };

class UnicodeNormalizer final : public Normalizer {
 public:
  UnicodeNormalizer(UnicodeForm form, const std::string& where) {
    UErrorCode status = U_ZERO_ERROR;
    switch (form) {
      case UnicodeForm::NFC: instance_ = icu::Normalizer2::getNFCInstance(status); break;
      case UnicodeForm::NFKC: instance_ = icu::Normalizer2::getNFKCInstance(status); break;
      case UnicodeForm::NFD: instance_ = icu::Normalizer2::getNFDInstance(status); break;
      case UnicodeForm::NFKD: instance_ = icu::Normalizer2::getNFKDInstance(status); break;
    }
    check(U_SUCCESS(status), where + ": ICU normalizer unavailable: " + u_errorName(status));
  }
  std::string normalize(std::string_view text, RegexScratch&) const override {
    std::string out;
    icu::StringByteSink<std::string> sink(&out, int32_t(text.size()));
    UErrorCode status = U_ZERO_ERROR;
    instance_->normalizeUTF8(0, icu::StringPiece(text.data(), int32_t(text.size())), sink, nullptr, status);
    check(U_SUCCESS(status), std::string("Unicode normalization failed: ") + u_errorName(status));
    return out;
  }

 private:
  const icu::Normalizer2* instance_ = nullptr;
};

// Rust's char::to_lowercase on every character (full mappings, no context).
class LowercaseNormalizer final : public Normalizer {
 public:
  std::string normalize(std::string_view text, RegexScratch&) const override {
    std::string out;
    out.reserve(text.size());
    size_t at = 0;
    while (at < text.size()) {
      const auto c = static_cast<unsigned char>(text[at]);
      if (c < 0x80) {
        out.push_back(char(c >= 'A' && c <= 'Z' ? c + 32 : c));
        ++at;
        continue;
      }
      icu::UnicodeString one(UChar32(next_code_point(text, at)));
      one.toLower(icu::Locale::getRoot());
      one.toUTF8String(out);
    }
    return out;
  }
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string normalize(std::string_view text, RegexScratch& scratch) const override {
    std::string out;
    size_t last = 0;
    pattern_.for_each_match(text, scratch, [&](size_t begin, size_t end) {
      out.append(text.substr(last, begin - last));
      out.append(content_);
      last = end;
    });
    out.append(text.substr(last));
    return out;
  }

 private:
  Regex pattern_;
  std::string content_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string_view text, RegexScratch&) const override {
    return text.empty() ? std::string() : prefix_ + std::string(text);
  }

 private:
  std::string prefix_;
};

// Removes leading and/or trailing White_Space characters.
class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string_view text, RegexScratch&) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t next = begin;
        if (!u_isUWhiteSpace(UChar32(next_code_point(text, next)))) break;
        begin = next;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t at = start;
        if (!u_isUWhiteSpace(UChar32(next_code_point(text, at)))) break;
        end = start;
      }
    }
    return std::string(text.substr(begin, end - begin));
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string normalize(std::string_view text, RegexScratch& scratch) const override {
    std::string current(text);
    for (const auto& step : steps_) current = step->normalize(current, scratch);
    return current;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> Normalizer::from_json(const nlohmann::json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type_of(j, where);
  const std::string here = where + " (" + type + ")";
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    const auto& list = json_array(j, "normalizers", here);
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = from_json(list[i], where + ".normalizers[" + std::to_string(i) + "]");
      if (step) steps.push_back(std::move(step));
    }
    if (steps.empty()) return nullptr;
    if (steps.size() == 1) return std::move(steps[0]);
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::NFC, here);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(UnicodeForm::NFKC, here);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::NFD, here);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(UnicodeForm::NFKD, here);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(json_pattern(j, here), json_string(j, "content", here));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(json_string(j, "prepend", here));
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(json_bool(j, "strip_left", here, true), json_bool(j, "strip_right", here, true));
  }
  throw Error(where + ": unsupported normalizer type '" + type + "'");
}

}  // namespace dsv2
