#include "tokenizer/tokenizer.h"

#include <atomic>
#include <filesystem>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/thread_pool.h"
#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer/word_cache.h"

namespace dsv2 {

// Working memory of one encoding thread, kept between calls in the tokenizer's pool.
struct EncodeScratch {
  RegexScratch regex;
  PieceList list, spare;
  std::vector<Piece> spare_pieces;
  BpeScratch bpe;
  WordCache cache;
};

struct Tokenizer::Impl {
  std::string name;
  std::unique_ptr<Normalizer> normalizer;
  PreTokenizer pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  AddedVocabulary added;
  Decoder decoder;
  SpecialTokenFrame frame;
  int32_t id_limit = 0;

  std::mutex pool_mutex;
  std::vector<std::unique_ptr<EncodeScratch>> pool;

  std::unique_ptr<EncodeScratch> take_scratch() {
    {
      std::lock_guard<std::mutex> lock(pool_mutex);
      if (!pool.empty()) {
        auto s = std::move(pool.back());
        pool.pop_back();
        return s;
      }
    }
    return std::make_unique<EncodeScratch>();
  }
  void return_scratch(std::unique_ptr<EncodeScratch> s) {
    std::lock_guard<std::mutex> lock(pool_mutex);
    pool.push_back(std::move(s));
  }

  // Cuts `input` into the pieces of s.list (everything before the model).
  void cut(std::string_view input, EncodeScratch& s) const;
  void encode(std::string_view input, SpecialTokens special, EncodeScratch& s, std::vector<int32_t>& ids) const;
  // The string of `id` that the decoder sees; nullptr if no token has the id.
  const std::string* token_text(int32_t id) const;
  bool is_special(int32_t id) const {
    const AddedToken* t = added.find_by_id(id);
    return t && t->special;
  }
  void add_tokens(const nlohmann::json& list, RegexScratch& scratch);
};

void Tokenizer::Impl::cut(std::string_view input, EncodeScratch& s) const {
  check(input.size() < std::numeric_limits<uint32_t>::max() / 4, "text too long to tokenize at once (" +
                                                                     std::to_string(input.size()) + " bytes)");
  PieceList& list = s.list;
  list.text.clear();
  if (is_valid_utf8(input)) {
    list.text.assign(input);
  } else {
    append_utf8_lossy(list.text, input);
  }
  list.pieces.clear();
  if (!list.text.empty()) list.pieces.push_back(Piece{0, uint32_t(list.text.size()), -1});

  added.split(list, s.spare_pieces, false);
  if (normalizer) {
    rewrite_text_pieces(list, s.spare, [&](std::string_view piece, std::string& out) {
      out += normalizer->normalize(piece, s.regex);
    });
  }
  added.split(list, s.spare_pieces, true);
  pre_tokenizer.apply(list, s.spare, s.regex);
}

void Tokenizer::Impl::encode(std::string_view input, SpecialTokens special, EncodeScratch& s,
                             std::vector<int32_t>& ids) const {
  cut(input, s);
  const PieceList& list = s.list;
  if (special == SpecialTokens::Add) ids.insert(ids.end(), frame.prefix.begin(), frame.prefix.end());
  for (const Piece& piece : list.pieces) {
    if (!piece.is_text()) {
      ids.push_back(piece.added_token_id);
      continue;
    }
    const std::string_view word(list.text.data() + piece.begin, piece.end - piece.begin);
    const uint64_t hash = WordCache::hash(word);
    if (s.cache.find(word, hash, ids)) continue;
    const size_t first = ids.size();
    model->tokenize(word, s.bpe, ids);
    s.cache.insert(word, hash, ids.data() + first, ids.size() - first);
  }
  if (special == SpecialTokens::Add) ids.insert(ids.end(), frame.suffix.begin(), frame.suffix.end());
}

const std::string* Tokenizer::Impl::token_text(int32_t id) const {
  if (const AddedToken* t = added.find_by_id(id)) return &t->normalized_content;
  return model->id_to_token(id);
}

// Mirrors tokenizers' AddedVocabulary::add_tokens: the id of a token is that of an earlier
// added token or of the model vocabulary with the same content, else the next free id (the
// "id" written in the file is not what decides).
void Tokenizer::Impl::add_tokens(const nlohmann::json& list, RegexScratch& scratch) {
  const int64_t vocab_size = model->vocabulary_size();
  int32_t next_id = int32_t(vocab_size);
  for (const AddedToken& t : added.tokens()) next_id = std::max(next_id, t.id + 1);
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& j = list[i];
    const std::string where = name + ": added_tokens[" + std::to_string(i) + "]";
    check(j.is_object(), where + ": expected an object");
    AddedToken token;
    token.content = json_string(j, "content", where);
    if (token.content.empty()) continue;
    token.single_word = json_bool(j, "single_word", where, false);
    token.lstrip = json_bool(j, "lstrip", where, false);
    token.rstrip = json_bool(j, "rstrip", where, false);
    token.special = json_bool(j, "special", where, false);
    token.normalized = json_bool(j, "normalized", where, !token.special);
    if (const AddedToken* earlier = added.find_by_content(token.content)) {
      token.id = earlier->id;
    } else if (auto id = model->token_to_id(token.content)) {
      token.id = *id;
    } else {
      token.id = next_id++;
    }
    token.normalized_content = token.normalized && normalizer ? normalizer->normalize(token.content, scratch) : token.content;
    added.add(std::move(token));
  }
  added.build_matchers();
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, const std::string* config_json, const std::string& name) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(tokenizer_json);
  } catch (const nlohmann::json::exception& e) {
    throw Error(name + ": invalid JSON: " + e.what());
  }
  check(j.is_object(), name + ": expected a JSON object at the top level");
  auto impl = std::make_unique<Impl>();
  impl->name = name;
  auto field = [&](const char* key) -> const nlohmann::json& {
    static const nlohmann::json null;
    auto it = j.find(key);
    return it == j.end() ? null : *it;
  };
  if (!field("version").is_null()) {
    check(field("version") == "1.0", name + ": unknown tokenizer.json version " + field("version").dump());
  }
  check(field("truncation").is_null(), name + ": truncation is not supported (it must be null)");
  check(field("padding").is_null(), name + ": padding is not supported (it must be null)");

  impl->normalizer = Normalizer::from_json(field("normalizer"), name + ": normalizer");
  impl->pre_tokenizer = PreTokenizer::from_json(field("pre_tokenizer"), name + ": pre_tokenizer");
  const nlohmann::json& model = field("model");
  check(!model.is_null(), name + ": missing field 'model'");
  const std::string model_type = json_type_of(model, name + ": model");
  check(model_type == "BPE", name + ": unsupported model type '" + model_type + "' (only BPE is supported)");
  impl->model = std::make_unique<BpeModel>(model, name + ": model", impl->pre_tokenizer.byte_level);
  impl->decoder = Decoder::from_json(field("decoder"), name + ": decoder");
  impl->frame = SpecialTokenFrame::from_post_processor(field("post_processor"), name + ": post_processor");

  if (!field("added_tokens").is_null()) {
    check(field("added_tokens").is_array(), name + ": field 'added_tokens' must be an array");
    RegexScratch scratch;
    impl->add_tokens(field("added_tokens"), scratch);
  }
  impl->id_limit = impl->model->id_limit();
  for (const AddedToken& t : impl->added.tokens()) impl->id_limit = std::max(impl->id_limit, t.id + 1);

  Tokenizer tokenizer(std::move(impl));
  if (config_json) {
    const std::string config_name = name + " (tokenizer_config.json)";
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(*config_json);
    } catch (const nlohmann::json::exception& e) {
      throw Error(config_name + ": invalid JSON: " + e.what());
    }
    check(config.is_object(), config_name + ": expected a JSON object at the top level");
    auto frame = SpecialTokenFrame::from_tokenizer_config(
        config, config_name, [&](std::string_view token) { return tokenizer.token_to_id(token); });
    if (frame) tokenizer.impl_->frame = std::move(*frame);
  }
  for (int32_t id : tokenizer.impl_->frame.prefix) {
    check(tokenizer.impl_->token_text(id) != nullptr, name + ": post-processor id " + std::to_string(id) + " names no token");
  }
  for (int32_t id : tokenizer.impl_->frame.suffix) {
    check(tokenizer.impl_->token_text(id) != nullptr, name + ": post-processor id " + std::to_string(id) + " names no token");
  }
  return tokenizer;
}

Tokenizer Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::string json_path = path, config_path;
  if (fs::is_directory(path, ec)) {
    json_path = (fs::path(path) / "tokenizer.json").string();
    check(fs::exists(json_path, ec), path + ": no tokenizer.json in this directory");
    config_path = (fs::path(path) / "tokenizer_config.json").string();
    if (!fs::exists(config_path, ec)) config_path.clear();
  } else {
    check(fs::exists(path, ec), path + ": no such file or directory");
  }
  const std::string text = read_text_file(json_path);
  std::string config;
  if (!config_path.empty()) config = read_text_file(config_path);
  return from_json(text, config_path.empty() ? nullptr : &config, json_path);
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, SpecialTokens special) const {
  std::unique_ptr<EncodeScratch> scratch = impl_->take_scratch();
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  try {
    impl_->encode(text, special, *scratch, ids);
  } catch (...) {
    impl_->return_scratch(std::move(scratch));
    throw;
  }
  impl_->return_scratch(std::move(scratch));
  return ids;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string_view>& texts,
                                                          SpecialTokens special, ThreadPool& pool) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  std::atomic<size_t> next{0};
  // One chunk per thread; each thread takes texts one at a time (lengths vary).
  pool.parallel_for(pool.size(), 1, [&](int64_t, int64_t) {
    for (size_t i = next++; i < texts.size(); i = next++) out[i] = encode(texts[i], special);
  });
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, SpecialTokenText special) const {
  StreamingDetokenizer stream(*this, special);
  std::string text;
  for (int32_t id : ids) text += stream.push(id);
  text += stream.finish();
  return text;
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text) const {
  EncodeScratch scratch;
  impl_->cut(text, scratch);
  std::vector<std::string> pieces;
  for (const Piece& p : scratch.list.pieces) {
    pieces.push_back(p.is_text() ? scratch.list.text.substr(p.begin, p.end - p.begin)
                                 : impl_->added.find_by_id(p.added_token_id)->content);
  }
  return pieces;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const AddedToken* t = impl_->added.find_by_content(token)) return t->id;
  return impl_->model->token_to_id(token);
}

int32_t Tokenizer::id_limit() const { return impl_->id_limit; }
const std::string& Tokenizer::name() const { return impl_->name; }

struct StreamingDetokenizer::State {
  const Tokenizer::Impl& tokenizer;
  SpecialTokenText special;
  Decoder::Stream stream;
  RegexScratch scratch;
};

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, SpecialTokenText special)
    : state_(new State{*tokenizer.impl_, special, Decoder::Stream(tokenizer.impl_->decoder), {}}) {}

StreamingDetokenizer::~StreamingDetokenizer() = default;

std::string StreamingDetokenizer::push(int32_t id) {
  const std::string* text = state_->tokenizer.token_text(id);
  check(text != nullptr, state_->tokenizer.name + ": id " + std::to_string(id) + " names no token");
  if (state_->special == SpecialTokenText::Skip && state_->tokenizer.is_special(id)) return {};
  return state_->stream.push(*text, state_->scratch);
}

std::string StreamingDetokenizer::finish() { return state_->stream.finish(state_->scratch); }

}  // namespace dsv2
