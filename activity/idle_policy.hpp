#pragma once
// When may a spark be put to sleep? Pure functions of the spark's activity and a clock reading,
// so the rule users rely on ("never sleep under a live session") is tested without waiting.
#include <optional>

#include "activity/time_format.hpp"
#include "config/duration.hpp"

namespace spark::activity {

struct SparkActivity {
  TimePoint last_activity{};                  // last connection open/close or refresh
  std::optional<TimePoint> keep_awake_until;  // an expiring hold, if any
  int open_connections = 0;                   // open connections count as activity
};

// The moment the reaper may sleep the spark, or nullopt while it must stay awake indefinitely
// (open connections, or idle_timeout "never").
std::optional<TimePoint> sleeps_at(const SparkActivity& a, const config::MaybeNever& idle_timeout);

// True if the spark is idle at `now`: no open connection, no keep-awake in force, and its last
// activity is at least idle_timeout old.
bool is_idle(const SparkActivity& a, const config::MaybeNever& idle_timeout, TimePoint now);

}  // namespace spark::activity
