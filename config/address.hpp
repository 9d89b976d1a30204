#pragma once
// "host:port" endpoints as written in the config: "127.0.0.1:2201", "[::1]:2201", "0.0.0.0:22".
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace spark::config {

struct Address {
  std::string host;  // numeric IPv4 or IPv6 address, without brackets
  std::uint16_t port = 0;

  std::string to_string() const;  // brackets IPv6 hosts
  friend bool operator==(const Address&, const Address&) = default;
};

// Parses "host:port". Host must be a numeric IP address (no DNS lookups at config time),
// port 1..65535. Returns nullopt and fills `why` on bad input.
std::optional<Address> parse_address(std::string_view text, std::string* why = nullptr);

}  // namespace spark::config
