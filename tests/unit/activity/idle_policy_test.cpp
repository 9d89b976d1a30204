// Unit tests for activity/idle_policy.hpp: sleeps_at and is_idle.
#include "activity/idle_policy.hpp"

#include <gtest/gtest.h>

#include <chrono>

namespace spark::activity {
namespace {

using namespace std::chrono_literals;

// A fixed, arbitrary reference instant (2026-11-22T15:04:05Z) so tests never read the clock.
const TimePoint kT0{std::chrono::seconds(1'795'359'845)};

config::MaybeNever timeout(config::Duration d) { return config::MaybeNever{d}; }
const config::MaybeNever kNever{std::nullopt};

// ---------------------------------------------------------------------------
// Open connections: a spark with a live session never sleeps.
// ---------------------------------------------------------------------------

TEST(IdlePolicy, OpenConnectionsMeanNoSleepTime) {
  SparkActivity a{kT0, std::nullopt, 1};
  EXPECT_EQ(sleeps_at(a, timeout(2h)), std::nullopt);
}

TEST(IdlePolicy, OpenConnectionsAreNeverIdleEvenLongAfterLastActivity) {
  SparkActivity a{kT0, std::nullopt, 3};
  EXPECT_FALSE(is_idle(a, timeout(1ms), kT0 + 24h * 365));
}

TEST(IdlePolicy, OpenConnectionsOverrideAnExpiredKeepAwake) {
  SparkActivity a{kT0, kT0 + 1min, 1};
  EXPECT_EQ(sleeps_at(a, timeout(1s)), std::nullopt);
  EXPECT_FALSE(is_idle(a, timeout(1s), kT0 + 10h));
}

// ---------------------------------------------------------------------------
// idle_timeout "never"
// ---------------------------------------------------------------------------

TEST(IdlePolicy, NeverTimeoutMeansNoSleepTime) {
  SparkActivity a{kT0, std::nullopt, 0};
  EXPECT_EQ(sleeps_at(a, kNever), std::nullopt);
}

TEST(IdlePolicy, NeverTimeoutIsNeverIdle) {
  SparkActivity a{kT0, kT0 + 1s, 0};
  EXPECT_FALSE(is_idle(a, kNever, kT0 + 24h * 3650));
}

// ---------------------------------------------------------------------------
// last_activity + idle_timeout boundary
// ---------------------------------------------------------------------------

TEST(IdlePolicy, SleepsAtIsLastActivityPlusTimeout) {
  SparkActivity a{kT0, std::nullopt, 0};
  ASSERT_TRUE(sleeps_at(a, timeout(2h)).has_value());
  EXPECT_EQ(*sleeps_at(a, timeout(2h)), kT0 + 2h);
}

TEST(IdlePolicy, ExactlyAtTheBoundaryIsIdle) {
  SparkActivity a{kT0, std::nullopt, 0};
  EXPECT_TRUE(is_idle(a, timeout(2h), kT0 + 2h));
}

TEST(IdlePolicy, OneMillisecondBeforeTheBoundaryIsNotIdle) {
  SparkActivity a{kT0, std::nullopt, 0};
  EXPECT_FALSE(is_idle(a, timeout(2h), kT0 + 2h - 1ms));
}

TEST(IdlePolicy, LongAfterTheBoundaryIsIdle) {
  SparkActivity a{kT0, std::nullopt, 0};
  EXPECT_TRUE(is_idle(a, timeout(2h), kT0 + 30h));
}

TEST(IdlePolicy, RightAfterActivityIsNotIdle) {
  SparkActivity a{kT0, std::nullopt, 0};
  EXPECT_FALSE(is_idle(a, timeout(500ms), kT0));
  EXPECT_FALSE(is_idle(a, timeout(500ms), kT0 + 499ms));
  EXPECT_TRUE(is_idle(a, timeout(500ms), kT0 + 500ms));
}

// ---------------------------------------------------------------------------
// keep_awake_until
// ---------------------------------------------------------------------------

TEST(IdlePolicy, LaterKeepAwakePostponesSleep) {
  SparkActivity a{kT0, kT0 + 5h, 0};
  ASSERT_TRUE(sleeps_at(a, timeout(2h)).has_value());
  EXPECT_EQ(*sleeps_at(a, timeout(2h)), kT0 + 5h);
  EXPECT_FALSE(is_idle(a, timeout(2h), kT0 + 2h));  // the idle timeout alone would sleep it
  EXPECT_FALSE(is_idle(a, timeout(2h), kT0 + 5h - 1ms));
  EXPECT_TRUE(is_idle(a, timeout(2h), kT0 + 5h));
}

TEST(IdlePolicy, EarlierKeepAwakeHasNoEffect) {
  SparkActivity a{kT0, kT0 + 30min, 0};
  ASSERT_TRUE(sleeps_at(a, timeout(2h)).has_value());
  EXPECT_EQ(*sleeps_at(a, timeout(2h)), kT0 + 2h);
  EXPECT_FALSE(is_idle(a, timeout(2h), kT0 + 1h));  // keep-awake expired, timeout not yet
  EXPECT_FALSE(is_idle(a, timeout(2h), kT0 + 2h - 1ms));
  EXPECT_TRUE(is_idle(a, timeout(2h), kT0 + 2h));
}

TEST(IdlePolicy, KeepAwakeInThePastHasNoEffect) {
  SparkActivity a{kT0, kT0 - 24h, 0};
  EXPECT_EQ(*sleeps_at(a, timeout(1h)), kT0 + 1h);
  EXPECT_TRUE(is_idle(a, timeout(1h), kT0 + 1h));
}

TEST(IdlePolicy, KeepAwakeEqualToTimeoutBoundaryIsIdleAtIt) {
  SparkActivity a{kT0, kT0 + 2h, 0};
  EXPECT_EQ(*sleeps_at(a, timeout(2h)), kT0 + 2h);
  EXPECT_FALSE(is_idle(a, timeout(2h), kT0 + 2h - 1ms));
  EXPECT_TRUE(is_idle(a, timeout(2h), kT0 + 2h));
}

TEST(IdlePolicy, KeepAwakeDoesNotOverrideNever) {
  SparkActivity a{kT0, kT0 + 1h, 0};
  EXPECT_EQ(sleeps_at(a, kNever), std::nullopt);
}

}  // namespace
}  // namespace spark::activity
