#pragma once
// Durations in the config are strings: "500ms", "30s", "5m", "2h", "1d", or "never".
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace spark::config {

using Duration = std::chrono::milliseconds;

// The longest duration accepted anywhere (10 years). Every duration is added to a time point
// somewhere (a keep-awake's end, an idle deadline), and system_clock counts nanoseconds in 64
// bits, so "100000d" would overflow past 2262; no real timeout or hold is longer than this.
inline constexpr Duration kMaxDuration = std::chrono::hours(24 * 3650);

// A duration that may be "never" (only idle_timeout accepts that).
struct MaybeNever {
  std::optional<Duration> value;  // nullopt means never
  bool is_never() const { return !value.has_value(); }
  friend bool operator==(const MaybeNever&, const MaybeNever&) = default;
};

// Parses "<positive integer><unit>" with unit ms, s, m, h or d. Returns nullopt and
// fills `why` on bad input. Zero is rejected: a zero timeout or interval is always a mistake;
// so is anything longer than kMaxDuration (the error names the maximum).
std::optional<Duration> parse_duration(std::string_view text, std::string* why = nullptr);

// Like parse_duration, but also accepts "never".
std::optional<MaybeNever> parse_duration_or_never(std::string_view text, std::string* why = nullptr);

// Renders a duration compactly for logs and docs: 7200000ms -> "2h", 90000ms -> "1m30s".
std::string format_duration(Duration d);
// Any elapsed time (a steady_clock difference), to the millisecond, in the same words.
template <class Rep, class Period>
std::string format_duration(std::chrono::duration<Rep, Period> d) {
  return format_duration(std::chrono::duration_cast<Duration>(d));
}

}  // namespace spark::config
