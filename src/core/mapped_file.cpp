#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace dsv2 {

namespace {

// `fd`'s `size` bytes into anonymous memory advised for transparent huge pages, the start 2 MB
// aligned; sets region/bytes to what must be unmapped and returns the start.
std::byte* read_into_huge_pages(int fd, size_t size, const std::string& path, void*& region, size_t& bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  bytes = size + kHuge;
  region = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (region == MAP_FAILED) {
    region = nullptr;
    throw Error(path + ": cannot allocate " + std::to_string(size) + " bytes: " + std::strerror(errno));
  }
  auto* start = reinterpret_cast<std::byte*>((reinterpret_cast<uintptr_t>(region) + kHuge - 1) / kHuge * kHuge);
  ::madvise(start, size, MADV_HUGEPAGE);  // without transparent huge pages: 4 KB pages, the same bytes
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::pread(fd, start + done, std::min(size - done, size_t(1) << 30), off_t(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? std::strerror(errno) : "the file ended early";
      ::munmap(region, bytes);
      region = nullptr;
      throw Error(path + ": cannot read " + std::to_string(size) + " bytes: " + why);
    }
    done += size_t(n);
  }
  ::mprotect(region, bytes, PROT_READ);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // the page cache's copy is not needed again
  return start;
}

}  // namespace

FileResidency residency_that_fits(size_t bytes, FileResidency wanted) {
  if (wanted == FileResidency::Mapped) return wanted;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  size_t kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") return double(bytes) <= 0.9 * double(kib) * 1024 ? wanted : FileResidency::Mapped;
    meminfo.ignore(64, '\n');
  }
  return FileResidency::Mapped;  // unknown: the mapping, which needs no memory of its own
}

MappedFile::MappedFile(const std::string& path, FileResidency residency) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  check(fd >= 0, path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0 && residency == FileResidency::HugePages) {
    try {
      data_ = read_into_huge_pages(fd, size_, path, region_, region_bytes_);
    } catch (...) {
      ::close(fd);
      throw;
    }
  } else if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw Error(path + ": cannot map " + std::to_string(size_) + " bytes: " + std::strerror(err));
    }
    data_ = static_cast<const std::byte*>(p);
    region_ = p;
    region_bytes_ = size_;
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (region_) ::munmap(region_, region_bytes_);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(bool(in), path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  check(!in.bad(), path + ": read error");
  return ss.str();
}

}  // namespace dsv2
