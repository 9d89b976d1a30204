// Unit tests for activity/time_format.hpp: format_rfc3339 and parse_rfc3339.
#include "activity/time_format.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <regex>
#include <string>

namespace spark::activity {
namespace {

using namespace std::chrono_literals;

// 2026-11-22T15:04:05Z
const TimePoint kT0{std::chrono::seconds(1'795'359'845)};

// ---------------------------------------------------------------------------
// format_rfc3339
// ---------------------------------------------------------------------------

TEST(FormatRfc3339, UtcWithMilliseconds) {
  EXPECT_EQ(format_rfc3339(kT0 + 123ms), "2026-11-22T15:04:05.123Z");
}

TEST(FormatRfc3339, WholeSecondHasZeroMillis) {
  EXPECT_EQ(format_rfc3339(kT0), "2026-11-22T15:04:05.000Z");
}

TEST(FormatRfc3339, Epoch) {
  EXPECT_EQ(format_rfc3339(TimePoint{}), "1970-01-01T00:00:00.000Z");
}

TEST(FormatRfc3339, SubMillisecondIsTruncated) {
  EXPECT_EQ(format_rfc3339(kT0 + 7ms + 999us), "2026-11-22T15:04:05.007Z");
}

TEST(FormatRfc3339, PadsSmallFields) {
  // 2001-02-03T04:05:06.009Z
  const TimePoint t{std::chrono::seconds(981'173'106) + 9ms};
  EXPECT_EQ(format_rfc3339(t), "2001-02-03T04:05:06.009Z");
}

TEST(FormatRfc3339, HasTheDocumentedShape) {
  const std::regex shape(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)");
  EXPECT_TRUE(std::regex_match(format_rfc3339(std::chrono::system_clock::now()), shape));
}

// ---------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------

TEST(Rfc3339RoundTrip, FormatThenParseGivesTheSameInstant) {
  for (const auto t : {kT0, kT0 + 1ms, kT0 + 999ms, kT0 + 24h * 400 + 17ms, TimePoint{},
                       TimePoint{std::chrono::seconds(951'782'400)} /* 2000-02-29 */}) {
    const auto text = format_rfc3339(t);
    const auto back = parse_rfc3339(text);
    ASSERT_TRUE(back.has_value()) << text;
    EXPECT_EQ(*back, t) << text;
  }
}

TEST(Rfc3339RoundTrip, ParseThenFormatGivesTheSameText) {
  const std::string text = "2026-11-22T15:04:05.123Z";
  const auto t = parse_rfc3339(text);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(format_rfc3339(*t), text);
}

// ---------------------------------------------------------------------------
// parse_rfc3339: accepted inputs
// ---------------------------------------------------------------------------

TEST(ParseRfc3339, WholeSecondsZulu) {
  const auto t = parse_rfc3339("2026-11-22T15:04:05Z");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, kT0);
}

TEST(ParseRfc3339, LowercaseTAndZ) {
  const auto t = parse_rfc3339("2026-11-22t15:04:05z");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, kT0);
}

TEST(ParseRfc3339, FractionalSeconds) {
  const auto ms = parse_rfc3339("2026-11-22T15:04:05.123Z");
  ASSERT_TRUE(ms.has_value());
  EXPECT_EQ(*ms, kT0 + 123ms);

  const auto tenth = parse_rfc3339("2026-11-22T15:04:05.5Z");
  ASSERT_TRUE(tenth.has_value());
  EXPECT_EQ(*tenth, kT0 + 500ms);

  const auto micros = parse_rfc3339("2026-11-22T15:04:05.123456Z");
  ASSERT_TRUE(micros.has_value());
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::microseconds>(*micros - kT0), 123456us);

  const auto nanos = parse_rfc3339("2026-11-22T15:04:05.000000001Z");
  ASSERT_TRUE(nanos.has_value());
  EXPECT_GE(*nanos, kT0);
  EXPECT_LT(*nanos, kT0 + 1us);
}

TEST(ParseRfc3339, PositiveOffsetIsConvertedToUtc) {
  // 17:04:05+02:00 is 15:04:05Z.
  const auto t = parse_rfc3339("2026-11-22T17:04:05+02:00");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, kT0);
  EXPECT_EQ(format_rfc3339(*t), "2026-11-22T15:04:05.000Z");
}

TEST(ParseRfc3339, NegativeOffsetWithMinutesIsConvertedToUtc) {
  // 09:34:05-05:30 is 15:04:05Z.
  const auto t = parse_rfc3339("2026-11-22T09:34:05-05:30");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, kT0);
}

TEST(ParseRfc3339, OffsetCrossingMidnight) {
  // 2026-11-23T01:04:05+10:00 is 2026-11-22T15:04:05Z.
  const auto t = parse_rfc3339("2026-11-23T01:04:05+10:00");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, kT0);
}

TEST(ParseRfc3339, FractionWithOffset) {
  const auto t = parse_rfc3339("2026-11-22T15:04:05.250+00:00");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(*t, kT0 + 250ms);
}

TEST(ParseRfc3339, LeapDayInLeapYear) {
  const auto t = parse_rfc3339("2028-02-29T00:00:00Z");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(format_rfc3339(*t), "2028-02-29T00:00:00.000Z");
}

TEST(ParseRfc3339, ZeroOffsetEqualsZulu) {
  EXPECT_EQ(parse_rfc3339("2026-11-22T15:04:05+00:00"), parse_rfc3339("2026-11-22T15:04:05Z"));
  EXPECT_EQ(parse_rfc3339("2026-11-22T15:04:05-00:00"), parse_rfc3339("2026-11-22T15:04:05Z"));
}

// ---------------------------------------------------------------------------
// parse_rfc3339: rejected inputs
// ---------------------------------------------------------------------------

class ParseRfc3339Rejects : public ::testing::TestWithParam<const char*> {};

TEST_P(ParseRfc3339Rejects, ReturnsNullopt) {
  const auto t = parse_rfc3339(GetParam());
  EXPECT_FALSE(t.has_value()) << "\"" << GetParam() << "\" was accepted as "
                              << format_rfc3339(t.value_or(TimePoint{}));
}

INSTANTIATE_TEST_SUITE_P(
    Garbage, ParseRfc3339Rejects,
    ::testing::Values("", "garbage", "not a timestamp at all!", "2026", "2026-11-22",
                      "2026-11-22T15:04", "2026/11/22T15:04:05Z", "2026-11-22 15:04:05Z",
                      "2026-11-22T15.04.05Z", "20x6-11-22T15:04:05Z", "2026-1a-22T15:04:05Z",
                      "-026-11-22T15:04:05Z", "1795359845"));

INSTANTIATE_TEST_SUITE_P(MissingZone, ParseRfc3339Rejects,
                         ::testing::Values("2026-11-22T15:04:05", "2026-11-22T15:04:05.123",
                                           "2026-11-22T15:04:05."));

INSTANTIATE_TEST_SUITE_P(
    BadZone, ParseRfc3339Rejects,
    ::testing::Values("2026-11-22T15:04:05+02", "2026-11-22T15:04:05+0200",
                      "2026-11-22T15:04:05+2:00", "2026-11-22T15:04:05+24:00",
                      "2026-11-22T15:04:05+02:60", "2026-11-22T15:04:05 Z",
                      "2026-11-22T15:04:05UTC", "2026-11-22T15:04:05+aa:bb",
                      "2026-11-22T15:04:05.Z"));

INSTANTIATE_TEST_SUITE_P(
    BadFields, ParseRfc3339Rejects,
    ::testing::Values("2026-00-22T15:04:05Z", "2026-13-22T15:04:05Z", "2026-11-00T15:04:05Z",
                      "2026-11-32T15:04:05Z", "2026-11-22T24:00:00Z", "2026-11-22T15:60:05Z",
                      "2026-11-22T15:04:61Z"));

// Days that do not exist in their month: RFC 3339 section 5.7 limits date-mday by month and
// year. Accepting them would silently load "Feb 30" as some day in March.
INSTANTIATE_TEST_SUITE_P(DayNotInMonth, ParseRfc3339Rejects,
                         ::testing::Values("2026-02-30T15:04:05Z", "2026-02-29T15:04:05Z",
                                           "2026-04-31T15:04:05Z"));

INSTANTIATE_TEST_SUITE_P(TrailingCharacters, ParseRfc3339Rejects,
                         ::testing::Values("2026-11-22T15:04:05Zjunk", "2026-11-22T15:04:05Z ",
                                           "2026-11-22T15:04:05ZZ",
                                           "2026-11-22T15:04:05+02:00x",
                                           "2026-11-22T15:04:05+02:00Z",
                                           "2026-11-22T15:04:05.123Z\n"));

// Issue 17: times after 2262 overflowed system_clock's nanoseconds (undefined behaviour). Times
// outside [1970, 2200) are rejected, leaving room for durations added to them.
INSTANTIATE_TEST_SUITE_P(OutOfRange, ParseRfc3339Rejects,
                         ::testing::Values("2200-01-01T00:00:00Z", "2262-04-11T23:47:17Z",
                                           "2263-01-01T00:00:00Z", "2300-01-01T00:00:00Z",
                                           "9999-12-31T23:59:59.999Z", "2199-12-31T23:30:00-01:00",
                                           "1969-12-31T23:59:59Z", "1970-01-01T00:30:00+01:00",
                                           "1677-09-21T00:12:43Z", "1600-01-01T00:00:00Z",
                                           "0000-01-01T00:00:00Z"));

TEST(ParseRfc3339, EdgesOfTheAcceptedRange) {
  const auto first = parse_rfc3339("1970-01-01T00:00:00Z");
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, kEarliestTime);
  const auto offset = parse_rfc3339("1970-01-01T01:00:00+01:00");
  ASSERT_TRUE(offset.has_value());
  EXPECT_EQ(*offset, kEarliestTime);
  const auto last = parse_rfc3339("2199-12-31T23:59:59.999Z");
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(format_rfc3339(*last), "2199-12-31T23:59:59.999Z");
  EXPECT_LT(*last, kLatestTime);
  EXPECT_EQ(format_rfc3339(kLatestTime), "2200-01-01T00:00:00.000Z");
}

TEST(SaturatingAdd, OrdinarySumsAreExact) {
  EXPECT_EQ(saturating_add(kT0, 4h), kT0 + 4h);
  EXPECT_EQ(saturating_add(kT0, -4h), kT0 - 4h);
  EXPECT_EQ(saturating_add(kT0, 0ms), kT0);
}

TEST(SaturatingAdd, ClampsInsteadOfOverflowing) {
  using ms = std::chrono::milliseconds;
  const auto now = std::chrono::system_clock::now();
  EXPECT_EQ(saturating_add(now, ms(100000LL * 86'400'000)), kLatestTime);  // "100000d"
  EXPECT_EQ(saturating_add(now, ms::max()), kLatestTime);
  EXPECT_EQ(saturating_add(now, ms::min()), kEarliestTime);
  EXPECT_EQ(saturating_add(kLatestTime - 1h, 2h), kLatestTime);
  EXPECT_EQ(saturating_add(kEarliestTime, -1ms), kEarliestTime);
  EXPECT_EQ(saturating_add(TimePoint::max(), 1ms), kLatestTime);
  EXPECT_EQ(saturating_add(TimePoint::min(), -1ms), kEarliestTime);
}

}  // namespace
}  // namespace spark::activity
