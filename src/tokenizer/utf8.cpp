#include "tokenizer/utf8.h"

namespace dsv2 {
namespace {

// Length of the well-formed sequence starting at bytes[at], 0 if the sequence is ill-formed;
// `*prefix` receives the length of its longest valid prefix (the maximal subpart, >= 1 byte)
// and `*truncated` whether it ended only because the input ended.
int well_formed_length(std::string_view bytes, size_t at, int* prefix, bool* truncated) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(bytes[i]); };
  const unsigned char lead = b(at);
  *truncated = false;
  *prefix = 1;
  if (lead < 0x80) return 1;
  int need;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 2;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 3;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int k = 1; k <= need; ++k) {
    if (at + k >= bytes.size()) {
      *truncated = true;
      *prefix = k;
      return 0;
    }
    const unsigned char c = b(at + k);
    const bool ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) {
      *prefix = k;
      return 0;
    }
  }
  return need + 1;
}

// Repairs bytes[0, n); stops before a truncated sequence at the end when `hold_incomplete`,
// returning the number of bytes consumed.
size_t repair(std::string& out, std::string_view bytes, bool hold_incomplete) {
  size_t at = 0;
  while (at < bytes.size()) {
    size_t run = at;  // copy runs of ASCII and valid sequences at once
    int prefix;
    bool truncated;
    int len;
    while (run < bytes.size() && (len = well_formed_length(bytes, run, &prefix, &truncated)) > 0) run += size_t(len);
    out.append(bytes.data() + at, run - at);
    at = run;
    if (at == bytes.size()) break;
    if (truncated && hold_incomplete) return at;
    out.append(kReplacementCharacter);
    at += size_t(prefix);
  }
  return at;
}

}  // namespace

bool is_valid_utf8(std::string_view bytes) {
  size_t at = 0;
  int prefix;
  bool truncated;
  while (at < bytes.size()) {
    if (static_cast<unsigned char>(bytes[at]) < 0x80) {
      ++at;
      continue;
    }
    int len = well_formed_length(bytes, at, &prefix, &truncated);
    if (len == 0) return false;
    at += size_t(len);
  }
  return true;
}

void append_utf8_lossy(std::string& out, std::string_view bytes) { repair(out, bytes, false); }

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  append_utf8_lossy(out, bytes);
  return out;
}

uint32_t next_code_point(std::string_view text, size_t& at) {
  const auto b = [&](size_t i) { return uint32_t(static_cast<unsigned char>(text[i])); };
  const uint32_t lead = b(at);
  if (lead < 0x80) {
    at += 1;
    return lead;
  }
  if (lead < 0xE0) {
    uint32_t cp = ((lead & 0x1F) << 6) | (b(at + 1) & 0x3F);
    at += 2;
    return cp;
  }
  if (lead < 0xF0) {
    uint32_t cp = ((lead & 0x0F) << 12) | ((b(at + 1) & 0x3F) << 6) | (b(at + 2) & 0x3F);
    at += 3;
    return cp;
  }
  uint32_t cp = ((lead & 0x07) << 18) | ((b(at + 1) & 0x3F) << 12) | ((b(at + 2) & 0x3F) << 6) | (b(at + 3) & 0x3F);
  at += 4;
  return cp;
}

void append_code_point(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

std::string Utf8StreamRepair::push(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  size_t used = repair(out, pending_, true);
  pending_.erase(0, used);
  return out;
}

std::string Utf8StreamRepair::finish() {
  std::string out;
  repair(out, pending_, false);
  pending_.clear();
  return out;
}

}  // namespace dsv2
