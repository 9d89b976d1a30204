#include "config/address.hpp"

#include <arpa/inet.h>

#include <charconv>

namespace spark::config {
namespace {

bool is_ipv4(const std::string& host) {
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1;
}

bool is_ipv6(const std::string& host) {
  in6_addr a{};
  return inet_pton(AF_INET6, host.c_str(), &a) == 1;
}

}  // namespace

std::string Address::to_string() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::optional<Address> parse_address(std::string_view text, std::string* why) {
  std::string quoted = "\"";  // appended, not "\"" + string: GCC 12 warns falsely (-Wrestrict, bug 105329)
  quoted.append(text).append("\"");
  auto fail = [&](const std::string& reason) -> std::optional<Address> {
    if (why) *why = quoted + " " + reason;
    return std::nullopt;
  };
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return fail("is not host:port (e.g. \"127.0.0.1:2201\")");
  std::string host(text.substr(0, colon));
  const std::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    if (!is_ipv6(host)) return fail("is not host:port: \"" + host + "\" is not an IPv6 address");
  } else if (host.find(':') != std::string::npos) {
    return fail("is not host:port: write IPv6 addresses in brackets, e.g. \"[::1]:2201\"");
  } else if (host.empty()) {
    return fail("is not host:port: the host is missing");
  } else if (!is_ipv4(host)) {
    return fail("is not host:port: \"" + host + "\" is not a numeric IP address");
  }
  unsigned long port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port == 0 || port > 65535) {
    return fail("is not a valid port");
  }
  return Address{std::move(host), static_cast<std::uint16_t>(port)};
}

}  // namespace spark::config
