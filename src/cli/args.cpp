#include "cli/args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "core/error.h"

namespace dsv2 {

Args::Args(std::string command, std::vector<std::string> tokens) : command_(std::move(command)) {
  for (auto& t : tokens) {  // split --name=value
    size_t eq = t.find('=');
    if (t.rfind("--", 0) == 0 && eq != std::string::npos) {
      tokens_.push_back(t.substr(0, eq));
      tokens_.push_back(t.substr(eq + 1));
    } else {
      tokens_.push_back(std::move(t));
    }
  }
  used_.assign(tokens_.size(), false);
}

std::optional<std::string> Args::value(const std::string& name) {
  std::optional<std::string> result;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (used_[i] || tokens_[i] != name) continue;
    check(i + 1 < tokens_.size(), command_ + ": option " + name + " needs a value");
    used_[i] = used_[i + 1] = true;
    result = tokens_[i + 1];
  }
  return result;
}

std::string Args::required(const std::string& name) {
  auto v = value(name);
  check(v.has_value(), command_ + ": option " + name + " is required");
  return *v;
}

bool Args::flag(const std::string& name) {
  bool seen = false;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (!used_[i] && tokens_[i] == name) used_[i] = seen = true;
  }
  return seen;
}

int64_t Args::integer(const std::string& name, int64_t fallback) {
  auto v = value(name);
  return v ? parse_integer(*v, command_ + ": " + name) : fallback;
}

double Args::number(const std::string& name, double fallback) {
  auto v = value(name);
  return v ? parse_number(*v, command_ + ": " + name) : fallback;
}

std::vector<std::string> Args::positionals() {
  std::vector<std::string> result;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (used_[i] || tokens_[i].rfind("--", 0) == 0) continue;
    used_[i] = true;
    result.push_back(tokens_[i]);
  }
  return result;
}

void Args::finish() const {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (used_[i]) continue;
    if (tokens_[i].rfind("--", 0) == 0) throw Error(command_ + ": unknown option " + tokens_[i] + " (see dsv2 help)");
    throw Error(command_ + ": unexpected argument '" + tokens_[i] + "'");
  }
}

int64_t parse_integer(const std::string& text, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  check(!text.empty() && end == text.c_str() + text.size() && errno == 0, what + ": '" + text + "' is not an integer");
  return v;
}

double parse_number(const std::string& text, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  check(!text.empty() && end == text.c_str() + text.size() && errno == 0 && std::isfinite(v),
        what + ": '" + text + "' is not a number");
  return v;
}

std::string format_id_list(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

std::vector<int32_t> parse_id_list(const std::string& text, const std::string& what) {
  std::vector<int32_t> ids;
  size_t start = 0;
  check(!text.empty(), what + ": empty id list");
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string part = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    int64_t v = parse_integer(part, what + " (in '" + text + "')");
    check(v >= 0 && v <= std::numeric_limits<int32_t>::max(), what + ": id " + part + " out of range");
    ids.push_back(int32_t(v));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return ids;
}

}  // namespace dsv2
