// Unit tests for config/cidr.hpp: address blocks for trusted_proxies.
#include "config/cidr.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <array>
#include <string>

namespace spark::config {
namespace {

bool contains(const std::string& block, const std::string& address) {
  const auto cidr = parse_cidr(block);
  EXPECT_TRUE(cidr) << block;
  std::array<std::uint8_t, 16> bytes{};
  if (::inet_pton(AF_INET, address.c_str(), bytes.data()) == 1) return cidr && cidr->contains(bytes.data(), false);
  EXPECT_EQ(::inet_pton(AF_INET6, address.c_str(), bytes.data()), 1) << address;
  return cidr && cidr->contains(bytes.data(), true);
}

std::string why(const std::string& text) {
  std::string reason;
  EXPECT_FALSE(parse_cidr(text, &reason)) << text;
  return reason;
}

TEST(Cidr, Ipv4BlocksContainTheirAddressesOnly) {
  EXPECT_TRUE(contains("10.42.0.0/16", "10.42.0.1"));
  EXPECT_TRUE(contains("10.42.0.0/16", "10.42.255.254"));
  EXPECT_FALSE(contains("10.42.0.0/16", "10.43.0.1"));
  EXPECT_TRUE(contains("100.64.0.0/10", "100.127.255.255"));  // a prefix inside a byte
  EXPECT_FALSE(contains("100.64.0.0/10", "100.128.0.0"));
  EXPECT_TRUE(contains("127.0.0.1", "127.0.0.1"));  // a bare address is a block of one
  EXPECT_FALSE(contains("127.0.0.1", "127.0.0.2"));
  EXPECT_TRUE(contains("0.0.0.0/0", "203.0.113.9"));
}

TEST(Cidr, Ipv6BlocksContainTheirAddressesOnlyAndNeverIpv4Ones) {
  EXPECT_TRUE(contains("fd7a:115c:a1e0::/48", "fd7a:115c:a1e0:ab12::1"));
  EXPECT_FALSE(contains("fd7a:115c:a1e0::/48", "fd7a:115c:a1e1::1"));
  EXPECT_TRUE(contains("::1/128", "::1"));
  EXPECT_FALSE(contains("::/0", "10.0.0.1"));         // families never mix
  EXPECT_FALSE(contains("0.0.0.0/0", "::ffff:10.0.0.1"));  // the caller maps v4-in-v6 first
}

TEST(Cidr, PrintsItsCanonicalForm) {
  EXPECT_EQ(parse_cidr("10.42.0.0/16")->to_string(), "10.42.0.0/16");
  EXPECT_EQ(parse_cidr("::1")->to_string(), "::1/128");
  EXPECT_EQ(parse_cidr("FD7A:115C:A1E0::/48")->to_string(), "fd7a:115c:a1e0::/48");
}

TEST(Cidr, BadBlocksSayWhy) {
  EXPECT_NE(why("10.42.1.0/16").find("did you mean 10.42.0.0/16?"), std::string::npos);
  EXPECT_NE(why("10.0.0.0/33").find("bad prefix length (0-32)"), std::string::npos);
  EXPECT_NE(why("::/129").find("bad prefix length (0-128)"), std::string::npos);
  EXPECT_NE(why("10.0.0.0/").find("bad prefix length"), std::string::npos);
  EXPECT_NE(why("10.0.0.0/8x").find("bad prefix length"), std::string::npos);
  EXPECT_NE(why("10.0.0.0/-1").find("bad prefix length"), std::string::npos);
  EXPECT_NE(why("proxy.internal/24").find("is not an address block"), std::string::npos);
  EXPECT_NE(why("").find("is not an address block"), std::string::npos);
}

}  // namespace
}  // namespace spark::config
