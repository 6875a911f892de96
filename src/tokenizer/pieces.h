// The text being tokenized as it moves through the pipeline: a buffer and the ordered pieces
// cut from it. A piece is either a byte range of `text` still to be tokenized, or an added
// token already resolved to its id.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsv2 {

struct Piece {
  uint32_t begin = 0, end = 0;     // [begin, end) in PieceList::text; empty for added tokens
  int32_t added_token_id = -1;     // >= 0: this piece is that added token
  bool is_text() const { return added_token_id < 0; }
};

struct PieceList {
  std::string text;
  std::vector<Piece> pieces;
};

// How the pieces cut by a pattern are kept (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// Appends the segments of the text piece [begin, end) to `out` the way tokenizers'
// NormalizedString::split does: the (match, non-match) segments of the piece are combined
// according to `behavior`, and empty results are dropped. Used by every splitting step.
class SegmentSplitter {
 public:
  SegmentSplitter(std::vector<Piece>& out, SplitBehavior behavior) : out_(out), behavior_(behavior) {}
  void begin_piece() { first_ = out_.size(), has_previous_ = false, previous_is_match_ = false; }
  void add(uint32_t begin, uint32_t end, bool is_match);
  void end_piece();

 private:
  std::vector<Piece>& out_;
  SplitBehavior behavior_;
  size_t first_ = 0;
  bool has_previous_ = false, previous_is_match_ = false;
};

// Rewrites every text piece of `list` with transform(bytes, out), which appends the new bytes
// to `out`; pieces that come out empty are dropped. `spare` is scratch space.
template <class Transform>
void rewrite_text_pieces(PieceList& list, PieceList& spare, Transform&& transform) {
  spare.text.clear();
  spare.pieces.clear();
  for (const Piece& piece : list.pieces) {
    if (!piece.is_text()) {
      spare.pieces.push_back(piece);
      continue;
    }
    const auto begin = uint32_t(spare.text.size());
    transform(std::string_view(list.text.data() + piece.begin, piece.end - piece.begin), spare.text);
    if (spare.text.size() > begin) spare.pieces.push_back(Piece{begin, uint32_t(spare.text.size()), -1});
  }
  std::swap(list, spare);
}

}  // namespace dsv2
