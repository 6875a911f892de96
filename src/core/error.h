// Errors raised on bad input (files, flags, requests) and broken invariants.
// Every message names the file, field or tensor and the values seen.
#pragma once
#include <stdexcept>
#include <string>

namespace dsv2 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws Error(message) unless `condition` holds.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace dsv2
