#include "tokenizer/pieces.h"

#include <algorithm>

namespace dsv2 {

void SegmentSplitter::add(uint32_t begin, uint32_t end, bool is_match) {
  const bool has_last = out_.size() > first_;
  bool extend_last = false;
  switch (behavior_) {
    case SplitBehavior::Removed:
      if (is_match) return;  // `is_match` means "remove" here
      break;
    case SplitBehavior::Isolated:
      break;
    case SplitBehavior::MergedWithPrevious:  // a match joins the non-match before it
      extend_last = is_match && has_previous_ && !previous_is_match_ && has_last;
      break;
    case SplitBehavior::MergedWithNext:  // a match joins the non-match after it
      extend_last = !is_match && has_previous_ && previous_is_match_ && has_last;
      break;
    case SplitBehavior::Contiguous:  // runs of matches (and of non-matches) stay together
      extend_last = has_previous_ && is_match == previous_is_match_ && has_last;
      break;
  }
  has_previous_ = true;
  previous_is_match_ = is_match;
  if (extend_last) {
    out_.back().end = end;
  } else {
    out_.push_back(Piece{begin, end, -1});
  }
}

void SegmentSplitter::end_piece() {
  auto first = out_.begin() + std::ptrdiff_t(first_);
  out_.erase(std::remove_if(first, out_.end(), [](const Piece& p) { return p.begin == p.end; }), out_.end());
}

}  // namespace dsv2
