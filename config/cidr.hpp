#pragma once
// An address block as written in the config: "10.42.0.0/16", "127.0.0.1/32", "fd7a:115c::/48",
// or a bare address (a block of one). For `trusted_proxies`: the peers whose PROXY protocol
// header the gateway believes.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace spark::config {

struct Cidr {
  bool v6 = false;
  std::array<std::uint8_t, 16> network{};  // the first 4 bytes for IPv4
  int prefix = 0;                          // bits: 0-32 (IPv4), 0-128 (IPv6)

  // Whether `address` (4 bytes for IPv4, 16 for IPv6, network order) is in the block. An IPv6
  // address never matches an IPv4 block: map ::ffff:a.b.c.d to IPv4 first.
  bool contains(const std::uint8_t* address, bool address_v6) const;
  std::string to_string() const;
  friend bool operator==(const Cidr&, const Cidr&) = default;
};

// Parses "address/prefix" or "address". Host bits set below the prefix ("10.42.1.0/16") are
// refused: such a block is usually a typo for a narrower one. Returns nullopt and fills `why`.
std::optional<Cidr> parse_cidr(std::string_view text, std::string* why = nullptr);

}  // namespace spark::config
