// A read-only view of a whole file: memory-mapped (weights read in place from the page cache), or read
// once into transparent huge pages.
#pragma once
#include <cstddef>
#include <string>

namespace dsv2 {

// How a MappedFile holds its bytes. Mapped: the file's pages mapped in place (instant, shared with the
// page cache and other processes, 4 KB pages). HugePages: read into private memory advised for 2 MB
// transparent huge pages, the file's page-cache copy dropped after reading: a decode that streams
// gigabytes of weights a token runs faster from 2 MB pages (docs/cpu-notes.md, `dsv2 bench
// --weight-pages huge|mapped`). Where the kernel has no transparent huge pages it is still a private
// copy of the file in 4 KB pages.
enum class FileResidency { Mapped, HugePages };

// `wanted`, but Mapped where HugePages would not fit: `bytes` above 90% of the memory available now
// (MemAvailable in /proc/meminfo). Files larger than memory still run mapped, paged in as they are used.
FileResidency residency_that_fits(size_t bytes, FileResidency wanted);

class MappedFile {
 public:
  // Maps or reads `path`; throws Error naming the path if it cannot be opened, mapped or read.
  explicit MappedFile(const std::string& path, FileResidency residency = FileResidency::Mapped);
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
  void* region_ = nullptr;  // what the destructor unmaps: region_bytes_ from region_
  size_t region_bytes_ = 0;
};

// Reads a whole (small) file into a string; throws Error naming the path.
std::string read_text_file(const std::string& path);

}  // namespace dsv2
