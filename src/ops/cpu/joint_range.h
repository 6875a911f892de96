// Several jobs' ranges laid end to end as one joint range, split over threads without regard to where
// one job ends and the next begins.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace dsv2::cpu {

// Calls fn(j, lo, hi) for the part [lo, hi) of job j's own range that [begin, end) covers, where job j
// owns [first[j], first[j + 1]) of the joint range.
template <class Fn>
void split_by_job(const std::vector<int64_t>& first, int64_t begin, int64_t end, const Fn& fn) {
  size_t j = size_t(std::upper_bound(first.begin(), first.end(), begin) - first.begin()) - 1;
  for (; begin < end; ++j) {
    const int64_t hi = std::min(end, first[j + 1]);
    if (hi > begin) fn(j, begin - first[j], hi - first[j]);
    begin = hi;
  }
}

}  // namespace dsv2::cpu
