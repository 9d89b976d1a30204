#pragma once
// Accepts admin connections and owns every live session (docs/admin-server.md).
//
// At most admin.max_connections sessions. When a new connection finds them all taken, the one
// that has waited longest for its request (or for its answer to be taken) is closed to make
// room: a legitimate client sends its request at once, so a flood of silent or trickling
// connections only ever pushes out its own oldest members, never a probe. If every session is
// inside a GatewayControl call (nothing to evict), up to kProbeReserve more are admitted for
// /healthz and /readyz only; beyond that a connection gets a 503 and is closed.
#include <chrono>
#include <memory>
#include <set>

#include "config/address.hpp"
#include "gateway/admin/admin_session.hpp"
#include "gateway/asio.hpp"

namespace spark::gateway {

class AdminListener {
 public:
  static constexpr std::size_t kProbeReserve = 4;

  // Binds and listens now (throws std::runtime_error if it cannot).
  AdminListener(asio::io_context& io, const config::Address& listen, const AdminSessionContext& context,
                std::size_t max_connections);

  // Accepts until close(). Runs on `io`, like everything here.
  awaitable<void> run();
  // Stops accepting and closes every session.
  void close();

 private:
  void admit(tcp::socket socket);
  void start_session(tcp::socket socket, bool probes_only);
  std::shared_ptr<AdminSession> oldest_evictable() const;
  void note_eviction();

  asio::io_context& io_;
  tcp::acceptor acceptor_;
  const AdminSessionContext& context_;
  const std::size_t max_connections_;
  std::set<std::shared_ptr<AdminSession>> sessions_;
  bool closed_ = false;
  // Evictions are logged at most once a minute, with a count.
  std::size_t evictions_unlogged_ = 0;
  std::chrono::steady_clock::time_point last_eviction_log_{};
};

}  // namespace spark::gateway
