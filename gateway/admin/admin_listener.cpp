#include "gateway/admin/admin_listener.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <cstring>

#include "config/plural.hpp"

namespace spark::gateway {
namespace {

// How long accept waits after running out of descriptors (or memory), as the TCP listeners do.
constexpr std::chrono::milliseconds kAcceptBackoff{100};
// Connections taken per readiness wake-up before the sessions get a turn.
constexpr int kAcceptBurst = 64;
constexpr std::chrono::minutes kEvictionLogInterval{1};

std::string busy_answer() {
  const std::string body =
      "{\"error\":\"too many admin connections (admin.max_connections), all of them busy; try again\"}\n";
  return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

AdminListener::AdminListener(asio::io_context& io, const config::Address& listen,
                             const AdminSessionContext& context, std::size_t max_connections)
    : io_(io), acceptor_(io), context_(context), max_connections_(max_connections) {
  auto fail = [&listen](const std::string& why) {
    return std::runtime_error("admin: cannot listen on " + listen.to_string() + ": " + why);
  };
  error_code ec;
  const auto address = asio::ip::make_address(listen.host, ec);
  if (ec) throw fail(ec.message());
  const tcp::endpoint endpoint(address, listen.port);
  // Close-on-exec from the start: a child the gateway starts must not inherit the admin port.
  const int fd = ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_TCP);
  if (fd < 0) throw fail(std::strerror(errno));
  acceptor_.assign(endpoint.protocol(), fd, ec);
  if (ec) {
    ::close(fd);
    throw fail(ec.message());
  }
  acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw fail(ec.message());
  acceptor_.non_blocking(true, ec);
}

awaitable<void> AdminListener::run() {
  asio::steady_timer backoff(io_);
  const auto protocol = acceptor_.local_endpoint().protocol();
  bool failing = false;
  while (!closed_) {
    error_code ec;
    co_await acceptor_.async_wait(tcp::acceptor::wait_read, asio::redirect_error(use_awaitable, ec));
    if (closed_ || ec == asio::error::operation_aborted) co_return;
    for (int i = 0; i < kAcceptBurst && !closed_; ++i) {
      // accept4: the connection is close-on-exec from its first moment (Asio's accept is not).
      const int fd = ::accept4(acceptor_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        failing = false;
        tcp::socket socket(io_);
        socket.assign(protocol, fd, ec);
        if (ec) {
          ::close(fd);
          continue;
        }
        admit(std::move(socket));
        continue;
      }
      const int err = errno;
      if (err == EINTR || err == ECONNABORTED) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      // Out of descriptors or memory: the listener stays readable, so pause instead of spinning.
      if (!failing)
        spdlog::warn("admin: accept failed: {}; retrying every {} ms", std::strerror(err), kAcceptBackoff.count());
      failing = true;
      backoff.expires_after(kAcceptBackoff);
      co_await backoff.async_wait(asio::redirect_error(use_awaitable, ec));
      break;
    }
  }
}

void AdminListener::admit(tcp::socket socket) {
  std::size_t regular = 0;
  std::size_t reserved = 0;
  for (const auto& s : sessions_) ++(s->probes_only() ? reserved : regular);
  if (regular < max_connections_) return start_session(std::move(socket), false);
  if (auto victim = oldest_evictable()) {
    const bool slot_is_reserved = victim->probes_only();
    victim->close();
    sessions_.erase(victim);
    note_eviction();
    return start_session(std::move(socket), slot_is_reserved);
  }
  if (reserved < kProbeReserve) return start_session(std::move(socket), true);
  // Every session is inside a GatewayControl call: answer in one non-blocking send and close.
  static const std::string busy = busy_answer();
  [[maybe_unused]] const auto sent =
      ::send(socket.native_handle(), busy.data(), busy.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  error_code ignored;
  socket.close(ignored);
}

void AdminListener::start_session(tcp::socket socket, bool probes_only) {
  auto session = std::make_shared<AdminSession>(std::move(socket), context_, probes_only);
  sessions_.insert(session);
  asio::co_spawn(io_, session->run(), [this, session](std::exception_ptr e) {
    sessions_.erase(session);
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& what) {
      spdlog::error("admin: connection ended by an error: {}", what.what());
    } catch (...) {
      spdlog::error("admin: connection ended by an unknown error");
    }
  });
}

std::shared_ptr<AdminSession> AdminListener::oldest_evictable() const {
  std::shared_ptr<AdminSession> oldest;
  for (const auto& s : sessions_)
    if (s->evictable() && (!oldest || s->phase_since() < oldest->phase_since())) oldest = s;
  return oldest;
}

void AdminListener::note_eviction() {
  ++evictions_unlogged_;
  const auto now = std::chrono::steady_clock::now();
  if (last_eviction_log_ != std::chrono::steady_clock::time_point{} && now - last_eviction_log_ < kEvictionLogInterval)
    return;
  spdlog::warn("admin: {} closed to make room: admin.max_connections ({}) reached, the oldest "
               "waiting for a request went first (slow or silent clients?)",
               config::counted(evictions_unlogged_, "connection"), max_connections_);
  evictions_unlogged_ = 0;
  last_eviction_log_ = now;
}

void AdminListener::close() {
  closed_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  for (const auto& s : sessions_) s->close();
  sessions_.clear();
}

}  // namespace spark::gateway
