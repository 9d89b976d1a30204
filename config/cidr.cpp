#include "config/cidr.hpp"

#include <arpa/inet.h>

#include <charconv>

namespace spark::config {

bool Cidr::contains(const std::uint8_t* address, bool address_v6) const {
  if (address_v6 != v6) return false;
  const int whole = prefix / 8;
  for (int i = 0; i < whole; ++i)
    if (address[i] != network[i]) return false;
  if (const int rest = prefix % 8; rest != 0) {
    const auto mask = static_cast<std::uint8_t>(0xff << (8 - rest));
    if ((address[whole] & mask) != network[whole]) return false;
  }
  return true;
}

std::string Cidr::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(v6 ? AF_INET6 : AF_INET, network.data(), text, sizeof text);
  return std::string(text) + "/" + std::to_string(prefix);
}

std::optional<Cidr> parse_cidr(std::string_view text, std::string* why) {
  const auto fail = [&](std::string reason) -> std::optional<Cidr> {
    // Built with append: GCC 12 warns falsely (-Wrestrict, bug 105329) on "\"" + string.
    std::string quoted(1, '"');
    quoted.append(text).append("\" ").append(reason);
    if (why) *why = std::move(quoted);
    return std::nullopt;
  };
  const auto slash = text.find('/');
  const std::string address(text.substr(0, slash));
  Cidr cidr;
  if (::inet_pton(AF_INET, address.c_str(), cidr.network.data()) == 1) {
    cidr.v6 = false;
  } else if (::inet_pton(AF_INET6, address.c_str(), cidr.network.data()) == 1) {
    cidr.v6 = true;
  } else {
    return fail("is not an address block (expected an IP address with an optional /prefix, e.g. 10.42.0.0/16)");
  }
  const int bits = cidr.v6 ? 128 : 32;
  cidr.prefix = bits;
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), cidr.prefix);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || cidr.prefix < 0 ||
        cidr.prefix > bits)
      return fail("has a bad prefix length (0-" + std::to_string(bits) + ")");
  }
  Cidr masked = cidr;
  for (int i = 0; i < bits / 8; ++i) {
    const int keep = std::min(8, std::max(0, cidr.prefix - 8 * i));
    masked.network[i] &= static_cast<std::uint8_t>(keep == 0 ? 0 : 0xff << (8 - keep));
  }
  if (masked.network != cidr.network)
    return fail("has host bits set below its prefix (did you mean " + masked.to_string() + "?)");
  return cidr;
}

}  // namespace spark::config
