// What encoding with special tokens adds around the ids of one sequence: tokenizer.json's
// "post_processor" (TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel,
// Sequence), or, when tokenizer_config.json sets add_bos_token / add_eos_token, BOS and EOS
// as transformers' LlamaTokenizerFast does (it replaces the post-processor with them).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv2 {

struct SpecialTokenFrame {
  std::vector<int32_t> prefix, suffix;  // ids before and after the sequence

  using IdLookup = std::function<std::optional<int32_t>(std::string_view)>;
  // From tokenizer.json's "post_processor" (null: nothing added).
  static SpecialTokenFrame from_post_processor(const nlohmann::json& j, const std::string& where);
  // From tokenizer_config.json, if it has add_bos_token or add_eos_token; token strings are
  // resolved with `lookup`.
  static std::optional<SpecialTokenFrame> from_tokenizer_config(const nlohmann::json& config, const std::string& where,
                                                                const IdLookup& lookup);
};

}  // namespace dsv2
