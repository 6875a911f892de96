// An open-addressing hash map from a 64-bit key to two 32-bit values, for the BPE merge
// table ((left id, right id) -> (rank, merged id)): one probe sequence, no allocation per
// entry. Keys must not be kEmptyKey.
#pragma once
#include <cstdint>
#include <vector>

namespace dsv2 {

class FlatHashMap {
 public:
  static constexpr uint64_t kEmptyKey = ~uint64_t(0);
  struct Value {
    uint32_t first;
    int32_t second;
  };

  void reserve(size_t n) {
    size_t capacity = 16;
    while (capacity < n * 2) capacity *= 2;
    slots_.assign(capacity, Slot{kEmptyKey, {0, 0}});
    size_ = 0;
  }

  // Inserts or overwrites.
  void put(uint64_t key, Value value) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    size_t i = index_of(key);
    if (slots_[i].key == kEmptyKey) ++size_;
    slots_[i] = Slot{key, value};
  }

  const Value* find(uint64_t key) const {
    if (slots_.empty()) return nullptr;
    const size_t i = index_of(key);
    return slots_[i].key == key ? &slots_[i].value : nullptr;
  }

 private:
  struct Slot {
    uint64_t key;
    Value value;
  };
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
  }
  // The slot holding `key`, or the empty slot where it would go.
  size_t index_of(uint64_t key) const {
    const size_t mask = slots_.size() - 1;
    size_t i = size_t(mix(key)) & mask;
    while (slots_[i].key != kEmptyKey && slots_[i].key != key) i = (i + 1) & mask;
    return i;
  }
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    reserve(old.empty() ? 16 : old.size());
    for (const Slot& s : old) {
      if (s.key != kEmptyKey) put(s.key, s.value);
    }
  }
  std::vector<Slot> slots_;
  size_t size_ = 0;
};

}  // namespace dsv2
