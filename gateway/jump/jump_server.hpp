#pragma once
// The jump host's listener (libssh server API): one thread accepts, each session gets its own
// thread (bounded by max_sessions), so libssh never blocks the Asio data plane and no libssh
// session is ever used from two threads. See docs/jump-host.md.
#include <libssh/libssh.h>
#include <libssh/server.h>

#include <atomic>
#include <filesystem>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

#include "config/config.hpp"
#include "gateway/jump/authorized_keys.hpp"
#include "gateway/jump/jump_gateway.hpp"

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
  void stop_accepting();  // new logins are refused; sessions go on
  void stop();            // ends every session (each notices within ~200 ms) and joins them

  int sessions() const { return sessions_; }

 private:
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  void accept_loop();
  void reap_finished_workers();
  // The host key files to use: the configured ones, or one generated into state_dir
  // (ensure_generated_host_key).
  static std::vector<std::filesystem::path> host_key_files(const config::JumpConfig& cfg,
                                                           const std::filesystem::path& state_dir);

  config::JumpConfig cfg_;
  JumpAccess access_;
  JumpGateway& gateway_;
  ssh_bind bind_ = nullptr;
  std::atomic<bool> accepting_{true};
  std::atomic<bool> stopping_{false};
  std::atomic<int> sessions_{0};
  std::thread acceptor_;
  std::mutex workers_mu_;
  std::list<Worker> workers_;
};

}  // namespace spark::gateway
