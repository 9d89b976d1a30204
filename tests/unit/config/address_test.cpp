// Unit tests for config/address.hpp (parse_address, Address::to_string) and
// config/spark_name.hpp (is_valid_spark_name).
#include "config/address.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "config/spark_name.hpp"

namespace spark::config {
namespace {

using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// parse_address: accepted inputs
// ---------------------------------------------------------------------------

struct GoodAddress {
  const char* text;
  const char* host;
  std::uint16_t port;
};

class ParseAddressAccepts : public ::testing::TestWithParam<GoodAddress> {};

TEST_P(ParseAddressAccepts, SplitsHostAndPort) {
  const auto& [text, host, port] = GetParam();
  std::string why;
  auto a = parse_address(text, &why);
  ASSERT_TRUE(a.has_value()) << "\"" << text << "\" rejected: " << why;
  EXPECT_EQ(a->host, host);
  EXPECT_EQ(a->port, port);
}

INSTANTIATE_TEST_SUITE_P(
    Examples, ParseAddressAccepts,
    ::testing::Values(GoodAddress{"127.0.0.1:2201", "127.0.0.1", 2201},
                      GoodAddress{"[::1]:2201", "::1", 2201},
                      GoodAddress{"0.0.0.0:22", "0.0.0.0", 22},
                      GoodAddress{"10.1.2.3:1", "10.1.2.3", 1},
                      GoodAddress{"127.0.0.1:65535", "127.0.0.1", 65535},
                      GoodAddress{"[::]:2222", "::", 2222}));

TEST(ParseAddress, WhyMayBeOmitted) {
  auto a = parse_address("127.0.0.1:2201");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, (Address{"127.0.0.1", 2201}));
  EXPECT_FALSE(parse_address("nonsense").has_value());
}

// ---------------------------------------------------------------------------
// parse_address: rejected inputs
// ---------------------------------------------------------------------------

class ParseAddressRejects : public ::testing::TestWithParam<const char*> {};

TEST_P(ParseAddressRejects, ReturnsNulloptWithReason) {
  const std::string text = GetParam();
  std::string why;
  auto a = parse_address(text, &why);
  EXPECT_FALSE(a.has_value()) << "\"" << text << "\" parsed as " << a->to_string();
  EXPECT_FALSE(why.empty()) << "\"" << text << "\" gave no reason";
}

INSTANTIATE_TEST_SUITE_P(
    BadInputs, ParseAddressRejects,
    ::testing::Values("", "127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1:0", "127.0.0.1",
                      "127.0.0.1:", ":22", "localhost:22", "example.com:22", "127.0.0.1:abc",
                      "127.0.0.1:-1", "127.0.0.1:22x", "::1:22", "[::1]", "[::1]:", "[::1:22",
                      "256.0.0.1:22", "1.2.3:22", " 127.0.0.1:22",
                      "127.0.0.1:22 "));

TEST(ParseAddress, OutOfRangePortSaysNotAValidPort) {
  for (const char* text : {"127.0.0.1:99999", "127.0.0.1:65536", "[::1]:70000"}) {
    SCOPED_TRACE(text);
    std::string why;
    EXPECT_FALSE(parse_address(text, &why).has_value());
    EXPECT_THAT(why, HasSubstr("not a valid port"));
  }
}

TEST(ParseAddress, PortZeroIsRejected) {
  std::string why;
  EXPECT_FALSE(parse_address("127.0.0.1:0", &why).has_value());
  EXPECT_FALSE(why.empty());
}

TEST(ParseAddress, HostnamesAreRejected) {
  for (const char* text : {"localhost:22", "example.com:22", "[localhost]:22"}) {
    SCOPED_TRACE(text);
    std::string why;
    EXPECT_FALSE(parse_address(text, &why).has_value());
    EXPECT_FALSE(why.empty());
  }
}

TEST(ParseAddress, UnbracketedIpv6IsRejected) {
  std::string why;
  EXPECT_FALSE(parse_address("::1:22", &why).has_value());
  EXPECT_FALSE(why.empty());
}

// ---------------------------------------------------------------------------
// Address::to_string
// ---------------------------------------------------------------------------

TEST(AddressToString, Ipv4IsHostColonPort) {
  EXPECT_EQ((Address{"127.0.0.1", 2201}).to_string(), "127.0.0.1:2201");
  EXPECT_EQ((Address{"0.0.0.0", 22}).to_string(), "0.0.0.0:22");
}

TEST(AddressToString, Ipv6IsBracketed) {
  EXPECT_EQ((Address{"::1", 2201}).to_string(), "[::1]:2201");
  EXPECT_EQ((Address{"fe80::1", 22}).to_string(), "[fe80::1]:22");
}

TEST(AddressToString, RoundTripsThroughParse) {
  for (const char* text : {"127.0.0.1:2201", "[::1]:2201", "0.0.0.0:22", "[::]:65535"}) {
    SCOPED_TRACE(text);
    auto a = parse_address(text);
    ASSERT_TRUE(a.has_value());
    EXPECT_EQ(a->to_string(), text);
    auto again = parse_address(a->to_string());
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(*again, *a);
  }
}

// ---------------------------------------------------------------------------
// is_valid_spark_name
// ---------------------------------------------------------------------------

TEST(SparkName, AcceptsRfc1123Labels) {
  const std::string max_len(63, 'a');
  for (const std::string& name :
       {std::string("brave-dolphin"), std::string("a"), std::string("a1"), std::string("1a"),
        std::string("0"), std::string("calm-otter"), std::string("a--b"), max_len}) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(is_valid_spark_name(name));
  }
}

TEST(SparkName, RejectsNonLabels) {
  const std::string too_long(64, 'a');
  for (const std::string& name :
       {std::string(""), too_long, std::string("Brave"), std::string("brave-Dolphin"),
        std::string("-a"), std::string("a-"), std::string("-"), std::string("a_b"),
        std::string("a.b"), std::string("../x"), std::string("a/b"), std::string("a b"),
        std::string(" a"), std::string("a\n"), std::string("a\0b", 3), std::string("é")}) {
    SCOPED_TRACE(name);
    EXPECT_FALSE(is_valid_spark_name(name));
  }
}

TEST(SparkName, LengthBoundaryIs63) {
  EXPECT_TRUE(is_valid_spark_name(std::string(62, 'x') + "1"));
  EXPECT_FALSE(is_valid_spark_name(std::string(63, 'x') + "1"));
}

}  // namespace
}  // namespace spark::config
