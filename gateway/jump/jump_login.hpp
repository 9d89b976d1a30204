#pragma once
// One connection to the jump host until it logs in: key exchange and public-key authentication,
// on the jump host's one login thread, with libssh in non-blocking mode driven by the socket's
// readiness (Asio). No thread, no blocking call: a connection that sends nothing costs a libssh
// session and two descriptors until login_grace ends it, and StartupGate bounds how many there
// are. Once a key's signature is proven for a spark it may open, the session is handed over
// (ProvenLogin) and gets a thread of its own (JumpSession).
//
//   * the login's user names the spark (looked up on the main loop without waiting for it);
//   * an unknown spark or a key that may not open it: a banner saying so (once), then the
//     ordinary failure, so OpenSSH tries its next key and ends with "Permission denied";
//   * a key query (no signature) for a key that may: PK_OK; a valid signature: handed over.
#include <libssh/libssh.h>
#include <libssh/server.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "config/config.hpp"
#include "gateway/asio.hpp"
#include "gateway/jump/authorized_keys.hpp"
#include "gateway/jump/jump_gateway.hpp"
#include "gateway/jump/jump_session.hpp"
#include "gateway/jump/startup_gate.hpp"

namespace spark::gateway {

class JumpLogin : public std::enable_shared_from_this<JumpLogin> {
 public:
  // What every login uses; owned by the JumpServer, which outlives its logins.
  struct Shared {
    asio::io_context& io;  // the login thread's
    ssh_bind bind;
    const JumpAccess& access;
    JumpGateway& gateway;
    const config::JumpConfig& cfg;
  };
  // Called once, on the login thread, when it ends: how, and the proven login if it logged in.
  using Ended = std::function<void(JumpLogin&, StartupGate::End, std::optional<ProvenLogin>)>;

  // `socket` was just accepted (close-on-exec, non-blocking); `peer` is its address.
  JumpLogin(const Shared& shared, tcp::socket socket, std::string peer, Ended ended);
  ~JumpLogin();
  JumpLogin(const JumpLogin&) = delete;
  JumpLogin& operator=(const JumpLogin&) = delete;

  void start();
  // Ends it now (eviction, shutdown): the connection is closed.
  void close(StartupGate::End how);

  const std::string& peer() const { return peer_; }
  bool finished() const { return finished_; }

 private:
  // Drives libssh as far as it goes without blocking, then waits for the socket.
  void step();
  void watch_socket();
  void handle(ssh_message message);
  void publickey(ssh_message message);
  void spark_found(std::optional<JumpGateway::SparkInfo> info);
  void decide(ssh_message message);
  void fail(ssh_message message);
  void banner(const std::string& line);
  void finish(StartupGate::End how, ssh_message proven = nullptr);

  const Shared& shared_;
  // Readiness only: a duplicate of libssh's descriptor, so either side closes its own.
  tcp::socket socket_;
  asio::steady_timer grace_;
  std::string peer_;
  Ended ended_;
  ssh_session session_ = nullptr;
  bool kex_done_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool finished_ = false;
  bool tried_ = false;  // an authentication attempt (other than "none") was made

  // The spark the login's user names, looked up once per user name.
  std::optional<std::string> user_;
  std::string spark_;
  std::optional<JumpGateway::SparkInfo> info_;
  ssh_message waiting_ = nullptr;  // a publickey request waiting for the lookup
  int failures_ = 0;
  bool name_told_ = false;
  bool key_told_ = false;
};

}  // namespace spark::gateway
