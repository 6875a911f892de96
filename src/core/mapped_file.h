// A read-only memory map of a whole file (weights are read in place, never copied).
#pragma once
#include <cstddef>
#include <string>

namespace dsv2 {

class MappedFile {
 public:
  // Maps `path`; throws Error naming the path if it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// Reads a whole (small) file into a string; throws Error naming the path.
std::string read_text_file(const std::string& path);

}  // namespace dsv2
