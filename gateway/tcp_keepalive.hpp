#pragma once
// TCP keepalive and TCP_USER_TIMEOUT on the sockets of relayed connections (docs/dead-peers.md).
//
// A peer that vanishes (a laptop's lid closed, a node that died) sends neither FIN nor RST. Its
// socket would stay open forever, and an open connection keeps its spark awake. Keepalive
// probes find a silent dead peer; TCP_USER_TIMEOUT finds one we were sending to (probing stops
// while data is unacknowledged, and retransmissions alone would take ~15 minutes). Either way
// the next read or write on the socket fails with ETIMEDOUT, and the connection ends.
// Header-only: the TCP path (connection.cpp) and the jump host (jump_session.cpp) share it.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <boost/system/error_code.hpp>
#include <cerrno>
#include <chrono>

#include "config/config.hpp"

namespace spark::gateway {

// Sets (or, with keepalive off, clears) the options on `fd`; returns the first error.
inline boost::system::error_code set_tcp_keepalive(int fd, const config::TcpKeepalive& k) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  auto set = [fd](int level, int name, int value) {
    return ::setsockopt(fd, level, name, &value, sizeof value) == 0;
  };
  bool ok = true;
  if (!k.enabled) {
    ok = set(SOL_SOCKET, SO_KEEPALIVE, 0) && set(IPPROTO_TCP, TCP_USER_TIMEOUT, 0);
  } else {
    // With TCP_USER_TIMEOUT set, the kernel ends a probed connection once the peer has been
    // silent for the user timeout (not after `count` probes), so the two agree: bound().
    ok = set(IPPROTO_TCP, TCP_KEEPIDLE, static_cast<int>(duration_cast<seconds>(k.idle).count())) &&
         set(IPPROTO_TCP, TCP_KEEPINTVL, static_cast<int>(duration_cast<seconds>(k.interval).count())) &&
         set(IPPROTO_TCP, TCP_KEEPCNT, k.count) &&
         set(IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(k.bound().count())) &&
         set(SOL_SOCKET, SO_KEEPALIVE, 1);
  }
  if (ok) return {};
  return {errno, boost::system::system_category()};
}

// Whether an error on an established connection means the peer stopped answering: what
// keepalive or TCP_USER_TIMEOUT report (ETIMEDOUT, or the ICMP error that came meanwhile:
// an established connection takes those as soft errors and reports them only on timing out).
inline bool is_peer_unreachable(const boost::system::error_code& ec) {
  if (ec.category() != boost::system::system_category()) return false;
  return ec.value() == ETIMEDOUT || ec.value() == EHOSTUNREACH || ec.value() == ENETUNREACH;
}

}  // namespace spark::gateway
