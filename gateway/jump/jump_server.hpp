#pragma once
// The jump host's listener and its threads (docs/jump-host.md, "Threads"):
//   * one login thread: an Asio io_context with the listener (a SOMAXCONN backlog, close-on-exec
//     sockets, a back-off when descriptors run out) and every connection that has not logged in
//     yet (JumpLogin: libssh non-blocking, driven by socket readiness). StartupGate decides who
//     may start (MaxStartups, a fair share among sources, per-source penalties, max_sessions);
//   * one thread per logged-in session (JumpSession), from the proven key to the end of its
//     relay, so a slow or hostile client never blocks the gateway's main loop or other sessions and
//     no libssh session is ever used from two threads at once.
#include <libssh/libssh.h>
#include <libssh/server.h>
#include <sys/socket.h>

#include <atomic>
#include <filesystem>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

#include "config/config.hpp"
#include "gateway/asio.hpp"
#include "gateway/jump/authorized_keys.hpp"
#include "gateway/jump/jump_gateway.hpp"
#include "gateway/jump/jump_login.hpp"
#include "gateway/jump/startup_gate.hpp"

namespace spark::gateway {

// The generated host key (jump.host_keys unset): made on first start and written atomically
// (temp file in the same directory, fsync, rename; mode 0600), so a full disk leaves no 0-byte
// key behind. An existing key that is empty or unreadable is replaced with a warning saying so.
// Throws std::runtime_error naming the fix if no key can be written.
void ensure_generated_host_key(const std::filesystem::path& file);

class JumpServer {
 public:
  // Loads the keys and binds the listener; throws std::runtime_error with the reason.
  JumpServer(config::JumpConfig cfg, const std::filesystem::path& state_dir, JumpGateway& gateway);
  ~JumpServer();

  void start();
  void stop_accepting();  // the listener closes, logins in progress end; sessions go on
  void stop();            // ends every session (each notices within ~200 ms) and joins them

  int sessions() const { return sessions_; }  // logged in

 private:
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  awaitable<void> accept_loop();
  awaitable<void> reap_loop();
  // A socket just accepted: admitted at once, or after its PROXY header (jump.proxy_protocol).
  void accepted(int fd, const sockaddr_storage& addr);
  awaitable<void> admit_after_proxy_header(tcp::socket socket, std::string proxy);
  // Whether another connection from `proxy` may wait for its PROXY header (at most
  // max_startups' `full`, shared fairly): false if it must be refused.
  bool make_room_for_header(const std::string& proxy);
  // Through the gate (`peer` is the client's address), then logging in. A proxy's
  // `health_check` that ends without logging in is not penalized.
  void admit(tcp::socket socket, const std::string& peer, bool health_check = false);
  void login_ended(JumpLogin& login, StartupGate::End how, std::optional<ProvenLogin> proven);
  void start_session(ProvenLogin login);
  void close_logins();  // login thread
  void reap_finished_workers();
  // The host key files to use: the configured ones, or one generated into state_dir
  // (ensure_generated_host_key).
  static std::vector<std::filesystem::path> host_key_files(const config::JumpConfig& cfg,
                                                           const std::filesystem::path& state_dir);

  config::JumpConfig cfg_;
  JumpAccess access_;
  JumpGateway& gateway_;
  ssh_bind bind_ = nullptr;
  std::atomic<bool> stopping_{false};
  std::atomic<int> sessions_{0};
  // The login thread and what only it touches.
  asio::io_context io_{1};
  tcp::acceptor acceptor_{io_};
  StartupGate gate_;
  JumpLogin::Shared shared_;
  std::list<std::shared_ptr<JumpLogin>> logins_;  // not logged in yet, oldest first
  // Connections from trusted proxies still sending their PROXY header, oldest first.
  struct HeaderReader {
    std::string proxy;
    tcp::socket* socket;
  };
  std::list<HeaderReader> reading_headers_;
  std::thread login_thread_;
  std::mutex workers_mu_;
  std::list<Worker> workers_;
};

}  // namespace spark::gateway
