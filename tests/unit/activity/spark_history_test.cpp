// Unit tests for activity/spark_history.hpp: a spark's week of awake and asleep intervals, its
// wakes and its spans of use; the totals and timelines the API draws from them; what a restart
// leaves unknown; and the bounds that keep it small.
#include "activity/spark_history.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace spark::activity {
namespace {

using namespace std::chrono_literals;

// 2026-11-22T15:04:05Z: a fixed reference instant so no test reads the clock.
const TimePoint kT0{std::chrono::seconds(1'795'359'845)};

double secs(std::chrono::duration<double> d) { return d.count(); }

// ---------------------------------------------------------------------------
// Recording states
// ---------------------------------------------------------------------------

TEST(SparkHistory, AStateChangeClosesTheIntervalBefore) {
  SparkHistory h;
  h.begin_if_unknown(kT0, false);
  h.record_state(kT0 + 1h, true);
  h.record_state(kT0 + 3h, false);
  ASSERT_EQ(h.intervals().size(), 2u);
  EXPECT_EQ(h.intervals()[0], (StateInterval{kT0, kT0 + 1h, false}));
  EXPECT_EQ(h.intervals()[1], (StateInterval{kT0 + 1h, kT0 + 3h, true}));
  ASSERT_TRUE(h.current());
  EXPECT_EQ(*h.current(), (CurrentState{kT0 + 3h, false}));
}

TEST(SparkHistory, TheSameStateAgainChangesNothing) {
  SparkHistory h;
  h.record_state(kT0, true);
  h.record_state(kT0 + 1h, true);  // waking -> running: awake both
  EXPECT_TRUE(h.intervals().empty());
  EXPECT_EQ(*h.current(), (CurrentState{kT0, true}));
}

TEST(SparkHistory, BeginIfUnknownKeepsACurrentState) {
  SparkHistory h;
  h.record_state(kT0, true);
  h.begin_if_unknown(kT0 + 1h, false);  // a reload: the spark is served already
  EXPECT_EQ(*h.current(), (CurrentState{kT0, true}));
}

TEST(SparkHistory, AClockSteppingBackNeverMakesIntervalsOverlap) {
  SparkHistory h;
  h.record_state(kT0, true);
  h.record_state(kT0 - 10min, false);  // NTP stepped the clock back
  EXPECT_TRUE(h.intervals().empty());  // a zero-length awake interval is nothing
  EXPECT_EQ(*h.current(), (CurrentState{kT0, false}));
  h.record_state(kT0 + 1h, true);
  ASSERT_EQ(h.intervals().size(), 1u);
  EXPECT_EQ(h.intervals()[0], (StateInterval{kT0, kT0 + 1h, false}));
}

// ---------------------------------------------------------------------------
// A restart: what is known ends, the gap is unknown, the history goes on
// ---------------------------------------------------------------------------

TEST(SparkHistory, CloseEndsTheCurrentStateAndTheGapIsUnknown) {
  SparkHistory h;
  h.begin_if_unknown(kT0, false);
  h.record_state(kT0 + 1h, true);
  h.close(kT0 + 2h);  // last written at +2h, then the gateway stopped
  EXPECT_FALSE(h.current());
  h.begin_if_unknown(kT0 + 3h, false);  // served again at +3h
  const auto t = h.totals(kT0, kT0 + 4h);
  EXPECT_DOUBLE_EQ(t.asleep_seconds, secs(1h + 1h));
  EXPECT_DOUBLE_EQ(t.awake_seconds, secs(1h));
  EXPECT_DOUBLE_EQ(t.unknown_seconds, secs(1h));
  ASSERT_TRUE(t.slept_share());
  EXPECT_DOUBLE_EQ(*t.slept_share(), 2.0 / 3.0);  // of the time known

  const auto line = h.timeline(kT0, kT0 + 4h);
  ASSERT_EQ(line.size(), 4u);
  EXPECT_EQ(line[2].state, HistoryState::unknown);
  EXPECT_EQ(line[2].from, kT0 + 2h);
  EXPECT_EQ(line[2].to, kT0 + 3h);
  EXPECT_EQ(line[3].state, HistoryState::asleep);
  EXPECT_TRUE(line[3].ongoing);
}

TEST(SparkHistory, ARestartThatChangedNothingJoinsTheIntervals) {
  SparkHistory h;
  h.begin_if_unknown(kT0, false);
  h.close(kT0 + 1h);
  h.record_state(kT0 + 1h, false);  // served again at the same instant
  h.record_state(kT0 + 2h, true);
  ASSERT_EQ(h.intervals().size(), 1u);
  EXPECT_EQ(h.intervals()[0], (StateInterval{kT0, kT0 + 2h, false}));
}

// ---------------------------------------------------------------------------
// Totals and timelines over a window
// ---------------------------------------------------------------------------

TEST(SparkHistory, TotalsClipToTheWindowAndCountTheCurrentStateUpToItsEnd) {
  SparkHistory h;
  h.begin_if_unknown(kT0, false);
  h.record_state(kT0 + 10h, true);
  h.record_state(kT0 + 12h, false);
  h.record_state(kT0 + 20h, true);
  // Window [+11h, +22h): 1h awake, 8h asleep, 2h awake (still going).
  const auto t = h.totals(kT0 + 11h, kT0 + 22h);
  EXPECT_DOUBLE_EQ(t.awake_seconds, secs(3h));
  EXPECT_DOUBLE_EQ(t.asleep_seconds, secs(8h));
  EXPECT_DOUBLE_EQ(t.unknown_seconds, 0);
}

TEST(SparkHistory, BeforeTheFirstRecordIsUnknownAndNothingKnownHasNoShare) {
  SparkHistory h;
  EXPECT_EQ(h.totals(kT0, kT0 + 1h).slept_share(), std::nullopt);
  h.begin_if_unknown(kT0 + 30min, true);
  const auto t = h.totals(kT0, kT0 + 1h);
  EXPECT_DOUBLE_EQ(t.unknown_seconds, secs(30min));
  EXPECT_DOUBLE_EQ(t.awake_seconds, secs(30min));
  EXPECT_DOUBLE_EQ(*t.slept_share(), 0.0);
}

TEST(SparkHistory, TimelineCoversTheWindowEndToEnd) {
  SparkHistory h;
  h.begin_if_unknown(kT0, false);
  h.record_state(kT0 + 1h, true);
  h.record_state(kT0 + 2h, false);
  const auto line = h.timeline(kT0 - 1h, kT0 + 3h);
  ASSERT_EQ(line.size(), 4u);
  TimePoint cursor = kT0 - 1h;
  for (const auto& e : line) {
    EXPECT_EQ(e.from, cursor);
    cursor = e.to;
  }
  EXPECT_EQ(cursor, kT0 + 3h);
  EXPECT_EQ(line[0].state, HistoryState::unknown);
  EXPECT_EQ(line[1].state, HistoryState::asleep);
  EXPECT_EQ(line[2].state, HistoryState::awake);
  EXPECT_EQ(line[3].state, HistoryState::asleep);
  EXPECT_FALSE(line[2].ongoing);
  EXPECT_TRUE(line[3].ongoing);
}

// ---------------------------------------------------------------------------
// Wakes and spans of use
// ---------------------------------------------------------------------------

TEST(SparkHistory, WakesKeepTheirCauseCutAtAUtf8Boundary) {
  SparkHistory h;
  h.record_wake(kT0, "a connection from 100.101.102.103");
  // 119 ASCII bytes, then a 2-byte character that would straddle the 120-byte limit.
  h.record_wake(kT0 + 1h, std::string(119, 'x') + "\xc3\xa9" + "tail");
  ASSERT_EQ(h.wakes().size(), 2u);
  EXPECT_EQ(h.wakes()[0].cause, "a connection from 100.101.102.103");
  EXPECT_EQ(h.wakes()[1].cause, std::string(119, 'x'));
  const auto between = h.wakes_between(kT0 + 1min, kT0 + 2h);
  ASSERT_EQ(between.size(), 1u);
  EXPECT_EQ(between[0].at, kT0 + 1h);
}

TEST(SparkHistory, SessionsCloseTogetherAreOneSpanOfUse) {
  SparkHistory h;
  h.record_state(kT0, true);
  h.in_use_began(kT0);
  h.in_use_ended(kT0 + 10min);
  h.in_use_began(kT0 + 10min + kInUseMergeGap);  // reconnected within the gap
  h.in_use_ended(kT0 + 20min);
  h.in_use_began(kT0 + 2h);  // a new stretch
  ASSERT_EQ(h.in_use().size(), 1u);
  EXPECT_EQ(h.in_use()[0], (TimeSpan{kT0, kT0 + 20min}));
  ASSERT_TRUE(h.in_use_since());
  EXPECT_EQ(*h.in_use_since(), kT0 + 2h);
  const auto spans = h.in_use_between(kT0 + 5min, kT0 + 3h);
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0], (TimeSpan{kT0 + 5min, kT0 + 20min}));
  EXPECT_EQ(spans[1], (TimeSpan{kT0 + 2h, kT0 + 3h}));  // the open one, up to the window's end
}

TEST(SparkHistory, SessionsWithASleepBetweenStayApart) {
  SparkHistory h;
  h.in_use_began(kT0);  // opened while asleep: it wakes the spark
  h.record_state(kT0 + 1s, true);
  h.in_use_ended(kT0 + 10s);
  h.record_state(kT0 + 20s, false);  // idle timeout
  h.in_use_began(kT0 + 30s);         // within the merge gap, but after a sleep
  h.record_state(kT0 + 31s, true);
  h.in_use_ended(kT0 + 40s);
  ASSERT_EQ(h.in_use().size(), 2u);
  EXPECT_EQ(h.in_use()[0], (TimeSpan{kT0, kT0 + 10s}));
  EXPECT_EQ(h.in_use()[1], (TimeSpan{kT0 + 30s, kT0 + 40s}));
}

TEST(SparkHistory, CloseEndsAnOpenSpanOfUse) {
  SparkHistory h;
  h.in_use_began(kT0);
  h.close(kT0 + 1h);
  EXPECT_FALSE(h.in_use_since());
  ASSERT_EQ(h.in_use().size(), 1u);
  EXPECT_EQ(h.in_use()[0], (TimeSpan{kT0, kT0 + 1h}));
}

// ---------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------

TEST(SparkHistory, WhatEndedMoreThanAWeekAgoIsDropped) {
  SparkHistory h;
  h.begin_if_unknown(kT0, false);
  h.record_state(kT0 + 1h, true);
  h.record_wake(kT0 + 1h, "old");
  h.in_use_began(kT0 + 1h);
  h.in_use_ended(kT0 + 2h);
  h.record_state(kT0 + 2h, false);
  h.record_wake(kT0 + 8 * 24h, "new");  // prunes at this time
  h.record_state(kT0 + 8 * 24h, true);
  // The asleep interval from +2h reaches into the last week: kept whole, clipped by queries.
  ASSERT_EQ(h.intervals().size(), 1u);
  EXPECT_EQ(h.intervals()[0].from, kT0 + 2h);
  ASSERT_EQ(h.wakes().size(), 1u);
  EXPECT_EQ(h.wakes()[0].cause, "new");
  EXPECT_TRUE(h.in_use().empty());
}

TEST(SparkHistory, AFlappingSparkKeepsOnlyTheNewestEntries) {
  SparkHistory h;
  h.begin_if_unknown(kT0, false);
  TimePoint t = kT0;
  for (std::size_t i = 0; i < kMaxIntervals + 100; ++i) {
    t += 1s;
    h.record_state(t, i % 2 == 0);
    h.record_wake(t, "flap");
    h.in_use_began(t);
    h.in_use_ended(t + 1ms);
    t += kInUseMergeGap;  // apart enough to stay separate spans
  }
  EXPECT_EQ(h.intervals().size(), kMaxIntervals);
  EXPECT_EQ(h.wakes().size(), kMaxWakes);
  EXPECT_EQ(h.in_use().size(), kMaxInUseSpans);
  EXPECT_EQ(h.intervals().back().to, t - kInUseMergeGap);  // the newest are the ones kept
}

// ---------------------------------------------------------------------------
// Rebuilding from the state file
// ---------------------------------------------------------------------------

TEST(SparkHistory, RestoreRefusesEntriesOutOfOrderAndKeepsTheRest) {
  SparkHistory h;
  EXPECT_EQ(h.restore_interval({kT0, kT0 + 1h, false}), std::nullopt);
  EXPECT_NE(h.restore_interval({kT0 + 30min, kT0 + 2h, true}), std::nullopt);  // overlaps
  EXPECT_NE(h.restore_interval({kT0 + 3h, kT0 + 2h, true}), std::nullopt);     // backwards
  EXPECT_EQ(h.restore_interval({kT0 + 1h, kT0 + 2h, true}), std::nullopt);
  EXPECT_NE(h.restore_current({kT0 + 1h, false}), std::nullopt);  // before the last end
  EXPECT_EQ(h.restore_current({kT0 + 2h, false}), std::nullopt);
  EXPECT_EQ(h.restore_wake({kT0 + 1h, "a"}), std::nullopt);
  EXPECT_NE(h.restore_wake({kT0, "older"}), std::nullopt);
  EXPECT_EQ(h.restore_in_use({kT0 + 1h, kT0 + 90min}), std::nullopt);
  EXPECT_NE(h.restore_in_use({kT0 + 80min, kT0 + 2h}), std::nullopt);
  EXPECT_EQ(h.restore_in_use_since(kT0 + 2h), std::nullopt);
  ASSERT_EQ(h.intervals().size(), 2u);
  EXPECT_EQ(h.wakes().size(), 1u);
  EXPECT_EQ(h.in_use().size(), 1u);
  EXPECT_EQ(*h.current(), (CurrentState{kT0 + 2h, false}));
}

}  // namespace
}  // namespace spark::activity
