#include "model/safetensors.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace dsv2 {

using nlohmann::json;

namespace {

size_t header_dtype_size(const std::string& d) {
  static const std::map<std::string, size_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
      {"I8", 1},  {"U8", 1},  {"U16", 2}, {"U32", 4},  {"U64", 8}, {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

}  // namespace

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

DType TensorRef::dtype() const {
  if (dtype_name == "F32") return DType::F32;
  if (dtype_name == "F16") return DType::F16;
  if (dtype_name == "BF16") return DType::BF16;
  throw Error(*file + ": tensor '" + name + "' has dtype " + dtype_name + " (supported: BF16, F16, F32)");
}

SafetensorsFile::SafetensorsFile(const std::string& path, FileResidency residency) : file_(path, residency) {
  const size_t size = file_.size();
  check(size >= 8, path + ": truncated safetensors file (" + std::to_string(size) + " bytes, less than the 8-byte header length)");
  uint64_t header_len;
  std::memcpy(&header_len, file_.data(), 8);
  check(header_len <= kMaxHeaderBytes && header_len <= size - 8,
        path + ": header length " + std::to_string(header_len) + " runs past the end of the file (" +
            std::to_string(size) + " bytes)");
  const char* hdr = reinterpret_cast<const char*>(file_.data() + 8);
  json j;
  try {
    j = json::parse(hdr, hdr + header_len);
  } catch (const json::parse_error& e) {
    throw Error(path + ": invalid JSON header: " + e.what());
  }
  check(j.is_object(), path + ": header is not a JSON object");
  const std::byte* data = file_.data() + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // to find overlaps
  std::vector<const std::string*> range_names;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const json& e = it.value();
    const std::string where = path + ": tensor '" + name + "'";
    check(e.is_object() && e.contains("dtype") && e["dtype"].is_string() && e.contains("shape") &&
              e["shape"].is_array() && e.contains("data_offsets") && e["data_offsets"].is_array() &&
              e["data_offsets"].size() == 2,
          where + ": entry needs dtype (string), shape (list) and data_offsets ([begin, end]); seen " + e.dump().substr(0, 200));
    TensorRef t;
    t.name = name;
    t.dtype_name = e["dtype"].get<std::string>();
    size_t elem = header_dtype_size(t.dtype_name);
    check(elem > 0, where + ": unknown dtype '" + t.dtype_name + "'");
    uint64_t numel = 1;
    for (const auto& d : e["shape"]) {
      check(d.is_number_unsigned(), where + ": shape " + e["shape"].dump() + " must hold non-negative integers");
      uint64_t v = d.get<uint64_t>();
      check(v < (1ull << 40) && (v == 0 || numel <= (1ull << 50) / v), where + ": shape " + e["shape"].dump() + " is too large");
      numel *= v;
      t.shape.push_back(int64_t(v));
    }
    const json& off = e["data_offsets"];
    check(off[0].is_number_unsigned() && off[1].is_number_unsigned(),
          where + ": data_offsets " + off.dump() + " must be non-negative integers");
    uint64_t b = off[0].get<uint64_t>(), en = off[1].get<uint64_t>();
    check(b <= en && en <= data_size,
          where + ": data_offsets " + off.dump() + " out of range (data section is " + std::to_string(data_size) + " bytes)");
    check(en - b == numel * elem, where + ": data_offsets " + off.dump() + " hold " + std::to_string(en - b) +
                                      " bytes but dtype " + t.dtype_name + " and shape " + e["shape"].dump() +
                                      " need " + std::to_string(numel * elem));
    t.data = data + b;
    t.n_bytes = size_t(en - b);
    auto [pos, inserted] = tensors_.emplace(name, std::move(t));
    pos->second.file = &file_.path();
    ranges.push_back({b, en});
    range_names.push_back(&pos->first);
  }
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t k = 1; k < order.size(); ++k) {
    const auto& prev = ranges[order[k - 1]];
    const auto& cur = ranges[order[k]];
    check(cur.first >= prev.second || cur.first == cur.second || prev.first == prev.second,
          path + ": tensors '" + *range_names[order[k - 1]] + "' and '" + *range_names[order[k]] +
              "' overlap (data_offsets [" + std::to_string(prev.first) + ", " + std::to_string(prev.second) +
              "] and [" + std::to_string(cur.first) + ", " + std::to_string(cur.second) + "])");
  }
}

size_t Checkpoint::file_bytes() const {
  size_t n = 0;
  for (const auto& f : files_) n += f->size();
  return n;
}

Checkpoint::Checkpoint(const std::string& model_dir, FileResidency residency) : dir_(model_dir) {
  namespace fs = std::filesystem;
  check(fs::is_directory(model_dir), model_dir + ": not a directory");
  const std::string index_path = model_dir + "/model.safetensors.index.json";
  const std::string single_path = model_dir + "/model.safetensors";
  if (fs::exists(index_path)) {
    json j;
    try {
      j = json::parse(read_text_file(index_path));
    } catch (const json::parse_error& e) {
      throw Error(index_path + ": invalid JSON: " + e.what());
    }
    check(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
          index_path + ": needs a 'weight_map' object");
    // The shards the index names, checked, and their total size (whether huge pages fit), before any opens.
    std::map<std::string, SafetensorsFile*> shards;
    size_t bytes = 0;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      check(it.value().is_string(), index_path + ": weight_map['" + it.key() + "'] must be a file name");
      const std::string shard = it.value().get<std::string>();
      check(shard.find('/') == std::string::npos && shard != ".." && !shard.empty(),
            index_path + ": weight_map['" + it.key() + "'] names '" + shard + "', not a file in the model directory");
      std::error_code ec;
      const uintmax_t n = fs::file_size(model_dir + "/" + shard, ec);  // a missing shard fails when opened
      if (shards.emplace(shard, nullptr).second && !ec) bytes += size_t(n);
    }
    residency_ = residency_that_fits(bytes, residency);
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      const std::string shard = it.value().get<std::string>();
      SafetensorsFile*& file = shards.at(shard);
      if (!file) {
        files_.push_back(std::make_unique<SafetensorsFile>(model_dir + "/" + shard, residency_));
        file = files_.back().get();
      }
      auto t = file->tensors().find(it.key());
      check(t != file->tensors().end(),
            index_path + ": tensor '" + it.key() + "' is mapped to " + shard + ", which does not hold it");
      by_name_[it.key()] = &t->second;
    }
  } else if (fs::exists(single_path)) {
    std::error_code ec;
    const uintmax_t n = fs::file_size(single_path, ec);  // not a file: fails when opened
    residency_ = residency_that_fits(ec ? 0 : size_t(n), residency);
    files_.push_back(std::make_unique<SafetensorsFile>(single_path, residency_));
    for (const auto& [name, t] : files_.back()->tensors()) by_name_[name] = &t;
  } else {
    throw Error(model_dir + ": no model.safetensors or model.safetensors.index.json");
  }
}

const TensorRef* Checkpoint::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<Entry> entries)
    : path_(path), entries_(std::move(entries)) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  size_t offset = 0;
  for (const auto& e : entries_) {
    int64_t numel = 1;
    for (int64_t d : e.shape) numel *= d;
    size_t n = size_t(numel) * dtype_size(e.dtype);
    header[e.name] = {{"dtype", safetensors_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data section 8-byte aligned
  out_ = std::fopen(path.c_str(), "wb");
  check(out_ != nullptr, path + ": cannot create: " + std::strerror(errno));
  uint64_t len = text.size();
  check(std::fwrite(&len, 8, 1, out_) == 1 && std::fwrite(text.data(), 1, text.size(), out_) == text.size(),
        path + ": write failed");
}

SafetensorsWriter::~SafetensorsWriter() {
  if (out_) std::fclose(out_);
}

void SafetensorsWriter::write_next(const void* bytes, size_t n_bytes) {
  check(next_ < entries_.size(), path_ + ": more tensors written than declared");
  const Entry& e = entries_[next_];
  int64_t numel = 1;
  for (int64_t d : e.shape) numel *= d;
  check(n_bytes == size_t(numel) * dtype_size(e.dtype), path_ + ": tensor '" + e.name + "' written with the wrong size");
  check(std::fwrite(bytes, 1, n_bytes, out_) == n_bytes, path_ + ": write failed (disk full?)");
  data_bytes_ += n_bytes;
  ++next_;
}

void SafetensorsWriter::finish() {
  check(next_ == entries_.size(), path_ + ": " + std::to_string(entries_.size() - next_) + " tensors not written");
  int rc = std::fclose(out_);
  out_ = nullptr;
  check(rc == 0, path_ + ": close failed");
}

std::string ShardPlan::file_name(size_t shard) const {
  if (shards.size() == 1) return "model.safetensors";
  char name[64];
  std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", shard + 1, shards.size());
  return name;
}

ShardPlan plan_shards(const std::vector<uint64_t>& bytes, uint64_t max_shard_bytes, const std::vector<bool>& stays_with_previous) {
  ShardPlan plan;
  plan.shards.emplace_back();
  uint64_t shard_bytes = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    const bool stays = i < stays_with_previous.size() && stays_with_previous[i];
    if (shard_bytes > 0 && shard_bytes + bytes[i] > max_shard_bytes && !stays) {
      plan.shards.emplace_back();
      shard_bytes = 0;
    }
    plan.shards.back().push_back(i);
    shard_bytes += bytes[i];
    plan.total_bytes += bytes[i];
  }
  return plan;
}

void write_safetensors_index(const std::string& dir, uint64_t total_bytes, const std::map<std::string, std::string>& weight_map) {
  const std::string path = dir + "/model.safetensors.index.json";
  std::ofstream f(path);
  f << nlohmann::json{{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}}.dump(2) << "\n";
  check(bool(f), path + ": write failed");
}

}  // namespace dsv2
