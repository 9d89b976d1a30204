#include "gateway/proxy_protocol.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>

#include <boost/asio/ip/address.hpp>

namespace spark::gateway {
namespace {

namespace ip = boost::asio::ip;

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr std::size_t kV1MinLength = 15;  // "PROXY UNKNOWN\r\n"
// Spec 2.2: chosen to be rejected at once by HTTP, TLS, SMTP, SSH and more; it holds a NUL.
constexpr std::string_view kV2Signature{"\r\n\r\n\0\r\nQUIT\n", 12};
constexpr std::size_t kV2FixedLength = 16;  // signature, version/command, family/transport, length

ProxyHeaderError error(std::string reason) { return ProxyHeaderError{std::move(reason)}; }

// Whether `bytes` and `expected` agree on their common length.
bool agrees_with(std::string_view bytes, std::string_view expected) {
  const std::size_t n = std::min(bytes.size(), expected.size());
  return bytes.substr(0, n) == expected.substr(0, n);
}

// The index of the first byte where `bytes` and `expected` differ (both are long enough).
std::size_t first_difference(std::string_view bytes, std::string_view expected) {
  std::size_t i = 0;
  while (bytes[i] == expected[i]) ++i;
  return i;
}

std::string hex_byte(unsigned value) {
  char text[8];
  std::snprintf(text, sizeof text, "0x%02x", value & 0xffu);
  return text;
}

// A few bytes of the stream for a message, non-printable ones as \xNN.
std::string quoted(std::string_view bytes) {
  std::string out = "\"";
  for (const char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\' && c != '"') {
      out.push_back(c);
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", static_cast<unsigned>(u));
      out += escaped;
    }
  }
  return out + "\"";
}

std::uint16_t big_endian_16(std::string_view bytes, std::size_t at) {
  return static_cast<std::uint16_t>((static_cast<unsigned char>(bytes[at]) << 8) |
                                    static_cast<unsigned char>(bytes[at + 1]));
}

// ---- v1 (spec 2.1) --------------------------------------------------------------------------

// Decimal, 0-65535, no leading zero ("0" itself is a port).
std::optional<std::uint16_t> parse_v1_port(std::string_view text) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text.front() == '0')) return std::nullopt;
  unsigned value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

// Exactly four decimal numbers 0-255, one dot between them, no leading zero: "010" is 8 to a
// parser that reads octal and 10 to one that does not, so the spec forbids it.
std::optional<ip::address_v4> parse_v1_ipv4(std::string_view text) {
  ip::address_v4::bytes_type bytes{};
  for (std::size_t part = 0; part < bytes.size(); ++part) {
    const auto dot = text.find('.');
    const bool last = part + 1 == bytes.size();
    if (last != (dot == std::string_view::npos)) return std::nullopt;
    const std::string_view number = text.substr(0, dot);
    if (number.empty() || number.size() > 3 || (number.size() > 1 && number.front() == '0')) return std::nullopt;
    unsigned value = 0;
    for (const char c : number) {
      if (c < '0' || c > '9') return std::nullopt;
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 255) return std::nullopt;
    bytes[part] = static_cast<unsigned char>(value);
    if (!last) text.remove_prefix(dot + 1);
  }
  return ip::address_v4(bytes);
}

// Hex groups and colons with at most one "::"; inet_pton (under make_address_v6) checks the
// form. The character filter keeps out what Boost would also take and the spec does not, a
// "%scope" suffix. A dotted IPv4 tail stays allowed: proxies print an IPv4 client behind an
// IPv6 frontend with inet_ntop, as ::ffff:a.b.c.d.
std::optional<ip::address_v6> parse_v1_ipv6(std::string_view text) {
  for (const char c : text) {
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!hex && c != ':' && c != '.') return std::nullopt;
  }
  boost::system::error_code ec;
  const auto address = ip::make_address_v6(std::string(text), ec);
  if (ec) return std::nullopt;
  return address;
}

// Source, destination, source port, destination port, with exactly one space between them:
// an empty field is a doubled or trailing space. `name` is the protocol, for the reasons.
std::optional<ProxyHeaderError> split_v1_fields(std::string_view rest, const std::string& name,
                                                std::array<std::string_view, 4>& fields) {
  std::size_t count = 0;
  for (;;) {
    const auto next = rest.find(' ');
    const std::string_view field = rest.substr(0, next);
    if (field.empty()) return error("PROXY v1 fields must be separated by exactly one space");
    if (count == fields.size()) return error("PROXY v1 " + name + " line has more than 4 fields");
    fields[count++] = field;
    if (next == std::string_view::npos) break;
    rest.remove_prefix(next + 1);
  }
  if (count != fields.size())
    return error("PROXY v1 " + name + " line needs source, destination and two ports; it has " +
                 std::to_string(count) + " fields");
  return std::nullopt;
}

// One end of a TCP4 or TCP6 line: its address field and its port field. `end` names it.
std::optional<ProxyHeaderError> parse_v1_endpoint(std::string_view address_field, std::string_view port_field,
                                                  bool v4, const char* end, ip::tcp::endpoint& into) {
  if (v4) {
    const auto a = parse_v1_ipv4(address_field);
    if (!a) return error("PROXY v1 " + std::string(end) + " " + quoted(address_field) + " is not an IPv4 address");
    into.address(*a);
  } else {
    const auto a = parse_v1_ipv6(address_field);
    if (!a) return error("PROXY v1 " + std::string(end) + " " + quoted(address_field) + " is not an IPv6 address");
    into.address(*a);
  }
  const auto port = parse_v1_port(port_field);
  if (!port)
    return error("PROXY v1 " + std::string(end) + " port " + quoted(port_field) +
                 " is not a port (0-65535, no leading zero)");
  into.port(*port);
  return std::nullopt;
}

// `line` is the header without its CRLF: "PROXY " and then printable ASCII only.
ProxyHeaderParse parse_v1_line(std::string_view line) {
  ProxyHeader header;
  header.version = 1;
  header.length = line.size() + 2;

  std::string_view rest = line.substr(kV1Prefix.size());
  const auto space = rest.find(' ');
  const std::string_view protocol = rest.substr(0, space);
  // After UNKNOWN the receiver must ignore anything before the CRLF: it may be omitted.
  if (protocol == "UNKNOWN") return header;
  const bool v4 = protocol == "TCP4";
  if (!v4 && protocol != "TCP6")
    return error("PROXY v1 protocol " + quoted(protocol) + " is none of TCP4, TCP6, UNKNOWN");
  const std::string name(protocol);
  if (space == std::string_view::npos) return error("PROXY v1 " + name + " line has no addresses");
  rest.remove_prefix(space + 1);

  std::array<std::string_view, 4> fields;
  if (auto bad = split_v1_fields(rest, name, fields)) return *bad;
  ProxiedAddresses addresses;
  if (auto bad = parse_v1_endpoint(fields[0], fields[2], v4, "source", addresses.source)) return *bad;
  if (auto bad = parse_v1_endpoint(fields[1], fields[3], v4, "destination", addresses.destination)) return *bad;
  header.addresses = addresses;
  return header;
}

// `bytes` starts with "PROXY " (or a prefix of it).
ProxyHeaderParse parse_v1(std::string_view bytes) {
  // The line ends in CRLF within 107 bytes; a lone CR or LF does not end it. It is printable
  // US-ASCII, so any other byte shows at once that this is no header. Only the first 106 bytes
  // are looked at: a CR as the 107th would put its LF at byte 108, so whatever that byte is, the
  // line is too long; judging it would give a prefix and the whole different reasons.
  const std::size_t window = std::min(bytes.size(), kProxyV1MaxLength - 1);
  for (std::size_t i = kV1Prefix.size(); i < window; ++i) {
    const char c = bytes[i];
    if (c == '\r') {
      if (i + 1 == bytes.size()) return ProxyHeaderIncomplete{1, 1};
      if (bytes[i + 1] != '\n') return error("PROXY v1 line has a CR not followed by LF");
      return parse_v1_line(bytes.substr(0, i));
    }
    if (c == '\n') return error("PROXY v1 line ends in LF without CR");
    if (c < 0x20 || c > 0x7e)
      return error("PROXY v1 line holds byte " + hex_byte(static_cast<unsigned char>(c)) +
                   ", not printable ASCII");
  }
  // No CR yet: CR and LF are still to come, and must fit.
  if (bytes.size() + 2 > kProxyV1MaxLength)
    return error("PROXY v1 header longer than " + std::to_string(kProxyV1MaxLength) + " bytes (no CRLF)");
  // The shortest line is "PROXY UNKNOWN\r\n".
  const std::size_t at_least = std::max(kV1MinLength > bytes.size() ? kV1MinLength - bytes.size() : 0,
                                        std::size_t{2});
  return ProxyHeaderIncomplete{at_least, kProxyV1MaxLength - bytes.size()};
}

// ---- v2 (spec 2.2) --------------------------------------------------------------------------

enum : unsigned { kLocal = 0x0, kProxy = 0x1 };
enum : unsigned { kUnspecFamily = 0x0, kInet = 0x1, kInet6 = 0x2, kUnix = 0x3 };
enum : unsigned { kUnspecTransport = 0x0, kStream = 0x1, kDgram = 0x2 };

// The size of the address block (addresses, then ports if any) a family announces.
std::size_t address_block_size(unsigned family) {
  switch (family) {
    case kInet: return 2 * 4 + 2 * 2;
    case kInet6: return 2 * 16 + 2 * 2;
    case kUnix: return 2 * 108;
    default: return 0;
  }
}

const char* family_name(unsigned family) {
  switch (family) {
    case kInet: return "AF_INET";
    case kInet6: return "AF_INET6";
    case kUnix: return "AF_UNIX";
    default: return "AF_UNSPEC";
  }
}

// The TLVs after the address block: type (1 byte), length (2, big-endian), value. None is of use
// to the gateway (spec 2.2.3: a receiver that does not support CRC32C need not check it), but
// each must end inside the header, as HAProxy also requires: a header whose TLVs do not add up
// is malformed.
std::optional<ProxyHeaderError> check_tlvs(std::string_view tlvs) {
  while (!tlvs.empty()) {
    if (tlvs.size() < 3)
      return error("PROXY v2 header ends inside a TLV's 3-byte type and length (" + std::to_string(tlvs.size()) +
                   " bytes left)");
    const std::size_t length = big_endian_16(tlvs, 1);
    if (3 + length > tlvs.size())
      return error("PROXY v2 TLV of type " + hex_byte(static_cast<unsigned char>(tlvs[0])) + " claims " +
                   std::to_string(length) + " bytes, the header has " + std::to_string(tlvs.size() - 3) + " left");
    tlvs.remove_prefix(3 + length);
  }
  return std::nullopt;
}

ip::tcp::endpoint v4_endpoint(std::string_view block, std::size_t address_at, std::size_t port_at) {
  ip::address_v4::bytes_type bytes;
  std::copy_n(block.data() + address_at, bytes.size(), bytes.begin());
  return {ip::address_v4(bytes), big_endian_16(block, port_at)};
}

ip::tcp::endpoint v6_endpoint(std::string_view block, std::size_t address_at, std::size_t port_at) {
  ip::address_v6::bytes_type bytes;
  std::copy_n(block.data() + address_at, bytes.size(), bytes.begin());
  return {ip::address_v6(bytes), big_endian_16(block, port_at)};
}

// The 13th byte: the version in the high nibble (only 2 exists), the command in the low one.
std::optional<ProxyHeaderError> check_version_command(char byte) {
  const auto version_command = static_cast<unsigned char>(byte);
  if (version_command >> 4 != 2)
    return error("PROXY v2 header has version " + std::to_string(version_command >> 4) + " (only 2 exists)");
  const unsigned command = version_command & 0xfu;
  if (command != kLocal && command != kProxy)
    return error("PROXY v2 command " + hex_byte(command) + " is neither LOCAL nor PROXY");
  return std::nullopt;
}

// The 14th byte: the address family in the high nibble, the transport in the low one. For
// LOCAL the receiver discards the whole block, family included, so it is not checked.
std::optional<ProxyHeaderError> check_family_transport(unsigned command, char byte) {
  const auto family_transport = static_cast<unsigned char>(byte);
  const unsigned family = family_transport >> 4;
  const unsigned transport = family_transport & 0xfu;
  if (command == kProxy && family > kUnix)
    return error("PROXY v2 address family " + hex_byte(family) + " is not defined");
  if (command == kProxy && transport > kDgram)
    return error("PROXY v2 transport " + hex_byte(transport) + " is not defined");
  return std::nullopt;
}

// A complete v2 header of `length` bytes.
ProxyHeader v2_header(std::size_t length, unsigned command, std::optional<ProxiedAddresses> addresses) {
  ProxyHeader out;
  out.version = 2;
  out.local = command == kLocal;
  out.length = length;
  out.addresses = addresses;
  return out;
}

// `bytes` starts with the signature (or a prefix of it).
ProxyHeaderParse parse_v2(std::string_view bytes) {
  const auto fixed_part_missing = [&] {
    const std::size_t missing = kV2FixedLength - bytes.size();
    return ProxyHeaderIncomplete{missing, kProxyV2MaxLength - bytes.size()};
  };
  if (bytes.size() <= kV2Signature.size()) return fixed_part_missing();

  if (auto bad = check_version_command(bytes[12])) return *bad;
  const unsigned command = static_cast<unsigned char>(bytes[12]) & 0xfu;
  if (bytes.size() < 14) return fixed_part_missing();
  if (auto bad = check_family_transport(command, bytes[13])) return *bad;
  const unsigned family = static_cast<unsigned char>(bytes[13]) >> 4;
  const unsigned transport = static_cast<unsigned char>(bytes[13]) & 0xfu;
  // An address family with a transport: the spec's combinations other than UNSPEC. Any other
  // mix is read as UNSPEC, whose address block the receiver ignores whatever its size.
  const bool addressed = command == kProxy && family != kUnspecFamily && transport != kUnspecTransport;

  if (bytes.size() < kV2FixedLength) return fixed_part_missing();
  const std::size_t length = kV2FixedLength + big_endian_16(bytes, 14);
  if (length > kProxyV2MaxLength)
    return error("PROXY v2 header of " + std::to_string(length) + " bytes is longer than the " +
                 std::to_string(kProxyV2MaxLength) + " the gateway accepts");
  const std::size_t block_size = addressed ? address_block_size(family) : 0;
  if (length - kV2FixedLength < block_size)
    return error("PROXY v2 address length " + std::to_string(length - kV2FixedLength) + " too short for " +
                 family_name(family) + " (needs " + std::to_string(block_size) + ")");
  if (bytes.size() < length) return ProxyHeaderIncomplete{length - bytes.size(), length - bytes.size()};
  const std::string_view header = bytes.substr(0, length);
  if (!addressed) return v2_header(length, command, std::nullopt);
  if (auto bad = check_tlvs(header.substr(kV2FixedLength + block_size))) return *bad;
  const std::string_view block = header.substr(kV2FixedLength, block_size);
  // Only TCP names a client the gateway can log and compare: UNIX and UDP ends fall back to
  // UNSPEC, as the spec lets a receiver do for combinations it does not support.
  if (transport != kStream || family == kUnix) return v2_header(length, command, std::nullopt);
  if (family == kInet)
    return v2_header(length, command, ProxiedAddresses{v4_endpoint(block, 0, 8), v4_endpoint(block, 4, 10)});
  return v2_header(length, command, ProxiedAddresses{v6_endpoint(block, 0, 32), v6_endpoint(block, 16, 34)});
}

}  // namespace

ProxyHeaderParse parse_proxy_header(std::string_view bytes) {
  // Spec 2.2 tells the versions apart by their first bytes: "PROXY" or the v2 signature, whose
  // first bytes (CR LF) no v1 line has. Anything else is not the protocol.
  if (bytes.empty()) return ProxyHeaderIncomplete{kV1MinLength, kProxyV2MaxLength};
  if (bytes.front() == kV1Prefix.front()) {
    if (agrees_with(bytes, kV1Prefix)) return parse_v1(bytes);
    return error("not a PROXY protocol header: it starts with " +
                 quoted(bytes.substr(0, first_difference(bytes, kV1Prefix) + 1)));
  }
  if (bytes.front() == kV2Signature.front()) {
    if (agrees_with(bytes, kV2Signature)) return parse_v2(bytes);
    return error("bad PROXY v2 signature");
  }
  return error("not a PROXY protocol header: it starts with " + quoted(bytes.substr(0, 1)));
}

bool looks_like_proxy_header(std::string_view first_bytes) {
  return !first_bytes.empty() && (agrees_with(first_bytes, kV1Prefix) || agrees_with(first_bytes, kV2Signature));
}

bool is_trusted_proxy(const std::vector<config::Cidr>& trusted, const boost::asio::ip::address& peer) {
  const auto v6 = peer.is_v6() ? peer.to_v6() : boost::asio::ip::address_v6();
  if (peer.is_v4() || v6.is_v4_mapped()) {
    const auto bytes = peer.is_v4() ? peer.to_v4().to_bytes()
                                    : boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_bytes();
    return std::any_of(trusted.begin(), trusted.end(),
                       [&](const auto& block) { return block.contains(bytes.data(), false); });
  }
  const auto bytes = v6.to_bytes();
  return std::any_of(trusted.begin(), trusted.end(),
                     [&](const auto& block) { return block.contains(bytes.data(), true); });
}

}  // namespace spark::gateway
