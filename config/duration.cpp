#include "config/duration.hpp"

#include <cctype>

namespace spark::config {
namespace {

// Milliseconds per unit; longest suffix first so "ms" is not read as "m" + "s".
struct Unit {
  std::string_view suffix;
  std::int64_t millis;
};
constexpr Unit kUnits[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}, {"d", 86'400'000},
};

bool fail(std::string* why, std::string reason) {
  if (why) *why = std::move(reason);
  return false;
}

}  // namespace

std::optional<Duration> parse_duration(std::string_view text, std::string* why) {
  std::string quoted = "\"";  // appended, not "\"" + string: GCC 12 warns falsely (-Wrestrict, bug 105329)
  quoted.append(text).append("\"");
  if (text.empty()) {
    fail(why, "a duration is required (e.g. \"30s\", \"5m\", \"2h\")");
    return std::nullopt;
  }
  constexpr std::int64_t kMax = kMaxDuration.count();
  auto too_long = [&] {
    return quoted + " is too long: the longest duration is " + format_duration(kMaxDuration) + " (10 years)";
  };
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) {
      fail(why, quoted + " is not a duration: expected a whole number followed by ms, s, m, h or d");
      return std::nullopt;
    }
    std::int64_t number = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      const int digit = text[i] - '0';
      if (number > (kMax - digit) / 10) {
        fail(why, too_long());
        return std::nullopt;
      }
      number = number * 10 + digit;
      ++i;
    }
    const Unit* unit = nullptr;
    for (const Unit& u : kUnits) {
      if (text.substr(i, u.suffix.size()) == u.suffix) {
        unit = &u;
        break;
      }
    }
    if (!unit) {
      fail(why, quoted + " is not a duration: expected a unit (ms, s, m, h or d) after " +
                    std::to_string(number));
      return std::nullopt;
    }
    i += unit->suffix.size();
    if (number > kMax / unit->millis || total > kMax - number * unit->millis) {
      fail(why, too_long());
      return std::nullopt;
    }
    total += number * unit->millis;
  }
  if (total == 0) {
    fail(why, quoted + " must be greater than zero");
    return std::nullopt;
  }
  return Duration(total);
}

std::optional<MaybeNever> parse_duration_or_never(std::string_view text, std::string* why) {
  if (text == "never") return MaybeNever{std::nullopt};
  auto d = parse_duration(text, why);
  if (!d) return std::nullopt;
  return MaybeNever{*d};
}

std::string format_duration(Duration d) {
  std::int64_t ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  if (ms < 0) {
    out = "-";
    ms = -ms;
  }
  for (auto it = std::rbegin(kUnits); it != std::rend(kUnits); ++it) {
    if (ms >= it->millis) {
      out += std::to_string(ms / it->millis);
      out += it->suffix;
      ms %= it->millis;
    }
  }
  return out;
}

}  // namespace spark::config
