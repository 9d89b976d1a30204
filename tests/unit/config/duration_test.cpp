// Unit tests for config/duration.hpp: parse_duration, parse_duration_or_never, format_duration.
#include "config/duration.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace spark::config {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// parse_duration: accepted inputs
// ---------------------------------------------------------------------------

struct GoodDuration {
  const char* text;
  Duration expected;
};

class ParseDurationAccepts : public ::testing::TestWithParam<GoodDuration> {};

TEST_P(ParseDurationAccepts, ParsesToExpectedValue) {
  const auto& [text, expected] = GetParam();
  std::string why;
  auto d = parse_duration(text, &why);
  ASSERT_TRUE(d.has_value()) << "input \"" << text << "\" rejected: " << why;
  EXPECT_EQ(*d, expected) << "input \"" << text << "\"";
}

INSTANTIATE_TEST_SUITE_P(
    SingleUnits, ParseDurationAccepts,
    ::testing::Values(GoodDuration{"500ms", 500ms}, GoodDuration{"1ms", 1ms},
                      GoodDuration{"30s", 30s}, GoodDuration{"1s", 1s},
                      GoodDuration{"5m", 5min}, GoodDuration{"2h", 2h},
                      GoodDuration{"1d", 24h}, GoodDuration{"7d", 7 * 24h},
                      GoodDuration{"90s", 90s}, GoodDuration{"1000ms", 1s}));

INSTANTIATE_TEST_SUITE_P(
    Compound, ParseDurationAccepts,
    ::testing::Values(GoodDuration{"1h30m", 90min}, GoodDuration{"2m500ms", 2min + 500ms},
                      GoodDuration{"1d12h", 36h}, GoodDuration{"1m30s", 90s},
                      GoodDuration{"1h1m1s1ms", 1h + 1min + 1s + 1ms}));

TEST(ParseDuration, WhyMayBeOmitted) {
  EXPECT_EQ(parse_duration("30s"), std::optional<Duration>(30s));
  EXPECT_FALSE(parse_duration("bogus").has_value());
}

TEST(ParseDuration, SuccessDoesNotRequireWhy) {
  // A successful parse returns a value; `why` content is irrelevant but must not crash.
  std::string why = "untouched";
  EXPECT_TRUE(parse_duration("2h", &why).has_value());
}

// ---------------------------------------------------------------------------
// parse_duration: rejected inputs
// ---------------------------------------------------------------------------

class ParseDurationRejects : public ::testing::TestWithParam<const char*> {};

TEST_P(ParseDurationRejects, ReturnsNulloptWithReason) {
  const std::string text = GetParam();
  std::string why;
  auto d = parse_duration(text, &why);
  EXPECT_FALSE(d.has_value()) << "input \"" << text << "\" parsed as " << d->count() << "ms";
  EXPECT_FALSE(why.empty()) << "input \"" << text << "\" gave no reason";
}

INSTANTIATE_TEST_SUITE_P(
    BadInputs, ParseDurationRejects,
    ::testing::Values("", "0s", "0ms", "0h", "-1s", "+1s", "1.5h", "10", "1x", "s", "ms", " 1s",
                      "1s ", "1 s", "1S", "1MS", "1H", "never", "Never", "1hh", "h1",
                      "99999999999999999999d", "9223372036854775807d", "1s-1s"));

TEST(ParseDuration, ZeroIsRejectedAsNotGreaterThanZero) {
  for (const char* text : {"0s", "0ms", "0m", "0h", "0d"}) {
    SCOPED_TRACE(text);
    std::string why;
    EXPECT_FALSE(parse_duration(text, &why).has_value());
    EXPECT_THAT(why, HasSubstr("greater than zero"));
  }
}

TEST(ParseDuration, NeverIsNotAcceptedByPlainParse) {
  std::string why;
  EXPECT_FALSE(parse_duration("never", &why).has_value());
  EXPECT_FALSE(why.empty());
}

TEST(ParseDuration, OverflowIsRejected) {
  for (const char* text : {"99999999999999999999d", "99999999999999999999ms",
                           "9223372036854775807d", "9223372036854775807h"}) {
    SCOPED_TRACE(text);
    std::string why;
    EXPECT_FALSE(parse_duration(text, &why).has_value());
    EXPECT_FALSE(why.empty());
  }
}

// Issue 17: a keep-awake of "100000d" overflowed the clock (undefined behaviour) when added to
// now. Durations are capped at 10 years, and the error names the maximum.
TEST(ParseDuration, LongestAcceptedIsTenYears) {
  EXPECT_EQ(kMaxDuration, 3650 * 24h);
  for (const char* text : {"3650d", "87600h", "5256000m", "315360000s", "315360000000ms", "3649d24h"}) {
    SCOPED_TRACE(text);
    std::string why;
    const auto d = parse_duration(text, &why);
    ASSERT_TRUE(d.has_value()) << why;
    EXPECT_EQ(*d, kMaxDuration);
  }
}

TEST(ParseDuration, LongerThanTenYearsIsRejectedNamingTheMaximum) {
  for (const char* text : {"100000d", "3651d", "3650d1ms", "87601h", "315360000001ms", "3650d3650d",
                           "9223372036854775807ms", "99999999999999999999d"}) {
    SCOPED_TRACE(text);
    std::string why;
    EXPECT_FALSE(parse_duration(text, &why).has_value());
    EXPECT_THAT(why, HasSubstr("too long"));
    EXPECT_THAT(why, HasSubstr("3650d (10 years)"));
    EXPECT_FALSE(parse_duration_or_never(text, &why).has_value());
  }
}

TEST(ParseDuration, EveryAcceptedDurationFitsTheClockFromNow) {
  // The sum the keep-awake computes; UBSan flags the signed overflow if it does not fit.
  const auto now = std::chrono::system_clock::now();
  const auto until = now + *parse_duration("3650d");
  EXPECT_GT(until, now);
}

// ---------------------------------------------------------------------------
// parse_duration_or_never
// ---------------------------------------------------------------------------

TEST(ParseDurationOrNever, AcceptsNever) {
  std::string why;
  auto v = parse_duration_or_never("never", &why);
  ASSERT_TRUE(v.has_value()) << why;
  EXPECT_TRUE(v->is_never());
  EXPECT_FALSE(v->value.has_value());
}

TEST(ParseDurationOrNever, AcceptsOrdinaryDurations) {
  const std::vector<std::pair<const char*, Duration>> cases = {
      {"500ms", 500ms}, {"30s", 30s}, {"5m", 5min}, {"2h", 2h}, {"1d", 24h}, {"1h30m", 90min}};
  for (const auto& [text, expected] : cases) {
    SCOPED_TRACE(text);
    std::string why;
    auto v = parse_duration_or_never(text, &why);
    ASSERT_TRUE(v.has_value()) << why;
    EXPECT_FALSE(v->is_never());
    ASSERT_TRUE(v->value.has_value());
    EXPECT_EQ(*v->value, expected);
  }
}

TEST(ParseDurationOrNever, RejectsWhatParseDurationRejects) {
  for (const char* text : {"", "0s", "-1s", "1.5h", "10", "1x", "s", " never", "never ", "NEVER",
                           "1S", "99999999999999999999d"}) {
    SCOPED_TRACE(text);
    std::string why;
    EXPECT_FALSE(parse_duration_or_never(text, &why).has_value());
    EXPECT_FALSE(why.empty());
  }
}

TEST(MaybeNever, EqualityDistinguishesNeverFromValues) {
  MaybeNever never{};
  MaybeNever two_hours{2h};
  EXPECT_TRUE(never.is_never());
  EXPECT_FALSE(two_hours.is_never());
  EXPECT_NE(never, two_hours);
  EXPECT_EQ(two_hours, MaybeNever{std::chrono::minutes(120)});
}

// ---------------------------------------------------------------------------
// format_duration
// ---------------------------------------------------------------------------

TEST(FormatDuration, KnownRenderings) {
  const std::vector<std::pair<Duration, const char*>> cases = {
      {Duration(7200000), "2h"}, {Duration(90000), "1m30s"}, {Duration(500), "500ms"},
      {Duration(86400000), "1d"}, {Duration(0), "0s"},        {30s, "30s"},
      {5min, "5m"},               {90min, "1h30m"},           {2min + 500ms, "2m500ms"}};
  for (const auto& [d, expected] : cases) {
    SCOPED_TRACE(std::to_string(d.count()) + "ms");
    EXPECT_EQ(format_duration(d), expected);
  }
}

TEST(FormatDuration, RoundTripsThroughParse) {
  const std::vector<Duration> cases = {1ms,   500ms, 1s,  30s,       90s,       5min,
                                       90min, 2h,    24h, 36h,       7 * 24h,   2min + 500ms,
                                       1h + 1min + 1s + 1ms, 25h + 1ms, 1001ms, 59s + 999ms};
  for (Duration d : cases) {
    SCOPED_TRACE(std::to_string(d.count()) + "ms");
    const std::string text = format_duration(d);
    std::string why;
    auto back = parse_duration(text, &why);
    ASSERT_TRUE(back.has_value()) << "\"" << text << "\" did not parse: " << why;
    EXPECT_EQ(*back, d) << "via \"" << text << "\"";
  }
}

}  // namespace
}  // namespace spark::config
