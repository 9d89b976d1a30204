#include "activity/idle_policy.hpp"

#include <algorithm>

namespace spark::activity {

std::optional<TimePoint> sleeps_at(const SparkActivity& a, const config::MaybeNever& idle_timeout) {
  if (a.open_connections > 0 || idle_timeout.is_never()) return std::nullopt;
  TimePoint at = a.last_activity + *idle_timeout.value;
  if (a.keep_awake_until) at = std::max(at, *a.keep_awake_until);
  return at;
}

bool is_idle(const SparkActivity& a, const config::MaybeNever& idle_timeout, TimePoint now) {
  const auto at = sleeps_at(a, idle_timeout);
  return at && now >= *at;
}

}  // namespace spark::activity
