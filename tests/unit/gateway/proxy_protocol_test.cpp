// Unit tests for gateway/proxy_protocol.hpp: PROXY protocol v1 and v2 headers as HAProxy and
// the spec (HAProxy's doc/proxy-protocol.txt) write them, every way they can be cut by the
// network, and every way they can be wrong.
#include "gateway/proxy_protocol.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "proxy_header_bytes.hpp"

namespace spark::gateway {
namespace {

namespace ip = boost::asio::ip;

using namespace test;  // the v2 header builders

ip::tcp::endpoint endpoint(const char* address, std::uint16_t port) { return {ip::make_address(address), port}; }

ProxyHeader header_of(std::string_view bytes) {
  const auto parsed = parse_proxy_header(bytes);
  if (const auto* bad = std::get_if<ProxyHeaderError>(&parsed)) ADD_FAILURE() << "error: " << bad->reason;
  if (std::holds_alternative<ProxyHeaderIncomplete>(parsed)) ADD_FAILURE() << "incomplete";
  const auto* header = std::get_if<ProxyHeader>(&parsed);
  return header ? *header : ProxyHeader{};
}

std::string error_of(std::string_view bytes) {
  const auto parsed = parse_proxy_header(bytes);
  if (const auto* bad = std::get_if<ProxyHeaderError>(&parsed)) return bad->reason;
  ADD_FAILURE() << "no error for " << testing::PrintToString(std::string(bytes));
  return {};
}

bool incomplete(std::string_view bytes) {
  return std::holds_alternative<ProxyHeaderIncomplete>(parse_proxy_header(bytes));
}

// HAProxy's headers for a client 192.0.2.10:51234 that connected to 198.51.100.7:22, byte for
// byte: `send-proxy` (v1), `send-proxy-v2`, and the v2 health check (LOCAL, AF_UNSPEC, no
// address) that `check send-proxy-v2` sends.
const std::string kHaproxyV1 = "PROXY TCP4 192.0.2.10 198.51.100.7 51234 22\r\n";
const std::string kHaproxyV2 = kSignature + std::string("\x21\x11\x00\x0c", 4) +
                               std::string("\xc0\x00\x02\x0a", 4) +  // 192.0.2.10
                               std::string("\xc6\x33\x64\x07", 4) +  // 198.51.100.7
                               std::string("\xc8\x22", 2) +          // 51234
                               std::string("\x00\x16", 2);           // 22
const std::string kHaproxyV2Check = kSignature + std::string("\x20\x00\x00\x00", 4);

// Every valid header the tests know, for the properties that hold for all of them.
std::vector<std::string> valid_headers() {
  return {
      kHaproxyV1,
      kHaproxyV2,
      kHaproxyV2Check,
      "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",  // the spec's example
      "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
      "PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
      "PROXY TCP6 2001:db8::10 2001:db8::7 51234 22\r\n",
      "PROXY TCP6 ::ffff:192.0.2.10 2001:db8::7 51234 22\r\n",
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
      "PROXY UNKNOWN\r\n",
      "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 "
      "65535\r\n",
      v2(0x21, 0x21, ipv6_bytes("2001:db8::10") + ipv6_bytes("2001:db8::7") + be16(51234) + be16(22)),
      v2(0x21, 0x11,
         ipv4_bytes("192.0.2.10") + ipv4_bytes("198.51.100.7") + be16(51234) + be16(22) + tlv(0x01, "h2") +
             tlv(0x02, "spark.example") + tlv(0x05, std::string(128, 'u')) +
             tlv(0x20, std::string("\x01\x00\x00\x00\x00", 5) + tlv(0x21, "TLSv1.3")) + tlv(0x04, "") +
             tlv(0x03, std::string(4, '\0'))),
      v2(0x20, 0x00, tlv(0x05, "health")),
      v2(0x21, 0x00, ""),
  };
}

TEST(ProxyProtocolV1, HaproxySendProxy) {
  const auto h = header_of(kHaproxyV1 + "SSH-2.0-OpenSSH_9.2p1\r\n");
  EXPECT_EQ(h.version, 1);
  EXPECT_FALSE(h.local);
  ASSERT_TRUE(h.addresses);
  EXPECT_EQ(h.addresses->source, endpoint("192.0.2.10", 51234));
  EXPECT_EQ(h.addresses->destination, endpoint("198.51.100.7", 22));
  EXPECT_EQ(h.length, kHaproxyV1.size()) << "the SSH line after it is the client's";
}

TEST(ProxyProtocolV1, Tcp6) {
  const std::string line = "PROXY TCP6 2001:db8::10 2001:DB8::7 51234 22\r\n";
  const auto h = header_of(line);
  ASSERT_TRUE(h.addresses);
  EXPECT_EQ(h.addresses->source, endpoint("2001:db8::10", 51234));
  EXPECT_EQ(h.addresses->destination, endpoint("2001:db8::7", 22));
  EXPECT_EQ(h.length, line.size());
  // An IPv4 client through an IPv6 frontend, as inet_ntop prints it: kept as sent.
  const auto mapped = header_of("PROXY TCP6 ::ffff:192.0.2.10 ::1 1 2\r\n");
  ASSERT_TRUE(mapped.addresses);
  EXPECT_EQ(mapped.addresses->source.address().to_string(), "::ffff:192.0.2.10");
}

TEST(ProxyProtocolV1, UnknownHasNoAddressesAndIsNotLocal) {
  for (const std::string& line :
       std::vector<std::string>{"PROXY UNKNOWN\r\n", "PROXY UNKNOWN 192.0.2.10 198.51.100.7 51234 22\r\n",
                                "PROXY UNKNOWN whatever the sender put here\r\n"}) {
    const auto h = header_of(line);
    EXPECT_EQ(h.version, 1);
    EXPECT_FALSE(h.local) << "v1 has no LOCAL: UNKNOWN may be a real client the proxy could not name";
    EXPECT_FALSE(h.addresses) << line;
    EXPECT_EQ(h.length, line.size());
  }
}

TEST(ProxyProtocolV1, LongestLinesFit) {
  const std::string tcp6 =
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  EXPECT_EQ(tcp6.size(), 104u);
  EXPECT_EQ(header_of(tcp6).length, 104u);
  const std::string unknown =
      "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 "
      "65535\r\n";
  EXPECT_EQ(unknown.size(), kProxyV1MaxLength);
  EXPECT_EQ(header_of(unknown).length, kProxyV1MaxLength);
}

TEST(ProxyProtocolV1, TooLong) {
  // 108 bytes with the CRLF: the LF is past the limit.
  const std::string line = "PROXY UNKNOWN " + std::string(92, 'x') + "\r\n";
  ASSERT_EQ(line.size(), 108u);
  EXPECT_EQ(error_of(line), "PROXY v1 header longer than 107 bytes (no CRLF)");
  EXPECT_TRUE(incomplete(line.substr(0, 105))) << "CR LF may still be bytes 106 and 107";
  EXPECT_EQ(error_of(line.substr(0, 106)), "PROXY v1 header longer than 107 bytes (no CRLF)")
      << "decided at byte 106: CR LF no longer fit";
  EXPECT_TRUE(incomplete(line.substr(0, 105) + "\r")) << "a CR at byte 106 may still have its LF";
  EXPECT_EQ(error_of(line.substr(0, 106) + "\r"), "PROXY v1 header longer than 107 bytes (no CRLF)")
      << "a CR at byte 107 is too late for its LF";
  EXPECT_EQ(error_of("PROXY TCP4 " + std::string(200, '1')), "PROXY v1 header longer than 107 bytes (no CRLF)");
  // Whatever the 107th byte is, the 106 before it already decided (the fuzzer found a binary
  // byte there answered otherwise than the same line cut before it).
  EXPECT_EQ(error_of(line.substr(0, 106) + "\xe8"), "PROXY v1 header longer than 107 bytes (no CRLF)");
  EXPECT_EQ(error_of(line.substr(0, 106) + "\n"), "PROXY v1 header longer than 107 bytes (no CRLF)");
}

TEST(ProxyProtocolV1, LineEnd) {
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.7 51234 22\n"), "PROXY v1 line ends in LF without CR");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.7 51234 22\rX"),
            "PROXY v1 line has a CR not followed by LF");
  EXPECT_EQ(error_of("PROXY UNKNOWN\n"), "PROXY v1 line ends in LF without CR");
  EXPECT_EQ(error_of(std::string("PROXY TCP4 192.0.2.10\0", 22)),
            "PROXY v1 line holds byte 0x00, not printable ASCII");
  EXPECT_EQ(error_of("PROXY TCP4 \xc3\xa9"), "PROXY v1 line holds byte 0xc3, not printable ASCII");
  EXPECT_TRUE(incomplete("PROXY TCP4 192.0.2.10 198.51.100.7 51234 22"));
  EXPECT_TRUE(incomplete("PROXY TCP4 192.0.2.10 198.51.100.7 51234 22\r"));
}

TEST(ProxyProtocolV1, Ports) {
  EXPECT_TRUE(header_of("PROXY TCP4 192.0.2.10 198.51.100.7 0 65535\r\n").addresses);
  for (const char* port : {"65536", "99999", "022", "00", "-1", "+1", "1a", "123456", "0x16"}) {
    const std::string line = std::string("PROXY TCP4 192.0.2.10 198.51.100.7 51234 ") + port + "\r\n";
    EXPECT_EQ(error_of(line),
              "PROXY v1 destination port \"" + std::string(port) + "\" is not a port (0-65535, no leading zero)");
  }
  EXPECT_EQ(error_of("PROXY TCP6 ::1 ::1 070 22\r\n"),
            "PROXY v1 source port \"070\" is not a port (0-65535, no leading zero)");
}

TEST(ProxyProtocolV1, Addresses) {
  for (const char* bad : {"192.0.2.010", "256.0.0.1", "1.2.3", "1.2.3.4.5", "1..2.3", ".1.2.3", "1.2.3.", "::1",
                          "localhost", "0x7f.0.0.1", "1.2.3.-4"}) {
    EXPECT_EQ(error_of(std::string("PROXY TCP4 ") + bad + " 198.51.100.7 51234 22\r\n"),
              "PROXY v1 source \"" + std::string(bad) + "\" is not an IPv4 address");
  }
  for (const char* bad :
       {"192.0.2.10", "fe80::1%eth0", "2001:db8:::1", "12345::1", "1:2:3:4:5:6:7:8:9", "g::1", "[::1]"}) {
    EXPECT_EQ(error_of(std::string("PROXY TCP6 ::1 ") + bad + " 51234 22\r\n"),
              "PROXY v1 destination \"" + std::string(bad) + "\" is not an IPv6 address");
  }
}

TEST(ProxyProtocolV1, Fields) {
  EXPECT_EQ(error_of("PROXY TCP5 192.0.2.10 198.51.100.7 51234 22\r\n"),
            "PROXY v1 protocol \"TCP5\" is none of TCP4, TCP6, UNKNOWN");
  EXPECT_EQ(error_of("PROXY tcp4 192.0.2.10 198.51.100.7 51234 22\r\n"),
            "PROXY v1 protocol \"tcp4\" is none of TCP4, TCP6, UNKNOWN");
  EXPECT_EQ(error_of("PROXY UNKNOWNX\r\n"), "PROXY v1 protocol \"UNKNOWNX\" is none of TCP4, TCP6, UNKNOWN");
  EXPECT_EQ(error_of("PROXY \r\n"), "PROXY v1 protocol \"\" is none of TCP4, TCP6, UNKNOWN");
  EXPECT_EQ(error_of("PROXY  TCP4 192.0.2.10 198.51.100.7 51234 22\r\n"),
            "PROXY v1 protocol \"\" is none of TCP4, TCP6, UNKNOWN");
  EXPECT_EQ(error_of("PROXY TCP4\r\n"), "PROXY v1 TCP4 line has no addresses");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.7 51234\r\n"),
            "PROXY v1 TCP4 line needs source, destination and two ports; it has 3 fields");
  EXPECT_EQ(error_of("PROXY TCP4 192.0.2.10 198.51.100.7 51234 22 7\r\n"),
            "PROXY v1 TCP4 line has more than 4 fields");
  for (const char* spaced : {"PROXY TCP4 192.0.2.10  198.51.100.7 51234 22\r\n",
                             "PROXY TCP4 192.0.2.10 198.51.100.7 51234 22 \r\n", "PROXY TCP4 \r\n"})
    EXPECT_EQ(error_of(spaced), "PROXY v1 fields must be separated by exactly one space") << spaced;
}

TEST(ProxyProtocolV2, HaproxySendProxyV2) {
  const auto h = header_of(kHaproxyV2 + "SSH-2.0-OpenSSH_9.2p1\r\n");
  EXPECT_EQ(h.version, 2);
  EXPECT_FALSE(h.local);
  ASSERT_TRUE(h.addresses);
  EXPECT_EQ(h.addresses->source, endpoint("192.0.2.10", 51234));
  EXPECT_EQ(h.addresses->destination, endpoint("198.51.100.7", 22));
  EXPECT_EQ(h.length, 28u);
}

TEST(ProxyProtocolV2, HaproxyHealthCheckIsLocal) {
  const auto h = header_of(kHaproxyV2Check);
  EXPECT_EQ(h.version, 2);
  EXPECT_TRUE(h.local);
  EXPECT_FALSE(h.addresses);
  EXPECT_EQ(h.length, 16u);
}

TEST(ProxyProtocolV2, LocalDiscardsWhateverBlockItCarries) {
  // The receiver must honour the length even for LOCAL and ignore the family, whatever it says.
  const auto h = header_of(v2(0x20, 0xff, "12345") + "after");
  EXPECT_TRUE(h.local);
  EXPECT_FALSE(h.addresses);
  EXPECT_EQ(h.length, 21u);
  EXPECT_TRUE(
      header_of(v2(0x20, 0x11, ipv4_bytes("192.0.2.10") + ipv4_bytes("198.51.100.7") + be16(1) + be16(2))).local);
  EXPECT_FALSE(header_of(v2(0x20, 0x11, ipv4_bytes("192.0.2.10") + ipv4_bytes("198.51.100.7") + be16(1) + be16(2)))
                   .addresses)
      << "LOCAL: use the real endpoints, whatever the block says";
}

TEST(ProxyProtocolV2, Ipv6) {
  const auto h = header_of(
      v2(0x21, 0x21, ipv6_bytes("2001:db8::10") + ipv6_bytes("2001:db8::7") + be16(51234) + be16(22)));
  ASSERT_TRUE(h.addresses);
  EXPECT_EQ(h.addresses->source, endpoint("2001:db8::10", 51234));
  EXPECT_EQ(h.addresses->destination, endpoint("2001:db8::7", 22));
  EXPECT_EQ(h.length, 16u + 36u);
}

TEST(ProxyProtocolV2, TlvsAreSkipped) {
  const std::string tlvs = tlv(0x01, "h2") + tlv(0x02, "spark.example") + tlv(0x05, std::string(128, 'u')) +
                           tlv(0x20,
                               std::string("\x01\x00\x00\x00\x00", 5) + tlv(0x21, "TLSv1.3") + tlv(0x22, "me")) +
                           tlv(0x04, "") + tlv(0x30, "netns") + tlv(0xea, "vpce-0123456789abcdef0");
  const std::string header =
      v2(0x21, 0x11, ipv4_bytes("192.0.2.10") + ipv4_bytes("198.51.100.7") + be16(51234) + be16(22) + tlvs);
  const auto h = header_of(header + "SSH-2.0-x\r\n");
  ASSERT_TRUE(h.addresses);
  EXPECT_EQ(h.addresses->source, endpoint("192.0.2.10", 51234));
  EXPECT_EQ(h.length, header.size());
}

TEST(ProxyProtocolV2, TlvsMustAddUp) {
  const std::string addresses = ipv4_bytes("192.0.2.10") + ipv4_bytes("198.51.100.7") + be16(51234) + be16(22);
  EXPECT_EQ(error_of(v2(0x21, 0x11, addresses + std::string("\x01\x00", 2))),
            "PROXY v2 header ends inside a TLV's 3-byte type and length (2 bytes left)");
  EXPECT_EQ(error_of(v2(0x21, 0x11, addresses + tlv(0x01, "h2") + std::string("\x02\x00\x09", 3) + "short")),
            "PROXY v2 TLV of type 0x02 claims 9 bytes, the header has 5 left");
  EXPECT_EQ(error_of(v2(0x21, 0x11, addresses + "\x05\xff\xff")),
            "PROXY v2 TLV of type 0x05 claims 65535 bytes, the header has 0 left");
}

TEST(ProxyProtocolV2, FamiliesWithoutAnAddressTheGatewayCanUse) {
  // UNSPEC, AF_UNIX and UDP are valid and mean "use the real peer" (spec 2.2: fall back to UNSPEC).
  for (const auto& [family, body] : std::vector<std::pair<unsigned char, std::string>>{
           {0x00, ""},
           {0x00, "anything"},
           {0x01, "anything"},
           {0x10, "x"},
           {0x31, std::string(216, '/')},
           {0x32, std::string(216, '/') + tlv(0x04, "")},
           {0x12, std::string(12, '\1')},
           {0x22, std::string(36, '\1')},
       }) {
    const auto h = header_of(v2(0x21, family, body));
    EXPECT_FALSE(h.local) << int(family);
    EXPECT_FALSE(h.addresses) << int(family);
    EXPECT_EQ(h.length, 16 + body.size()) << int(family);
  }
}

TEST(ProxyProtocolV2, AddressLengthTooShort) {
  EXPECT_EQ(error_of(v2(0x21, 0x21, "\x20\x01\x0d\xb8")),
            "PROXY v2 address length 4 too short for AF_INET6 (needs 36)");
  EXPECT_EQ(error_of(v2(0x21, 0x11, std::string(11, '\0'))),
            "PROXY v2 address length 11 too short for AF_INET (needs 12)");
  EXPECT_EQ(error_of(v2(0x21, 0x31, std::string(108, '\0'))),
            "PROXY v2 address length 108 too short for AF_UNIX (needs 216)");
  EXPECT_EQ(error_of(v2(0x21, 0x12, "")), "PROXY v2 address length 0 too short for AF_INET (needs 12)");
  // Decided from the 16 fixed bytes, before the block arrives.
  EXPECT_EQ(error_of(kSignature + "\x21\x21" + be16(4)),
            "PROXY v2 address length 4 too short for AF_INET6 (needs 36)");
}

TEST(ProxyProtocolV2, VersionCommandFamilyTransport) {
  EXPECT_EQ(error_of(kSignature + "\x11"), "PROXY v2 header has version 1 (only 2 exists)");
  EXPECT_EQ(error_of(kSignature + "\x31\x11"), "PROXY v2 header has version 3 (only 2 exists)");
  EXPECT_EQ(error_of(kSignature + std::string(1, '\0')), "PROXY v2 header has version 0 (only 2 exists)");
  EXPECT_EQ(error_of(kSignature + "\x22"), "PROXY v2 command 0x02 is neither LOCAL nor PROXY");
  EXPECT_EQ(error_of(kSignature + "\x2f"), "PROXY v2 command 0x0f is neither LOCAL nor PROXY");
  EXPECT_EQ(error_of(kSignature + "\x21\x41"), "PROXY v2 address family 0x04 is not defined");
  EXPECT_EQ(error_of(kSignature + "\x21\xf1"), "PROXY v2 address family 0x0f is not defined");
  EXPECT_EQ(error_of(kSignature + "\x21\x13"), "PROXY v2 transport 0x03 is not defined");
}

TEST(ProxyProtocolV2, LengthCap) {
  const std::string addresses = ipv4_bytes("192.0.2.10") + ipv4_bytes("198.51.100.7") + be16(51234) + be16(22);
  // Padded with a NOOP TLV to exactly the cap, and one byte over it.
  const std::string at_cap = v2(0x21, 0x11,
                                addresses + tlv(0x04, std::string(kProxyV2MaxLength - 16 - 12 - 3, '\0')));
  ASSERT_EQ(at_cap.size(), kProxyV2MaxLength);
  EXPECT_EQ(header_of(at_cap).length, kProxyV2MaxLength);
  const std::string over = v2(0x21, 0x11,
                              addresses + tlv(0x04, std::string(kProxyV2MaxLength - 16 - 12 - 3 + 1, '\0')));
  EXPECT_EQ(error_of(over), "PROXY v2 header of 16385 bytes is longer than the 16384 the gateway accepts");
  // The largest the length field can say: refused from the fixed 16 bytes, nothing buffered.
  EXPECT_EQ(error_of(kSignature + "\x21\x11\xff\xff"),
            "PROXY v2 header of 65551 bytes is longer than the 16384 the gateway accepts");
  EXPECT_EQ(error_of(kSignature + std::string("\x20\x00\xff\xff", 4)),
            "PROXY v2 header of 65551 bytes is longer than the 16384 the gateway accepts")
      << "LOCAL too";
}

TEST(ProxyProtocolV2, Signature) {
  EXPECT_EQ(error_of("\r\n\r\nX"), "bad PROXY v2 signature");
  EXPECT_EQ(error_of("\r\r"), "bad PROXY v2 signature");
  EXPECT_EQ(error_of(std::string("\r\n\r\n\0\r\nQUIT\r", 12)), "bad PROXY v2 signature");
  EXPECT_TRUE(incomplete(std::string("\r\n\r\n\0\r\nQUI", 10)));
}

TEST(ProxyProtocol, NotAHeader) {
  EXPECT_EQ(error_of("SSH-2.0-OpenSSH_9.2p1\r\n"), "not a PROXY protocol header: it starts with \"S\"");
  EXPECT_EQ(error_of("GET / HTTP/1.1\r\n"), "not a PROXY protocol header: it starts with \"G\"");
  EXPECT_EQ(error_of("\x16\x03\x01"), "not a PROXY protocol header: it starts with \"\\x16\"");
  EXPECT_EQ(error_of("PRI * HTTP/2.0\r\n"), "not a PROXY protocol header: it starts with \"PRI\"");
  EXPECT_EQ(error_of("PROXX"), "not a PROXY protocol header: it starts with \"PROXX\"");
  EXPECT_EQ(error_of("PROXY\r\n"), "not a PROXY protocol header: it starts with \"PROXY\\x0d\"");
}

TEST(ProxyProtocol, LooksLikeAHeader) {
  for (const std::string& yes :
       std::vector<std::string>{"P", "PR", "PROXY", "PROXY ", "PROXY TCP4 1", "\r", "\r\n\r\n",
                                std::string("\r\n\r\n\0\r\n", 7), kSignature, kHaproxyV2, kHaproxyV1})
    EXPECT_TRUE(looks_like_proxy_header(yes)) << testing::PrintToString(yes);
  for (const std::string& no : std::vector<std::string>{"", "S", "SSH-2.0-OpenSSH_9.2p1\r\n", "PRI", "PROXX",
                                                        "PROXY\r\n", "\r\n\r\nX", "\n", "\x16\x03\x01", "p"})
    EXPECT_FALSE(looks_like_proxy_header(no)) << testing::PrintToString(no);
}

TEST(ProxyProtocol, EveryPrefixIsIncompleteWithinItsBounds) {
  for (const std::string& header : valid_headers()) {
    const auto whole = header_of(header);
    ASSERT_EQ(whole.length, header.size()) << testing::PrintToString(header);
    for (std::size_t k = 0; k < header.size(); ++k) {
      const auto parsed = parse_proxy_header(std::string_view(header).substr(0, k));
      const auto* more = std::get_if<ProxyHeaderIncomplete>(&parsed);
      ASSERT_TRUE(more) << "prefix of " << k << " bytes of " << testing::PrintToString(header);
      EXPECT_GE(more->at_least, 1u);
      EXPECT_LE(more->at_least, more->at_most);
      EXPECT_LE(k + more->at_least, header.size()) << k;
      EXPECT_GE(k + more->at_most, header.size()) << k;
    }
  }
}

TEST(ProxyProtocol, BytesAfterTheHeaderChangeNothing) {
  for (const std::string& header : valid_headers()) {
    const auto alone = header_of(header);
    for (const std::string& after :
         std::vector<std::string>{"SSH-2.0-OpenSSH_9.2p1\r\n", "\r\n", std::string(200, '\0'), kHaproxyV1}) {
      const auto followed = header_of(header + after);
      EXPECT_EQ(followed.length, alone.length);
      EXPECT_EQ(followed.local, alone.local);
      EXPECT_EQ(followed.version, alone.version);
      EXPECT_EQ(followed.addresses.has_value(), alone.addresses.has_value());
      if (followed.addresses && alone.addresses) {
        EXPECT_EQ(followed.addresses->source, alone.addresses->source);
        EXPECT_EQ(followed.addresses->destination, alone.addresses->destination);
      }
    }
  }
}

// A read loop that must not consume a byte past the header (the jump host hands the socket to
// libssh): each read takes `at_least`. It ends with exactly the header read.
TEST(ProxyProtocol, ReadingAtLeastStopsAtTheHeadersEnd) {
  for (const std::string& header : valid_headers()) {
    const std::string stream = header + "SSH-2.0-OpenSSH_9.2p1\r\n";
    std::size_t read = 0;
    int reads = 0;
    for (;;) {
      const auto parsed = parse_proxy_header(std::string_view(stream).substr(0, read));
      if (const auto* more = std::get_if<ProxyHeaderIncomplete>(&parsed)) {
        read += more->at_least;
        ASSERT_LE(read, header.size()) << testing::PrintToString(header);
        ++reads;
        continue;
      }
      ASSERT_TRUE(std::holds_alternative<ProxyHeader>(parsed));
      EXPECT_EQ(read, header.size());
      break;
    }
    // v2 takes at most three reads: the 15 bytes any header has, the 16th, then the rest it
    // announces. v1 a few more, shrinking to one byte as the line may end at any one.
    if (header.front() == '\r') {
      EXPECT_LE(reads, 3) << testing::PrintToString(header);
    }
  }
}

TEST(ProxyProtocol, ErrorsAreDecidedOnceAndStay) {
  for (const std::string& bad :
       std::vector<std::string>{"PROXY TCP4 192.0.2.10 198.51.100.7 51234 65536\r\n", "PROXY TCP4 1.2.3.4\n",
                                kSignature + "\x21\x21" + be16(4) + "abcd", kSignature + "\x11\x11",
                                "GET / HTTP/1.1\r\n"}) {
    const std::string reason = error_of(bad);
    for (const std::string& more : std::vector<std::string>{"", "x", "\r\n", std::string(300, 'y')})
      EXPECT_EQ(error_of(bad + more), reason);
  }
}

std::vector<config::Cidr> Blocks(std::initializer_list<const char*> texts) {
  std::vector<config::Cidr> out;
  for (const char* text : texts) out.push_back(*config::parse_cidr(text));
  return out;
}

TEST(TrustedProxy, AnAddressIsTrustedOnlyInsideABlock) {
  const auto trusted = Blocks({"10.42.0.0/16", "127.0.0.1/32", "fd7a:115c:a1e0::/48"});
  EXPECT_TRUE(is_trusted_proxy(trusted, ip::make_address("10.42.7.9")));
  EXPECT_TRUE(is_trusted_proxy(trusted, ip::make_address("127.0.0.1")));
  EXPECT_TRUE(is_trusted_proxy(trusted, ip::make_address("fd7a:115c:a1e0::12")));
  EXPECT_FALSE(is_trusted_proxy(trusted, ip::make_address("10.43.0.1")));
  EXPECT_FALSE(is_trusted_proxy(trusted, ip::make_address("127.0.0.2")));
  EXPECT_FALSE(is_trusted_proxy(trusted, ip::make_address("fd7a:115c:a1e1::12")));
  EXPECT_FALSE(is_trusted_proxy({}, ip::make_address("127.0.0.1")));
}

TEST(TrustedProxy, AnIpv4ClientOnADualStackListenerIsMatchedAsIpv4) {
  const auto trusted = Blocks({"10.42.0.0/16"});
  EXPECT_TRUE(is_trusted_proxy(trusted, ip::make_address("::ffff:10.42.1.2")));
  EXPECT_FALSE(is_trusted_proxy(trusted, ip::make_address("::ffff:10.43.1.2")));
  // Not mapped: an IPv6 address whose last bytes look like 10.42.x.y is not in an IPv4 block.
  EXPECT_FALSE(is_trusted_proxy(trusted, ip::make_address("::a2a:102")));
}

}  // namespace
}  // namespace spark::gateway
