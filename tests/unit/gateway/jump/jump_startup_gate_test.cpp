// Who may start logging in to the jump host (gateway/jump/startup_gate.hpp): OpenSSH's
// MaxStartups and PerSourcePenalties, the fair share among sources, max_sessions; and their
// config keys (docs/jump-host.md, docs/configuration.md).
#include <gtest/gtest.h>

#include <string>

#include "config/config.hpp"
#include "gateway/jump/startup_gate.hpp"

namespace spark::gateway {
namespace {

using namespace std::chrono_literals;
using Kind = StartupGate::Decision::Kind;
using End = StartupGate::End;
using Clock = StartupGate::Clock;

config::MaxStartups startups(int start, int rate, int full) { return {start, rate, full}; }

config::SourcePenalties no_penalties() {
  config::SourcePenalties p;
  p.enabled = false;
  return p;
}

// A coin that always lands the same way.
StartupGate::Random coin(double value) {
  return [value] { return value; };
}

TEST(StartupGate, DropProbabilityRisesLinearlyFromStartToFull) {
  StartupGate gate(startups(10, 30, 100), no_penalties(), 1000);
  EXPECT_EQ(gate.drop_probability(0), 0.0);
  EXPECT_EQ(gate.drop_probability(9), 0.0);
  EXPECT_DOUBLE_EQ(gate.drop_probability(10), 0.30);
  EXPECT_DOUBLE_EQ(gate.drop_probability(55), 0.65);
  EXPECT_EQ(gate.drop_probability(100), 1.0);
  EXPECT_EQ(gate.drop_probability(500), 1.0);
  StartupGate hard(startups(5, 100, 5), no_penalties(), 1000);  // "max_startups": "5"
  EXPECT_EQ(hard.drop_probability(4), 0.0);
  EXPECT_EQ(hard.drop_probability(5), 1.0);
}

TEST(StartupGate, BelowStartEveryoneIsAdmitted) {
  StartupGate gate(startups(10, 30, 100), no_penalties(), 1000, coin(0.0));
  const auto now = Clock::now();
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(gate.decide("10.0.0.1", 0, now).kind, Kind::admit) << i;
    gate.started("10.0.0.1");
  }
  EXPECT_EQ(gate.unauthenticated(), 10);
}

TEST(StartupGate, TheCoinDecidesBetweenStartAndFull) {
  const auto now = Clock::now();
  for (const double toss : {0.29, 0.31}) {
    StartupGate gate(startups(10, 30, 100), no_penalties(), 1000, coin(toss));
    for (int i = 0; i < 10; ++i) gate.started("10.0.0.1");
    const auto d = gate.decide("10.0.0.1", 0, now);  // the same source: nobody to take from
    EXPECT_EQ(d.kind, toss < 0.30 ? Kind::refuse : Kind::admit) << toss;
    if (d.kind == Kind::refuse) {
      EXPECT_EQ(d.why, "10 connections not logged in yet (max_startups 10:30:100)");
    }
  }
}

TEST(StartupGate, AFloodFromOneSourceOnlyDisplacesItself) {
  StartupGate gate(startups(10, 30, 100), no_penalties(), 1000, coin(0.5));
  const auto now = Clock::now();
  for (int i = 0; i < 100; ++i) gate.started("10.6.6.6");
  // The flooder's next connection goes (full), whatever the coin.
  EXPECT_EQ(gate.decide("10.6.6.6", 0, now).kind, Kind::refuse);
  // Someone else's is taken, in place of the flooder's oldest.
  const auto d = gate.decide("10.0.0.1", 0, now);
  EXPECT_EQ(d.kind, Kind::admit_after_eviction);
  EXPECT_EQ(d.evict, "10.6.6.6");
  gate.ended("10.6.6.6", End::evicted, now);
  gate.started("10.0.0.1");
  EXPECT_EQ(gate.unauthenticated(), 100);
  EXPECT_EQ(gate.unauthenticated_from("10.0.0.1"), 1);
  EXPECT_EQ(gate.unauthenticated_from("10.6.6.6"), 99);
}

TEST(StartupGate, EqualSharesAreNotSwapped) {
  StartupGate gate(startups(2, 100, 2), no_penalties(), 1000);
  const auto now = Clock::now();
  gate.started("10.0.0.1");
  gate.started("10.0.0.2");
  // 10.0.0.2 would hold 2 and 10.0.0.1 none: no fairer than now.
  EXPECT_EQ(gate.decide("10.0.0.2", 0, now).kind, Kind::refuse);
  EXPECT_EQ(gate.decide("10.0.0.3", 0, now).kind, Kind::refuse);
}

TEST(StartupGate, MaxSessionsCountsLoggedInSessionsToo) {
  StartupGate gate(startups(100, 30, 200), no_penalties(), 3);
  const auto now = Clock::now();
  gate.started("10.0.0.1");
  const auto d = gate.decide("10.0.0.1", 2, now);
  EXPECT_EQ(d.kind, Kind::refuse);
  EXPECT_EQ(d.why, "max_sessions (3) reached");
  EXPECT_EQ(gate.decide("10.0.0.1", 1, now).kind, Kind::admit);
}

TEST(StartupGate, LoggingInEndsTheStartWithoutPenalty) {
  StartupGate gate(startups(10, 30, 100), config::SourcePenalties{}, 100);
  const auto now = Clock::now();
  for (int i = 0; i < 20; ++i) {
    gate.started("10.0.0.1");
    EXPECT_FALSE(gate.ended("10.0.0.1", End::logged_in, now));
  }
  EXPECT_EQ(gate.unauthenticated(), 0);
  EXPECT_EQ(gate.penalized_sources(), 0u);
  EXPECT_EQ(gate.decide("10.0.0.1", 0, now).kind, Kind::admit);
}

TEST(StartupGate, PenaltiesAddUpAndRefuseOnceAboveMin) {
  // authfail 5s, min 15s: three failures hold 15s (not above it), the fourth refuses.
  StartupGate gate(startups(10, 30, 100), config::SourcePenalties{}, 100);
  const auto now = Clock::now();
  for (int i = 0; i < 3; ++i) {
    gate.started("10.0.0.9");
    EXPECT_FALSE(gate.ended("10.0.0.9", End::authfail, now));
  }
  EXPECT_EQ(gate.decide("10.0.0.9", 0, now).kind, Kind::admit);
  gate.started("10.0.0.9");
  EXPECT_TRUE(gate.ended("10.0.0.9", End::authfail, now));  // 20s > 15s: active (said once)
  auto d = gate.decide("10.0.0.9", 0, now);
  EXPECT_EQ(d.kind, Kind::refuse);
  EXPECT_TRUE(d.penalized);
  EXPECT_EQ(d.why, "penalized for 20s more (its connections failed to log in; jump.per_source_penalties)");
  EXPECT_EQ(gate.decide("10.0.0.1", 0, now).kind, Kind::admit) << "another source is not penalized";
  // Until the time runs out.
  EXPECT_EQ(gate.decide("10.0.0.9", 0, now + 19s).kind, Kind::refuse);
  EXPECT_EQ(gate.decide("10.0.0.9", 0, now + 20s).kind, Kind::admit);
}

TEST(StartupGate, PenaltiesAreCappedAtMax) {
  StartupGate gate(startups(10, 30, 1000), config::SourcePenalties{}, 1000);
  const auto now = Clock::now();
  for (int i = 0; i < 100; ++i) {
    gate.started("10.6.6.6");
    gate.ended("10.6.6.6", End::grace_exceeded, now);
  }
  EXPECT_EQ(gate.penalty_left("10.6.6.6", now), std::chrono::duration_cast<Clock::duration>(10min));
  EXPECT_EQ(gate.decide("10.6.6.6", 0, now + 10min).kind, Kind::admit);
}

TEST(StartupGate, DroppedByTheGatewayIsNoPenaltyAndDisabledPenaltiesNeverRefuse) {
  const auto now = Clock::now();
  StartupGate gate(startups(10, 30, 100), config::SourcePenalties{}, 100);
  for (int i = 0; i < 50; ++i) {
    gate.started("10.0.0.1");
    gate.ended("10.0.0.1", End::dropped, now);
  }
  EXPECT_EQ(gate.penalized_sources(), 0u);
  StartupGate off(startups(10, 30, 100), no_penalties(), 100);
  for (int i = 0; i < 50; ++i) {
    off.started("10.6.6.6");
    EXPECT_FALSE(off.ended("10.6.6.6", End::grace_exceeded, now));
  }
  EXPECT_EQ(off.decide("10.6.6.6", 0, now).kind, Kind::admit);
}

// -- config --------------------------------------------------------------------------------

config::Config parse_jump(const std::string& extra) {
  const std::string text = R"({"sparks": [], "jump": {"listen": "127.0.0.1:2222", "authorized_keys": "/dev/null")" +
                           extra + "}}";
  return config::parse_config(text, "/etc/spark-gateway/gateway.json");
}

std::string problems_of(const std::string& extra) {
  try {
    parse_jump(extra);
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(JumpStartupConfig, DefaultsAreOpenSSHs) {
  const auto cfg = parse_jump("");
  EXPECT_EQ(cfg.jump->max_startups, startups(10, 30, 100));
  EXPECT_TRUE(cfg.jump->penalties.enabled);
  EXPECT_EQ(cfg.jump->penalties.authfail, 5s);
  EXPECT_EQ(cfg.jump->penalties.noauth, 1s);
  EXPECT_EQ(cfg.jump->penalties.grace_exceeded, 10s);
  EXPECT_EQ(cfg.jump->penalties.min, 15s);
  EXPECT_EQ(cfg.jump->penalties.max, 10min);
}

TEST(JumpStartupConfig, MaxStartupsForms) {
  EXPECT_EQ(parse_jump(R"(, "max_startups": "20:50:60")").jump->max_startups, startups(20, 50, 60));
  EXPECT_EQ(parse_jump(R"(, "max_startups": "40")").jump->max_startups, startups(40, 100, 40));
  for (const char* bad : {"\"10:30\"", "\"0:30:100\"", "\"10:0:100\"", "\"10:101:100\"", "\"50:30:40\"",
                          "\"a:b:c\"", "\"10::100\"", "\"\"", "10", "\"-1\""}) {
    EXPECT_NE(problems_of(std::string(", \"max_startups\": ") + bad).find("jump.max_startups"), std::string::npos)
        << bad;
  }
}

TEST(JumpStartupConfig, PerSourcePenalties) {
  EXPECT_FALSE(parse_jump(R"(, "per_source_penalties": false)").jump->penalties.enabled);
  const auto cfg = parse_jump(R"(, "per_source_penalties": {"authfail": "30s", "max": "1h"})");
  EXPECT_EQ(cfg.jump->penalties.authfail, 30s);
  EXPECT_EQ(cfg.jump->penalties.max, 1h);
  EXPECT_EQ(cfg.jump->penalties.noauth, 1s);  // left out: the default
  EXPECT_NE(problems_of(R"(, "per_source_penalties": {"crash": "90s"})").find("jump.per_source_penalties.crash: unknown key"),
            std::string::npos);
  EXPECT_NE(problems_of(R"(, "per_source_penalties": {"min": "1h", "max": "10m"})").find("jump.per_source_penalties.max"),
            std::string::npos);
  EXPECT_NE(problems_of(R"(, "per_source_penalties": "yes")").find("jump.per_source_penalties"), std::string::npos);
}

}  // namespace
}  // namespace spark::gateway
