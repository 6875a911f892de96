// Normalizers of tokenizer.json ("normalizer"): NFC, NFKC, NFD, NFKD (ICU), Lowercase,
// Replace, Prepend, Strip and Sequence. Each maps a text piece to its normalized text.
#pragma once
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "tokenizer/regex.h"

namespace dsv2 {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string_view text, RegexScratch& scratch) const = 0;

  // Builds the normalizer described by `j`; nullptr when it does nothing (null or an empty
  // Sequence). Throws Error naming `where` and the type for anything unsupported.
  static std::unique_ptr<Normalizer> from_json(const nlohmann::json& j, const std::string& where);
};

}  // namespace dsv2
