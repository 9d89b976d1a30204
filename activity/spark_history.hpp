#pragma once
// A spark's last week, kept small: when it was awake or asleep, when it was woken and why, and
// when it was in use (at least one open session). The activity tracker keeps one per spark and
// persists it in activity.json; the admin API, the CLI and the status page draw it.
//
// "Awake" is what spark_gateway_spark_awake_seconds_total counts: any state but sleeping
// (waking, running, stopping, failed). Time the history knows nothing about (before the spark
// was first served, or while the gateway was down) is "unknown", never guessed as asleep.
//
// Bounded memory: entries that ended more than kHistoryWindow (7 days) ago are dropped, and
// each list keeps at most kMaxIntervals / kMaxWakes / kMaxInUseSpans entries, the oldest going
// first. With a wake cause cut to kMaxWakeCauseBytes, a spark costs at most about 100 KiB here
// (1000 intervals of 40 bytes, 500 wakes of ~150, 500 spans of 32), however long it flaps.
// Not thread-safe: lives in the tracker, on the main loop; times are passed in.
#include <chrono>
#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "activity/time_format.hpp"

namespace spark::activity {

inline constexpr std::chrono::hours kHistoryWindow{24 * 7};
inline constexpr std::size_t kMaxIntervals = 1000;  // 500 wake/sleep cycles a week: 3 an hour
inline constexpr std::size_t kMaxWakes = 500;
inline constexpr std::size_t kMaxInUseSpans = 500;
inline constexpr std::size_t kMaxWakeCauseBytes = 120;
// Sessions that follow each other this closely, with the spark awake in between, are one span
// of use (ssh, then scp; a reconnect after a dropped Wi-Fi): the timeline shows use, not every
// session.
inline constexpr std::chrono::seconds kInUseMergeGap{60};

enum class HistoryState { asleep, awake, unknown };
std::string_view to_string(HistoryState s);

// [from, to): awake or asleep (never unknown: unknown time is the gaps between intervals).
struct StateInterval {
  TimePoint from{};
  TimePoint to{};
  bool awake = false;
  friend bool operator==(const StateInterval&, const StateInterval&) = default;
};

struct WakeRecord {
  TimePoint at{};
  std::string cause;  // "a connection from 100.101.102.103", "an operator (admin API)"
  friend bool operator==(const WakeRecord&, const WakeRecord&) = default;
};

struct TimeSpan {
  TimePoint from{};
  TimePoint to{};
  friend bool operator==(const TimeSpan&, const TimeSpan&) = default;
};

// The state the spark is in now, since when.
struct CurrentState {
  TimePoint since{};
  bool awake = false;
  friend bool operator==(const CurrentState&, const CurrentState&) = default;
};

// A piece of a timeline: explicit unknown gaps included, clipped to the window asked for.
struct TimelineEntry {
  TimePoint from{};
  TimePoint to{};
  HistoryState state = HistoryState::unknown;
  bool ongoing = false;  // the current state, still going at the end of the window
};

// Seconds in each state over a window.
struct StateTotals {
  double awake_seconds = 0;
  double asleep_seconds = 0;
  double unknown_seconds = 0;
  // Of the time known, the share asleep (0..1); nullopt when nothing of the window is known.
  std::optional<double> slept_share() const;
};

class SparkHistory {
 public:
  // The spark is awake (or asleep) from `at` on. The current state, if different, ends there;
  // if none was known, the time before `at` stays unknown. A time before the current state's
  // start (the clock stepped back) is taken as that start, so intervals never overlap.
  void record_state(TimePoint at, bool awake);
  // The spark is known to be in this state from `at` on, unless a state is already current
  // (a spark newly served starts asleep in the gateway).
  void begin_if_unknown(TimePoint at, bool awake);
  // A wake began at `at` for `cause` (cut to kMaxWakeCauseBytes, at a UTF-8 boundary).
  void record_wake(TimePoint at, std::string_view cause);
  // Its first session opened / its last session closed.
  void in_use_began(TimePoint at);
  void in_use_ended(TimePoint at);
  // Nothing is known after `at` (the last moment the state file recorded, before a restart):
  // the current state and the open span of use end there.
  void close(TimePoint at);
  // Drops what ended before now - kHistoryWindow, and the oldest beyond the counts.
  void prune(TimePoint now);

  const std::deque<StateInterval>& intervals() const { return intervals_; }
  const std::optional<CurrentState>& current() const { return current_; }
  const std::deque<WakeRecord>& wakes() const { return wakes_; }
  const std::deque<TimeSpan>& in_use() const { return in_use_; }
  const std::optional<TimePoint>& in_use_since() const { return in_use_since_; }
  bool empty() const {
    return intervals_.empty() && !current_ && wakes_.empty() && in_use_.empty() && !in_use_since_;
  }

  // Over [from, to): seconds awake, asleep and unknown (the current state counts up to `to`).
  StateTotals totals(TimePoint from, TimePoint to) const;
  // [from, to) covered end to end: intervals, unknown gaps between them, the current state.
  std::vector<TimelineEntry> timeline(TimePoint from, TimePoint to) const;
  // Spans of use overlapping [from, to), clipped to it (the open one ends at `to`).
  std::vector<TimeSpan> in_use_between(TimePoint from, TimePoint to) const;
  std::vector<WakeRecord> wakes_between(TimePoint from, TimePoint to) const;

  // Rebuilding from the state file, entry by entry, oldest first. Each returns why an entry
  // was refused (end before start, out of order with the ones before it), or nullopt if taken.
  std::optional<std::string> restore_interval(const StateInterval& interval);
  std::optional<std::string> restore_current(const CurrentState& current);
  std::optional<std::string> restore_wake(WakeRecord wake);
  std::optional<std::string> restore_in_use(const TimeSpan& span);
  std::optional<std::string> restore_in_use_since(TimePoint since);

  friend bool operator==(const SparkHistory&, const SparkHistory&) = default;

 private:
  // Where a new interval or the current state may start: not before what is recorded.
  TimePoint known_until() const;
  void push_interval(StateInterval interval);

  std::deque<StateInterval> intervals_;  // closed, oldest first, not overlapping
  std::optional<CurrentState> current_;  // starts at or after the last interval's end
  std::deque<WakeRecord> wakes_;         // oldest first
  std::deque<TimeSpan> in_use_;          // closed, oldest first
  std::optional<TimePoint> in_use_since_;
};

}  // namespace spark::activity
