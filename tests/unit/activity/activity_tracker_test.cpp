// Unit tests for activity/activity_tracker.hpp: the per-spark idle clock, keep-awake holds,
// restore after a restart, and dirty tracking for persistence.
#include "activity/activity_tracker.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace spark::activity {
namespace {

using namespace std::chrono_literals;

// 2026-11-22T15:04:05Z: a fixed reference instant so no test reads the clock.
const TimePoint kT0{std::chrono::seconds(1'795'359'845)};
const config::MaybeNever k2h{std::chrono::hours(2)};
const config::MaybeNever kNever{std::nullopt};

// ---------------------------------------------------------------------------
// ensure(): first sight
// ---------------------------------------------------------------------------

TEST(ActivityTracker, EnsureStartsTheClockAtNow) {
  ActivityTracker t;
  t.ensure("a", kT0);
  const auto a = t.get("a");
  EXPECT_EQ(a.last_activity, kT0);
  EXPECT_EQ(a.keep_awake_until, std::nullopt);
  EXPECT_EQ(a.open_connections, 0);
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 2h - 1ms));
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 2h));
}

TEST(ActivityTracker, EnsureAgainDoesNotRestartTheClock) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.ensure("a", kT0 + 1h);
  EXPECT_EQ(t.get("a").last_activity, kT0);
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 2h));
}

TEST(ActivityTracker, UnknownSparkIsNotIdle) {
  ActivityTracker t;
  EXPECT_FALSE(t.is_idle("ghost", k2h, kT0 + 24h * 365));
  t.ensure("other", kT0);
  EXPECT_FALSE(t.is_idle("ghost", k2h, kT0 + 24h * 365));
}

TEST(ActivityTracker, SparksHaveIndependentClocks) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.ensure("b", kT0 + 1h);
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 2h));
  EXPECT_FALSE(t.is_idle("b", k2h, kT0 + 2h));
  EXPECT_TRUE(t.is_idle("b", k2h, kT0 + 3h));
}

// ---------------------------------------------------------------------------
// connection_opened / connection_closed
// ---------------------------------------------------------------------------

TEST(ActivityTracker, ConnectionOpenedMovesLastActivityForward) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.connection_opened("a", kT0 + 10min);
  EXPECT_EQ(t.get("a").last_activity, kT0 + 10min);
  EXPECT_EQ(t.get("a").open_connections, 1);
}

TEST(ActivityTracker, ConnectionOpenedWithEarlierNowDoesNotMoveBack) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.connection_opened("a", kT0 - 1h);  // e.g. a wall-clock step back
  EXPECT_EQ(t.get("a").last_activity, kT0);
}

TEST(ActivityTracker, ConnectionClosedWithEarlierNowDoesNotMoveBack) {
  ActivityTracker t;
  t.connection_opened("a", kT0 + 1h);
  t.connection_closed("a", kT0);
  EXPECT_EQ(t.get("a").last_activity, kT0 + 1h);
  EXPECT_EQ(t.get("a").open_connections, 0);
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 2h));  // would be idle if it had moved back
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 3h));
}

TEST(ActivityTracker, ConnectionOpenedOnUnseenSparkStartsItsClock) {
  ActivityTracker t;
  t.connection_opened("a", kT0);
  EXPECT_EQ(t.get("a").last_activity, kT0);
  EXPECT_EQ(t.get("a").open_connections, 1);
}

TEST(ActivityTracker, OpenConnectionKeepsSparkNonIdleForever) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.connection_opened("a", kT0);
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 2h));
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 24h * 365));
  EXPECT_FALSE(t.is_idle("a", config::MaybeNever{1ms}, kT0 + 24h));
}

TEST(ActivityTracker, StillOpenWhileAnyConnectionIsOpen) {
  ActivityTracker t;
  t.connection_opened("a", kT0);
  t.connection_opened("a", kT0);
  t.connection_closed("a", kT0 + 1min);
  EXPECT_EQ(t.get("a").open_connections, 1);
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 10h));
  t.connection_closed("a", kT0 + 10h);
  EXPECT_EQ(t.get("a").open_connections, 0);
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 12h - 1ms));
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 12h));
}

TEST(ActivityTracker, AfterCloseIdleExactlyIdleTimeoutLater) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.connection_opened("a", kT0 + 1min);
  const TimePoint closed = kT0 + 5h;
  t.connection_closed("a", closed);
  EXPECT_EQ(t.get("a").last_activity, closed);
  EXPECT_FALSE(t.is_idle("a", k2h, closed + 2h - 1ms));
  EXPECT_TRUE(t.is_idle("a", k2h, closed + 2h));
}

TEST(ActivityTracker, CloseWithoutOpenDoesNotGoNegative) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.connection_closed("a", kT0 + 1min);
  EXPECT_EQ(t.get("a").open_connections, 0);
  t.connection_opened("a", kT0 + 2min);
  EXPECT_EQ(t.get("a").open_connections, 1);
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 10h));
}

TEST(ActivityTracker, TouchMovesForwardOnly) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.touch("a", kT0 + 1h);
  EXPECT_EQ(t.get("a").last_activity, kT0 + 1h);
  t.touch("a", kT0 + 30min);
  EXPECT_EQ(t.get("a").last_activity, kT0 + 1h);
}

// ---------------------------------------------------------------------------
// refresh_open
// ---------------------------------------------------------------------------

TEST(ActivityTracker, RefreshOpenMovesOnlySparksWithOpenConnections) {
  ActivityTracker t;
  t.connection_opened("busy", kT0);
  t.ensure("quiet", kT0);
  t.connection_opened("closed-again", kT0);
  t.connection_closed("closed-again", kT0);

  t.refresh_open(kT0 + 3h);

  EXPECT_EQ(t.get("busy").last_activity, kT0 + 3h);
  EXPECT_EQ(t.get("quiet").last_activity, kT0);
  EXPECT_EQ(t.get("closed-again").last_activity, kT0);
  // The persisted view of the busy spark is fresh too.
  EXPECT_EQ(t.snapshot().at("busy").last_activity, kT0 + 3h);
}

TEST(ActivityTracker, RefreshOpenDoesNotMoveBack) {
  ActivityTracker t;
  t.connection_opened("busy", kT0 + 1h);
  t.refresh_open(kT0);
  EXPECT_EQ(t.get("busy").last_activity, kT0 + 1h);
}

// ---------------------------------------------------------------------------
// restore(): a restart neither resets nor forgets
// ---------------------------------------------------------------------------

TEST(ActivityTracker, RestoredTimestampIsKeptNotReset) {
  const TimePoint restart = kT0;
  ActivityTracker t;
  t.restore({{"a", PersistedActivity{restart - 1h, std::nullopt, {}, {}}}});
  t.ensure("a", restart);  // the gateway sees its configured spark at start-up
  EXPECT_EQ(t.get("a").last_activity, restart - 1h);
  // Idle one hour after the restart (2h after the persisted activity), not two.
  EXPECT_FALSE(t.is_idle("a", k2h, restart + 1h - 1ms));
  EXPECT_TRUE(t.is_idle("a", k2h, restart + 1h));
}

TEST(ActivityTracker, RestoredKeepAwakeStillHolds) {
  ActivityTracker t;
  t.restore({{"a", PersistedActivity{kT0 - 3h, kT0 + 1h, {}, {}}}});
  EXPECT_EQ(t.get("a").keep_awake_until, kT0 + 1h);
  EXPECT_FALSE(t.is_idle("a", k2h, kT0));
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 1h - 1ms));
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 1h));
}

TEST(ActivityTracker, RestoredSparksAppearInSnapshot) {
  const ActivitySnapshot persisted{{"a", PersistedActivity{kT0 - 1h, std::nullopt, {}, {}}},
                                   {"retired", PersistedActivity{kT0 - 48h, kT0 + 1h, {}, {}}}};
  ActivityTracker t;
  t.restore(persisted);
  t.ensure("b", kT0);
  auto snap = t.snapshot();
  ASSERT_EQ(snap.size(), 3u);
  EXPECT_EQ(snap.at("a"), persisted.at("a"));
  EXPECT_EQ(snap.at("retired"), persisted.at("retired"));  // not forgotten
  EXPECT_EQ(snap.at("b").last_activity, kT0);
}

// ---------------------------------------------------------------------------
// dirty / mark_persisted
// ---------------------------------------------------------------------------

TEST(ActivityTracker, FreshTrackerIsClean) {
  ActivityTracker t;
  EXPECT_FALSE(t.dirty());
}

TEST(ActivityTracker, DirtyAfterChangeCleanAfterMarkPersisted) {
  ActivityTracker t;
  t.ensure("a", kT0);
  EXPECT_TRUE(t.dirty());
  t.mark_persisted(t.snapshot());
  EXPECT_FALSE(t.dirty());

  t.connection_opened("a", kT0 + 1min);
  EXPECT_TRUE(t.dirty());
  t.mark_persisted(t.snapshot());
  EXPECT_FALSE(t.dirty());

  t.set_keep_awake("a", kT0 + 1h, kT0 + 2min);
  EXPECT_TRUE(t.dirty());
  t.mark_persisted(t.snapshot());
  EXPECT_FALSE(t.dirty());
}

TEST(ActivityTracker, StillDirtyIfChangedAfterSnapshotWasTaken) {
  ActivityTracker t;
  t.ensure("a", kT0);
  const auto written = t.snapshot();
  t.touch("a", kT0 + 1min);  // happens while the snapshot is being written
  t.mark_persisted(written);
  EXPECT_TRUE(t.dirty());
  t.mark_persisted(t.snapshot());
  EXPECT_FALSE(t.dirty());
}

TEST(ActivityTracker, StillDirtyIfNewSparkAppearedAfterSnapshot) {
  ActivityTracker t;
  t.ensure("a", kT0);
  const auto written = t.snapshot();
  t.ensure("b", kT0);
  t.mark_persisted(written);
  EXPECT_TRUE(t.dirty());
}

TEST(ActivityTracker, StillDirtyIfKeepAwakeChangedAfterSnapshot) {
  ActivityTracker t;
  t.ensure("a", kT0);
  const auto written = t.snapshot();
  t.set_keep_awake("a", kT0 + 1h, kT0);
  t.mark_persisted(written);
  EXPECT_TRUE(t.dirty());
}

// ---------------------------------------------------------------------------
// set_keep_awake
// ---------------------------------------------------------------------------

TEST(ActivityTracker, KeepAwakeHoldsSparkAwakeUntilTheTime) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.set_keep_awake("a", kT0 + 8h, kT0);
  EXPECT_EQ(t.get("a").keep_awake_until, kT0 + 8h);
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 2h));
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 8h - 1ms));
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 8h));
}

TEST(ActivityTracker, KeepAwakeCanBeCleared) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.set_keep_awake("a", kT0 + 8h, kT0);
  t.set_keep_awake("a", std::nullopt, kT0 + 1min);
  EXPECT_EQ(t.get("a").keep_awake_until, std::nullopt);
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 2h));
}

TEST(ActivityTracker, KeepAwakeOnUnseenSparkStartsItsClock) {
  ActivityTracker t;
  t.set_keep_awake("a", kT0 + 1h, kT0);
  EXPECT_EQ(t.get("a").last_activity, kT0);
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 2h));
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 2h - 1ms));
}

// A hold cleared (or shortened) on another replica reaches this one through the recorded
// annotations: merge_remote replaces the hold, it does not keep the later one.
TEST(ActivityTracker, RemoteHoldReplacesOursOnceOursWasSeenRecorded) {
  ActivityTracker t;
  t.merge_remote("a", PersistedActivity{kT0, kT0 + 8h, {}, {}});
  EXPECT_EQ(t.get("a").keep_awake_until, kT0 + 8h);
  t.merge_remote("a", PersistedActivity{kT0, std::nullopt, {}, {}});  // cleared elsewhere
  EXPECT_EQ(t.get("a").keep_awake_until, std::nullopt);
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 2h));
}

// A hold set here survives reads of the Deployment from before it was written (a lagging
// watch), until the recorded one says the same; after that the recorded one rules again.
TEST(ActivityTracker, OurUnrecordedHoldSurvivesStaleReads) {
  ActivityTracker t;
  t.merge_remote("a", PersistedActivity{kT0, std::nullopt, {}, {}});
  t.set_keep_awake("a", kT0 + 4h, kT0);
  t.merge_remote("a", PersistedActivity{kT0, std::nullopt, {}, {}});  // read before our write landed
  EXPECT_EQ(t.get("a").keep_awake_until, kT0 + 4h);
  t.merge_remote("a", PersistedActivity{kT0, kT0 + 4h, {}, {}});      // our write, as recorded (milliseconds)
  t.merge_remote("a", PersistedActivity{kT0, std::nullopt, {}, {}});  // then cleared elsewhere
  EXPECT_EQ(t.get("a").keep_awake_until, std::nullopt);
}

TEST(ActivityTracker, NeverTimeoutIsNeverIdle) {
  ActivityTracker t;
  t.ensure("a", kT0);
  EXPECT_FALSE(t.is_idle("a", kNever, kT0 + 24h * 3650));
}

// last_client (issue 19): who opened the last connection, persisted with the activity.

TEST(ActivityTracker, LastClientIsRecordedPersistedAndRestored) {
  ActivityTracker t;
  EXPECT_EQ(t.last_client("a"), "");
  t.ensure("a", kT0);
  t.mark_persisted(t.snapshot());
  t.connection_from("a", "100.101.102.103", kT0);
  EXPECT_EQ(t.last_client("a"), "100.101.102.103");
  EXPECT_TRUE(t.dirty());  // a new client alone is worth a write
  const auto snapshot = t.snapshot();
  EXPECT_EQ(snapshot.at("a").last_client, "100.101.102.103");
  t.mark_persisted(snapshot);
  t.connection_from("a", "100.101.102.103", kT0 + 1s);
  EXPECT_FALSE(t.dirty());  // the same client again changes nothing to write
  ActivityTracker restarted;
  restarted.restore(snapshot);
  EXPECT_EQ(restarted.last_client("a"), "100.101.102.103");
}

TEST(ActivityTracker, RemoteActivityKeepsOurLastClient) {
  ActivityTracker t;
  t.connection_from("a", "10.0.0.7", kT0);
  t.merge_remote("a", PersistedActivity{kT0 + 1h, std::nullopt, {}, {}});  // another replica's, no client
  EXPECT_EQ(t.get("a").last_activity, kT0 + 1h);
  EXPECT_EQ(t.last_client("a"), "10.0.0.7");
}

// ---------------------------------------------------------------------------
// The history (spark_history.hpp) as the tracker keeps it
// ---------------------------------------------------------------------------

TEST(ActivityTracker, ASparkNewlyServedIsAsleepFromThen) {
  ActivityTracker t;
  t.ensure("a", kT0);
  ASSERT_TRUE(t.history("a").current());
  EXPECT_EQ(*t.history("a").current(), (CurrentState{kT0, false}));
  t.record_awake("a", true, kT0 + 1h);
  t.ensure("a", kT0 + 2h);  // a reload: still the same awake stretch
  EXPECT_EQ(*t.history("a").current(), (CurrentState{kT0 + 1h, true}));
  EXPECT_TRUE(t.history("unknown").empty());
}

TEST(ActivityTracker, HistoryChangesMakeTheStateFileDue) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.mark_persisted(t.snapshot());
  t.record_awake("a", true, kT0 + 1min);
  EXPECT_TRUE(t.dirty());
  t.mark_persisted(t.snapshot());
  t.record_wake("a", "a connection from 10.0.0.1", kT0 + 2min);
  EXPECT_TRUE(t.dirty());
  t.mark_persisted(t.snapshot());
  EXPECT_FALSE(t.dirty());
}

TEST(ActivityTracker, FirstSessionOpenedToLastClosedIsOneSpanOfUse) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.connection_opened("a", kT0 + 1min);
  t.connection_opened("a", kT0 + 2min);
  t.connection_closed("a", kT0 + 3min);  // one still open: still in use
  EXPECT_TRUE(t.history("a").in_use().empty());
  ASSERT_TRUE(t.history("a").in_use_since());
  t.connection_closed("a", kT0 + 4min);
  ASSERT_EQ(t.history("a").in_use().size(), 1u);
  EXPECT_EQ(t.history("a").in_use()[0], (TimeSpan{kT0 + 1min, kT0 + 4min}));
  EXPECT_FALSE(t.history("a").in_use_since());
}

TEST(ActivityTracker, SnapshotAndRestoreCarryTheHistory) {
  ActivityTracker before;
  before.ensure("a", kT0);
  before.record_wake("a", "an operator (admin API)", kT0 + 1h);
  before.record_awake("a", true, kT0 + 1h);
  auto snap = before.snapshot();
  snap.at("a").history.close(kT0 + 2h);  // as the store loads it: ended when it was written
  ActivityTracker after;
  after.restore(snap);
  after.ensure("a", kT0 + 3h);
  const auto& h = after.history("a");
  ASSERT_EQ(h.intervals().size(), 2u);
  EXPECT_EQ(h.intervals()[1], (StateInterval{kT0 + 1h, kT0 + 2h, true}));
  EXPECT_EQ(*h.current(), (CurrentState{kT0 + 3h, false}));
  ASSERT_EQ(h.wakes().size(), 1u);
  EXPECT_EQ(h.wakes()[0].cause, "an operator (admin API)");
  EXPECT_DOUBLE_EQ(h.totals(kT0, kT0 + 4h).unknown_seconds, 3600.0);
}

TEST(ActivityTracker, ACurrentStateIsWrittenAgainEveryCheckpoint) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.refresh_open(kT0);
  t.mark_persisted(t.snapshot());
  t.refresh_open(kT0 + kHistoryCheckpoint - 1s);
  EXPECT_FALSE(t.dirty());
  t.refresh_open(kT0 + kHistoryCheckpoint);
  EXPECT_TRUE(t.dirty());  // the file's saved_at moves on, and with it what a crash keeps
}

// A spark seen running (adopted: started by another replica or by hand) starts its idle clock
// here, but that is no one's activity: it is neither persisted nor published, so it cannot keep
// another replica's failed wake from being cleaned up (test_lifecycle case 5).
TEST(ActivityTracker, SeenRunningStartsTheIdleClockButIsNotActivity) {
  ActivityTracker t;
  t.ensure("a", kT0);
  t.mark_persisted(t.snapshot());
  t.seen_running_since("a", kT0 + 1h);
  EXPECT_EQ(t.get("a").last_activity, kT0 + 1h);
  EXPECT_FALSE(t.is_idle("a", k2h, kT0 + 2h));
  EXPECT_TRUE(t.is_idle("a", k2h, kT0 + 3h));
  EXPECT_FALSE(t.dirty());
  EXPECT_EQ(t.snapshot().at("a").last_activity, kT0);
  // Real activity later than the run's start wins, and is what is stored.
  t.touch("a", kT0 + 90min);
  EXPECT_EQ(t.get("a").last_activity, kT0 + 90min);
  EXPECT_EQ(t.snapshot().at("a").last_activity, kT0 + 90min);
}

}  // namespace
}  // namespace spark::activity
