#pragma once
// RFC 3339 timestamps, the format of persisted activity (and of Kubernetes annotations).
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace spark::activity {

using TimePoint = std::chrono::system_clock::time_point;

// The times the gateway reads: 1970-01-01T00:00:00Z up to (not including) 2200-01-01T00:00:00Z.
// system_clock counts nanoseconds in 64 bits (1677 to 2262); the margin keeps the arithmetic done
// on parsed times representable: adding any accepted duration (config::kMaxDuration, 10 years)
// and subtracting two of them (at most 230 years apart). Nothing real is outside this range.
inline constexpr TimePoint kEarliestTime{};
inline constexpr TimePoint kLatestTime{std::chrono::seconds(7'258'118'400)};  // 2200-01-01T00:00:00Z

// t + d, saturated to [kEarliestTime, kLatestTime] instead of overflowing (e.g. a keep-awake's end).
TimePoint saturating_add(TimePoint t, std::chrono::milliseconds d);

// "2026-11-22T15:04:05.123Z" (UTC, millisecond precision).
std::string format_rfc3339(TimePoint t);

// Accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)" from kEarliestTime up to kLatestTime. Returns
// nullopt on anything else (an annotation saying 2300 is as unusable as one saying "soon").
std::optional<TimePoint> parse_rfc3339(std::string_view text);

}  // namespace spark::activity
