// safetensors files (one file, or shards listed by model.safetensors.index.json), memory-mapped
// and validated: header length, JSON, dtypes, shapes, offsets in range, no overlapping data.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace dsv2 {

struct TensorRef {
  std::string name;
  std::string dtype_name;         // as written in the header ("BF16", "I64", ...)
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // points into the mapped file
  size_t n_bytes = 0;
  const std::string* file = nullptr;  // path of the file holding it

  int64_t numel() const;
  // The dtype if it is one the engine computes from (F32, F16, BF16); throws Error otherwise.
  DType dtype() const;
};

class SafetensorsFile {
 public:
  // Throws Error naming the path and the problem.
  explicit SafetensorsFile(const std::string& path, FileResidency residency = FileResidency::Mapped);
  const std::string& path() const { return file_.path(); }
  size_t size() const { return file_.size(); }
  const std::map<std::string, TensorRef>& tensors() const { return tensors_; }

 private:
  MappedFile file_;
  std::map<std::string, TensorRef> tensors_;
};

// Every tensor of a model directory, by name.
class Checkpoint {
 public:
  // `residency` for every file, or Mapped where they would not fit (residency_that_fits).
  explicit Checkpoint(const std::string& model_dir, FileResidency residency = FileResidency::Mapped);
  // nullptr if absent.
  const TensorRef* find(const std::string& name) const;
  const std::map<std::string, const TensorRef*>& tensors() const { return by_name_; }
  const std::string& dir() const { return dir_; }
  size_t file_bytes() const;  // the safetensors files' total size
  FileResidency residency() const { return residency_; }  // how the files are held

 private:
  std::string dir_;
  FileResidency residency_ = FileResidency::Mapped;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorRef*> by_name_;
};

// Writes one safetensors file from tensors given as (name, dtype, shape, bytes), streaming:
// the header first, then each tensor's bytes as `write_data` produces them.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  SafetensorsWriter(const std::string& path, std::vector<Entry> entries);
  ~SafetensorsWriter();
  // Appends the next tensor's bytes (in entry order); n_bytes must equal its size.
  void write_next(const void* bytes, size_t n_bytes);
  void finish();
  size_t data_bytes() const { return data_bytes_; }

 private:
  std::string path_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  size_t data_bytes_ = 0;
  std::FILE* out_ = nullptr;
};

// A checkpoint split into files of consecutive tensors, as Hugging Face shards them.
struct ShardPlan {
  std::vector<std::vector<size_t>> shards;  // tensor indices of each file, in order
  uint64_t total_bytes = 0;
  // model.safetensors for one shard, else model-0000s-of-0000n.safetensors (s counted from 1).
  std::string file_name(size_t shard) const;
};
// Consecutive tensors of `bytes` each, a new shard before a tensor that would take the current one past
// max_shard_bytes (a larger tensor gets one to itself) unless stays_with_previous[i] (e.g. a matrix's scales).
ShardPlan plan_shards(const std::vector<uint64_t>& bytes, uint64_t max_shard_bytes,
                      const std::vector<bool>& stays_with_previous = {});
// Writes dir/model.safetensors.index.json: weight_map names each tensor's file.
void write_safetensors_index(const std::string& dir, uint64_t total_bytes, const std::map<std::string, std::string>& weight_map);

}  // namespace dsv2
