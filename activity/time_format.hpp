#pragma once
// RFC 3339 timestamps, the format of persisted activity (and of Kubernetes annotations).
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace spark::activity {

using TimePoint = std::chrono::system_clock::time_point;

// "2026-11-22T15:04:05.123Z" (UTC, millisecond precision).
std::string format_rfc3339(TimePoint t);

// Accepts "YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)". Returns nullopt on anything else.
std::optional<TimePoint> parse_rfc3339(std::string_view text);

}  // namespace spark::activity
