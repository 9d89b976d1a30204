#pragma once
// PROXY protocol v2 headers built byte by byte as HAProxy's doc/proxy-protocol.txt lays them
// out, for the tests of the parser (proxy_protocol_test) and of the greeting that reads them
// off a socket (client_greeting_test).
#include <cstddef>
#include <string>

#include <boost/asio/ip/address.hpp>

namespace spark::gateway::test {

inline const std::string kSignature("\r\n\r\n\0\r\nQUIT\n", 12);

inline std::string be16(std::size_t value) {
  return {static_cast<char>((value >> 8) & 0xff), static_cast<char>(value & 0xff)};
}

// A v2 header: signature, version/command, family/transport, length, then `body`.
inline std::string v2(unsigned char version_command, unsigned char family_transport, const std::string& body) {
  return kSignature + static_cast<char>(version_command) + static_cast<char>(family_transport) +
         be16(body.size()) + body;
}

inline std::string ipv4_bytes(const char* text) {
  const auto bytes = boost::asio::ip::make_address_v4(text).to_bytes();
  return {bytes.begin(), bytes.end()};
}

inline std::string ipv6_bytes(const char* text) {
  const auto bytes = boost::asio::ip::make_address_v6(text).to_bytes();
  return {bytes.begin(), bytes.end()};
}

inline std::string tlv(unsigned char type, const std::string& value) {
  return static_cast<char>(type) + be16(value.size()) + value;
}

}  // namespace spark::gateway::test
