#pragma once
// The PROXY protocol header (v1 text and v2 binary) that HAProxy, `tailscale serve` and other
// TCP proxies put in front of a relayed connection to say who the client is (issue 19). A pure
// parser: no sockets. The caller feeds it the bytes read so far, from the first byte of the
// connection, and reads more while it is told the header is incomplete. The spec is HAProxy's
// doc/proxy-protocol.txt; sections are cited where the code follows a rule of it.
//
// Only parse a header from a trusted proxy: whoever can send one chooses the address the
// gateway believes (spec section 5). Checking the peer is the caller's job.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "config/cidr.hpp"

namespace spark::gateway {

// A v1 line is at most 107 bytes with its CRLF (spec 2.1: the worst case, "PROXY UNKNOWN" with
// two full IPv6 addresses and ports). Longer is not a header.
inline constexpr std::size_t kProxyV1MaxLength = 107;
// A v2 header is 16 bytes and whatever its 16-bit length field adds, up to 65551 bytes. The
// gateway takes 16 KiB: HAProxy as a receiver reads the header into one buffer (tune.bufsize,
// 16 KiB by default), so a sender that works with HAProxy sends no more, and the addresses and
// every TLV the spec registers (ALPN, authority, a 128-byte unique ID, the TLS block) fit in a
// few hundred bytes.
inline constexpr std::size_t kProxyV2MaxLength = 16 * 1024;

// The two ends of the connection the proxy relayed, as the proxy saw them.
struct ProxiedAddresses {
  boost::asio::ip::tcp::endpoint source;       // the client
  boost::asio::ip::tcp::endpoint destination;  // the address the client connected to
};

// A complete, valid header.
struct ProxyHeader {
  int version = 0;  // 1 (text) or 2 (binary)
  // A v2 LOCAL command: the proxy opened this connection itself (a health check). There is no
  // client behind it and no addresses. v1 has no LOCAL: its "UNKNOWN" says only that the proxy
  // could not name the client (HAProxy sends it for its own checks, but also for clients of a
  // UNIX-socket frontend; other proxies for mixed IPv4/IPv6 ends), so it is local = false with
  // no addresses, and whatever the client sends after it decides.
  bool local = false;
  // The relayed connection's ends. Absent for LOCAL, v1 UNKNOWN, and the v2 families the spec
  // lets a receiver treat as unspecified (AF_UNSPEC, AF_UNIX, UDP): use the real peer then.
  // Addresses are as sent: an IPv4 client through an IPv6 proxy may be ::ffff:a.b.c.d.
  std::optional<ProxiedAddresses> addresses;
  // How many bytes at the start of the stream the header takes. Whatever follows is the
  // client's and must be passed on unchanged.
  std::size_t length = 0;
};

// The bytes so far are a valid start of a header: read more. Bytes read past the header's end
// are the client's (`length` says where it ends), so a buffer can read freely; a caller that
// must leave them in the socket (one that hands the descriptor on, as the jump host hands it to
// libssh) reads at most `at_least` at a time, or peeks.
struct ProxyHeaderIncomplete {
  std::size_t at_least = 0;  // the header is at least this many bytes longer (>= 1)
  std::size_t at_most = 0;   // and at most this many: a bound for the buffer
};

// Not a header, or a broken one: refuse the connection. `reason` is a sentence for the log,
// "PROXY v2 address length 4 too short for AF_INET6".
struct ProxyHeaderError {
  std::string reason;
};

using ProxyHeaderParse = std::variant<ProxyHeaderIncomplete, ProxyHeader, ProxyHeaderError>;

// Parses the header at the start of `bytes` (everything read so far; bytes past the header are
// ignored). Stateless: call it again with the longer buffer after each read. It decides as soon
// as the bytes allow: a prefix of a valid header is always Incomplete, never an error, and once
// it returns a header or an error, more bytes do not change the answer.
ProxyHeaderParse parse_proxy_header(std::string_view bytes);

// Whether `first_bytes` (at least one byte) could be the start of a PROXY header: a prefix of,
// or starting with, v1's "PROXY " or v2's 12-byte signature. For `proxy_protocol: optional`,
// where a client without a header must pass untouched: an SSH client's "SSH-" already differs
// at the first byte ('S' against 'P' and '\r'). False for empty input.
bool looks_like_proxy_header(std::string_view first_bytes);

// Whether `peer` is in one of the `trusted` blocks (trusted_proxies): only then is its header
// believed. An IPv4 client on a dual-stack listener (::ffff:a.b.c.d) is matched as IPv4.
bool is_trusted_proxy(const std::vector<config::Cidr>& trusted, const boost::asio::ip::address& peer);

}  // namespace spark::gateway
