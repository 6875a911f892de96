// Command-line options of one subcommand: `--name value`, `--name=value` and `--flag`.
// Every option must be consumed by the command; anything left over is an error naming it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dsv2 {

class Args {
 public:
  Args(std::string command, std::vector<std::string> tokens);

  std::optional<std::string> value(const std::string& name);
  std::string required(const std::string& name);
  bool flag(const std::string& name);
  int64_t integer(const std::string& name, int64_t fallback);
  double number(const std::string& name, double fallback);
  // The arguments that are not options (call after reading every option and flag).
  std::vector<std::string> positionals();
  // Throws Error naming the first option no accessor consumed.
  void finish() const;

 private:
  std::string command_;
  std::vector<std::string> tokens_;
  std::vector<bool> used_;
};

// {5, 17, 42} -> "5,17,42" (the inverse of parse_id_list).
std::string format_id_list(const std::vector<int32_t>& ids);
// "5,17,42" -> {5, 17, 42}; throws Error naming `what` on anything else.
std::vector<int32_t> parse_id_list(const std::string& text, const std::string& what);
int64_t parse_integer(const std::string& text, const std::string& what);
double parse_number(const std::string& text, const std::string& what);

}  // namespace dsv2
