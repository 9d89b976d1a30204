#pragma once
// Counts in words: "1 spark", "2 sparks", "1 open connection". Log lines, CLI output and error
// messages are read by people; "1 open connections" reads as a bug.
#include <cstdint>
#include <string>
#include <string_view>

namespace spark::config {

// `singular` may be several words ("open connection"); the last one takes the plural. `plural`
// is for nouns that do not just add an "s".
inline std::string counted(std::uint64_t n, std::string_view singular, std::string_view plural = {}) {
  std::string out = std::to_string(n) + " ";
  if (n == 1) return out.append(singular);
  if (!plural.empty()) return out.append(plural);
  return out.append(singular).append("s");
}

}  // namespace spark::config
