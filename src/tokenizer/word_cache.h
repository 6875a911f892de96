// A bounded cache of word -> ids for one encoding thread (most words of a text repeat).
// Keys and ids live in two arenas; when full, everything is dropped at once.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace dsv2 {

class WordCache {
 public:
  explicit WordCache(size_t max_entries = size_t(1) << 16) : max_entries_(max_entries) {
    slots_.assign(max_entries * 2, Slot{});
  }

  static uint64_t hash(std::string_view s) {
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ s.size();
    const char* p = s.data();
    size_t n = s.size();
    uint64_t v;
    for (; n >= 8; p += 8, n -= 8) {
      std::memcpy(&v, p, 8);
      h = (h ^ v) * 0xBF58476D1CE4E5B9ULL;
      h ^= h >> 29;
    }
    v = 0;
    std::memcpy(&v, p, n);
    h = (h ^ v) * 0x94D049BB133111EBULL;
    return h ^ (h >> 32);
  }

  // Appends the cached ids of `word` to `ids`; false if not cached.
  bool find(std::string_view word, uint64_t h, std::vector<int32_t>& ids) const {
    for (size_t i = h & mask();; i = (i + 1) & mask()) {
      const Slot& s = slots_[i];
      if (s.key_length == 0) return false;
      if (s.hash == h && s.key_length == word.size() && std::memcmp(keys_.data() + s.key_offset, word.data(), word.size()) == 0) {
        ids.insert(ids.end(), ids_.begin() + s.ids_offset, ids_.begin() + s.ids_offset + s.ids_length);
        return true;
      }
    }
  }

  void insert(std::string_view word, uint64_t h, const int32_t* ids, size_t n) {
    if (word.empty() || word.size() > 255) return;
    if (used_ >= max_entries_) clear();
    size_t i = h & mask();
    while (slots_[i].key_length != 0) i = (i + 1) & mask();
    slots_[i] = Slot{h, uint32_t(keys_.size()), uint32_t(word.size()), uint32_t(ids_.size()), uint32_t(n)};
    keys_.append(word);
    ids_.insert(ids_.end(), ids, ids + n);
    ++used_;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_offset = 0, key_length = 0;  // key_length 0: empty slot
    uint32_t ids_offset = 0, ids_length = 0;
  };
  size_t mask() const { return slots_.size() - 1; }
  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    used_ = 0;
  }
  size_t max_entries_;
  std::vector<Slot> slots_;  // power of two, twice max_entries_
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t used_ = 0;
};

}  // namespace dsv2
