// Stop strings over streamed text: text is released only once no stop string can start inside it,
// so a stop string is never emitted and never split across chunks.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace dsv2 {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds decoded text; returns the text that is safe to emit now. After a stop string is found,
  // stopped() is true and the returned text ends just before it.
  std::string push(const std::string& text);
  // The held-back tail at the end of generation (no stop string matched).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace dsv2
